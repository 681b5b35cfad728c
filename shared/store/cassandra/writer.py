"""The Cassandra write path: any process may write any trace, at once with others (unkeyed producers put
one trace's spans on several partitions, so on several workers).

Per batch (the planning is :func:`~shared.store.writing.plan_write`, as in every backend):

1. read each trace's partition (its static columns and chunk ids, :mod:`.rows`) and its current state:
   the writer's cached copy when it was built from exactly the stored chunk set, else the chunks;
2. plan; then, for every changed trace, in this order:
3. its due-index entry (naming the chunk of step 4, :mod:`.due`) and its open-span index changes (a crash
   after this step leaves entries ahead of the data: a due entry whose chunk never came is dropped by
   the owner's scan after a while, an open-span entry of a trace never stored is never answered);
4. its chunk and its columns, ONE statement (atomic within the partition: the chunk is stored exactly
   when the trace row says so); a replayed batch finds its spans stored and writes nothing;
5. its ``idx_active`` row when the trace is new or was finalized (a crash before this step only hides
   the trace from the active search until it is finalized). The row is written with the timestamp of
   the batch's chunks (steps 4 and 5 are ``USING TIMESTAMP`` one stamp, :meth:`~.schema.Cql.stamp`), and
   a finalization deletes it with a later one than every chunk it finalized (it reads their
   ``WRITETIME``): a finalization can run between steps 4 and 5 (the chunk makes the trace due), and its
   delete must win over the insert that reaches the node after it, else the trace stays listed as
   active. That holds whatever the clocks, a batch begun after the round did too. A batch whose chunk
   the round did not read re-opens the trace, and its row, stamped later than the chunks it read, stays.

The writer never writes a state: a new chunk makes the trace active by itself (:mod:`.rows`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

from shared.store.cache import TraceCache
from shared.store.cassandra.due import DueIndex
from shared.store.cassandra.rows import StoredRow, fingerprint, read_chunks, read_rows
from shared.store.cassandra.schema import Cql
from shared.store.chunks import TraceState
from shared.store.rollups import HOUR_US
from shared.store.writing import TraceRow, WriteBatch, WritePlan, plan_write

OPEN: Final = "INSERT INTO open_spans (ns, span_id, trace_id, tid) VALUES (?, ?, ?, ?) USING TTL ?"
CLOSE: Final = "DELETE FROM open_spans WHERE ns = ? AND span_id = ? AND trace_id = ?"
ACTIVE: Final = (
    "INSERT INTO idx_active (ns, hour, trace_id, first_seen_us, fresh) VALUES (?, ?, ?, ?, ?)"
    " USING TTL ? AND TIMESTAMP ?"
)
LIST_HOUR: Final = "INSERT INTO index_hours (ns, kind, hour) VALUES (?, ?, ?) USING TTL ?"


def insert_chunk_cql(columns: Sequence[str]) -> str:
    """One chunk row and the given static columns of its trace, in one statement."""
    names = ("ns", "trace_id", "seq", "chunk_id", "late", "body", *columns)
    values = ", ".join("?" * len(names))
    return f"INSERT INTO traces ({', '.join(names)}) VALUES ({values}) USING TTL ? AND TIMESTAMP ?"


def new_id() -> int:
    """A random positive 63-bit id (chunk ids, incarnations, due entries)."""
    return secrets.randbits(63)


class Written(msgspec.Struct, kw_only=True, gc=False):
    plan: WritePlan
    keys: dict[str, int]
    """The cache key of every state in :attr:`states` (incarnation XOR chunk fingerprint)."""
    states: dict[str, TraceState]
    """Every state taken from the cache or built: current once the batch is written."""


class HourLists:
    """The ``index_hours`` rows this process wrote (one insert per kind and hour, not one per row)."""

    def __init__(self, cql: Cql) -> None:
        self.cql = cql
        self._listed: set[tuple[str, int]] = set()

    def rows(self, kind: str, hours: set[int]) -> list[tuple[str, Sequence[Any]]]:
        """The statements that list the hours not listed yet (the caller runs them, then :meth:`done`)."""
        cql = self.cql
        return [(LIST_HOUR, (cql.ns, kind, h, cql.ttl_s)) for h in sorted(hours) if (kind, h) not in self._listed]

    def done(self, kind: str, hours: set[int]) -> None:
        self._listed.update((kind, h) for h in hours)


async def current_states(
    cql: Cql, cache: TraceCache | None, rows: Sequence[StoredRow]
) -> tuple[dict[str, TraceState], dict[str, int]]:
    """The current state of each trace (its cached copy when it is exactly the stored chunk set, taken out
    of the cache; else read back) and its cache key."""
    states: dict[str, TraceState] = {}
    keys: dict[str, int] = {}
    missing: list[StoredRow] = []
    for row in rows:
        state = cache.take(row.trace_id, row.cache_key, len(row.chunk_ids)) if cache is not None else None
        if state is None:
            missing.append(row)
        else:
            states[row.trace_id] = state
            keys[row.trace_id] = row.cache_key
    if missing:
        chunks = await read_chunks(cql, [r.trace_id for r in missing])
        for row in missing:
            stored = chunks[row.trace_id]
            states[row.trace_id] = stored.state()
            keys[row.trace_id] = (row.tid or 0) ^ fingerprint(stored.ids)
    return states, keys


class Statics(msgspec.Struct, kw_only=True, gc=False):
    """What a batch writes besides its chunks: due-index entries, each changed trace's static columns, and
    its ``idx_active`` rows."""

    entries: list[tuple[str, int, str, int]]
    """(shard, due µs, trace id, chunk id)."""
    columns: dict[str, dict[str, Any]]
    """trace id -> the static columns written with its chunk."""
    active: list[tuple[str, Sequence[Any]]]


async def write_batch(
    cql: Cql, due: DueIndex, hours: HourLists, cache: TraceCache | None, batch: WriteBatch
) -> Written:
    """Write one batch (see :meth:`shared.store.base.TraceWriter.write_batch`), in the order the module
    docstring gives."""
    now_us = batch.now_us
    stored = await read_rows(cql, batch.events)
    rows: dict[str, TraceRow] = {t: r.trace_row() for t, r in stored.items() if r.exists}
    live = [r for r in stored.values() if r.exists and r.state != "dropped"]
    states, keys = await current_states(cql, cache, live)
    plan = plan_write(batch, rows, states)
    if not plan.chunks:
        return Written(plan=plan, keys=keys, states=states)

    chunk_ids = {chunk.trace_id: new_id() for chunk in plan.chunks}
    incarnations = {new.trace_id: new_id() for new in plan.new}
    hour = now_us // HOUR_US
    stamp = cql.stamp()
    statics = _statics(cql, plan, stored, batch, chunk_ids, incarnations, stamp)

    # 3. index entries ahead of the data
    opened = [(OPEN, (cql.ns, s, t, _tid(stored, incarnations, t), cql.ttl_s)) for t, s in plan.opened]
    closed = [(CLOSE, (cql.ns, s, t)) for t, s in plan.closed]
    await due.add(statics.entries, now_us=now_us)
    await cql.partitions([[item] for item in (*opened, *closed)])

    # 4. the chunks, each with its trace's columns
    inserts: list[tuple[str, Sequence[Any]]] = []
    for chunk in plan.chunks:
        columns = statics.columns[chunk.trace_id]
        values = (
            cql.ns,
            chunk.trace_id,
            chunk.seq,
            chunk_ids[chunk.trace_id],
            chunk.late,
            chunk.body,
            *columns.values(),
            cql.ttl_s,
            stamp,
        )
        inserts.append((insert_chunk_cql(tuple(columns)), values))
    await cql.partitions([[item] for item in inserts])

    # 5. the active index
    if statics.active:
        listing = hours.rows("active", {hour})
        await cql.partitions([statics.active, listing] if listing else [statics.active])
        hours.done("active", {hour})

    for chunk in plan.chunks:
        base = incarnations.get(chunk.trace_id)
        key = base if base is not None else keys[chunk.trace_id]
        keys[chunk.trace_id] = key ^ chunk_ids[chunk.trace_id]
    states.update(plan.states)
    return Written(plan=plan, keys=keys, states=states)


def _statics(
    cql: Cql,
    plan: WritePlan,
    stored: Mapping[str, StoredRow],
    batch: WriteBatch,
    chunk_ids: Mapping[str, int],
    incarnations: Mapping[str, int],
    stamp: int,
) -> Statics:
    now_us = batch.now_us
    hour = now_us // HOUR_US
    out = Statics(entries=[], columns={}, active=[])
    for new in plan.new:
        out.entries.append((new.shard, new.due_us, new.trace_id, chunk_ids[new.trace_id]))
        columns = {
            "tid": incarnations[new.trace_id],
            "shard": new.shard,
            "first_seen_us": now_us,
            "last_seen_us": now_us,
            "due_us": new.due_us,
            "active_at": hour,
        }
        if new.root_done_us is not None:
            columns["root_done_us"] = new.root_done_us
        out.columns[new.trace_id] = columns
        out.active.append((ACTIVE, (cql.ns, hour, new.trace_id, now_us, True, cql.ttl_s, stamp)))
    for update in plan.updates:
        row = stored[update.trace_id]
        shard = update.shard or row.shard or batch.shards[update.trace_id]
        out.entries.append((shard, update.due_us, update.trace_id, chunk_ids[update.trace_id]))
        columns = {"last_seen_us": now_us, "due_us": update.due_us}
        if update.root_done_us is not None:
            columns["root_done_us"] = update.root_done_us
        if update.shard is not None:
            columns["shard"] = update.shard
        if row.state != "active":  # finalized or waiting: the new chunk re-opens it
            columns["active_at"] = hour
            first_seen = row.first_seen_us or now_us
            values = (cql.ns, hour, update.trace_id, first_seen, row.finalized_at_us is None, cql.ttl_s, stamp)
            out.active.append((ACTIVE, values))
        out.columns[update.trace_id] = columns
    return out


def _tid(stored: Mapping[str, StoredRow], incarnations: Mapping[str, int], trace_id: str) -> int:
    new = incarnations.get(trace_id)
    return new if new is not None else stored[trace_id].tid or 0
