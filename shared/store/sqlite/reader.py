"""The SQLite read side. Every function runs in one read transaction (a consistent snapshot) on the
store's connection thread."""

from __future__ import annotations

import sqlite3
from typing import Final

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
from shared.store.sqlite.writer import read_states

_heartbeat_decoder: Final = msgspec.json.Decoder(Heartbeat)
_path_decoder: Final = msgspec.msgpack.Decoder(list[str])
_json: Final = msgspec.json.Encoder()

DIALECT: Final = Dialect(
    numbered=False, text=str, false="0", join="CROSS JOIN", duration_index_hint="INDEXED BY traces_duration"
)


def get_trace(c: sqlite3.Connection, trace_id: str) -> StoredTrace | None:
    row = c.execute(
        "SELECT tid, state, analysis, late_spans, refinalizations, finalized_at_us FROM traces WHERE trace_id = ?",
        (trace_id,),
    ).fetchone()
    if row is None or row[1] in ("dropped", "waiting"):
        return None
    tid, state, analysis, late, refinalizations, finalized_at = row
    spans = read_states(c, {trace_id: tid})[trace_id].spans()
    if not spans:
        return None
    return StoredTrace(
        trace_id=trace_id,
        state=state,
        spans=spans,
        analysis=decode_analysis(analysis) if state == "finalized" and analysis else None,
        completeness=Completeness(late_spans=late, refinalizations=refinalizations, finalized_at_us=finalized_at),
    )


def trace_of_span(c: sqlite3.Connection, span_id: str) -> str | None:
    row = c.execute(
        "SELECT t.trace_id FROM open_spans o CROSS JOIN traces t ON t.tid = o.tid WHERE o.span_id = ? LIMIT 1",
        (span_id,),
    ).fetchone()
    return None if row is None else str(row[0])


def find_traces(c: sqlite3.Connection, query: TraceQuery) -> list[TraceSummary]:
    if not query.same_span:
        sql, params = search_sql(query, DIALECT, limit=query.limit, offset=query.offset)
        return [summary_from_row(r) for r in c.execute(sql, params)]
    # Same-span: candidates from the indexes, each checked against its spans, page after page.
    wanted = query.offset + query.limit
    found: list[TraceSummary] = []
    scanned = 0
    while len(found) < wanted:
        sql, params = search_sql(query, DIALECT, limit=CANDIDATE_PAGE, offset=scanned)
        page = c.execute(sql, params).fetchall()
        if not page:
            break
        scanned += len(page)
        states = read_states(c, {r[0]: r[10] for r in page})
        for r in page:
            if trace_has_matching_span(states[r[0]].spans(), query):
                found.append(summary_from_row(r))
        if len(page) < CANDIDATE_PAGE:
            break
    return found[query.offset : wanted]


def rollups(
    c: sqlite3.Connection,
    series: Series,
    window: Window | None,
    *,
    step_us: int | None,
    service: str | None,
    operation: str | None,
) -> list[RollupRow]:
    read = plan_rollup_read(series, DIALECT, window, step_us=step_us, service=service, operation=operation)
    return assemble_rollup_rows(read, [c.execute(sql, params).fetchall() for sql, params in read.statements])


def stats(c: sqlite3.Connection, *, slowest: int, window: Window | None) -> StoreStats:
    aligned = window.aligned() if window is not None else None
    (active_sql, active_params), (slow_sql, slow_params) = stats_sql(DIALECT, aligned, slowest)
    return assemble_stats(
        rollups(c, "endpoints", aligned, step_us=None, service=None, operation=None),
        rollups(c, "operations", aligned, step_us=None, service=None, operation=None),
        active=c.execute(active_sql, active_params).fetchone()[0],
        slowest=c.execute(slow_sql, slow_params).fetchall(),
        window=aligned,
    )


def _paths(c: sqlite3.Connection, ids: list[int]) -> dict[int, tuple[str, ...]]:
    rows = c.execute(
        "SELECT p.ctx, p.path FROM json_each(?1) j CROSS JOIN call_paths p ON p.ctx = j.value",
        (_json.encode(ids).decode(),),
    )
    return {ctx: tuple(_path_decoder.decode(path)) for ctx, path in rows}


def critical_contexts(
    c: sqlite3.Connection, window: Window | None, *, service: str | None, operation: str | None
) -> list[ContextRow]:
    statements = plan_context_read(DIALECT, window, service=service, operation=operation)
    return assemble_contexts([c.execute(sql, params).fetchall() for sql, params in statements], lambda i: _paths(c, i))


def slow_trace_contexts(
    c: sqlite3.Connection, service: str, operation: str, window: Window | None, *, min_duration_us: int, limit: int
) -> TailContexts:
    sql, params = slow_traces_sql(DIALECT, service, operation, window, min_duration_us=min_duration_us, limit=limit)
    return assemble_tail(service, operation, c.execute(sql, params).fetchall(), lambda ids: _paths(c, ids))


def services(c: sqlite3.Connection) -> list[str]:
    return [r[0] for r in c.execute(f"SELECT DISTINCT service FROM rollup_ops WHERE grain = {TOTAL} ORDER BY service")]


def operations(c: sqlite3.Connection, service: str) -> list[str]:
    rows = c.execute(
        f"SELECT DISTINCT operation FROM rollup_ops WHERE grain = {TOTAL} AND bucket = 0 AND service = ?"
        " ORDER BY operation",
        (service,),
    )
    return [r[0] for r in rows]


def operation_kinds(c: sqlite3.Connection, service: str) -> list[tuple[str, str]]:
    rows = c.execute(
        f"SELECT operation, kind FROM rollup_ops WHERE grain = {TOTAL} AND bucket = 0 AND service = ?"
        " ORDER BY operation, kind",
        (service,),
    )
    return [(r[0], r[1]) for r in rows]


def dependencies(c: sqlite3.Connection, since_us: int, until_us: int | None) -> list[Dependency]:
    first = since_us // HOUR_US
    last = (until_us // HOUR_US) if until_us is not None else 2**62
    rows = c.execute(
        "SELECT parent, child, sum(calls), sum(errors) FROM rollup_deps WHERE hour BETWEEN ? AND ?"
        " GROUP BY parent, child HAVING sum(calls) > 0 ORDER BY parent, child",
        (first, last),
    )
    return [Dependency(parent=p, child=ch, calls=n, errors=e) for p, ch, n, e in rows]


def heartbeats(c: sqlite3.Connection, newer_than_us: int) -> list[Heartbeat]:
    rows = c.execute("SELECT body FROM heartbeats WHERE updated_us > ? ORDER BY worker_id", (newer_than_us,))
    return [_heartbeat_decoder.decode(r[0]) for r in rows]
