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

from collections.abc import Iterable, Sequence
from typing import Final

from shared.models import Span, flat_tags
from shared.store.base import QueryError, TraceQuery, Window
from shared.store.rollups import GRAIN_US, HOUR, HOUR_US, MINUTE, MINUTE_US
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


HOUR_ROW_COST: Final = 2
"""What reading a key's hour row costs in minute rows, for :func:`signed_window_ranges` (an hour holds
more keys than a minute does)."""


def signed_window_ranges(window: Window, now_us: int) -> list[tuple[int, int, int, int]]:
    """(grain, first bucket, end bucket, sign) ranges whose signed sums are the minute-aligned ``window``'s,
    for stores whose hour rows are the sums of their minute rows: as :func:`window_ranges`, but an hour the
    window covers in part is read as its hour row less the minutes outside the window where that reads
    fewer rows. Minutes that start after ``now_us`` are counted as free, holding nothing yet: a window
    ending now reads the current hour's row and none of its minutes."""
    start, end = window.start_us // MINUTE_US, window.end_us // MINUTE_US
    hours: list[int] = []
    minutes: list[tuple[int, int, int, int]] = []
    for hour in range(start // 60, -(-end // 60)):
        first, last = max(start, hour * 60), min(end, hour * 60 + 60)
        before, after = first - hour * 60, hour * 60 + 60 - last
        if before == after == 0:
            hours.append(hour)
            continue
        future = last * MINUTE_US >= now_us
        if HOUR_ROW_COST + before + (0 if future else after) >= last - first:
            minutes.append((MINUTE, first, last, 1))
            continue
        hours.append(hour)
        minutes += [(MINUTE, a, b, -1) for a, b in ((hour * 60, first), (last, hour * 60 + 60)) if a < b]
    runs: list[tuple[int, int, int, int]] = []
    for hour in hours:
        if runs and runs[-1][2] == hour:
            runs[-1] = (HOUR, runs[-1][1], hour + 1, 1)
        else:
            runs.append((HOUR, hour, hour + 1, 1))
    return runs + minutes


def step_grain(window: Window, step_us: int) -> tuple[int, int, int, int]:
    """(grain, first bucket, end bucket, buckets per step) for a time series of ``window`` (aligned) in
    steps of ``step_us``: hour rows when steps and window are whole hours, else minute rows."""
    if step_us <= 0 or step_us % MINUTE_US:
        raise QueryError("step", f"must be a positive multiple of {MINUTE_US // 1000} ms (the rollups' minute)")
    grain = HOUR if step_us % HOUR_US == 0 and window.start_us % HOUR_US == 0 else MINUTE
    size = GRAIN_US[grain]
    return grain, window.start_us // size, -(-window.end_us // size), step_us // size
