"""The read statements of the SQL backends: searches and rollup reads, written once for the tables the two
schemas share (same names, same columns), with ``?`` placeholders. A backend passes a :class:`Dialect`:
its placeholder style, how text parameters and results are escaped, and its index hints.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import msgspec

from shared.store.base import (
    ContextRow,
    RollupRow,
    SlowTrace,
    StoreStats,
    TailContexts,
    TraceQuery,
    Unseen,
    Window,
    merged_stats_many,
)
from shared.store.finalizing import decode_critical
from shared.store.rollups import HISTOGRAM_SIZE, TOTAL
from shared.store.search import ERROR_TAG, signed_window_ranges, step_grain
from shared.store.sketch import add_to, pack, summed_many
from shared.store.tags import tag_hash

HISTOGRAM_COLUMNS: Final = [f"h{i}" for i in range(HISTOGRAM_SIZE)]
COUNTER_COLUMNS: Final = ["n", "errors", "duration_us", *HISTOGRAM_COLUMNS]

SUMMARY_COLUMNS: Final = (
    "t.trace_id, t.root_service, t.root_operation, coalesce(t.start_us, t.first_seen_us), coalesce(t.duration_us, 0),"
    " coalesce(t.span_count, 0), coalesce(t.error_count, 0), t.status, coalesce(t.complete, {false}), t.services, t.tid"
)
"""A search result row: the columns of :func:`~shared.store.finalizing.summary_from_row`, then the tid."""

Series = Literal["operations", "endpoints"]
ContextSums = dict[tuple[str, str, int], list[int]]
"""(root service, root operation, context id) -> [critical µs, traces]."""
SERIES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "operations": ("rollup_ops", ("service", "operation", "kind")),
    "endpoints": ("rollup_endpoints", ("service", "operation")),
}
BINS_SUFFIX: Final = "_bins"
"""A series' latency sketch is in the table named as its rollup table plus this: a row per key and bin."""


class Dialect(msgspec.Struct, frozen=True, kw_only=True):
    numbered: bool
    """``$1, $2, ...`` placeholders (PostgreSQL) instead of ``?`` (SQLite)."""
    text: Callable[[str], str]
    """Escapes a text parameter as the backend stores text."""
    untext: Callable[[str], str]
    """Undoes :attr:`text` on a text result."""
    false: str
    """The literal false."""
    join: str
    """The join that keeps the written order (the index walked first): SQLite's planner otherwise may
    start from ``traces``; ``CROSS JOIN`` tells it not to. PostgreSQL plans this well with ``JOIN``."""
    duration_index_hint: str = ""
    """Makes a window's slowest traces walk the duration index (SQLite's ``INDEXED BY``)."""
    start_index_hint: str = ""
    """Makes them walk the start index instead (see :func:`stats_sql`)."""

    def sql(self, statement: str) -> str:
        if not self.numbered:
            return statement
        counter = iter(range(1, 1 << 30))
        return re.sub(r"\?", lambda _: f"${next(counter)}", statement)


SERVICES_OF_OPERATION: Final = (
    f"SELECT DISTINCT service FROM rollup_ops WHERE grain = {TOTAL} AND bucket = 0 AND operation = ?"
)
"""The services that have an operation (their all-time rollup rows), for a search of it in any service."""


def search_sql(
    query: TraceQuery, dialect: Dialect, *, limit: int, offset: int, services: Sequence[str] = ()
) -> tuple[str, list[Any]]:
    """One search page. It walks the most specific index newest first (the service's (or service and
    operation's) rows of ``trace_ops``, else the first tag's rows of ``tag_index``, else the traces'
    start index) and probes the other conditions by key, so it can stop at ``limit``.

    ``services``: when the query names an operation without its service, the services that have it
    (:data:`SERVICES_OF_OPERATION`): the statement probes their (service, operation) rows.

    For a same-span query the statement yields candidates: traces whose (service, operation) rows allow
    the duration bounds and that have every tag on some span; the caller checks the spans."""
    where: list[str] = []
    params: list[Any] = []
    # same-span: ``error=true`` may be a span's status rather than a tag: the spans are checked for it
    tags = [tag for tag in query.tags if not (query.same_span and tag == ERROR_TAG)]
    if query.status == "active":
        source = "traces t"
        where.append("t.state = 'active'")
        order = "t.first_seen_us DESC, t.tid DESC"
        start = "t.start_us"
    else:
        source, start = _finalized_source(query, dialect, tags, services, (where, params))
        order = f"{start} DESC, t.tid DESC"
    if not query.same_span:
        _between("t.duration_us", query.min_duration_us, "t.duration_us", query.max_duration_us, where, params)
    _between(start, query.start_us, start, query.end_us, where, params)
    for key, value in tags:
        where.append("EXISTS (SELECT 1 FROM tag_index g WHERE g.tag = ? AND g.start_us = t.start_us AND g.tid = t.tid)")
        params.append(tag_hash(key, value))
    columns = SUMMARY_COLUMNS.format(false=dialect.false)
    statement = f"SELECT {columns} FROM {source} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ? OFFSET ?"
    params.extend((limit, offset))
    return dialect.sql(statement), params


def _finalized_source(
    query: TraceQuery,
    dialect: Dialect,
    tags: list[tuple[str, str]],
    services: Sequence[str],
    conditions: tuple[list[str], list[Any]],
) -> tuple[str, str]:
    """The index a search of finalized traces walks, and the column of the trace start it orders by; its
    conditions go to ``conditions`` (where, params), and the tag it walks leaves ``tags``."""
    where, params = conditions
    if query.service_name is not None:
        source = f"op_index d {dialect.join} traces t ON t.tid = d.tid"
        where.append("d.op = ?")
        params.append(tag_hash(query.service_name, query.operation_name or ""))
        if query.same_span:  # some span of the (service, operation) can match
            _between("d.max_us", query.min_duration_us, "d.min_us", query.max_duration_us, where, params)
        start = "d.start_us"
    elif tags:
        key, value = tags.pop(0)
        source = f"tag_index d {dialect.join} traces t ON t.tid = d.tid"
        where.append("d.tag = ?")
        params.append(tag_hash(key, value))
        start = "d.start_us"
    else:
        source = "traces t"
        where.append("t.finalized_at_us IS NOT NULL")
        start = "t.start_us"
    if query.status is not None:
        where.append("t.status = ?")
        params.append(query.status)
    if query.operation_name is not None and query.service_name is None:
        # an operation of any service: probe the (service, operation) rows of the services that have it
        ops = [tag_hash(service, query.operation_name) for service in services]
        where.append(
            f"EXISTS (SELECT 1 FROM op_index o WHERE o.op IN ({', '.join('?' * len(ops)) or 'NULL'})"
            " AND o.start_us = t.start_us AND o.tid = t.tid)"
        )
        params.extend(ops)
    return source, start


def _between(
    low_column: str, low: int | None, high_column: str, high: int | None, where: list[str], params: list[Any]
) -> None:
    """``low_column >= low`` and ``high_column <= high``, each when its bound is given."""
    if low is not None:
        where.append(f"{low_column} >= ?")
        params.append(low)
    if high is not None:
        where.append(f"{high_column} <= ?")
        params.append(high)


Range = tuple[int, int, int, int]
"""(grain, first bucket, end bucket, sign) of rollup rows to add up (sign 1) or take out (-1)."""


def window_rollup_ranges(window: Window | None, now_us: int | None = None) -> list[Range]:
    """The rollup rows that sum to all time (``None``) or to a minute-aligned window
    (:func:`~shared.store.search.signed_window_ranges`: a store's hour rows are the sums of its minutes)."""
    if window is None:
        return [(TOTAL, 0, 1, 1)]
    return signed_window_ranges(window, time.time_ns() // 1000 if now_us is None else now_us)


def _signed(sign: int, column: str) -> str:
    return column if sign > 0 else f"-{column}"


BUCKETS_LISTED: Final = 128
"""The most buckets a rollup read of one service names one by one (see :func:`_bucket_filter`)."""


def _bucket_filter(
    dialect: Dialect, grain: int, first: int, end: int, service: str | None, operation: str | None
) -> tuple[str, list[Any]]:
    """The rows of one grain and bucket range of a rollup table, of one service and operation if given.
    Those of one service in up to :data:`BUCKETS_LISTED` buckets are named bucket by bucket: the key
    (grain, bucket, service, ...) then seeks the service's rows of each, where a range walks every
    service's."""
    if service is not None and 0 < end - first <= BUCKETS_LISTED:
        where = f"grain = ? AND bucket IN ({', '.join('?' * (end - first))})"
        params: list[Any] = [grain, *range(first, end)]
    else:
        where = "grain = ? AND bucket >= ? AND bucket < ?"
        params = [grain, first, end]
    if service is not None:
        where += " AND service = ?"
        params.append(dialect.text(service))
    if operation is not None:
        where += " AND operation = ?"
        params.append(dialect.text(operation))
    return where, params


def rollup_sql(
    series: Series,
    dialect: Dialect,
    *,
    grain: int,
    first: int,
    end: int,
    per_step: int | None,
    service: str | None,
    operation: str | None,
    bins: bool = False,
    sign: int = 1,
    rows: bool = False,
) -> tuple[str, list[Any]]:
    """Sums of one rollup table's rows of one grain and bucket range, per key (and per step), negated for
    ``sign`` -1; ``bins``: the rows' packed sketches themselves (``step, key..., packed, sign``), which the
    database cannot add up: the caller sums them (:func:`shared.store.sketch.summed_packed`). ``rows``
    (a step being one bucket, a key's row is its sum): the rows as they are, counters then, with ``bins``,
    the packed sketch and the sign, without the database's ``GROUP BY`` (it took twice the rows' read)."""
    table, keys = SERIES[series]
    key_list = ", ".join(keys)
    step = "0" if per_step is None else f"(bucket - {int(first)}) / {int(per_step)}"
    where, params = _bucket_filter(dialect, grain, first, end, service, operation)
    if rows:
        counters = ", ".join(_signed(sign, c) for c in COUNTER_COLUMNS[:3])
        sketch = f", bins, {int(sign)}" if bins else ""
        statement = f"SELECT {step} AS step, {key_list}, {counters}{sketch} FROM {table} WHERE {where}"
    elif bins:
        statement = f"SELECT {step} AS step, {key_list}, bins, {int(sign)} FROM {table} WHERE {where}"
    else:
        sums = ", ".join(_signed(sign, f"sum({c})") for c in COUNTER_COLUMNS[:3])
        statement = (
            f"SELECT {step} AS step, {key_list}, {sums} FROM {table} WHERE {where}"
            f" GROUP BY step, {key_list} ORDER BY step, {key_list}"
        )
    return dialect.sql(statement), params


class RollupRead(msgspec.Struct, frozen=True, kw_only=True):
    """The statements of one :meth:`TraceStore.rollups` call, and how to assemble their rows."""

    statements: list[tuple[str, list[Any]]]
    """Counters: ``step, key..., count, errors, duration µs`` per row, followed by ``packed, sign`` on the
    rows of a read whose steps are single buckets (:func:`rollup_sql`'s ``rows``)."""
    width: int
    """Key columns per row."""
    window: Window | None
    """Minute-aligned; ``None``: all time."""
    step_us: int | None
    bin_statements: list[tuple[str, list[Any]]] = []
    """The same ranges' sketches: ``step, key..., bin, count`` per row (Cassandra), or ``step, key...,
    packed, sign`` per rollup row (:attr:`packed`)."""
    packed: bool = False
    """The sketches come packed, a rollup row each (the SQL stores), not a row per bin."""


def plan_rollup_read(
    series: Series,
    dialect: Dialect,
    window: Window | None,
    *,
    step_us: int | None,
    service: str | None,
    operation: str | None,
    sketch: bool = True,
) -> RollupRead:
    """The statements that answer a rollups call: one for all time or a time series, one per range of
    :func:`window_rollup_ranges` for a whole window; for the counters and (with ``sketch``) the sketches,
    in one statement where a step is one bucket."""
    statements: list[tuple[str, list[Any]]] = []
    bin_statements: list[tuple[str, list[Any]]] = []

    def select(grain: int, first: int, end: int, per_step: int | None, sign: int = 1) -> None:
        one = per_step == 1 or (per_step is None and end - first == 1)
        for bins in (False, True) if sketch and not one else (sketch,):
            (bin_statements if bins and not one else statements).append(
                rollup_sql(
                    series,
                    dialect,
                    grain=grain,
                    first=first,
                    end=end,
                    per_step=per_step,
                    service=service,
                    operation=operation,
                    bins=bins,
                    sign=sign,
                    rows=one,
                )
            )

    aligned = None if window is None else window.aligned()
    if step_us is None or aligned is None:
        for grain, first, end, sign in window_rollup_ranges(aligned):
            select(grain, first, end, None, sign)
    else:
        grain, first, end, per_step = step_grain(aligned, step_us)
        select(grain, first, end, per_step)
    return RollupRead(
        statements=statements,
        bin_statements=bin_statements,
        width=len(SERIES[series][1]),
        window=aligned,
        step_us=None if aligned is None else step_us,
        packed=True,
    )


def _step_origin(read: RollupRead) -> tuple[int, int]:
    """(start, step) such that a result row's step ``k`` starts at ``start + k * step``: 0 for all time,
    the window's start for a whole window."""
    if read.window is None:
        return 0, 0
    return read.window.start_us, read.step_us or 0


StepKey = tuple[int, tuple[str, ...]]
"""(step start, key) of a rollup row."""


class _Sketches:
    """The packed sketches of a read's rows, to be summed per (step start, key): most keys have one, kept
    as it is; the others are summed at once (:func:`~shared.store.sketch.summed_many`)."""

    def __init__(self) -> None:
        self.single: dict[StepKey, bytes] = {}
        self.signed: dict[StepKey, tuple[list[bytes], list[bytes]]] = {}

    def add(self, key: StepKey, packed: bytes, sign: int) -> None:
        if sign > 0 and key not in self.single and key not in self.signed:
            self.single[key] = packed
            return
        parts = self.signed.get(key)
        if parts is None:
            first = self.single.pop(key, None)
            parts = self.signed[key] = ([] if first is None else [first], [])
        parts[sign < 0].append(packed)

    def sums(self) -> dict[StepKey, bytes]:
        sums = dict(zip(self.signed, summed_many(list(self.signed.values())), strict=True))
        sums.update(self.single)
        return sums


def _per_bin_sums(
    read: RollupRead, results: Sequence[Sequence[Sequence[Any]]], untext: Callable[[str], str]
) -> dict[StepKey, bytes]:
    """(step start, key) -> the sketch (packed) summed over ``step, key..., bin, count`` rows (Cassandra)."""
    width = read.width
    start, step = _step_origin(read)
    out: dict[StepKey, dict[int, int]] = defaultdict(dict)
    for rows in results:
        for r in rows:
            bins = out[start + int(r[0]) * step, tuple(map(untext, r[1 : 1 + width]))]
            add_to(bins, [(int(r[1 + width]), int(r[2 + width]))])
    return {key: pack(bins.items()) for key, bins in out.items()}


def assemble_rollup_rows(
    read: RollupRead,
    results: Sequence[Sequence[Sequence[Any]]],
    untext: Callable[[str], str] = str,
    bin_results: Sequence[Sequence[Sequence[Any]]] = (),
) -> list[RollupRow]:
    """The :class:`RollupRow` list from the rows each statement of ``read`` returned (in order): counters
    (and sketches, where they come on the same rows) from ``results``, sketches from ``bin_results``."""
    width = read.width
    start, step = _step_origin(read)
    sums: dict[StepKey, list[int]] = {}
    sketches = _Sketches()
    for rows in results:
        for r in rows:
            key = (start + int(r[0]) * step, tuple(map(untext, r[1 : 1 + width])))
            total = sums.get(key)
            if total is None:
                sums[key] = [int(r[1 + width]), int(r[2 + width]), int(r[3 + width])]
            else:
                total[0] += int(r[1 + width])
                total[1] += int(r[2 + width])
                total[2] += int(r[3 + width])
            if len(r) > 4 + width:
                sketches.add(key, r[4 + width], r[5 + width])
    if read.packed:
        for rows in bin_results:
            for r in rows:
                key = (start + int(r[0]) * step, tuple(map(untext, r[1 : 1 + width])))
                sketches.add(key, r[1 + width], r[2 + width])
        bins = sketches.sums()
    else:
        bins = _per_bin_sums(read, bin_results, untext)
    return [
        RollupRow(t_us=t_us, key=key, count=v[0], errors=v[1], duration_us=v[2], sketch=bins.get((t_us, key), b""))
        for (t_us, key), v in sorted(sums.items())
        if v[0]
    ]


SERVICE_SKETCHES: Final = "SELECT service, bins, 1 FROM rollup_services_sketch"
"""Every service's all-time sketch (see :func:`with_service_bins`)."""
WINDOW_SERVICE_SKETCHES: Final = (
    "SELECT service, bins, {} FROM rollup_ops WHERE grain = ? AND bucket >= ? AND bucket < ?"
)


def service_bins_sql(dialect: Dialect, window: Window | None) -> list[tuple[str, list[Any]]]:
    """The statements that read each service's sketch, ``(service, packed, sign)`` rows: all time from its
    own table (a row a service), a window from its operations' rows (one statement per range of
    :func:`window_rollup_ranges`), to be summed per service (:func:`with_service_bins`)."""
    if window is None:
        return [(SERVICE_SKETCHES, [])]
    return [
        (dialect.sql(WINDOW_SERVICE_SKETCHES.format(int(sign))), [g, first, end])
        for g, first, end, sign in window_rollup_ranges(window)
    ]


def with_service_bins(
    operations: Sequence[RollupRow], rows: Iterable[Sequence[Any]], untext: Callable[[str], str] = str
) -> list[RollupRow]:
    """Operation rows read without their sketches, the first row of each service given the service's
    whole sketch (``rows``: those of :func:`service_bins_sql`, summed), so that :func:`assemble_stats`
    merges per service the same bins it would from every operation's."""
    packed: dict[str, tuple[list[bytes], list[bytes]]] = defaultdict(lambda: ([], []))
    for service, sketch, sign in rows:
        packed[untext(service)][sign < 0].append(sketch)
    sketches = dict(zip(packed, summed_many(list(packed.values())), strict=True))
    seen: set[str] = set()
    result = []
    for r in operations:
        service = r.key[0]
        if service not in seen:
            seen.add(service)
            r = msgspec.structs.replace(r, sketch=sketches.get(service, b""))
        result.append(r)
    return result


def assemble_stats(
    endpoints: Sequence[RollupRow],
    operations: Sequence[RollupRow],
    *,
    unseen: Mapping[str, Unseen],
    active: int,
    slowest: Sequence[tuple[str, int]],
    window: Window | None,
) -> StoreStats:
    """``/stats`` from the endpoint rollups (estimated trace counts), the operation rollups (per service),
    the unseen rollups (estimated - received), the count of active traces and the slowest finalized ones."""
    failed = sum(r.errors for r in endpoints)
    completed = sum(r.count for r in endpoints) - failed
    unseen_failed = sum(u.failed for u in unseen.values())
    unseen_completed = sum(u.traces for u in unseen.values()) - unseen_failed
    per_service: dict[str, list[RollupRow]] = defaultdict(list)
    for r in operations:
        per_service[r.key[0]].append(r)
    names = sorted(per_service)
    services = dict(zip(names, merged_stats_many([per_service[name] for name in names]), strict=True))
    return StoreStats(
        active_traces=active,
        completed_traces=completed - unseen_completed,
        failed_traces=failed - unseen_failed,
        estimated_completed_traces=completed,
        estimated_failed_traces=failed,
        total_duration_us=sum(r.duration_us for r in endpoints),
        slowest=[SlowTrace(trace_id=t, duration_us=d) for t, d in slowest],
        services=services,
        unseen=dict(unseen),
        window=window,
    )


UNSEEN_COLUMNS: Final = ("traces", "failed", "spans", "errors")


def _unseen_sums(sign: int) -> str:
    sums = ", ".join(_signed(sign, f"sum({c})") for c in UNSEEN_COLUMNS)
    return f"SELECT service, {sums} FROM rollup_unseen WHERE grain = ? AND bucket >= ? AND bucket < ? GROUP BY service"


def plan_unseen_read(dialect: Dialect, window: Window | None) -> list[tuple[str, list[Any]]]:
    """The statements summing the unseen rollups per service over all time or a window (one per grain
    range, as :func:`plan_rollup_read`)."""
    ranges = window_rollup_ranges(None if window is None else window.aligned())
    return [(dialect.sql(_unseen_sums(sign)), [grain, first, end]) for grain, first, end, sign in ranges]


def merge_unseen(rows: Iterable[Sequence[Any]], untext: Callable[[str], str] = str) -> dict[str, Unseen]:
    """``(service, traces, failed, spans, errors)`` rows summed per service."""
    sums: dict[str, list[int]] = {}
    for service, *values in rows:
        total = sums.setdefault(untext(service), [0, 0, 0, 0])
        for i, v in enumerate(values):
            total[i] += int(v or 0)
    return {
        service: Unseen(traces=v[0], failed=v[1], spans=v[2], errors=v[3])
        for service, v in sorted(sums.items())
        if any(v)
    }


SLOW_CANDIDATES: Final = (500, 5000)
"""How many of the slowest traces of all a window's slowest are looked for among, one try after the other
(see :func:`stats_sql`). A try reads each candidate's row: 5,000 took 4.3 ms at a million spans. A window
holding a 24th of the traces, durations independent of time, finds fewer than 5 among the first 500 about
once in 100,000 reads."""


def stats_sql(
    dialect: Dialect, window: Window | None, slowest: int
) -> tuple[tuple[str, list[Any]], list[tuple[str, list[Any]]]]:
    """The statements of ``/stats`` besides the rollups: active traces (never finalized; first seen in the
    window), and the slowest finalized traces (started in the window), to be tried in order until one
    returns ``slowest`` rows (the last one's rows are the answer whatever their number).

    All time: the duration index, walked from the top. A window: first among the slowest traces of all,
    as many as each of :data:`SLOW_CANDIDATES` in turn (those of the window among them are its slowest);
    where the window holds fewer of them, its traces by the start index, sorted. Walking the duration index
    with the window as a filter read every trace of the store when the window held few (25 ms at a million
    spans for a window an hour before the oldest trace)."""
    active = "SELECT count(*) FROM traces WHERE state = 'active' AND finalized_at_us IS NULL"
    top = f"SELECT trace_id, duration_us FROM traces {dialect.duration_index_hint} WHERE finalized_at_us IS NOT NULL"
    order = " ORDER BY duration_us DESC, trace_id LIMIT ?"
    if window is None:
        return (dialect.sql(active), []), [(dialect.sql(top + order), [slowest])]
    params = [window.start_us, window.end_us, slowest]
    active += " AND first_seen_us >= ? AND first_seen_us < ?"
    candidates = (
        f"SELECT trace_id, duration_us, start_us FROM traces {dialect.duration_index_hint}"
        " WHERE finalized_at_us IS NOT NULL ORDER BY duration_us DESC, trace_id LIMIT {}"
    )
    among = [
        f"SELECT trace_id, duration_us FROM ({candidates.format(n)}) s WHERE start_us >= ? AND start_us < ?{order}"
        for n in SLOW_CANDIDATES
    ]
    by_start = (
        f"SELECT trace_id, duration_us FROM traces {dialect.start_index_hint}"
        f" WHERE finalized_at_us IS NOT NULL AND start_us >= ? AND start_us < ?{order}"
    )
    tries = [*among, by_start]
    return (dialect.sql(active), params[:2]), [(dialect.sql(statement), params) for statement in tries]


def context_sql(
    dialect: Dialect,
    *,
    grain: int,
    first: int,
    end: int,
    service: str | None,
    operation: str | None,
    sign: int = 1,
) -> tuple[str, list[Any]]:
    """Critical-path sums per endpoint and context over one grain and bucket range (negated for ``sign``
    -1)."""
    where, params = _bucket_filter(dialect, grain, first, end, service, operation)
    sums = ", ".join(_signed(sign, f"sum({c})") for c in ("critical_us", "traces"))
    statement = (
        f"SELECT service, operation, ctx, {sums} FROM rollup_contexts WHERE {where} GROUP BY service, operation, ctx"
    )
    return dialect.sql(statement), params


def plan_context_read(
    dialect: Dialect, window: Window | None, *, service: str | None, operation: str | None
) -> list[tuple[str, list[Any]]]:
    ranges = window_rollup_ranges(None if window is None else window.aligned())
    return [
        context_sql(dialect, grain=g, first=f, end=e, service=service, operation=operation, sign=sign)
        for g, f, e, sign in ranges
    ]


def merge_contexts(results: Sequence[Sequence[Sequence[Any]]], untext: Callable[[str], str]) -> ContextSums:
    """The per-range sums of :func:`plan_context_read`'s statements merged per (endpoint, context)."""
    merged: ContextSums = {}
    for rows in results:
        for service, operation, ctx, critical, traces in rows:
            row = merged.setdefault((untext(service), untext(operation), int(ctx)), [0, 0])
            row[0] += int(critical)
            row[1] += int(traces)
    return merged


def assemble_contexts(merged: ContextSums, names: Mapping[int, tuple[str, ...]]) -> list[ContextRow]:
    """The merged sums with their contexts named; largest first, then by endpoint and path."""
    out = [
        ContextRow(endpoint=(service, operation), path=names[ctx], critical_us=critical, traces=traces)
        for (service, operation, ctx), (critical, traces) in merged.items()
        if traces > 0 and ctx in names
    ]
    out.sort(key=lambda r: (-r.critical_us, r.endpoint, r.path))
    return out


def slow_traces_sql(
    dialect: Dialect, service: str, operation: str, window: Window | None, *, min_duration_us: int, limit: int
) -> tuple[str, list[Any]]:
    """The slowest traces of an endpoint: a walk down ``endpoint_traces`` from the slowest (its key order),
    stopping at ``limit``."""
    statement = (
        "SELECT duration_us, critical FROM endpoint_traces WHERE service = ? AND operation = ? AND duration_us >= ?"
    )
    params: list[Any] = [dialect.text(service), dialect.text(operation), min_duration_us]
    if window is not None:
        aligned = window.aligned()
        statement += " AND start_us >= ? AND start_us < ?"
        params.extend((aligned.start_us, aligned.end_us))
    statement += " ORDER BY duration_us DESC, tid DESC LIMIT ?"
    params.append(limit)
    return dialect.sql(statement), params


def tail_sums(rows: Sequence[Sequence[Any]]) -> dict[int, list[int]]:
    """The (duration, critical blob) rows of :func:`slow_traces_sql` summed per calling context:
    ``[critical µs, traces]``."""
    sums: dict[int, list[int]] = {}
    for _, blob in rows:
        for ctx, critical in decode_critical(blob):
            row = sums.get(ctx)
            if row is None:
                sums[ctx] = [critical, 1]
            else:
                row[0] += critical
                row[1] += 1
    return sums


def assemble_tail(
    endpoint: tuple[str, str],
    rows: Sequence[Sequence[Any]],
    sums: Mapping[int, list[int]],
    names: Mapping[int, tuple[str, ...]],
) -> TailContexts:
    """The tail read's answer from its rows, their :func:`tail_sums` and the contexts' names."""
    contexts = [
        ContextRow(endpoint=endpoint, path=names[ctx], critical_us=critical, traces=traces)
        for ctx, (critical, traces) in sums.items()
        if ctx in names
    ]
    contexts.sort(key=lambda r: (-r.critical_us, r.path))
    return TailContexts(traces=len(rows), min_duration_us=int(rows[-1][0]) if rows else None, contexts=contexts)
