"""The Cassandra read side. Every read runs at the URL's consistency level (QUORUM by default), so it sees
every acknowledged write. Index rows are candidates, each checked against its trace row (an index row of a
purged trace or of an earlier finalization is skipped); rollup reads sum every shard's slice of each
bucket in the window: O(buckets x keys x shards), never O(traces).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Final, Literal

import msgspec

from shared.analysis import Dependency
from shared.store.base import (
    Completeness,
    ContextRow,
    Heartbeat,
    RollupRow,
    StoredTrace,
    StoreStats,
    TailContexts,
    TraceQuery,
    TraceSummary,
    Unseen,
    Window,
)
from shared.store.cassandra.aggregates import (
    CONTEXTS,
    DEPS,
    ENDPOINT_BINS,
    ENDPOINTS,
    HOURS,
    OP_BINS,
    OPS,
    UNSEEN,
    Series,
    sum_rows,
)
from shared.store.cassandra.rows import derive_state, read_chunks, read_rows
from shared.store.cassandra.schema import Cql
from shared.store.finalizing import decode_analysis, summary_from_row
from shared.store.rollups import HOUR, HOUR_US, MINUTE, TOTAL, decode_contribution
from shared.store.search import CANDIDATE_PAGE, ERROR_TAG, step_grain, trace_has_matching_span, window_ranges
from shared.store.sql.statements import (
    RollupRead,
    assemble_contexts,
    assemble_rollup_rows,
    assemble_stats,
    assemble_tail,
    merge_contexts,
    merge_unseen,
    tail_sums,
)

DETAIL: Final = (
    "SELECT analysis, late_spans, refinalizations, finalized_at_us, final_n, final_fp, state, tid FROM traces"
    " WHERE ns = ? AND trace_id = ? LIMIT 1"
)
SUMMARY_COLUMNS: Final = (
    "root_service, root_operation, start_us, duration_us, span_count, error_count, status, complete, services,"
    " first_seen_us, finalized_at_us"
)
SUMMARY: Final = f"SELECT {SUMMARY_COLUMNS} FROM traces WHERE ns = ? AND trace_id = ? LIMIT 1"
SUMMARY_AND_SHARE: Final = f"SELECT {SUMMARY_COLUMNS}, contribution FROM traces WHERE ns = ? AND trace_id = ? LIMIT 1"
OPEN: Final = "SELECT trace_id, tid FROM open_spans WHERE ns = ? AND span_id = ?"
LISTED: Final = "SELECT hour FROM index_hours WHERE ns = ? AND kind = ? AND hour >= ? AND hour <= ?"
ACTIVE: Final = "SELECT trace_id, first_seen_us, fresh FROM idx_active WHERE ns = ? AND hour = ?"
BY_OPERATION: Final = (
    "SELECT start_us, trace_id, min_us, max_us FROM idx_ops WHERE ns = ? AND service = ? AND operation = ?"
    " AND hour = ? AND start_us >= ? AND start_us <= ?"
)
BY_TAG: Final = (
    "SELECT start_us, trace_id FROM idx_tags WHERE ns = ? AND key = ? AND value = ? AND hour = ?"
    " AND start_us >= ? AND start_us <= ?"
)
BY_START: Final = (
    "SELECT start_us, trace_id FROM idx_start WHERE ns = ? AND hour = ? AND start_us >= ? AND start_us <= ?"
)
SLOWEST: Final = "SELECT duration_us, trace_id, start_us FROM idx_duration WHERE ns = ? AND hour = ? LIMIT ?"
TAIL: Final = (
    "SELECT duration_us, trace_id, start_us, critical FROM idx_endpoint WHERE ns = ? AND service = ?"
    " AND operation = ? AND hour = ? AND duration_us >= ?"
)
PATHS: Final = "SELECT ctx, path FROM call_paths WHERE ns = ? AND ctx IN ?"
HEARTBEATS: Final = "SELECT worker_id, updated_us, body FROM heartbeats WHERE ns = ?"

FOREVER: Final = 2**62
_heartbeat: Final = msgspec.json.Decoder(Heartbeat)
_path: Final = msgspec.msgpack.Decoder(list[str])
Series_ = Literal["operations", "endpoints"]


class Reader:
    """The read roles of the Cassandra store (:class:`~shared.store.cassandra.CassandraStore` is one)."""

    def __init__(self, cql: Cql) -> None:
        self.cql = cql

    # -- traces ---------------------------------------------------------------------------------------

    async def get_trace(self, trace_id: str) -> StoredTrace | None:
        cql = self.cql
        detail, chunks = await asyncio.gather(cql.rows(DETAIL, (cql.ns, trace_id)), read_chunks(cql, [trace_id]))
        if not detail or detail[0][7] is None:
            return None
        analysis, late, refinalizations, finalized_at, final_n, final_fp, column, _ = detail[0]
        stored = chunks[trace_id]
        state = derive_state(column, final_n, final_fp, stored.ids)
        if state in ("dropped", "waiting"):
            return None
        spans = stored.state().spans()
        if not spans:
            return None
        return StoredTrace(
            trace_id=trace_id,
            state="finalized" if state == "finalized" else "active",
            spans=spans,
            analysis=decode_analysis(analysis) if state == "finalized" and analysis else None,
            completeness=Completeness(
                late_spans=late or 0, refinalizations=refinalizations or 0, finalized_at_us=finalized_at
            ),
        )

    async def trace_of_span(self, span_id: str) -> str | None:
        cql = self.cql
        entries = await cql.rows(OPEN, (cql.ns, span_id))
        if not entries:
            return None
        rows = await read_rows(cql, [t for t, _ in entries])
        for trace_id, tid in entries:
            row = rows[trace_id]
            if row.exists and row.tid == tid and row.state != "dropped":
                return str(trace_id)
        return None

    # -- search ---------------------------------------------------------------------------------------

    async def _hours(self, kind: str, first: int, last: int) -> list[int]:
        """The listed hours of ``kind`` in [first, last], newest first."""
        cql = self.cql
        return sorted((r[0] for r in await cql.rows(LISTED, (cql.ns, kind, first, last))), reverse=True)

    async def find_traces(self, query: TraceQuery) -> list[TraceSummary]:
        if query.status == "active":
            return await self._find_active(query)
        wanted = query.offset + query.limit
        found: list[TraceSummary] = []
        tags = [tag for tag in query.tags if not (query.same_span and tag == ERROR_TAG)]
        walked_tag = tags[0] if query.service_name is None and tags else None
        rest = [tag for tag in tags if tag != walked_tag] if walked_tag else tags
        need_share = bool(rest) or (query.operation_name is not None and query.service_name is None and bool(tags))
        candidates = self._candidates(query, walked_tag)
        batch: list[tuple[int, str, Any]] = []
        async for candidate in candidates:
            batch.append(candidate)
            if len(batch) >= CANDIDATE_PAGE:
                found.extend(await self._check(query, batch, rest, need_share))
                batch = []
                if len(found) >= wanted:
                    break
        else:
            found.extend(await self._check(query, batch, rest, need_share))
        return found[query.offset : wanted]

    async def _candidates(
        self, query: TraceQuery, walked_tag: tuple[str, str] | None
    ) -> AsyncIterator[tuple[int, str, Any]]:
        """(start µs, trace id, (min µs, max µs) or None) from the most specific index, newest first."""
        cql = self.cql
        low = query.start_us if query.start_us is not None else 0
        high = query.end_us if query.end_us is not None else FOREVER
        hours = await self._hours("start", low // HOUR_US, high // HOUR_US)
        seen: set[str] = set()
        if query.service_name is not None:
            keys = [(query.service_name, query.operation_name or "")]
        elif query.operation_name is not None and walked_tag is None:
            # an operation of any service: the (service, operation) rows of the services that have it
            keys = [(s, o) for s, o in await self.operations_everywhere() if o == query.operation_name]
            if not keys:
                return
        else:
            keys = []
        for hour in hours:
            rows: list[tuple[int, str, Any]] = []
            if keys:
                results = await cql.many(BY_OPERATION, [(cql.ns, s, o, hour, low, high) for s, o in keys])
                rows = [(r[0], r[1], (r[2], r[3])) for part in results for r in part]
                rows.sort(key=lambda r: (-r[0], r[1]))
                for row in rows:
                    if row[1] not in seen:
                        seen.add(row[1])
                        yield row
                continue
            statement, values = (
                (BY_TAG, (cql.ns, *walked_tag, hour, low, high))
                if walked_tag is not None
                else (BY_START, (cql.ns, hour, low, high))
            )
            async for page in cql.pages(statement, values, CANDIDATE_PAGE):
                for start, trace_id in page:
                    yield start, trace_id, None

    async def _check(
        self,
        query: TraceQuery,
        batch: Sequence[tuple[int, str, Any]],
        rest: Sequence[tuple[str, str]],
        need_share: bool,
    ) -> list[TraceSummary]:
        """The candidates (in order) whose trace row is the finalization they were indexed by and that
        pass every condition the index walked does not guarantee."""
        if not batch:
            return []
        cql = self.cql
        if query.same_span and query.service_name is not None:
            batch = [
                c
                for c in batch
                if c[2] is None
                or (
                    (query.min_duration_us is None or c[2][1] >= query.min_duration_us)
                    and (query.max_duration_us is None or c[2][0] <= query.max_duration_us)
                )
            ]
        statement = SUMMARY_AND_SHARE if need_share else SUMMARY
        results = await cql.many(statement, [(cql.ns, t) for _, t, _ in batch])
        passed: list[tuple[str, Sequence[Any]]] = []
        for (start, trace_id, _), found in zip(batch, results, strict=True):
            if not found:
                continue
            row = found[0]
            if row[10] is None or row[2] != start:  # not finalized (any more), or indexed at another start
                continue
            if query.status is not None and row[6] != query.status:
                continue
            if not query.same_span:
                if query.min_duration_us is not None and (row[3] or 0) < query.min_duration_us:
                    continue
                if query.max_duration_us is not None and (row[3] or 0) > query.max_duration_us:
                    continue
            if need_share:
                share = decode_contribution(row[11])
                have = set(share.tags)
                if any(tuple(tag) not in have for tag in rest):
                    continue
                if (
                    query.operation_name is not None
                    and query.service_name is None
                    and not any(o == query.operation_name for _, o, _, _ in share.index_ops())
                ):
                    continue
            passed.append((trace_id, row))
        if query.same_span and passed:
            chunks = await read_chunks(cql, [t for t, _ in passed])
            passed = [(t, r) for t, r in passed if trace_has_matching_span(chunks[t].state().spans(), query)]
        return [_summary(t, r) for t, r in passed]

    async def _find_active(self, query: TraceQuery) -> list[TraceSummary]:
        """Active traces, most recently first seen first (the filters, as the SQL stores apply them, on
        what the trace's last finalization left, if any)."""
        cql = self.cql
        entries = await self._active_entries(None)
        entries.sort(key=lambda e: (-e[1], e[0]))
        wanted = query.offset + query.limit
        found: list[TraceSummary] = []
        for i in range(0, len(entries), CANDIDATE_PAGE):
            ids = [t for t, _, _ in entries[i : i + CANDIDATE_PAGE]]
            rows, summaries = await asyncio.gather(
                read_rows(cql, ids), cql.many(SUMMARY_AND_SHARE, [(cql.ns, t) for t in ids])
            )
            for trace_id, found_rows in zip(ids, summaries, strict=True):
                if not rows[trace_id].exists or rows[trace_id].state != "active" or not found_rows:
                    continue
                row = found_rows[0]
                if not _active_matches(query, row):
                    continue
                found.append(_summary(trace_id, row))
            if len(found) >= wanted:
                break
        return found[query.offset : wanted]

    async def _active_entries(self, window: Window | None) -> list[tuple[str, int, bool]]:
        """(trace id, first seen µs, never finalized) of the ``idx_active`` rows (first seen in ``window``),
        one per trace."""
        cql = self.cql
        first, last = (0, FOREVER // HOUR_US) if window is None else (window.start_us // HOUR_US, FOREVER // HOUR_US)
        hours = await self._hours("active", first, last)
        results = await cql.many(ACTIVE, [(cql.ns, h) for h in hours])
        out: dict[str, tuple[str, int, bool]] = {}
        for part in results:
            for trace_id, first_seen, fresh in part:
                if window is not None and not window.start_us <= (first_seen or 0) < window.end_us:
                    continue
                out[trace_id] = (trace_id, first_seen or 0, bool(fresh))
        return list(out.values())

    # -- rollups --------------------------------------------------------------------------------------

    async def _bucket_sums(
        self, spec: Series, grain: int, buckets: Sequence[int], *, service: str | None, operation: str | None
    ) -> dict[int, dict[tuple[Any, ...], list[int]]]:
        """Per bucket, every key's values summed over the shards (filtered by service and operation). Only
        buckets of the hours that have rollup rows are read (a window may span years)."""
        cql = self.cql
        if isinstance(buckets, range) and grain in (MINUTE, HOUR) and buckets:
            per_hour = 60 if grain == MINUTE else 1
            first, end = buckets.start, buckets.stop
            hours = sorted(
                h for (h,) in await cql.rows(HOURS, (cql.ns,)) if first // per_hour <= h <= (end - 1) // per_hour
            )
            buckets = [b for h in hours for b in range(max(first, h * per_hour), min(end, (h + 1) * per_hour))]
        results = await cql.many(spec.bucket_cql, [(cql.ns, grain, b) for b in buckets])
        out: dict[int, dict[tuple[Any, ...], list[int]]] = {}
        for bucket, rows in zip(buckets, results, strict=True):
            picked = [
                r[1:] for r in rows if (service is None or r[1] == service) and (operation is None or r[2] == operation)
            ]
            sums = sum_rows(picked, len(spec.keys))
            out[bucket] = {k: v for k, v in sums.items() if v[spec.live] > 0}
        return out

    async def rollups(
        self,
        series: Series_,
        window: Window | None,
        *,
        step_us: int | None = None,
        service: str | None = None,
        operation: str | None = None,
        sketch: bool = True,
    ) -> list[RollupRow]:
        counters, bins = (OPS, OP_BINS) if series == "operations" else (ENDPOINTS, ENDPOINT_BINS)
        aligned = None if window is None else window.aligned()
        read = RollupRead(
            statements=[], width=len(counters.keys), window=aligned, step_us=None if aligned is None else step_us
        )
        results = self._series_rows(counters, aligned, step_us, service=service, operation=operation)
        if not sketch:
            return assemble_rollup_rows(read, await results)
        bin_results = self._series_rows(bins, aligned, step_us, service=service, operation=operation)
        counted, binned = await asyncio.gather(results, bin_results)
        return assemble_rollup_rows(read, counted, bin_results=binned)

    async def _series_rows(
        self, spec: Series, aligned: Window | None, step_us: int | None, *, service: str | None, operation: str | None
    ) -> list[list[tuple[Any, ...]]]:
        """The rows :func:`assemble_rollup_rows` takes (``step, key..., values...``) of one series: all time,
        one list per grain range of a whole window, or one per step."""
        width = len(spec.keys)
        if aligned is None:
            sums = (await self._bucket_sums(spec, TOTAL, [0], service=service, operation=operation))[0]
            return [[(0, *k, *v) for k, v in sorted(sums.items())]]
        if step_us is None:
            results = []
            for grain, first, end in window_ranges(aligned):
                by_bucket = await self._bucket_sums(
                    spec, grain, range(first, end), service=service, operation=operation
                )
                merged = sum_rows(((*k, *v) for sums in by_bucket.values() for k, v in sums.items()), width)
                results.append([(0, *k, *v) for k, v in sorted(merged.items())])
            return results
        grain, first, end, per_step = step_grain(aligned, step_us)
        by_bucket = await self._bucket_sums(spec, grain, range(first, end), service=service, operation=operation)
        steps = sum_rows(
            (((b - first) // per_step, *k, *v) for b, sums in by_bucket.items() for k, v in sums.items()), width + 1
        )
        return [[(*key, *values) for key, values in sorted(steps.items())]]

    async def stats(self, *, slowest: int = 5, window: Window | None = None) -> StoreStats:
        aligned = window.aligned() if window is not None else None
        endpoints, operations, unseen, active, slow = await asyncio.gather(
            self.rollups("endpoints", aligned, sketch=False),  # the endpoints' sketches are not part of /stats
            self.rollups("operations", aligned, step_us=None, service=None, operation=None),
            self._unseen(aligned),
            self._active_entries(aligned),
            self._slowest(slowest, aligned),
        )
        still_active = await self._still_active(active)
        return assemble_stats(endpoints, operations, unseen=unseen, active=still_active, slowest=slow, window=aligned)

    async def _unseen(self, window: Window | None) -> dict[str, Unseen]:
        """The unseen rollups per service over all time or ``window`` (see :class:`Unseen`)."""
        ranges = [(TOTAL, 0, 1)] if window is None else window_ranges(window)
        rows: list[tuple[Any, ...]] = []
        for grain, first, end in ranges:
            by_bucket = await self._bucket_sums(UNSEEN, grain, range(first, end), service=None, operation=None)
            rows.extend((*key, *values) for sums in by_bucket.values() for key, values in sums.items())
        return merge_unseen(rows)

    async def _still_active(self, entries: Sequence[tuple[str, int, bool]]) -> int:
        """How many of the never-finalized ``idx_active`` entries name a trace whose row is active now.

        The index is a hint and the trace row the truth, as for the active search: an entry can outlive
        its trace's finalization when the round wrote the trace row and its delete of the entry failed
        (a round's writes to several partitions are not atomic; the trace, finalized, is not finalized
        again). Such an entry is not counted; it stays until its TTL."""
        fresh = [trace_id for trace_id, _, never_finalized in entries if never_finalized]
        rows = await read_rows(self.cql, fresh)
        return sum(1 for t in fresh if rows[t].exists and rows[t].state == "active")

    async def _slowest(self, limit: int, window: Window | None) -> list[tuple[str, int]]:
        """The ``limit`` slowest finalized traces (started in ``window``), slowest first."""
        if limit <= 0:
            return []
        cql = self.cql
        low, high = (0, FOREVER) if window is None else (window.start_us, window.end_us - 1)
        hours = await self._hours("start", low // HOUR_US, high // HOUR_US)
        fetch = limit
        while True:
            results = await cql.many(SLOWEST, [(cql.ns, h, fetch) for h in hours])
            rows = sorted(
                ((d, t) for part in results for d, t, s in part if low <= s <= high), key=lambda r: (-r[0], r[1])
            )
            checked = await self._current(rows, lambda r: r[0])
            if len(checked) >= limit or all(len(p) < fetch for p in results):
                return [(t, d) for d, t in checked[:limit]]
            fetch *= 4

    async def _current(
        self, rows: Sequence[tuple[int, str]], value: Callable[[tuple[int, str]], int]
    ) -> list[tuple[int, str]]:
        """The rows whose trace is finalized with that duration now (index rows of purged traces or of an
        earlier finalization are skipped)."""
        cql = self.cql
        results = await cql.many(SUMMARY, [(cql.ns, t) for _, t in rows])
        return [
            r
            for r, found in zip(rows, results, strict=True)
            if found and found[0][10] is not None and found[0][3] == value(r)
        ]

    async def _names(self, ids: Iterable[int]) -> dict[int, tuple[str, ...]]:
        cql = self.cql
        wanted = sorted(set(ids))
        chunks = [wanted[i : i + 100] for i in range(0, len(wanted), 100)]
        results = await cql.many(PATHS, [(cql.ns, chunk) for chunk in chunks])
        return {ctx: tuple(_path.decode(path)) for part in results for ctx, path in part}

    async def critical_contexts(
        self, window: Window | None, *, service: str | None = None, operation: str | None = None
    ) -> list[ContextRow]:
        ranges = [(TOTAL, 0, 1)] if window is None else window_ranges(window.aligned())
        rows: list[tuple[str, str, int, int, int]] = []
        for grain, first, end in ranges:
            by_bucket = await self._bucket_sums(
                CONTEXTS, grain, range(first, end), service=service, operation=operation
            )
            rows.extend((s, o, ctx, v[0], v[1]) for sums in by_bucket.values() for (s, o, ctx), v in sums.items())
        names = await self._names(r[2] for r in rows)
        return assemble_contexts(merge_contexts([rows], str), names)

    async def slow_trace_contexts(
        self, service: str, operation: str, window: Window | None, *, min_duration_us: int, limit: int
    ) -> TailContexts:
        cql = self.cql
        low, high = (0, FOREVER) if window is None else (window.aligned().start_us, window.aligned().end_us - 1)
        hours = await self._hours("start", low // HOUR_US, high // HOUR_US)
        results = await cql.many(TAIL, [(cql.ns, service, operation, h, min_duration_us) for h in hours])
        rows = sorted(
            ((d, t, blob) for part in results for d, t, s, blob in part if low <= s <= high),
            key=lambda r: (-r[0], r[1]),
        )
        picked: list[tuple[int, bytes]] = []
        for i in range(0, len(rows), CANDIDATE_PAGE):  # each checked against its trace (purged ones go)
            page = rows[i : i + CANDIDATE_PAGE]
            current = {t for _, t in await self._current([(d, t) for d, t, _ in page], lambda r: r[0])}
            picked.extend((d, blob) for d, t, blob in page if t in current)
            if len(picked) >= limit:
                break
        picked = picked[:limit]
        sums = tail_sums(picked)
        return assemble_tail((service, operation), picked, sums, await self._names(sums))

    async def operations_everywhere(self) -> list[tuple[str, str]]:
        """Every (service, operation) in finalized traces."""
        sums = (await self._bucket_sums(OPS, TOTAL, [0], service=None, operation=None))[0]
        return sorted({(k[0], k[1]) for k in sums})

    async def services(self) -> list[str]:
        return sorted({s for s, _ in await self.operations_everywhere()})

    async def operations(self, service: str) -> list[str]:
        return sorted({operation for operation, _ in await self.operation_kinds(service)})

    async def operation_kinds(self, service: str) -> list[tuple[str, str]]:
        sums = (await self._bucket_sums(OPS, TOTAL, [0], service=service, operation=None))[0]
        return sorted({(k[1], k[2]) for k in sums})

    async def dependencies(self, since_us: int = 0, until_us: int | None = None) -> list[Dependency]:
        cql = self.cql
        if since_us <= 0 and until_us is None:
            grain, buckets = TOTAL, [0]
        else:
            first, last = since_us // HOUR_US, (until_us // HOUR_US) if until_us is not None else FOREVER
            listed = await cql.rows(HOURS, (cql.ns,))
            grain, buckets = HOUR, sorted(h for (h,) in listed if first <= h <= last)
        by_bucket = await self._bucket_sums(DEPS, grain, buckets, service=None, operation=None)
        sums = sum_rows(((*k, *v) for s in by_bucket.values() for k, v in s.items()), 2)
        return [
            Dependency(parent=p, child=c, calls=v[0], errors=v[1]) for (p, c), v in sorted(sums.items()) if v[0] > 0
        ]

    async def heartbeats(self, *, newer_than_us: int = 0) -> list[Heartbeat]:
        cql = self.cql
        rows = await cql.rows(HEARTBEATS, (cql.ns,))
        return [_heartbeat.decode(body) for _, updated, body in rows if updated > newer_than_us]


def _summary(trace_id: str, row: Sequence[Any]) -> TraceSummary:
    """A search result from the SUMMARY columns (the start falls back to when the trace was first seen)."""
    return summary_from_row(
        (
            trace_id,
            row[0],
            row[1],
            row[2] if row[2] is not None else row[9] or 0,
            row[3] or 0,
            row[4] or 0,
            row[5] or 0,
            row[6] or "active",
            bool(row[7]),
            row[8],
        )
    )


def _active_matches(query: TraceQuery, row: Sequence[Any]) -> bool:
    """The filters of an active search, on the trace's last finalization (as the SQL stores apply them):
    a trace never finalized has no duration, start or tags to match."""
    start, duration, blob = row[2], row[3], row[11]
    if query.start_us is not None and (start is None or start < query.start_us):
        return False
    if query.end_us is not None and (start is None or start > query.end_us):
        return False
    if query.min_duration_us is not None and (duration is None or duration < query.min_duration_us):
        return False
    if query.max_duration_us is not None and (duration is None or duration > query.max_duration_us):
        return False
    if query.tags:
        if blob is None:
            return False
        have = set(decode_contribution(blob).tags)
        return all(tuple(tag) in have for tag in query.tags)
    return True
