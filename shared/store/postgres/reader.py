"""The PostgreSQL read side; each function runs in one read-only REPEATABLE READ transaction."""

from __future__ import annotations

from typing import Final

import asyncpg
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
    Window,
)
from shared.store.finalizing import decode_analysis, summary_from_row
from shared.store.postgres.writer import pg_text, py_text, read_states
from shared.store.rollups import HOUR_US, TOTAL
from shared.store.search import CANDIDATE_PAGE, trace_has_matching_span
from shared.store.sql import (
    Dialect,
    Series,
    assemble_contexts,
    assemble_rollup_rows,
    assemble_stats,
    assemble_tail,
    plan_context_read,
    plan_rollup_read,
    search_sql,
    slow_traces_sql,
    stats_sql,
)

DIALECT: Final = Dialect(numbered=True, text=pg_text, false="false", join="JOIN")
_heartbeat_decoder: Final = msgspec.json.Decoder(Heartbeat)
_path_decoder: Final = msgspec.msgpack.Decoder(list[str])


async def get_trace(c: asyncpg.Connection, trace_id: str) -> StoredTrace | None:
    row = await c.fetchrow(
        "SELECT tid, state, analysis, late_spans, refinalizations, finalized_at_us FROM traces WHERE trace_id = $1",
        trace_id,
    )
    if row is None or row["state"] in ("dropped", "waiting"):
        return None
    spans = (await read_states(c, {trace_id: row["tid"]}))[trace_id].spans()
    if not spans:
        return None
    state = row["state"]
    analysis = row["analysis"]
    return StoredTrace(
        trace_id=trace_id,
        state=state,
        spans=spans,
        analysis=decode_analysis(analysis) if state == "finalized" and analysis else None,
        completeness=Completeness(
            late_spans=row["late_spans"], refinalizations=row["refinalizations"], finalized_at_us=row["finalized_at_us"]
        ),
    )


async def trace_of_span(c: asyncpg.Connection, span_id: str) -> str | None:
    trace_id: str | None = await c.fetchval(
        "SELECT t.trace_id FROM open_spans o JOIN traces t ON t.tid = o.tid WHERE o.span_id = $1 LIMIT 1",
        pg_text(span_id),
    )
    return trace_id


async def find_traces(c: asyncpg.Connection, query: TraceQuery) -> list[TraceSummary]:
    if not query.same_span:
        sql, params = search_sql(query, DIALECT, limit=query.limit, offset=query.offset)
        return [summary_from_row(r, py_text) for r in await c.fetch(sql, *params)]
    # Same-span: candidates from the indexes, each checked against its spans, page after page.
    wanted = query.offset + query.limit
    found: list[TraceSummary] = []
    scanned = 0
    while len(found) < wanted:
        sql, params = search_sql(query, DIALECT, limit=CANDIDATE_PAGE, offset=scanned)
        page = await c.fetch(sql, *params)
        if not page:
            break
        scanned += len(page)
        states = await read_states(c, {r[0]: r[10] for r in page})
        found.extend(summary_from_row(r, py_text) for r in page if trace_has_matching_span(states[r[0]].spans(), query))
        if len(page) < CANDIDATE_PAGE:
            break
    return found[query.offset : wanted]


async def rollups(
    c: asyncpg.Connection,
    series: Series,
    window: Window | None,
    *,
    step_us: int | None,
    service: str | None,
    operation: str | None,
) -> list[RollupRow]:
    read = plan_rollup_read(series, DIALECT, window, step_us=step_us, service=service, operation=operation)
    results = [await c.fetch(sql, *params) for sql, params in read.statements]
    return assemble_rollup_rows(read, results, py_text)


async def stats(c: asyncpg.Connection, *, slowest: int, window: Window | None) -> StoreStats:
    aligned = window.aligned() if window is not None else None
    (active_sql, active_params), (slow_sql, slow_params) = stats_sql(DIALECT, aligned, slowest)
    return assemble_stats(
        await rollups(c, "endpoints", aligned, step_us=None, service=None, operation=None),
        await rollups(c, "operations", aligned, step_us=None, service=None, operation=None),
        active=await c.fetchval(active_sql, *active_params),
        slowest=[(r[0], r[1]) for r in await c.fetch(slow_sql, *slow_params)],
        window=aligned,
    )


async def _paths(c: asyncpg.Connection, ids: list[int]) -> dict[int, tuple[str, ...]]:
    rows = await c.fetch("SELECT ctx, path FROM call_paths WHERE ctx = ANY($1::bigint[])", ids)
    return {ctx: tuple(_path_decoder.decode(path)) for ctx, path in rows}


async def critical_contexts(
    c: asyncpg.Connection, window: Window | None, *, service: str | None, operation: str | None
) -> list[ContextRow]:
    statements = plan_context_read(DIALECT, window, service=service, operation=operation)
    results = [await c.fetch(sql, *params) for sql, params in statements]
    ids = sorted({int(r[2]) for rows in results for r in rows})
    names = await _paths(c, ids)
    return assemble_contexts(results, lambda _: names, py_text)


async def slow_trace_contexts(
    c: asyncpg.Connection, service: str, operation: str, window: Window | None, *, min_duration_us: int, limit: int
) -> TailContexts:
    sql, params = slow_traces_sql(DIALECT, service, operation, window, min_duration_us=min_duration_us, limit=limit)
    rows = await c.fetch(sql, *params)
    ids = sorted({ctx for _, blob in rows for ctx, _ in msgspec.msgpack.decode(blob, type=list[tuple[int, int]])})
    names = await _paths(c, ids)
    return assemble_tail(service, operation, rows, lambda _: names)


async def services(c: asyncpg.Connection) -> list[str]:
    rows = await c.fetch(f"SELECT DISTINCT service FROM rollup_ops WHERE grain = {TOTAL} ORDER BY service")
    return [py_text(r[0]) for r in rows]


async def operations(c: asyncpg.Connection, service: str) -> list[str]:
    rows = await c.fetch(
        f"SELECT DISTINCT operation FROM rollup_ops WHERE grain = {TOTAL} AND bucket = 0 AND service = $1"
        " ORDER BY operation",
        pg_text(service),
    )
    return [py_text(r[0]) for r in rows]


async def operation_kinds(c: asyncpg.Connection, service: str) -> list[tuple[str, str]]:
    rows = await c.fetch(
        f"SELECT operation, kind FROM rollup_ops WHERE grain = {TOTAL} AND bucket = 0 AND service = $1"
        " ORDER BY operation, kind",
        pg_text(service),
    )
    return [(py_text(r[0]), py_text(r[1])) for r in rows]


async def dependencies(c: asyncpg.Connection, since_us: int, until_us: int | None) -> list[Dependency]:
    first = since_us // HOUR_US
    last = (until_us // HOUR_US) if until_us is not None else 2**62
    rows = await c.fetch(
        "SELECT parent, child, sum(calls)::bigint, sum(errors)::bigint FROM rollup_deps"
        " WHERE hour BETWEEN $1 AND $2 GROUP BY parent, child HAVING sum(calls) > 0 ORDER BY parent, child",
        first,
        last,
    )
    return [Dependency(parent=py_text(p), child=py_text(ch), calls=n, errors=e) for p, ch, n, e in rows]


async def heartbeats(c: asyncpg.Connection, newer_than_us: int) -> list[Heartbeat]:
    rows = await c.fetch("SELECT body FROM heartbeats WHERE updated_us > $1 ORDER BY worker_id", newer_than_us)
    return [_heartbeat_decoder.decode(r[0]) for r in rows]
