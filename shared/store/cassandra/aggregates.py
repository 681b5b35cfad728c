"""Rollups exact under replays and crashes, without counters or transactions.

Each trace's contribution is stored under its owner shard (``contribs``, by start minute). An aggregate
row lives in a **slice**: one series, grain, bucket and shard (``((ns, grain, bucket), shard, key...)``).
A slice has one writer, the shard's owner, which always writes complete values (never increments) and
keeps, per slice, the values it wrote and the ``token`` it wrote them with. A slice is a pure function of
the level below: a minute slice is the sum of the minute's contributions, an hour slice the sum of its
minute slices, the all-time slice the sum of the hour slices.

Updating a slice (:meth:`Aggregates.apply`) reads its stored keys and tokens first (one read per slice):
when they are exactly what this process last wrote, the new values are its copy plus the round's delta;
otherwise (another process wrote the slice since: a takeover after a crash or a rebalance; or this
process's own earlier write failed; or it never wrote it) the slice is recomputed from the level below.
Grains go in order (minutes, then hours, then all time), so a recomputed hour sees this round's minutes.

A round (a finalization or a purge of one shard) first records itself in ``rollup_pending`` (the minutes
it touches, and each trace it finalizes with the minute of its new contribution), then writes the
contributions, then the slices, and deletes the record when everything is written. A new owner (:meth:`adopt`) finishes
what a crashed owner left before it writes anything: it sets the contributions of the pending rounds'
traces back to what their rows record (a trace whose row the round did not write is active again, and
its next finalization replaces what the row records) and writes that record again (so that a row write of
the round that failed but was applied somewhere cannot change it later), then recomputes the slices of the
pending minutes.
Replays rewrite the same contributions (idempotent), so the slices stay the sum of what is stored,
counted once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from shared.store.cassandra.schema import COUNTER_COLUMNS, Cql
from shared.store.rollups import (
    HOUR,
    MINUTE,
    MINUTE_US,
    PLAIN_GRAINS,
    TOTAL,
    UNSEEN_LIVE,
    UNSEEN_VALUES,
    RollupDelta,
    decode_contribution,
)

Key = tuple[Any, ...]
GrainRows = list[tuple[int, int, Key, list[int]]]


class RoundOverrun(Exception):
    """A round ran too long to go on writing (:data:`ROUND_FENCE_US`), or a shard it would write is another
    process's round's still (:meth:`Aggregates.adopt`); its traces stay due."""


class Series(msgspec.Struct, kw_only=True, gc=False, eq=False):
    """One rollup table: its key columns, value columns, and which value is > 0 exactly while the row
    counts something (a row whose count drops to 0 is deleted, as in the SQL stores)."""

    name: str
    table: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    live: int
    delta_rows: str
    """The :class:`RollupDelta` method that gives this series' rows at every grain it keeps
    (:data:`~shared.store.rollups.PLAIN_GRAINS`)."""
    insert_cql: str = ""
    delete_cql: str = ""
    bucket_cql: str = ""
    """Every shard's rows of one bucket (what reads sum)."""
    stamps_cql: str = ""
    """One slice's keys and who wrote them."""
    values_cql: str = ""
    """One slice's keys and values."""

    def __post_init__(self) -> None:
        table, keys, values = self.table, self.keys, self.values
        columns = ("ns", "grain", "bucket", "shard", *keys, *values, "stamp")
        self.insert_cql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) USING TTL ?"
        )
        where = " AND ".join(f"{c} = ?" for c in ("ns", "grain", "bucket", "shard", *keys))
        self.delete_cql = f"DELETE FROM {table} WHERE {where}"
        self.bucket_cql = (
            f"SELECT {', '.join(('shard', *keys, *values))} FROM {table} WHERE ns = ? AND grain = ? AND bucket = ?"
        )
        one = " WHERE ns = ? AND grain = ? AND bucket = ? AND shard = ?"
        self.stamps_cql = f"SELECT {', '.join((*keys, 'stamp'))} FROM {table}{one}"
        self.values_cql = f"SELECT {', '.join((*keys, *values))} FROM {table}{one}"

    def rows(self, delta: RollupDelta) -> GrainRows:
        rows: GrainRows = getattr(delta, self.delta_rows)(PLAIN_GRAINS)  # it reads plain ranges: no ten minutes
        return rows


OPS: Final = Series(
    name="ops",
    table="rollup_ops",
    keys=("service", "operation", "kind"),
    values=COUNTER_COLUMNS,
    live=0,
    delta_rows="op_rows",
)
ENDPOINTS: Final = Series(
    name="endpoints",
    table="rollup_endpoints",
    keys=("service", "operation"),
    values=COUNTER_COLUMNS,
    live=0,
    delta_rows="endpoint_rows",
)
CONTEXTS: Final = Series(
    name="contexts",
    table="rollup_contexts",
    keys=("service", "operation", "ctx"),
    values=("critical_us", "traces"),
    live=1,
    delta_rows="context_rows",
)
DEPS: Final = Series(
    name="deps",
    table="rollup_deps",
    keys=("parent", "child"),
    values=("calls", "errors"),
    live=0,
    delta_rows="dep_grain_rows",
)
UNSEEN: Final = Series(
    name="unseen",
    table="rollup_unseen",
    keys=("service",),
    values=UNSEEN_VALUES,
    live=UNSEEN_LIVE,
    delta_rows="unseen_rows",
)


def sketch_of(spec: Series, delta_rows: str) -> Series:
    """The latency sketch beside a series (:mod:`shared.store.sketch`): a row per key and non-empty bin."""
    return Series(
        name=f"{spec.name}_bins",
        table=f"{spec.table}_bins",
        keys=(*spec.keys, "bin"),
        values=("n",),
        live=0,
        delta_rows=delta_rows,
    )


OP_BINS: Final = sketch_of(OPS, "op_bin_rows")
ENDPOINT_BINS: Final = sketch_of(ENDPOINTS, "endpoint_bin_rows")
SERIES: Final = (OPS, ENDPOINTS, CONTEXTS, DEPS, OP_BINS, ENDPOINT_BINS, UNSEEN)

SliceKey = tuple[str, int, int, str]
"""(series name, grain, bucket, shard)."""
Content = dict[Key, tuple[list[int], int]]
"""A slice as this process wrote it: key -> (values, token)."""

CONTRIBS: Final = "SELECT body FROM contribs WHERE ns = ? AND shard = ? AND minute = ?"
HOURS: Final = "SELECT hour FROM rollup_hours WHERE ns = ?"
LIST_HOUR: Final = "INSERT INTO rollup_hours (ns, hour) VALUES (?, ?)"
PENDING: Final = "SELECT stamp, minutes, traces, WRITETIME(traces) FROM rollup_pending WHERE ns = ? AND shard = ?"
ROUND_LEASE_US: Final = 90_000_000
"""How long a round of another process may still be under way: its pending record, and its shard, are left
alone until the record is this old (or gone). Two processes can hold a shard at once for a while: a worker
the consumer group dropped (its session expired while a round ran, on a loaded machine) goes on with its
round until it learns of it; a new owner that finished that round's record meanwhile took out of the
rollups the contributions whose trace rows the round then wrote (finalized, never counted)."""
ROUND_FENCE_US: Final = 20_000_000
"""A round that has run this long stops before its next write (it fails, and its record is finished by the
next adoption): its writes end well before its record can be taken over (:data:`ROUND_LEASE_US`)."""
BEGIN: Final = "INSERT INTO rollup_pending (ns, shard, stamp, minutes, traces) VALUES (?, ?, ?, ?, ?) USING TTL ?"
END: Final = "DELETE FROM rollup_pending WHERE ns = ? AND shard = ? AND stamp = ?"
PUT_CONTRIB: Final = "INSERT INTO contribs (ns, shard, minute, trace_id, body) VALUES (?, ?, ?, ?, ?) USING TTL ?"
DELETE_CONTRIB: Final = "DELETE FROM contribs WHERE ns = ? AND shard = ? AND minute = ? AND trace_id = ?"
CONTRIB_OF: Final = "SELECT body FROM contribs WHERE ns = ? AND shard = ? AND minute = ? AND trace_id = ?"
FINALIZATION: Final = (
    "start_us",
    "contribution",
    "state",
    "final_n",
    "final_fp",
    "final_chunks",
    "late_chunks",
    "contrib_minutes",
    "refinalizations",
    "finalized_at_us",
)
"""The columns of a trace row that its finalization writes and its next finalization reads (its state,
the chunk set used, its contribution and where it is stored)."""
RECORDED: Final = f"SELECT tid, {', '.join(FINALIZATION)} FROM traces WHERE ns = ? AND trace_id = ? LIMIT 1"
"""What a trace's row records of its finalization (the contribution written with its start in one
statement)."""
REWRITE: Final = (
    f"UPDATE traces USING TTL ? SET {', '.join(f'{c} = ?' for c in FINALIZATION)} WHERE ns = ? AND trace_id = ?"
)

_moves = msgspec.msgpack.Encoder()
_moves_decoder = msgspec.msgpack.Decoder(list[tuple[str, int]])


def touched_minutes(delta: RollupDelta) -> set[int]:
    """The minute buckets a delta changes (every contribution adds an endpoint row to its minute)."""
    return {minute for minute, _ in delta.endpoints}


def sum_rows(rows: Iterable[Sequence[Any]], width: int) -> dict[Key, list[int]]:
    """Rows of (key..., values...) summed per key."""
    sums: dict[Key, list[int]] = {}
    for row in rows:
        key = tuple(row[:width])
        values = row[width:]
        total = sums.get(key)
        if total is None:
            sums[key] = [int(v or 0) for v in values]
        else:
            for i, v in enumerate(values):
                total[i] += int(v or 0)
    return sums


class Aggregates:
    """The owner's side of the rollups of one store: its copy of the slices it wrote (bounded, least
    recently used first out), the shards it has adopted, and the rounds' bookkeeping. Not safe for
    concurrent rounds: the store runs finalizations and purges one at a time."""

    def __init__(self, cql: Cql, *, max_slices: int = 20_000) -> None:
        self.cql = cql
        self.max_slices = max_slices
        self._memory: OrderedDict[SliceKey, Content] = OrderedDict()
        self._adopted: set[str] = set()
        self._released: set[str] = set()
        self._process = secrets.randbits(31)
        self._counter = 0
        self._hours: set[int] = set()
        self._begun_us: int | None = None
        """When the round under way (:meth:`begin`) began, for :meth:`fence`."""

    def _token(self) -> int:
        self._counter += 1
        return (self._process << 32) | (self._counter & 0xFFFFFFFF)

    # -- ownership ------------------------------------------------------------------------------------

    def keep_only(self, shards: Collection[str]) -> None:
        """The caller owns ``shards`` now (a worker's due scan): the adopted shards it no longer names are
        released at the start of the next round (their copies dropped, re-adopted when owned again)."""
        self._released.update(self._adopted.difference(shards))
        self._released.difference_update(shards)

    def _forget(self, shard: str) -> None:
        for key in [k for k in self._memory if k[3] == shard]:
            del self._memory[key]
        self._adopted.discard(shard)

    def invalidate(self, shard: str) -> None:
        """A round of ``shard`` failed part way: trust nothing of it (the pending record stays, and the owner's
        next due scan or round adopts the shard again, recomputing what the failed round touched)."""
        self._forget(shard)
        self._begun_us = None

    async def adopt(self, shards: Iterable[str], *, recheck: bool = False) -> set[str]:
        """Before the first round of a shard (at its owner's due scans): finish every round a previous owner,
        or a failed round of this one, left pending. A shard already adopted costs nothing, unless
        ``recheck`` (the owner's due scans): its pending rounds are read too, and finished if there are any.
        A shard can go to another process and come back between two scans of this one (no scan ran while
        it was away to release it), and what that process left pending is in no copy this one holds.

        Returns the shards left alone: another process's round of the shard may still be under way (its
        record is younger than :data:`ROUND_LEASE_US`); no round of this one may touch them yet."""
        for shard in self._released:
            self._forget(shard)
        self._released.clear()
        self._begun_us = None  # no round of this process is under way
        cql = self.cql
        asked = sorted(s for s in set(shards) if recheck or s not in self._adopted)
        found = await cql.many(PENDING, [(cql.ns, shard) for shard in asked])
        now_us = time.time_ns() // 1000
        held: set[str] = set()
        for shard, pending in zip(asked, found, strict=True):
            if any(row[0] >> 32 != self._process and now_us - (row[3] or 0) < ROUND_LEASE_US for row in pending):
                self._forget(shard)
                held.add(shard)
            elif pending or shard not in self._adopted:
                await self._finish(shard, pending)
        return held

    async def _finish(self, shard: str, pending: Sequence[Sequence[Any]]) -> None:
        """Finish the ``pending`` rounds of ``shard`` (its ``rollup_pending`` rows) and adopt it."""
        cql = self.cql
        self._forget(shard)
        minutes: set[int] = set()
        moves: list[tuple[str, int]] = []
        for _, recorded, traces, _ in pending:
            minutes.update(recorded or ())
            if traces:
                moves.extend(_moves_decoder.decode(traces))
        if moves:
            await self._match_rows(shard, moves)
        if minutes:
            await self.apply(shard, RollupDelta(), refresh=minutes)
        if pending:
            await cql.partitions([[(END, (cql.ns, shard, row[0])) for row in pending]])
        self._adopted.add(shard)

    async def _match_rows(self, shard: str, moves: Sequence[tuple[str, int]]) -> None:
        """Make the shard's stored contributions of the traces an unfinished round finalized what their rows
        record: the row's contribution under the minute of its start, none under the round's minutes.

        A round writes the contributions (step 2) before the trace rows (step 3). Stopped in between, it
        leaves a trace active whose new contribution is stored but not recorded (or, for a re-opened
        trace, recorded as the previous one, whose row under an earlier minute the round deleted); its
        next finalization subtracts what the row records, so the stored contributions must say the same
        before the pending minutes are summed again. Else the trace counts twice (a node killed
        mid-stream: 1,148 traces in the rollups of 1,000).

        The rows' finalization columns are written again, as read: a trace row the round sent may have
        failed here and still be applied on a replica these reads did not ask, to reach the others later
        (a write that timed out, a node killed and started again). Older than this write, it loses: else
        it would make the trace finalized with a contribution taken out of the rollups here, for good."""
        cql = self.cql
        minutes: dict[str, set[int]] = {}
        for trace_id, minute in moves:
            minutes.setdefault(trace_id, set()).add(minute)
        ids = sorted(minutes)
        found = await cql.many(RECORDED, [(cql.ns, t) for t in ids])
        groups: dict[int, list[tuple[str, Sequence[Any]]]] = {}
        rows: list[list[tuple[str, Sequence[Any]]]] = []
        for trace_id, stored in zip(ids, found, strict=True):
            tid, *finalization = stored[0] if stored else (None,) * (1 + len(FINALIZATION))
            start_us, body = finalization[:2]
            recorded = start_us // MINUTE_US if start_us is not None and body is not None else None
            if recorded is not None:
                put = (cql.ns, shard, recorded, trace_id, body, cql.ttl_s)
                groups.setdefault(recorded, []).append((PUT_CONTRIB, put))
            for minute in minutes[trace_id] - {recorded}:
                groups.setdefault(minute, []).append((DELETE_CONTRIB, (cql.ns, shard, minute, trace_id)))
            if tid is not None:
                rows.append([(REWRITE, (cql.ttl_s, *finalization, cql.ns, trace_id))])
        await cql.partitions([*groups.values(), *rows])

    async def begin(self, rounds: Mapping[str, tuple[RollupDelta, Sequence[tuple[str, int]]]]) -> dict[str, int]:
        """Record a round of each shard (shard -> (delta, moves)) before it writes anything: the minutes the
        delta touches and the (trace, new minute) moves of the contributions it writes. Returns each
        record's token."""
        cql = self.cql
        self._begun_us = time.time_ns() // 1000
        tokens = {shard: self._token() for shard in rounds}
        await cql.partitions(
            [
                (
                    BEGIN,
                    (
                        cql.ns,
                        shard,
                        tokens[shard],
                        touched_minutes(delta),
                        _moves.encode(list(moves)),  # never null: its WRITETIME dates the record
                        cql.ttl_s,
                    ),
                )
            ]
            for shard, (delta, moves) in rounds.items()
        )
        return tokens

    async def end(self, tokens: Mapping[str, int]) -> None:
        """The rounds of :meth:`begin` are written: their records go."""
        cql = self.cql
        await cql.partitions([(END, (cql.ns, shard, token))] for shard, token in tokens.items())
        self._begun_us = None

    def fence(self) -> None:
        """Raise :class:`RoundOverrun` when the round under way began :data:`ROUND_FENCE_US` ago or more."""
        if self._begun_us is not None and time.time_ns() // 1000 - self._begun_us >= ROUND_FENCE_US:
            raise RoundOverrun(f"a rollup round ran for more than {ROUND_FENCE_US // 1_000_000} s; it stops here")

    # -- slices ---------------------------------------------------------------------------------------

    async def apply(self, shard: str, delta: RollupDelta, *, refresh: Collection[int] = ()) -> None:
        """Bring every slice of ``shard`` that ``delta`` touches up to date (the contributions are written
        already); ``refresh``: minutes whose slices (and their hours, and all time) are recomputed whatever
        this process holds."""
        changes: dict[int, dict[tuple[Series, int], dict[Key, list[int]]]] = {MINUTE: {}, HOUR: {}, TOTAL: {}}
        forced: set[tuple[str, int, int]] = set()
        for spec in SERIES:
            for grain, bucket, key, values in spec.rows(delta):
                changes[grain].setdefault((spec, bucket), {})[key] = values
            for minute in refresh:
                for grain, bucket in ((MINUTE, minute), (HOUR, minute // 60), (TOTAL, 0)):
                    changes[grain].setdefault((spec, bucket), {})
                    forced.add((spec.name, grain, bucket))
        minute_sums: dict[int, asyncio.Task[RollupDelta]] = {}
        for grain in (MINUTE, HOUR, TOTAL):
            self.fence()
            slices = list(changes[grain].items())

            async def update(index: int, grain: int = grain, slices: list[Any] = slices) -> None:
                (spec, bucket), change = slices[index]
                force = (spec.name, grain, bucket) in forced
                await self._update(spec, grain, bucket, shard, change, force=force, minute_sums=minute_sums)

            await self.cql.each(len(slices), update)
            if grain == HOUR:
                new_hours = sorted({bucket for (_, bucket) in changes[HOUR]}.difference(self._hours))
                if new_hours:
                    await self.cql.partitions([[(LIST_HOUR, (self.cql.ns, h)) for h in new_hours]])
                    self._hours.update(new_hours)

    async def _update(
        self,
        spec: Series,
        grain: int,
        bucket: int,
        shard: str,
        change: dict[Key, list[int]],
        *,
        force: bool,
        minute_sums: dict[int, asyncio.Task[RollupDelta]],
    ) -> None:
        cql = self.cql
        width = len(spec.keys)
        slice_key = (spec.name, grain, bucket, shard)
        stored = {tuple(r[:width]): r[width] for r in await cql.rows(spec.stamps_cql, (cql.ns, grain, bucket, shard))}
        mine = self._memory.pop(slice_key, None)  # nothing is trusted while the slice is being written
        content: dict[Key, list[int]]
        if not force and mine is not None and {k: t for k, (_, t) in mine.items()} == stored:
            content = {k: list(v) for k, (v, _) in mine.items()}
            for key, values in change.items():
                base = content.get(key)
                content[key] = values if base is None else [a + b for a, b in zip(base, values, strict=True)]
            touched = set(change)
        else:
            content = await self._recompute(spec, grain, bucket, shard, minute_sums)
            touched = set(content) | set(stored)
        token = self._token()
        statements: list[tuple[str, Sequence[Any]]] = []
        kept: Content = {}
        for key in touched:
            written = content.get(key)
            if written is not None and written[spec.live] > 0:
                statements.append((spec.insert_cql, (cql.ns, grain, bucket, shard, *key, *written, token, cql.ttl_s)))
                kept[key] = (written, token)
            elif key in stored:
                statements.append((spec.delete_cql, (cql.ns, grain, bucket, shard, *key)))
        for key, kept_values in content.items():
            if key not in touched and kept_values[spec.live] > 0:
                kept[key] = (kept_values, stored[key])
        await cql.partitions([statements])
        self._memory[slice_key] = kept
        while len(self._memory) > self.max_slices:
            self._memory.popitem(last=False)

    async def _recompute(
        self, spec: Series, grain: int, bucket: int, shard: str, minute_sums: dict[int, asyncio.Task[RollupDelta]]
    ) -> dict[Key, list[int]]:
        """The slice's values from the level below."""
        cql = self.cql
        if grain == MINUTE:
            task = minute_sums.get(bucket)
            if task is None:
                task = minute_sums[bucket] = asyncio.ensure_future(self._minute_sum(shard, bucket))
            delta = await task
            return {key: values for g, b, key, values in spec.rows(delta) if g == MINUTE and b == bucket}
        if grain == HOUR:
            below = [(MINUTE, m) for m in range(bucket * 60, bucket * 60 + 60)]
        else:
            hours = {row[0] for row in await cql.rows(HOURS, (cql.ns,))} | self._hours
            below = [(HOUR, h) for h in sorted(hours)]
        results = await cql.many(spec.values_cql, [(cql.ns, g, b, shard) for g, b in below])
        return sum_rows((row for rows in results for row in rows), len(spec.keys))

    async def _minute_sum(self, shard: str, minute: int) -> RollupDelta:
        delta = RollupDelta()
        for (body,) in await self.cql.rows(CONTRIBS, (self.cql.ns, shard, minute)):
            delta.add(decode_contribution(body), +1)
        return delta
