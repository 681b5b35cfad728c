"""What every backend's search shares: the same-span test of Jaeger's search semantics, and the grain
arithmetic of rollup reads. Pure: no I/O.

A same-span search (``TraceQuery.same_span``) runs in two steps in every backend: the indexes give the
candidate traces (newest first) that have the service and operation with a duration that can match and
every tag somewhere; :func:`trace_has_matching_span` then keeps those where one span satisfies all the
conditions at once, as Jaeger's stores match. The backends fetch candidates in pages until the page
asked for is full or the candidates run out, so the answer is exact; the cost is bounded by the traces
that have the service and every tag somewhere.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Final

from shared.models import Span, flat_tags
from shared.store.base import QueryError, TraceQuery, Window
from shared.store.rollups import GRAIN_US, HOUR, HOUR_US, MINUTE, MINUTE_US, TEN
from shared.store.tags import tag_text

ERROR_TAG: Final = ("error", "true")
"""Jaeger's error tag; on a same-span search it also matches a span whose status is an error."""
CANDIDATE_PAGE: Final = 200
"""Candidates fetched per round of a same-span search."""


def span_matches(span: Span, query: TraceQuery) -> bool:
    """One span has the query's service, operation, duration bounds and every tag (span tags, process
    tags, i.e. the resource and scope, and log fields count, as in Jaeger's memory store)."""
    if query.service_name is not None and span.service_name != query.service_name:
        return False
    if query.operation_name is not None and span.operation_name != query.operation_name:
        return False
    duration = span.duration_us or 0
    if query.min_duration_us is not None and duration < query.min_duration_us:
        return False
    if query.max_duration_us is not None and duration > query.max_duration_us:
        return False
    return all(_has_tag(span, key, value) for key, value in query.tags)


def _has_tag(span: Span, key: str, value: str, *, error_status: bool = True) -> bool:
    """On the span's tags, its resource attributes or scope (as ``otel.scope.*``), or a log's fields;
    ``error=true`` also on a span whose status is an error (``error_status``)."""
    if error_status and (key, value) == ERROR_TAG and span.status == "error":
        return True
    found = flat_tags(span).get(key)
    if found is not None and tag_text(found) == value:
        return True
    return any(key in log.fields and tag_text(log.fields[key]) == value for log in span.logs)


def trace_has_matching_span(spans: Iterable[Span], query: TraceQuery) -> bool:
    return any(span_matches(span, query) for span in spans)


def trace_has_tags(spans: Sequence[Span], tags: Iterable[tuple[str, str]]) -> bool:
    """Each (key, value text) pair is on some span of the trace (each maybe another): a trace-level search's
    tags, as the tag index holds them (a span's tags, resource, scope and log fields; an error status is
    not the tag ``error=true`` here)."""
    return all(any(_has_tag(span, key, value, error_status=False) for span in spans) for key, value in tags)


def window_ranges(window: Window) -> list[tuple[int, int, int]]:
    """The (grain, first bucket, end bucket) ranges that cover the minute-aligned ``window`` with the
    fewest rows: whole hours from the hour rows, the minutes at either edge from the minute rows."""
    start, end = window.start_us // MINUTE_US, window.end_us // MINUTE_US
    first_hour = -(-window.start_us // HOUR_US)
    last_hour = window.end_us // HOUR_US
    if first_hour >= last_hour:
        return [(MINUTE, start, end)]
    ranges = [(HOUR, first_hour, last_hour)]
    if start < first_hour * 60:
        ranges.append((MINUTE, start, first_hour * 60))
    if last_hour * 60 < end:
        ranges.append((MINUTE, last_hour * 60, end))
    return ranges


ROW_COST: Final = {MINUTE: 10, TEN: 15, HOUR: 20}
"""What reading a key's row of each grain costs, in tenths of a minute row, for
:func:`signed_window_ranges` (a coarser bucket holds more keys than a minute does)."""
FUTURE_ROW_COST: Final = 1
"""What a row whose bucket starts after now costs: it holds nothing yet, but is one more bucket to seek."""
SIGNED_GRAINS: Final = (HOUR, TEN, MINUTE)
"""The grains :func:`signed_window_ranges` reads, coarsest first: each bucket the sum of the buckets of the
next grain in it (:data:`~shared.store.rollups.SQL_GRAINS` writes them)."""
_CHILD: Final = {HOUR: TEN, TEN: MINUTE}
MAX_EDGE_ROWS: Final = 22
"""The most rows :func:`signed_window_ranges` reads for any window and any now besides the hour rows of
the hours the window covers whole; at most 16 of them start before now (the rest hold nothing yet), in at
most :data:`MAX_RANGES` ranges (``tests/unit/test_window_ranges.py`` checks these bounds)."""
MAX_RANGES: Final = 5

_Pick = tuple[int, int, int]
_Plan = tuple[int, int, tuple[_Pick, ...]]
"""(cost, rows, (grain, bucket, sign) of each row): one way to read a set of minutes of a bucket."""
_NOTHING: Final[_Plan] = (0, 0, ())


@functools.lru_cache(maxsize=8192)
def _plan(grain: int, lo: int, hi: int, inside: bool, sign: int, now: int) -> _Plan:
    """The cheapest rows (by :data:`ROW_COST`, then fewest) whose sums, times ``sign``, are those of the
    minutes of one bucket of ``grain`` in ``[lo, hi)`` (``inside``) or out of it (not ``inside``): the
    bucket's rows below, or its own row less the rows below that read the other minutes (with the opposite
    sign). A row whose bucket starts at or after ``now`` costs :data:`FUTURE_ROW_COST`: nothing has
    started there yet. Minutes and buckets are counted from the bucket's start (``lo``, ``hi`` and ``now``
    within ``[0, its minutes]``), so that a plan is worked out once per shape (cached)."""
    size = GRAIN_US[grain] // MINUTE_US
    spans = lo == 0 and hi == size
    if (lo >= hi) if inside else spans:
        return _NOTHING
    own = (FUTURE_ROW_COST if now <= 0 else ROW_COST[grain], 1, ((grain, 0, sign),))
    whole = spans if inside else lo >= hi
    if whole and (now >= size or now <= 0 or grain == MINUTE):
        return own  # a coarser row costs less than the rows below it, all read (or all free)
    child = _CHILD[grain]
    step = GRAIN_US[child] // MINUTE_US

    def below(inside: bool, sign: int) -> _Plan:
        cost = rows = 0
        picks: list[_Pick] = []
        for k in range(size // step):
            m = k * step
            c, n, ps = _plan(child, _clip(lo - m, step), _clip(hi - m, step), inside, sign, _clip(now - m, step))
            cost, rows = cost + c, rows + n
            picks += [(g, b + m * MINUTE_US // GRAIN_US[g], s) for g, b, s in ps]
        return cost, rows, tuple(picks)

    if whole:
        return min(own, below(inside, sign), key=_order)
    c, n, ps = below(not inside, -sign)
    return min(below(inside, sign), (own[0] + c, 1 + n, own[2] + ps), key=_order)


def _clip(minute: int, size: int) -> int:
    return min(max(minute, 0), size)


def _order(plan: _Plan) -> tuple[int, int]:
    return plan[0], plan[1]


def signed_window_ranges(window: Window, now_us: int) -> list[tuple[int, int, int, int]]:
    """(grain, first bucket, end bucket, sign) ranges whose signed sums are the minute-aligned ``window``'s,
    for stores whose coarser rows are the sums of their finer ones (hour = six ten-minute rows = sixty
    minute rows): whole hours from the hour rows; an hour the window covers in part from the fewest
    rows by :data:`ROW_COST`, its ten-minute and minute rows, or its hour row less those of the minutes
    outside the window, recursively (a ten-minute block likewise: its rows below, or its row less the
    minutes outside). Rows that start after ``now_us`` are counted as nearly free, holding nothing yet
    (:data:`FUTURE_ROW_COST`): a window ending now reads the current hour's (or ten minutes') row rather
    than its minutes so far.
    At most :data:`MAX_EDGE_ROWS` rows besides those of the whole hours, in :data:`MAX_RANGES` ranges."""
    start, end = window.start_us // MINUTE_US, window.end_us // MINUTE_US
    now = -(-now_us // MINUTE_US)  # the first minute that starts at or after now
    picks: list[_Pick] = []
    for hour in range(start // 60, -(-end // 60)):
        if start <= hour * 60 and hour * 60 + 60 <= min(end, now):
            picks.append((HOUR, hour, 1))
        else:
            m = hour * 60
            shape = _plan(HOUR, _clip(start - m, 60), _clip(end - m, 60), True, 1, _clip(now - m, 60))
            picks += [(g, b + m * MINUTE_US // GRAIN_US[g], s) for g, b, s in shape[2]]
    picks.sort(key=lambda p: (SIGNED_GRAINS.index(p[0]), -p[2], p[1]))
    runs: list[tuple[int, int, int, int]] = []
    for grain, bucket, sign in picks:
        if runs and runs[-1][0] == grain and runs[-1][3] == sign and runs[-1][2] == bucket:
            runs[-1] = (grain, runs[-1][1], bucket + 1, sign)
        else:
            runs.append((grain, bucket, bucket + 1, sign))
    return runs


def step_grain(window: Window, step_us: int) -> tuple[int, int, int, int]:
    """(grain, first bucket, end bucket, buckets per step) for a time series of ``window`` (aligned) in
    steps of ``step_us``: hour rows when steps and window are whole hours, else minute rows."""
    if step_us <= 0 or step_us % MINUTE_US:
        raise QueryError("step", f"must be a positive multiple of {MINUTE_US // 1000} ms (the rollups' minute)")
    grain = HOUR if step_us % HOUR_US == 0 and window.start_us % HOUR_US == 0 else MINUTE
    size = GRAIN_US[grain]
    return grain, window.start_us // size, -(-window.end_us // size), step_us // size
