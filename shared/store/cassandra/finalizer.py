"""The owner's write side: finalization and the retention purge of a shard's traces.

Only a trace's owner (the process that holds its shard) finalizes it and writes its shard's rollup
slices, so finalization needs no lock: writers only add chunks, and a chunk the finalization did not
read re-opens the trace by itself (:mod:`.rows`; docs/adr/0002-owner-partition-finalizes.md). A round
(planned by the shared :func:`~shared.store.finalizing.plan_finalize`, per shard) writes, in this order:

1. its pending record (:meth:`~.aggregates.Aggregates.begin`);
2. the contributions under the shard (the rollups' truth), the previous ones moved away;
3. the trace rows (state, the chunk set used, summary, analysis), the search and retention index rows (the
   previous finalization's out), the active index rows out, the calling contexts' names;
4. the rollup slices (:meth:`~.aggregates.Aggregates.apply`); then the pending record goes.

A crash anywhere leaves the trace active (before 3) or its slices pending (before 4): the next owner
puts the stored contributions back to what the trace rows record, recomputes what was pending, and
finalizes the active traces again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from shared.analysis import TraceAnalysis
from shared.sampling import Sampler
from shared.store.cache import TraceCache
from shared.store.cassandra.aggregates import CONTRIB_OF, DELETE_CONTRIB, PUT_CONTRIB, Aggregates, RoundOverrun
from shared.store.cassandra.archive import pinned
from shared.store.cassandra.indexes import IndexRow, index_changes, retention_row, search_rows
from shared.store.cassandra.rows import StoredRow, fingerprint, read_chunks, read_rows
from shared.store.cassandra.schema import Cql
from shared.store.cassandra.writer import CLOSE, HourLists
from shared.store.chunks import TraceState
from shared.store.finalizing import FinalizePlan, FinalizeRow, Summary, plan_finalize
from shared.store.rollups import HOUR_US, MINUTE_US, Contribution, RollupDelta, decode_contribution

PREVIOUS: Final = "SELECT final_chunks, late_chunks, contribution FROM traces WHERE ns = ? AND trace_id = ? LIMIT 1"
SUMMARY: Final = (
    "UPDATE traces USING TTL ? SET state = ?, final_n = ?, final_fp = ?, final_chunks = ?, late_chunks = ?,"
    " contrib_minutes = ?, root_service = ?, root_operation = ?, start_us = ?, duration_us = ?, span_count = ?,"
    " error_count = ?, status = ?, complete = ?, services = ?, analysis = ?, contribution = ?,"
    " late_spans = ?, refinalizations = ?, finalized_at_us = ? WHERE ns = ? AND trace_id = ?"
)
WAITING: Final = (
    "UPDATE traces USING TTL ? SET state = 'waiting', final_n = ?, final_fp = ? WHERE ns = ? AND trace_id = ?"
)
DROP_CHUNKS: Final = "DELETE FROM traces WHERE ns = ? AND trace_id = ? AND seq >= 0"
NOT_ACTIVE: Final = "DELETE FROM idx_active USING TIMESTAMP ? WHERE ns = ? AND hour = ? AND trace_id = ?"
"""Timestamped after every chunk the finalization used, whose batches' inserts carry the chunks' timestamps
(see the writer's step 5)."""
PUT_PATH: Final = "INSERT INTO call_paths (ns, ctx, label, path) VALUES (?, ?, ?, ?) USING TTL ?"
PURGEABLE: Final = "SELECT shard, start_us, trace_id FROM by_start WHERE ns = ? AND hour = ?"
PURGEABLE_OF: Final = (
    "SELECT shard, start_us, trace_id FROM by_start WHERE ns = ? AND hour = ? AND shard = ? AND start_us >= ?"
    " AND start_us < ?"
)
START_HOURS: Final = "SELECT hour FROM index_hours WHERE ns = ? AND kind = 'start' AND hour <= ?"
DELETE_TRACE: Final = "DELETE FROM traces WHERE ns = ? AND trace_id = ?"
DELETE_RETENTION: Final = (
    "DELETE FROM by_start WHERE ns = ? AND hour = ? AND shard = ? AND start_us = ? AND trace_id = ?"
)
CLEAR_RETENTION: Final = "DELETE FROM by_start WHERE ns = ? AND hour = ? AND shard = ?"
PURGE_CHUNK: Final = 500
"""Traces purged per round."""

_msgpack: Final = msgspec.msgpack.Encoder()
Statements = list[tuple[str, Sequence[Any]]]


class Previous(msgspec.Struct, frozen=True, gc=False):
    """What a re-opened trace's previous finalization left: the chunk set it used, the chunks found late so
    far, its contribution."""

    final_chunks: frozenset[int]
    late_chunks: frozenset[int]
    contribution: bytes | None


class RoundResult(msgspec.Struct, kw_only=True, gc=False):
    """What a finalize round wrote, for the caller and the cache."""

    analyses: list[TraceAnalysis]
    first: list[Contribution]
    states: dict[str, tuple[int, TraceState]]
    """trace id -> (cache key, state) of the traces still stored (not dropped)."""


class RoundStates(msgspec.Struct, kw_only=True, gc=False):
    """Every active trace's current state and the exact chunk set it merges."""

    states: dict[str, TraceState]
    chunk_sets: dict[str, list[int]]
    late_sets: dict[str, list[int]]
    """The chunks of each chunk set that arrived after the trace's previous finalization."""
    written: dict[str, int]
    """The latest write timestamp of each chunk set."""


def _active_hours(row: StoredRow) -> set[int]:
    """The hours whose ``idx_active`` partition may hold the trace: its recorded one, and the neighbouring
    hour when it was first seen within a few seconds of an hour boundary (two writers that created it at
    once may have put it on either side)."""
    first_seen = row.first_seen_us or 0
    hour = row.active_at if row.active_at is not None else first_seen // HOUR_US
    hours = {hour}
    into = first_seen - first_seen // HOUR_US * HOUR_US
    if into < 10_000_000:
        hours.add(first_seen // HOUR_US - 1)
    elif HOUR_US - into < 10_000_000:
        hours.add(first_seen // HOUR_US + 1)
    return hours


class Owner:
    """Finalization and purge for the shards this process owns; one round at a time (the store's lock)."""

    def __init__(self, cql: Cql, aggregates: Aggregates, hours: HourLists) -> None:
        self.cql = cql
        self.aggregates = aggregates
        self.hours = hours
        self._paths: set[int] = set()
        self._purged_to: dict[str, int] = {}
        """Per shard, the start time below which this process purged everything (its next purge reads on
        from there instead of through the deleted rows)."""

    async def _previous(self, rows: Iterable[StoredRow]) -> dict[str, Previous]:
        ids = [r.trace_id for r in rows]
        results = await self.cql.many(PREVIOUS, [(self.cql.ns, t) for t in ids])
        out: dict[str, Previous] = {}
        for trace_id, found in zip(ids, results, strict=True):
            final, late, blob = found[0] if found else (None, None, None)
            out[trace_id] = Previous(frozenset(final or ()), frozenset(late or ()), blob)
        return out

    async def finalize(
        self,
        cache: TraceCache | None,
        trace_ids: Sequence[str],
        *,
        now_us: int,
        sampler: Sampler | None,
        scanned: Mapping[str, StoredRow],
    ) -> RoundResult:
        """Finalize the active traces among ``trace_ids``. ``scanned``: rows the due scan read moments ago,
        used unless this process wrote the trace since (a row older than another process's write is
        harmless: the chunk it does not list is not in the finalized set, so it re-opens the trace)."""
        ids = list(dict.fromkeys(trace_ids))
        rows = await self._rows(cache, ids, scanned)
        active = [rows[t] for t in ids if rows[t].exists and rows[t].state == "active"]
        if not active:
            return RoundResult(analyses=[], first=[], states={})
        previous = await self._previous(r for r in active if r.finalized_at_us is not None)
        current = await self._states(cache, active, previous)
        by_shard: dict[str, list[StoredRow]] = {}
        for row in active:
            by_shard.setdefault(row.shard or "", []).append(row)
        plans = {
            shard: plan_finalize(
                [
                    FinalizeRow(
                        trace_id=r.trace_id,
                        tid=r.tid or 0,
                        chunks=len(current.chunk_sets[r.trace_id]),
                        contribution=previous[r.trace_id].contribution if r.trace_id in previous else None,
                        indexed=r.finalized_at_us is not None,
                    )
                    for r in group
                ],
                current.states,
                sampler=sampler,
            )
            for shard, group in by_shard.items()
        }
        await self._write_round(plans, rows, current, now_us)
        return _result(ids, plans, rows, current)

    async def _rows(
        self, cache: TraceCache | None, ids: Sequence[str], scanned: Mapping[str, StoredRow]
    ) -> dict[str, StoredRow]:
        """The rows of ``ids``: the scanned ones this process did not write since, the others read."""
        rows: dict[str, StoredRow] = {}
        for trace_id in ids:
            row = scanned.get(trace_id)
            ahead = cache.version(trace_id) if cache is not None else None
            if row is not None and (ahead is None or ahead == len(row.chunk_ids)):
                rows[trace_id] = row
        rows.update(await read_rows(self.cql, [t for t in ids if t not in rows]))
        return rows

    async def _states(
        self, cache: TraceCache | None, active: Sequence[StoredRow], previous: Mapping[str, Previous]
    ) -> RoundStates:
        """Every active trace's current state and the exact chunk set it merges: the cached copy when it is
        exactly the stored chunk set (never for a re-finalization, which counts late chunks), else read."""
        out = RoundStates(states={}, chunk_sets={}, late_sets={}, written={})
        missing: list[StoredRow] = []
        for row in active:
            cached = None
            if cache is not None and row.trace_id not in previous:
                cached = cache.take(row.trace_id, row.cache_key, len(row.chunk_ids))
            if cached is None:
                missing.append(row)
            else:
                out.states[row.trace_id] = cached
                out.chunk_sets[row.trace_id] = list(row.chunk_ids)
                out.late_sets[row.trace_id] = []
                out.written[row.trace_id] = row.written_us
        chunks = await read_chunks(self.cql, [r.trace_id for r in missing])
        for row in missing:
            stored = chunks[row.trace_id]
            before = previous.get(row.trace_id)
            flags = stored.flags(
                late_ids=before.late_chunks if before else frozenset(),
                previous=before.final_chunks if before else None,
            )
            out.states[row.trace_id] = stored.state(flags)
            out.chunk_sets[row.trace_id] = stored.ids
            out.written[row.trace_id] = stored.written_us
            out.late_sets[row.trace_id] = [cid for cid, late in zip(stored.ids, flags, strict=True) if late]
        return out

    async def _write_round(
        self, plans: Mapping[str, FinalizePlan], rows: Mapping[str, StoredRow], current: RoundStates, now_us: int
    ) -> None:
        """Steps 1 to 4 of a round (see the module docstring)."""
        cql = self.cql
        busy = await self.aggregates.adopt(plans)
        if busy:
            raise RoundOverrun(f"shards {sorted(busy)}: another process's round may still be under way")
        try:
            tokens = await self.aggregates.begin(
                {
                    shard: (plan.delta, [(s.trace_id, s.analysis.start_us // MINUTE_US) for s in plan.summaries])
                    for shard, plan in plans.items()
                }
            )
            self.aggregates.fence()
            await cql.partitions(self._contributions(plans, rows).values())
            groups: dict[tuple[Any, ...], Statements] = {}
            for shard, plan in plans.items():
                self._trace_rows(groups, shard, plan, rows, current, now_us)
            self.aggregates.fence()
            await cql.partitions(groups.values())
            await _together([self.aggregates.apply(shard, plan.delta) for shard, plan in plans.items()])
            await self.aggregates.end(tokens)
        except BaseException:
            for shard in plans:
                self.aggregates.invalidate(shard)
            raise
        self._paths.update(ctx for plan in plans.values() for ctx in plan.paths)

    def _contributions(
        self, plans: Mapping[str, FinalizePlan], rows: Mapping[str, StoredRow]
    ) -> dict[tuple[Any, ...], Statements]:
        """Each summary's contribution under its shard and start minute; those of earlier minutes out."""
        cql = self.cql
        groups: dict[tuple[Any, ...], Statements] = {}
        for shard, plan in plans.items():
            for s in plan.summaries:
                minute = s.analysis.start_us // MINUTE_US
                groups.setdefault((shard, minute), []).append(
                    (PUT_CONTRIB, (cql.ns, shard, minute, s.trace_id, s.contribution_blob, cql.ttl_s))
                )
                row = rows[s.trace_id]
                old = set(row.contrib_minutes)
                if row.start_us is not None and row.finalized_at_us is not None:
                    old.add(row.start_us // MINUTE_US)
                for gone in old - {minute}:
                    groups.setdefault((shard, gone), []).append((DELETE_CONTRIB, (cql.ns, shard, gone, s.trace_id)))
        return groups

    def _trace_rows(
        self,
        groups: dict[tuple[Any, ...], Statements],
        shard: str,
        plan: FinalizePlan,
        rows: Mapping[str, StoredRow],
        current: RoundStates,
        now_us: int,
    ) -> None:
        """Step 3 of a round, into ``groups`` (statements per partition)."""
        cql = self.cql
        ns = cql.ns
        previous = {t: share for t, _, share in plan.index_removed}
        for s in plan.summaries:
            row = rows[s.trace_id]
            summary = _summary_values(cql, s, row, current, now_us)
            groups.setdefault(("traces", s.trace_id), []).append((SUMMARY, summary))
            for partition, statements in _index_changes(cql, shard, s, row, previous.get(s.trace_id)).items():
                groups.setdefault(partition, []).extend(statements)
        for trace_id in plan.waiting:
            used = current.chunk_sets[trace_id]
            groups.setdefault(("traces", trace_id), []).append(
                (WAITING, (cql.ttl_s, len(used), fingerprint(used), ns, trace_id))
            )
        for trace_id, _, open_ids in plan.dropped:
            groups.setdefault(("traces", trace_id), []).append((DROP_CHUNKS, (ns, trace_id)))
            for span_id in open_ids:
                groups.setdefault(("open", span_id), []).append((CLOSE, (ns, span_id, trace_id)))
        for trace_id in [*(s.trace_id for s in plan.summaries), *plan.waiting]:
            written = current.written[trace_id]
            stamp = written + 1 if written else now_us  # after the inserts of the chunks used, whatever the clocks
            for hour in _active_hours(rows[trace_id]):
                groups.setdefault(("idx_active", hour), []).append((NOT_ACTIVE, (stamp, ns, hour, trace_id)))
        for ctx, path in plan.paths.items():
            if ctx not in self._paths:
                groups.setdefault(("call_paths",), []).append(
                    (PUT_PATH, (ns, ctx, path[-1], _msgpack.encode(path), cql.ttl_s))
                )
        start_hours = {s.analysis.start_us // HOUR_US for s in plan.summaries}
        listing = self.hours.rows("start", start_hours)
        if listing:
            groups.setdefault(("index_hours",), []).extend(listing)
            self.hours.done("start", start_hours)

    # -- retention ------------------------------------------------------------------------------------

    async def purge(
        self, before_us: int, shards: Collection[str] | None, on_purged: Callable[[Sequence[str]], None]
    ) -> int:
        """Delete the finalized and dropped traces of ``shards`` (``None``: every shard) that started
        before ``before_us`` (but the pinned finalized ones), their contributions taken out of the shards'
        rollups. Search index rows are left to their TTL: every search checks its candidates against their
        trace rows."""
        cql = self.cql
        ns = cql.ns
        last_hour = (before_us - 1) // HOUR_US
        hours = [r[0] for r in await cql.rows(START_HOURS, (ns, last_hour))]
        found: list[tuple[str, int, str, int]] = []  # shard, start, trace id, hour
        if shards is None:
            results = await cql.many(PURGEABLE, [(ns, h) for h in hours])
            for hour, part in zip(hours, results, strict=True):
                found.extend((sh, st, t, hour) for sh, st, t in part if st < before_us)
        else:
            asks = [
                (ns, h, sh, self._purged_to.get(sh, 0), before_us)
                for sh in sorted(shards)
                for h in hours
                if (h + 1) * HOUR_US > self._purged_to.get(sh, 0)
            ]
            results = await cql.many(PURGEABLE_OF, asks)
            found.extend((sh, st, t, ask[1]) for ask, part in zip(asks, results, strict=True) for sh, st, t in part)
        by_shard: dict[str, list[tuple[int, str, int]]] = {}
        for shard, start, trace_id, hour in found:
            by_shard.setdefault(shard, []).append((start, trace_id, hour))
        kept = await pinned(cql) if by_shard else set()
        total = 0
        for shard, entries in sorted(by_shard.items()):
            low = before_us
            for i in range(0, len(entries), PURGE_CHUNK):
                done, skipped = await self._purge_round(shard, entries[i : i + PURGE_CHUNK], before_us, kept)
                total += len(done)
                on_purged(done)
                if skipped is not None:
                    low = min(low, skipped)
            if shards is not None:
                self._purged_to[shard] = max(self._purged_to.get(shard, 0), low)
            whole = [h for h in {hour for _, _, hour in entries} if (h + 1) * HOUR_US <= low]
            await cql.partitions([[(CLEAR_RETENTION, (ns, h, shard))] for h in whole])
        return total

    async def _purge_round(
        self, shard: str, entries: Sequence[tuple[int, str, int]], before_us: int, pins: Collection[str]
    ) -> tuple[list[str], int | None]:
        """Purge one chunk of a shard's candidates; returns the purged ids and the earliest start of a
        candidate left alone because it is active again (purged once finalized) or a pinned finalized trace
        (its retention row stays: an archive's due scan finds the trace by it)."""
        cql = self.cql
        ns = cql.ns
        rows = await read_rows(cql, [t for _, t, _ in entries])

        def kept(row: StoredRow) -> bool:
            return row.exists and (row.state == "active" or (row.state == "finalized" and row.trace_id in pins))

        doomed = [
            rows[t]
            for start, t, _ in entries
            if rows[t].exists
            and not kept(rows[t])
            and rows[t].state in ("finalized", "dropped")
            and rows[t].start_us == start
            and rows[t].shard == shard
            and start < before_us
        ]
        skipped = min((s for s, t, _ in entries if kept(rows[t])), default=None)
        if await self.aggregates.adopt([shard]):  # first: the stored contributions are then what the slices sum
            raise RoundOverrun(f"shard {shard}: another process's round may still be under way")
        delta, contribs = await self._stored_contributions(shard, doomed)
        gone = {t for t in (r.trace_id for r in doomed)}
        retention = [
            [(DELETE_RETENTION, (ns, hour, shard, start, t))]
            for start, t, hour in entries
            if t in gone or not rows[t].exists or rows[t].start_us != start
        ]
        tokens = await self.aggregates.begin({shard: (delta, [])})
        try:
            self.aggregates.fence()
            await cql.partitions(contribs.values())
            await self.aggregates.apply(shard, delta)
            self.aggregates.fence()
            await cql.partitions([[(DELETE_TRACE, (ns, t))] for t in sorted(gone)])
            await cql.partitions(retention)
            await self.aggregates.end(tokens)
        except BaseException:
            self.aggregates.invalidate(shard)
            raise
        return sorted(gone), skipped

    async def _stored_contributions(
        self, shard: str, doomed: Sequence[StoredRow]
    ) -> tuple[RollupDelta, dict[tuple[Any, ...], Statements]]:
        """The contributions of ``doomed`` stored under ``shard``, summed to be taken out of its slices, and
        the deletes of every one their rows name. What is stored, not what the rows record: a purge that
        failed after its contributions and its slices leaves the rows, and took those out already."""
        cql = self.cql
        asks = [(cql.ns, shard, minute, row.trace_id) for row in doomed for minute in sorted(_contrib_minutes(row))]
        delta = RollupDelta()
        contribs: dict[tuple[Any, ...], Statements] = {}
        for ask, found in zip(asks, await cql.many(CONTRIB_OF, asks), strict=True):
            for (body,) in found:
                delta.add(decode_contribution(body), -1)
            contribs.setdefault((ask[2],), []).append((DELETE_CONTRIB, ask))
        return delta, contribs


def _contrib_minutes(row: StoredRow) -> set[int]:
    """The minutes a finalized trace's contribution may be stored under (those its row lists, and its start's)."""
    return set(row.contrib_minutes) | ({row.start_us // MINUTE_US} if row.start_us is not None else set())


async def _together(jobs: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs`` at once; the first failure cancels the others and is raised once they have all ended.

    Never ``asyncio.gather``: the jobs it leaves running after a failure are a round's rollup updates going
    on after the round failed and its shards were invalidated. They would write slices computed from the
    state before the failure after later rounds wrote theirs, and keep their copy of them as current."""
    try:
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(job)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


def _result(
    ids: Sequence[str], plans: Mapping[str, FinalizePlan], rows: Mapping[str, StoredRow], current: RoundStates
) -> RoundResult:
    analyses = {s.trace_id: s.analysis for plan in plans.values() for s in plan.summaries}
    dropped = {t for plan in plans.values() for t, _, _ in plan.dropped}
    kept_states = {
        t: ((rows[t].tid or 0) ^ fingerprint(current.chunk_sets[t]), current.states[t])
        for plan in plans.values()
        for t in [*(s.trace_id for s in plan.summaries), *plan.waiting]
        if t not in dropped
    }
    return RoundResult(
        analyses=[analyses[t] for t in ids if t in analyses],
        first=[c for plan in plans.values() for c in plan.first],
        states=kept_states,
    )


def _summary_values(cql: Cql, s: Summary, row: StoredRow, current: RoundStates, now_us: int) -> tuple[Any, ...]:
    """The values of :data:`SUMMARY` for one finalized trace."""
    used = current.chunk_sets[s.trace_id]
    return (
        cql.ttl_s,
        "finalized" if s.kept else "dropped",
        len(used),
        fingerprint(used),
        set(used),
        set(current.late_sets[s.trace_id]),
        {s.analysis.start_us // MINUTE_US},
        *s.values(analysis=True),
        row.refinalizations + (row.finalized_at_us is not None),
        now_us if s.kept else None,  # a dropped trace has no summary to serve
        cql.ns,
        s.trace_id,
    )


def _index_changes(
    cql: Cql, shard: str, s: Summary, row: StoredRow, previous: Contribution | None
) -> dict[tuple[Any, ...], Statements]:
    """The search and retention index rows of one finalized trace in, the previous finalization's out."""
    ns = cql.ns
    old: list[IndexRow] = []
    if previous is not None:
        old.extend(search_rows(ns, s.trace_id, previous))
    if row.start_us is not None and row.finalized_at_us is not None:
        old.append(retention_row(ns, s.trace_id, shard, row.start_us))
    new = [retention_row(ns, s.trace_id, shard, s.analysis.start_us)]
    if s.kept:
        new.extend(search_rows(ns, s.trace_id, s.share))
    return index_changes(old, new, cql.ttl_s)
