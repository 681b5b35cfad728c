"""The read side of the SQL backends, written once: every read of the store contract, each in one read
transaction (one consistent snapshot), through the backend's :class:`~.driver.SqlDriver`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec

from shared.analysis import Dependency, analyze_aside
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
    Window,
)
from shared.store.finalizing import summary_from_row
from shared.store.rollups import HOUR_US, TOTAL
from shared.store.search import CANDIDATE_PAGE, trace_has_matching_span
from shared.store.sql.driver import Job, SqlDriver, T
from shared.store.sql.statements import (
    SERVICES_OF_OPERATION,
    Dialect,
    RollupRead,
    assemble_contexts,
    assemble_rollup_rows,
    assemble_stats,
    assemble_tail,
    merge_contexts,
    merge_unseen,
    plan_context_read,
    plan_rollup_read,
    plan_unseen_read,
    search_sql,
    service_bins_sql,
    slow_traces_sql,
    stats_sql,
    tail_sums,
    with_service_bins,
)
from shared.store.sql.writer import read_states

_heartbeat_decoder: Final = msgspec.json.Decoder(Heartbeat)

TRACE: Final = "SELECT tid, state, late_spans, refinalizations, finalized_at_us FROM traces WHERE trace_id = ?"
TRACE_OF_SPAN: Final = (
    "SELECT t.trace_id FROM open_spans o {join} traces t ON t.tid = o.tid WHERE o.span_id = ? LIMIT 1"
)
SERVICES: Final = f"SELECT DISTINCT service FROM rollup_ops WHERE grain = {TOTAL} ORDER BY service"
OPERATIONS: Final = (
    f"SELECT DISTINCT operation FROM rollup_ops WHERE grain = {TOTAL} AND bucket = 0 AND service = ? ORDER BY operation"
)
OPERATION_KINDS: Final = (
    f"SELECT operation, kind FROM rollup_ops WHERE grain = {TOTAL} AND bucket = 0 AND service = ?"
    " ORDER BY operation, kind"
)
DEPENDENCIES: Final = (
    "SELECT parent, child, CAST(sum(calls) AS BIGINT), CAST(sum(errors) AS BIGINT) FROM rollup_deps"
    " WHERE hour BETWEEN ? AND ? GROUP BY parent, child HAVING sum(calls) > 0 ORDER BY parent, child"
)
HEARTBEATS: Final = "SELECT body FROM heartbeats WHERE updated_us > ? ORDER BY worker_id"


class SqlReader(ABC):
    """The read roles of a SQL store: each read in one read transaction (a consistent snapshot)."""

    dialect: Dialect

    @abstractmethod
    async def _snapshot(self, job: Job[T]) -> T:
        """Run ``job`` in one read transaction, with a driver on its connection."""

    async def get_trace(self, trace_id: str) -> StoredTrace | None:
        trace = await self._snapshot(lambda d: read_trace(d, trace_id))
        if trace is None or trace.state != "finalized":
            return trace
        # a finalized trace's spans are those it was finalized with (a change re-opens it): its analysis
        # is derived from them as finalization did (layout v3 stores none)
        return msgspec.structs.replace(trace, analysis=await analyze_aside(trace_id, trace.spans))

    async def trace_of_span(self, span_id: str) -> str | None:
        dialect = self.dialect
        sql = (
            f"SELECT t.trace_id FROM open_spans o {dialect.join} traces t ON t.tid = o.tid WHERE o.span_id = ? LIMIT 1"
        )
        found = await self._snapshot(lambda d: d.fetch(dialect.sql(sql), [dialect.text(span_id)]))
        return None if not found else str(found[0][0])

    async def find_traces(self, query: TraceQuery) -> list[TraceSummary]:
        return await self._snapshot(lambda d: _find_traces(d, query))

    async def rollups(
        self,
        series: Literal["operations", "endpoints"],
        window: Window | None,
        *,
        step_us: int | None = None,
        service: str | None = None,
        operation: str | None = None,
        sketch: bool = True,
    ) -> list[RollupRow]:
        read = plan_rollup_read(
            series, self.dialect, window, step_us=step_us, service=service, operation=operation, sketch=sketch
        )
        return await self._snapshot(lambda d: _rollup_rows(d, read))

    async def stats(self, *, slowest: int = 5, window: Window | None = None) -> StoreStats:
        return await self._snapshot(lambda d: _stats(d, slowest, window))

    async def critical_contexts(
        self, window: Window | None, *, service: str | None = None, operation: str | None = None
    ) -> list[ContextRow]:
        statements = plan_context_read(self.dialect, window, service=service, operation=operation)
        return await self._snapshot(lambda d: _contexts(d, statements))

    async def slow_trace_contexts(
        self, service: str, operation: str, window: Window | None, *, min_duration_us: int, limit: int
    ) -> TailContexts:
        endpoint = (service, operation)
        sql, params = slow_traces_sql(self.dialect, *endpoint, window, min_duration_us=min_duration_us, limit=limit)
        return await self._snapshot(lambda d: _tail(d, endpoint, sql, params))

    async def services(self) -> list[str]:
        untext = self.dialect.untext
        return [untext(r[0]) for r in await self._snapshot(lambda d: d.fetch(SERVICES, []))]

    async def operations(self, service: str) -> list[str]:
        dialect = self.dialect
        rows = await self._snapshot(lambda d: d.fetch(dialect.sql(OPERATIONS), [dialect.text(service)]))
        return [dialect.untext(r[0]) for r in rows]

    async def operation_kinds(self, service: str) -> list[tuple[str, str]]:
        dialect, untext = self.dialect, self.dialect.untext
        rows = await self._snapshot(lambda d: d.fetch(dialect.sql(OPERATION_KINDS), [dialect.text(service)]))
        return [(untext(r[0]), untext(r[1])) for r in rows]

    async def dependencies(self, since_us: int = 0, until_us: int | None = None) -> list[Dependency]:
        first = since_us // HOUR_US
        last = (until_us // HOUR_US) if until_us is not None else 2**62
        untext = self.dialect.untext
        sql = self.dialect.sql(DEPENDENCIES)
        rows = await self._snapshot(lambda d: d.fetch(sql, [first, last]))
        return [Dependency(parent=untext(p), child=untext(ch), calls=n, errors=e) for p, ch, n, e in rows]

    async def heartbeats(self, *, newer_than_us: int = 0) -> list[Heartbeat]:
        sql = self.dialect.sql(HEARTBEATS)
        rows = await self._snapshot(lambda d: d.fetch(sql, [newer_than_us]))
        return [_heartbeat_decoder.decode(r[0]) for r in rows]


async def read_trace(d: SqlDriver, trace_id: str) -> StoredTrace | None:
    """The trace as stored, its analysis ``None`` (derived by the caller for a finalized trace)."""
    found = await d.fetch(d.dialect.sql(TRACE), [trace_id])
    if not found or found[0][1] in ("dropped", "waiting"):
        return None
    tid, state, late, refinalizations, finalized_at = found[0]
    spans = (await read_states(d, {trace_id: tid}))[trace_id].spans()
    if not spans:
        return None
    return StoredTrace(
        trace_id=trace_id,
        state=state,
        spans=spans,
        analysis=None,  # derived by the caller for a finalized trace
        completeness=Completeness(late_spans=late, refinalizations=refinalizations, finalized_at_us=finalized_at),
    )


async def _find_traces(d: SqlDriver, query: TraceQuery) -> list[TraceSummary]:
    dialect = d.dialect
    services: list[str] = []
    if query.operation_name is not None and query.service_name is None:
        rows = await d.fetch(dialect.sql(SERVICES_OF_OPERATION), [dialect.text(query.operation_name)])
        services = [dialect.untext(r[0]) for r in rows]
    if query.same_span:
        return await _find_same_span(d, query, services)
    sql, params = search_sql(query, dialect, limit=query.limit, offset=query.offset, services=services)
    return [summary_from_row(r, dialect.untext) for r in await d.fetch(sql, params)]


async def _find_same_span(d: SqlDriver, query: TraceQuery, services: list[str]) -> list[TraceSummary]:
    """Candidates from the indexes, each checked against its spans, page after page."""
    dialect = d.dialect
    wanted = query.offset + query.limit
    found: list[TraceSummary] = []
    scanned = 0
    while len(found) < wanted:
        sql, params = search_sql(query, dialect, limit=CANDIDATE_PAGE, offset=scanned, services=services)
        page = await d.fetch(sql, params)
        if not page:
            break
        scanned += len(page)
        states = await read_states(d, {r[0]: r[10] for r in page})
        found.extend(
            summary_from_row(r, dialect.untext) for r in page if trace_has_matching_span(states[r[0]].spans(), query)
        )
        if len(page) < CANDIDATE_PAGE:
            break
    return found[query.offset : wanted]


async def _rollup_rows(d: SqlDriver, read: RollupRead) -> list[RollupRow]:
    results = [await d.fetch(sql, params) for sql, params in read.statements]
    bin_results = [await d.fetch(sql, params) for sql, params in read.bin_statements]
    return assemble_rollup_rows(read, results, d.dialect.untext, bin_results)


async def _stats(d: SqlDriver, slowest: int, window: Window | None) -> StoreStats:
    dialect = d.dialect
    aligned = window.aligned() if window is not None else None
    (active_sql, active_params), slow_statements = stats_sql(dialect, aligned, slowest)
    # the counters alone: the endpoints' sketches are not part of /stats, and each service's sketch is
    # summed by the database (all time: kept on its own), not from every operation's bins here
    endpoints, operations = [
        await _rollup_rows(
            d, plan_rollup_read(series, dialect, aligned, step_us=None, service=None, operation=None, sketch=False)
        )
        for series in ("endpoints", "operations")
    ]
    bins = [row for sql, params in service_bins_sql(dialect, aligned) for row in await d.fetch(sql, params)]
    operations = with_service_bins(operations, bins, dialect.untext)
    unseen_rows = [row for sql, params in plan_unseen_read(dialect, aligned) for row in await d.fetch(sql, params)]
    unseen = merge_unseen(unseen_rows, dialect.untext)
    active = (await d.fetch(active_sql, active_params))[0][0]
    for slow_sql, slow_params in slow_statements:
        slow = [(r[0], r[1]) for r in await d.fetch(slow_sql, slow_params)]
        if len(slow) == slowest:
            break
    return assemble_stats(endpoints, operations, unseen=unseen, active=active, slowest=slow, window=aligned)


async def _contexts(d: SqlDriver, statements: Sequence[tuple[str, list[Any]]]) -> list[ContextRow]:
    merged = merge_contexts([await d.fetch(sql, params) for sql, params in statements], d.dialect.untext)
    return assemble_contexts(merged, await d.paths(sorted({ctx for _, _, ctx in merged})))


async def _tail(d: SqlDriver, endpoint: tuple[str, str], sql: str, params: list[Any]) -> TailContexts:
    rows = await d.fetch(sql, params)
    sums = tail_sums(rows)
    return assemble_tail(endpoint, rows, sums, await d.paths(sorted(sums)))
