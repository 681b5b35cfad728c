"""The due index: when each active trace is due, partitioned by (owner shard, 10 s bucket) and scanned
only by the shard's owner.

Entries are only ever added: every write of a trace adds one for the due time it writes, BEFORE it writes
the trace's chunk and columns (one statement), and names that chunk (``entry`` = the chunk id). The trace
row is the truth, and the chunk tells whether an entry is **acknowledged** (its chunk is stored, so its
writer's due time reached the row) or not (the writer is between the two steps, or died there). A scan:

* returns the trace of an acknowledged entry when the trace is active, owned by the shard, and due at
  exactly the entry's time, now or earlier;
* deletes an acknowledged entry otherwise: the trace was finalized, moved or purged since (a later write
  adds an entry of its own), or its due time changed (the writer of the row's due time acknowledged an
  entry with that time);
* leaves an entry that is not acknowledged alone (its writer may acknowledge it any moment; a scan that
  deleted it, seeing the trace finalized or missing, would lose the write that re-opens or creates it),
  until it is :data:`LOST_AFTER_US` old: its writer died, and its batch, never committed, is written again.

``due_buckets`` lists the buckets that have entries, so that a scan (even with a far-future ``now``) reads
only those. A bucket older than :data:`PRUNE_AFTER_US` found empty leaves the list; writers never put an
entry into a bucket older than :data:`CLAMP_US` before their clock (an older due time goes into that
bucket, still carrying its exact time), so a pruned bucket stays empty while clocks agree within the
difference (30 s).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Final

from shared.store.cassandra.rows import StoredRow, read_rows
from shared.store.cassandra.schema import Cql

BUCKET_US: Final = 10_000_000
CLAMP_US: Final = 30_000_000
PRUNE_AFTER_US: Final = 60_000_000
LOST_AFTER_US: Final = 600_000_000

ADD: Final = (
    "INSERT INTO due (ns, shard, bucket, due_us, trace_id, entry, written_us) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
)
LIST: Final = "INSERT INTO due_buckets (ns, shard, bucket) VALUES (?, ?, ?) USING TTL ?"
BUCKETS: Final = "SELECT bucket FROM due_buckets WHERE ns = ? AND shard = ? AND bucket <= ?"
ENTRIES: Final = (
    "SELECT due_us, trace_id, entry, written_us FROM due WHERE ns = ? AND shard = ? AND bucket = ? AND due_us <= ?"
)
DELETE: Final = (
    "DELETE FROM due WHERE ns = ? AND shard = ? AND bucket = ? AND due_us = ? AND trace_id = ? AND entry = ?"
)
UNLIST: Final = "DELETE FROM due_buckets WHERE ns = ? AND shard = ? AND bucket = ?"

Entry = tuple[int, int, str, int, int]
"""(bucket, due µs, trace id, entry id = chunk id, written µs)."""


class DueIndex:
    """The due index of one store; remembers which buckets this process listed (one insert per bucket
    instead of one per entry)."""

    def __init__(self, cql: Cql) -> None:
        self.cql = cql
        self._listed: set[tuple[str, int]] = set()

    def _bucket(self, due_us: int, now_us: int) -> int:
        return max(due_us, now_us - CLAMP_US) // BUCKET_US

    async def add(self, entries: Iterable[tuple[str, int, str, int]], *, now_us: int) -> None:
        """Add (shard, due µs, trace id, chunk id) entries: one batch per bucket."""
        cql = self.cql
        groups: dict[tuple[str, int], list[tuple[str, tuple[object, ...]]]] = {}
        for shard, due_us, trace_id, entry in entries:
            bucket = self._bucket(due_us, now_us)
            groups.setdefault((shard, bucket), []).append(
                (ADD, (cql.ns, shard, bucket, due_us, trace_id, entry, now_us, cql.ttl_s))
            )
        unlisted = [key for key in groups if key not in self._listed]
        by_shard: dict[str, list[tuple[str, tuple[object, ...]]]] = {}
        for shard, bucket in unlisted:
            by_shard.setdefault(shard, []).append((LIST, (cql.ns, shard, bucket, cql.ttl_s)))
        await cql.partitions([*groups.values(), *by_shard.values()])
        self._listed.update(unlisted)
        if len(self._listed) > 50_000:
            self._listed.clear()  # re-listing is idempotent: forgetting only costs inserts

    async def scan(self, shards: Collection[str], now_us: int, limit: int) -> tuple[list[str], dict[str, StoredRow]]:
        """The ``limit`` earliest due active traces of ``shards`` (due <= ``now_us``), earliest first, and
        their rows as this scan read them."""
        cql = self.cql
        shards = list(shards)
        last = now_us // BUCKET_US
        listed = await cql.many(BUCKETS, [(cql.ns, shard, last) for shard in shards])
        buckets = [(shard, row[0]) for shard, rows in zip(shards, listed, strict=True) for row in rows]
        results = await cql.many(ENTRIES, [(cql.ns, shard, bucket, now_us) for shard, bucket in buckets])
        entries: dict[str, list[tuple[str, Entry]]] = {}
        empty: list[tuple[str, int]] = []
        for (shard, bucket), rows in zip(buckets, results, strict=True):
            if not rows and (bucket + 1) * BUCKET_US + PRUNE_AFTER_US <= now_us:
                empty.append((shard, bucket))
            for due_us, trace_id, entry, written_us in rows:
                entries.setdefault(trace_id, []).append((shard, (bucket, due_us, trace_id, entry, written_us or 0)))
        order = sorted(entries, key=lambda t: (min(e[1][1] for e in entries[t]), t))
        due: list[tuple[int, str]] = []
        read: dict[str, StoredRow] = {}
        stale: list[tuple[str, Entry]] = []
        for start in range(0, len(order), max(limit, 64)):
            if len(due) >= limit:
                break
            chunk = order[start : start + max(limit, 64)]
            found = await read_rows(cql, chunk)
            for trace_id in chunk:
                row = found[trace_id]
                active = row.exists and row.state == "active" and row.due_us is not None
                chunks = set(row.chunk_ids)
                is_due = False
                for shard, entry in entries[trace_id]:
                    if entry[3] not in chunks:  # not acknowledged: its writer is between its two steps
                        if entry[4] + LOST_AFTER_US <= now_us:
                            stale.append((shard, entry))
                    elif active and row.shard == shard and entry[1] == row.due_us:
                        is_due = True
                    else:
                        stale.append((shard, entry))
                if is_due:
                    due.append((row.due_us or 0, trace_id))
                    read[trace_id] = row
        await self._forget(stale, empty)
        due.sort()
        picked = [trace_id for _, trace_id in due[:limit]]
        return picked, {t: read[t] for t in picked}

    async def _forget(self, stale: list[tuple[str, Entry]], empty: list[tuple[str, int]]) -> None:
        cql = self.cql
        groups: dict[tuple[str, int], list[tuple[str, tuple[object, ...]]]] = {}
        for shard, (bucket, due_us, trace_id, entry, _) in stale:
            groups.setdefault((shard, bucket), []).append((DELETE, (cql.ns, shard, bucket, due_us, trace_id, entry)))
        unlist: dict[str, list[tuple[str, tuple[object, ...]]]] = {}
        for shard, bucket in empty:
            unlist.setdefault(shard, []).append((UNLIST, (cql.ns, shard, bucket)))
            self._listed.discard((shard, bucket))
        await cql.partitions([*groups.values(), *unlist.values()])
