"""The write side of the SQL backends, written once: a batch, a finalize round, a purge chunk, each inside
the caller's transaction, through the backend's :class:`~.driver.SqlDriver`. The planning is
:mod:`shared.store.writing` and :mod:`shared.store.finalizing`; what is written where is the driver's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, cast

import msgspec

from shared.sampling import Sampler
from shared.store.cache import TraceCache
from shared.store.chunks import StoredStates, TraceState
from shared.store.encoding import Dictionaries
from shared.store.finalizing import FinalizePlan, FinalizeRow, derived_share, encode_critical, plan_finalize
from shared.store.rollups import (
    Contribution,
    RollupDelta,
    contribution_msgpack,
    contribution_of_msgpack,
    decode_contribution,
)
from shared.store.sql import dicts
from shared.store.sql.driver import EndpointIndexRow, EndpointKey, PurgeCandidate, SqlDriver
from shared.store.tags import tag_hash
from shared.store.writing import WriteBatch, WritePlan, plan_write


class Written(msgspec.Struct, kw_only=True, gc=False):
    """A written batch: its plan and what the cache takes once the transaction committed."""

    plan: WritePlan
    tids: dict[str, int]
    """Every trace of the batch that has a row, to its tid."""
    states: dict[str, TraceState]
    """Every state taken from the cache or built, current once the transaction commits."""
    samples: list[bytes] | None = None
    """Chunk payloads to train the writer's zstd dictionary from, once it wrote enough without one."""

    def remember(self, cache: TraceCache) -> None:
        """Put the states into the cache (call only after the commit: they are the stored ones then)."""
        for trace_id, state in self.states.items():
            cache.put(trace_id, self.tids[trace_id], state)


class Planned(msgspec.Struct, kw_only=True, gc=False):
    """A finalize round's plan and the rows and states it was made from."""

    rows: list[FinalizeRow]
    states: Mapping[str, TraceState]
    plan: FinalizePlan


class Finalized(msgspec.Struct, kw_only=True, gc=False):
    """A written finalize round: its plan and what the cache takes once the transaction committed."""

    plan: FinalizePlan
    tids: dict[str, int]
    states: Mapping[str, TraceState]

    def remember(self, cache: TraceCache) -> None:
        """Put the states of the traces still stored into the cache (after the commit)."""
        dropped = {trace_id for trace_id, _, _ in self.plan.dropped}
        for trace_id, state in self.states.items():
            if trace_id not in dropped:
                cache.put(trace_id, self.tids[trace_id], state)


async def current_states(
    d: SqlDriver, cache: TraceCache | None, rows: Iterable[tuple[str, int, int]]
) -> dict[str, TraceState]:
    """The current state of each (trace_id, tid, chunks): the cache's copy when it is current (taken out
    of the cache: the caller puts it back after commit), else read back from the chunks."""
    states: dict[str, TraceState] = {}
    missing: dict[str, int] = {}
    for trace_id, tid, chunks in rows:
        state = cache.take(trace_id, tid, chunks) if cache is not None else None
        if state is None:
            missing[trace_id] = tid
        else:
            states[trace_id] = state
    if missing:
        states.update(await read_states(d, missing))
    return states


async def read_states(d: SqlDriver, tids: Mapping[str, int]) -> dict[str, TraceState]:
    """The stored state of each trace (trace_id -> tid), from its chunks in order."""
    chunks = await dicts.read_chunks(d, tids)
    return {trace_id: TraceState.from_chunks(rows, d.dicts) for trace_id, rows in chunks.items()}


async def write_batch(d: SqlDriver, cache: TraceCache | None, batch: WriteBatch) -> Written:
    """Write one batch (see :meth:`shared.store.base.TraceWriter.write_batch`)."""
    await dicts.use_newest(d)
    rows = await d.read_rows(batch.events)
    live = [(r.trace_id, r.tid, r.chunks) for r in rows.values() if r.state != "dropped"]
    states = await current_states(d, cache, live)
    plan = plan_write(batch, rows, states, d.dicts)
    tids = {trace_id: row.tid for trace_id, row in rows.items()}
    if plan.new:
        tids.update(await d.insert_traces(plan.new, batch.now_us))
    if plan.updates:
        await d.update_traces(plan.updates, batch.now_us)
    if plan.chunks:
        await d.insert_chunks(plan.chunks, tids)
    if plan.opened:
        await d.open_spans([(s, tids[t]) for t, s in plan.opened])
    if plan.closed:
        await d.close_spans([(s, tids[t]) for t, s in plan.closed])
    states.update(plan.states)
    return Written(plan=plan, tids=tids, states=states, samples=d.dicts.samples())


def earlier_states(
    d: SqlDriver, chunks: Mapping[str, Sequence[tuple[bool, bytes]]], finals: Mapping[str, int]
) -> StoredStates:
    """Traces' states as of their last finalization (trace_id -> the chunks it merged), from their
    ``chunks`` (read with :func:`.dicts.read_chunks`): a prefix, chunks being only ever appended."""
    return StoredStates({trace_id: chunks[trace_id][:n] for trace_id, n in finals.items()}, d.dicts)


async def plan_round(
    d: SqlDriver, cache: TraceCache | None, trace_ids: Sequence[str], *, sampler: Sampler | None
) -> Planned:
    """Read the active rows among ``trace_ids`` and their states, and plan their finalization. A trace
    finalized before without a stored share gets it derived from its chunks as of then."""
    rows = await d.finalize_rows(trace_ids)
    finals = {r.trace_id: r.final_chunks for r in rows if r.final_chunks is not None and r.contribution is None}
    states: Mapping[str, TraceState]
    if cache is None:  # a finalizer process: each trace's state built as its turn comes (see StoredStates)
        chunks = await dicts.read_chunks(d, {r.trace_id: r.tid for r in rows})
        states = StoredStates(chunks, d.dicts)
    else:
        states = await current_states(d, cache, [(r.trace_id, r.tid, r.chunks) for r in rows])
        wanted = {r.trace_id: r.tid for r in rows if r.trace_id in finals}
        chunks = await dicts.read_chunks(d, wanted) if finals else {}
    earlier = earlier_states(d, chunks, finals)
    plan = plan_finalize(rows, states, sampler=sampler, earlier=earlier, store_kept=False)
    return Planned(rows=rows, states=states, plan=plan)


async def finalize(
    d: SqlDriver,
    cache: TraceCache | None,
    trace_ids: Sequence[str],
    *,
    now_us: int,
    sampler: Sampler | None,
    planned: Planned | None = None,
) -> Finalized:
    """Finalize the active traces among ``trace_ids``. ``planned``: a plan made earlier, outside this
    transaction; it is written only if the rows it was made from are still the rows (same incarnation,
    chunk count and previous share, hence the same states: chunks are only ever appended), else the round
    is planned again here. The plan is a function of the rows and states alone (the sampler decides by
    trace id), so either way the same rows are written."""
    if planned is None or await d.finalize_rows(trace_ids) != planned.rows:
        planned = await plan_round(d, cache, trace_ids, sampler=sampler)
    plan = planned.plan
    tids = {r.trace_id: r.tid for r in planned.rows}
    if plan.waiting:
        await d.mark_waiting([tids[t] for t in plan.waiting])
    if plan.summaries:
        await d.store_summaries(plan.summaries, now_us)
    await remove_index_rows(d, [(tid, share) for _, tid, share in plan.index_removed])
    await add_index_rows(d, [(tid, share) for _, tid, share in plan.index_added])
    if plan.dropped:
        await d.delete_traces_data([tid for _, tid, _ in plan.dropped])
    if plan.paths:
        await d.insert_paths(plan.paths)
    await d.apply_rollups(plan.delta)
    return Finalized(plan=plan, tids=tids, states=planned.states)


def op_index_values(shares: Sequence[tuple[int, Contribution]]) -> list[Any]:
    """The ``op_index`` rows of these (tid, contribution) traces, flat (:data:`~.driver.OP_WIDTH` per row):
    one per distinct hash of the trace's (service, operation) pairs (two pairs of one hash, which 2^-64
    makes theoretical, would share a row with the widest bounds)."""
    values: list[Any] = []
    for tid, share in shares:
        start = share.start_us
        rows: dict[int, tuple[int, int]] = {}
        for s, o, lo, hi in share.index_ops():
            op = tag_hash(s, o)
            if op in rows:
                lo, hi = min(lo, rows[op][0]), max(hi, rows[op][1])
            rows[op] = (lo, hi)
        for op, (lo, hi) in rows.items():
            values += (op, start, tid, lo, hi)
    return values


def tag_index_values(shares: Sequence[tuple[int, Contribution]]) -> list[Any]:
    """The ``tag_index`` rows of these traces, flat (:data:`~.driver.TAG_WIDTH` per row): one per distinct
    hash of the trace's distinct (key, value) pairs."""
    values: list[Any] = []
    for tid, share in shares:
        start = share.start_us
        for tag in {tag_hash(k, v) for k, v in share.tags}:
            values += (tag, start, tid)
    return values


def endpoint_index_rows(shares: Sequence[tuple[int, Contribution]]) -> list[EndpointIndexRow]:
    return [(*s.endpoint, s.duration_us, t, s.start_us, encode_critical(s)) for t, s in shares if any(s.endpoint)]


async def add_index_rows(d: SqlDriver, shares: Sequence[tuple[int, Contribution]]) -> None:
    """The search index rows of these (tid, contribution) traces in."""
    if shares:
        await d.add_index_rows(op_index_values(shares), tag_index_values(shares), endpoint_index_rows(shares))


def endpoint_keys(shares: Sequence[tuple[int, Contribution]]) -> list[EndpointKey]:
    return [(*s.endpoint, s.duration_us, t) for t, s in shares if any(s.endpoint)]


async def remove_index_rows(d: SqlDriver, shares: Sequence[tuple[int, Contribution]]) -> None:
    """The search index rows of these (tid, previous contribution) traces out."""
    if shares:
        await d.remove_index_rows(op_index_values(shares), tag_index_values(shares), endpoint_keys(shares))


SWEEP_SHARE: Final = 0.25
"""A store sweeps the search indexes at its first purge, then at the first purge once this share of the
retention (the age of the purge's bound) passed since its last sweep: a pass reads the whole index, live
rows and those of the traces purged since, so sweeping after every purge round read each purged row's
worth of index many times over (11 times with a 5-minute retention purged every 30 s, thousands with
days). With a quarter, a sweep reads about five index rows per row it deletes, the rows of purged traces
are at most a quarter of the live ones, and none outlives its trace by more than a quarter of the
retention plus one retention check interval (a search never sees them: it joins ``traces``)."""
SWEEP_SLICES: Final = 16
"""Transactions a sweep of the search indexes takes, each over a sixteenth of the hash space."""


def sweep_slices() -> list[tuple[int, int | None]]:
    """(lowest hash, first hash past it or ``None`` for the end) of each of :data:`SWEEP_SLICES` equal
    slices of the signed 64-bit hash space."""
    step = (1 << 64) // SWEEP_SLICES
    first = -(1 << 63)
    return [(first + k * step, None if k == SWEEP_SLICES - 1 else first + (k + 1) * step) for k in range(SWEEP_SLICES)]


UNPINNED: Final = " AND tid NOT IN (SELECT t.tid FROM archive_pins p JOIN traces t ON t.trace_id = p.trace_id)"
"""Keeps the index rows of pinned traces, which no purge deletes."""


async def sweep_index(d: SqlDriver, before_us: int, low: int, high: int | None) -> None:
    """Delete the ``op_index`` and ``tag_index`` rows of one hash slice whose trace started before
    ``before_us``: what purges up to ``before_us`` and archived blocks left (pinned traces' rows stay). One
    pass over the slice in key order, where deleting each purged trace's rows by key cost a B-tree descent per
    row (a realistic trace has ~145)."""
    for table, key in (("op_index", "op"), ("tag_index", "tag")):
        bound = "" if high is None else f" AND {key} < ?"
        params = [low, *([] if high is None else [high]), before_us]
        await d.execute(
            d.dialect.sql(f"DELETE FROM {table} WHERE {key} >= ?{bound} AND start_us < ?{UNPINNED}"), params
        )


PurgeShares = Mapping[PurgeCandidate, bytes]
"""The derived share of each purge candidate without a stored one, as msgpack
(:func:`~shared.store.rollups.contribution_msgpack`), keyed by its whole row: the share is a function of
the row (tid never reused, chunks only ever appended, ``final_chunks`` of them merged). Encoded because a
plan crosses from the planner process: a few hundred bytes a trace instead of a :class:`Contribution`'s
dozens of objects, which made each purge round a passing peak of tens of MiB in a worker; decoded only
for a round whose rows changed since (:func:`_replanned`)."""


class PurgePlan(msgspec.Struct, kw_only=True, gc=False):
    """A purge round as planned before its write transaction (:func:`plan_purge`)."""

    rows: list[PurgeCandidate]
    shares: PurgeShares
    delta: RollupDelta
    """What purging exactly ``rows`` takes out of the rollups."""
    endpoints: list[EndpointKey]
    """The endpoint index keys of those of ``rows`` with search index rows."""


class Purged(msgspec.Struct, kw_only=True, gc=False):
    """A purge transaction's outcome."""

    ids: list[str]
    """The traces deleted."""
    more: bool
    """Whether candidates may be left: the limit was reached, or some were left for the next round."""


def derives(row: PurgeCandidate) -> bool:
    """Whether a candidate's share is derived from its chunks: finalized, with no stored share."""
    return row[2] is None and row[3] is not None


async def purge_reads(
    d: SqlDriver, before_us: int, limit: int
) -> tuple[list[PurgeCandidate], dict[str, list[tuple[bool, bytes]]], dict[int, bytes]]:
    """A purge round's candidates as of a read transaction, the chunks of those whose share is derived,
    and the bodies of the dictionaries they name, for :func:`plan_purge_apart` on another thread or in
    another process."""
    rows = await d.purge_candidates(before_us, limit, lock=False)
    chunks = await derived_chunks(d, rows)
    return rows, chunks, d.dicts.bodies()


async def derived_chunks(d: SqlDriver, rows: Sequence[PurgeCandidate]) -> dict[str, list[tuple[bool, bytes]]]:
    """The chunks of the candidates whose share is derived (their dictionaries loaded)."""
    wanted = {r[0]: r[1] for r in rows if derives(r)}
    return await dicts.read_chunks(d, wanted) if wanted else {}


def purge_shares(
    rows: Sequence[PurgeCandidate], chunks: Mapping[str, Sequence[tuple[bool, bytes]]], dicts: Dictionaries
) -> dict[PurgeCandidate, Contribution]:
    """The derived shares of these candidates, from their states as of their last finalization (the first
    ``final_chunks`` of their ``chunks``), one trace's objects at a time, without the tag pass: a purge
    takes the share out of the rollups and the endpoint index, neither of which reads tags."""
    shares: dict[PurgeCandidate, Contribution] = {}
    for row in rows:
        if derives(row):
            final_chunks = cast(int, row[3])
            state = TraceState.from_chunks(chunks[row[0]][:final_chunks], dicts)
            shares[row] = derived_share(row[0], state, tags=False)
    return shares


def purge_correction(
    rows: Sequence[PurgeCandidate], shares: Mapping[PurgeCandidate, Contribution]
) -> tuple[RollupDelta, list[EndpointKey]]:
    """What purging these traces takes back: their shares out of the rollups, and the endpoint index keys
    of those with search index rows. ``shares``: the derived shares (:func:`purge_shares`), the stored ones
    decoded."""
    delta = RollupDelta()
    indexed: list[tuple[int, Contribution]] = []
    for row in rows:
        _, tid, blob, final_chunks, was_indexed = row
        share = decode_contribution(blob) if blob is not None else shares[row] if final_chunks is not None else None
        if share is not None:
            delta.add(share, -1)
            if was_indexed:
                indexed.append((tid, share))
    return delta, endpoint_keys(indexed)


def plan_purge(
    rows: list[PurgeCandidate], chunks: Mapping[str, Sequence[tuple[bool, bytes]]], dicts: Dictionaries
) -> PurgePlan:
    """A purge round of these candidates (read by :func:`purge_reads`), planned before its transaction."""
    shares = purge_shares(rows, chunks, dicts)
    delta, endpoints = purge_correction(rows, shares)
    encoded = {row: contribution_msgpack(share) for row, share in shares.items()}
    return PurgePlan(rows=rows, shares=encoded, delta=delta, endpoints=endpoints)


PLAN_APART_MIN: Final = 64
"""A purge round with at least this many shares to derive is planned in the store's planner process
(:func:`plan_purge_apart`), one with fewer on a thread: deriving a share decodes and analyzes the trace's
chunks (about as much work as its finalization), which on a thread holds the interpreter lock that the
process's other work (a worker's consume loop) waits on."""


def plan_purge_apart(
    rows: list[PurgeCandidate], chunks: Mapping[str, Sequence[tuple[bool, bytes]]], bodies: Mapping[int, bytes]
) -> PurgePlan:
    """:func:`plan_purge` with the dictionaries given by their bodies (:func:`purge_reads`): what a thread
    or another process runs, with decompressors of its own."""
    return plan_purge(rows, chunks, Dictionaries.of(bodies))


async def purge(d: SqlDriver, before_us: int, limit: int, planned: PurgePlan | None = None) -> Purged:
    """Delete up to ``limit`` finalized or dropped traces that started before ``before_us`` (rollups and
    endpoint index corrected; traces another transaction holds are skipped). Their ``op_index`` and
    ``tag_index`` rows stay until :func:`sweep_index`: a search joins ``traces`` and never sees them.

    ``planned``: the round planned before this transaction (:func:`purge_reads`, :func:`plan_purge`): its
    correction is written as is when the candidates are still its rows, else its shares are used for the
    candidates whose row is unchanged since. A candidate whose share is derived and whose row changed since
    (re-finalized, or new) is left for the next round while others go in this one, else its share is
    derived here."""
    rows = await d.purge_candidates(before_us, limit)
    more = len(rows) == limit
    if planned is not None and rows == planned.rows:
        delta, endpoints = planned.delta, planned.endpoints
    else:
        rows, more, delta, endpoints = await _replanned(d, rows, more, planned)
    if not rows:
        return Purged(ids=[], more=more)
    if endpoints:  # a tail read walks endpoint_traces alone: its rows go with their trace
        await d.remove_index_rows([], [], endpoints)
    tids = [r[1] for r in rows]
    await d.delete_traces_data(tids)
    await d.delete_traces(tids)
    await d.apply_rollups(delta)
    return Purged(ids=[r[0] for r in rows], more=more)


async def _replanned(
    d: SqlDriver, rows: list[PurgeCandidate], more: bool, planned: PurgePlan | None
) -> tuple[list[PurgeCandidate], bool, RollupDelta, list[EndpointKey]]:
    """The candidates that go in this round, whether some may be left, and their correction, when they
    are not the rows of the plan (:func:`purge`)."""
    planned_shares = planned.shares if planned is not None else {}
    shares = {r: contribution_of_msgpack(planned_shares[r]) for r in rows if derives(r) and r in planned_shares}
    stale = [r for r in rows if derives(r) and r not in shares]
    if stale and planned is not None and len(stale) < len(rows):
        rows, more = [r for r in rows if not derives(r) or r in shares], True
    elif stale:
        shares.update(purge_shares(stale, await derived_chunks(d, stale), d.dicts))
    return rows, more, *purge_correction(rows, shares)
