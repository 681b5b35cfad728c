"""Spans for tests, built from positional fields."""

from __future__ import annotations

from typing import Any

from shared.models import Span


def us(ms: float | None) -> int | None:
    """Milliseconds as whole microseconds (None stays None: an open span's duration)."""
    return None if ms is None else round(ms * 1000)


def span_at(
    trace_id: str,
    span_id: str,
    parent: str | None,
    service: str,
    operation: str,
    start_us: int,
    duration_us: int | None,
    **extra: Any,
) -> Span:
    """A span starting at ``start_us`` lasting ``duration_us`` (None: open); ``extra``: other fields."""
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        service_name=service,
        operation_name=operation,
        start_time_us=start_us,
        duration_us=duration_us,
        **extra,
    )
