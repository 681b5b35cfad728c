"""Query-string and path parameters: parsed and validated at the edge, each error naming its parameter.

``/traces/query`` parameters become a :class:`TraceQuery` (milliseconds in, microseconds inside), which
validates itself too (limit range, min <= max, start <= end).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

from multidict import MultiMapping

from shared.store.base import QueryError, TraceQuery, TraceStatus, Window

from .errors import BadRequest
from .shapes import MAX_DURATION_MS, MAX_EPOCH_MS, check_id

MAX_OFFSET: Final = 2**31 - 1
DEFAULT_LIMIT: Final = 20

STATUS_PARAM: Final[Mapping[str, TraceStatus]] = {
    "active": "active",
    "completed": "completed",
    "failed": "failed",
    "success": "completed",
    "error": "failed",
}
"""Accepted ``status`` values: the trace states, plus the span statuses as synonyms."""

_NUMBER: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER: Final = re.compile(r"[+-]?\d+")


def _single(params: MultiMapping[str], name: str) -> str | None:
    values = params.getall(name, [])
    if len(values) > 1:
        raise BadRequest(name, "must be given at most once")
    return values[0] if values else None


def _matching(params: MultiMapping[str], name: str, pattern: re.Pattern[str], what: str) -> str | None:
    """The one value of ``name``, which must match ``pattern`` whole (else: "must be <what>"); ``None``
    when absent."""
    raw = _single(params, name)
    if raw is not None and pattern.fullmatch(raw) is None:
        raise BadRequest(name, f"must be {what}")
    return raw


def _number(params: MultiMapping[str], name: str) -> float | None:
    """A number in decimal notation, or ``None`` when absent."""
    raw = _matching(params, name, _NUMBER, "a number")
    return None if raw is None else float(raw)


def _millis(params: MultiMapping[str], name: str, maximum: int) -> int | None:
    """A non-negative number of milliseconds as microseconds, or ``None`` when absent."""
    value = _number(params, name)
    if value is None:
        return None
    if not math.isfinite(value):
        raise BadRequest(name, "must be a number")
    if value < 0:
        raise BadRequest(name, "must be >= 0")
    if value > maximum:
        raise BadRequest(name, f"must be <= {maximum}")
    return round(value * 1000)


def _integer(params: MultiMapping[str], name: str, default: int) -> int:
    raw = _matching(params, name, _INTEGER, "an integer")
    return default if raw is None else int(raw)


def _name(params: MultiMapping[str], name: str) -> str | None:
    value = _single(params, name)
    if value is not None and not value:
        raise BadRequest(name, "must not be empty")
    return value


def _tags(params: MultiMapping[str]) -> tuple[tuple[str, str], ...]:
    tags: list[tuple[str, str]] = []
    for raw in params.getall("tag", []):
        key, sep, value = raw.partition(":")
        if not sep or not key:
            raise BadRequest("tag", f"expected key:value, got {raw!r}")
        tags.append((key, value))
    return tuple(tags)


SEARCH_PARAMS: Final = (
    "serviceName",
    "operationName",
    "minDuration",
    "maxDuration",
    "status",
    "tag",
    "start",
    "end",
    "limit",
    "offset",
)


def trace_query(params: MultiMapping[str]) -> TraceQuery:
    """The search described by ``/traces/query``'s parameters; :class:`BadRequest` names a bad one.

    An unknown parameter is an error too: a misspelt filter (``minduration``) must not silently widen
    the search.
    """
    for name in params:
        if name not in SEARCH_PARAMS:
            raise BadRequest(name or "(empty name)", f"unknown parameter; known: {', '.join(SEARCH_PARAMS)}")
    status_raw = _single(params, "status")
    status: TraceStatus | None = None
    if status_raw is not None:
        found = STATUS_PARAM.get(status_raw)
        if found is None:
            raise BadRequest("status", f"must be one of {', '.join(STATUS_PARAM)}")
        status = found
    offset = _integer(params, "offset", 0)
    if offset > MAX_OFFSET:
        raise BadRequest("offset", f"must be <= {MAX_OFFSET}")
    try:
        return TraceQuery(
            service_name=_name(params, "serviceName"),
            operation_name=_name(params, "operationName"),
            min_duration_us=_millis(params, "minDuration", MAX_DURATION_MS),
            max_duration_us=_millis(params, "maxDuration", MAX_DURATION_MS),
            status=status,
            tags=_tags(params),
            start_us=_millis(params, "start", MAX_EPOCH_MS),
            end_us=_millis(params, "end", MAX_EPOCH_MS),
            limit=_integer(params, "limit", DEFAULT_LIMIT),
            offset=offset,
        )
    except QueryError as exc:
        raise BadRequest(exc.param, exc.message) from None


def trace_id(match_info: Mapping[str, str]) -> str:
    """The ``{traceId}`` path parameter, validated with the wire format's id rule."""
    value = match_info["traceId"]
    check_id("traceId", value)
    return value


_DURATION: Final = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_US: Final = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
MAX_WINDOW_US: Final = 400 * 86_400_000_000
"""The longest window accepted: 400 days."""


def duration_text(name: str, raw: str) -> int:
    """``15m``, ``1h``, ``7d``, ``30s`` (also ``ms``) as microseconds; :class:`BadRequest` names ``name``."""
    match = _DURATION.fullmatch(raw.strip())
    if match is None:
        raise BadRequest(name, f"expected <number><s|m|h|d>, e.g. 15m or 24h, got {raw!r}")
    value = int(match.group(1)) * _UNIT_US[match.group(2)]
    if value <= 0:
        raise BadRequest(name, "must be > 0")
    if value > MAX_WINDOW_US:
        raise BadRequest(name, "must be at most 400d")
    return value


def window(params: MultiMapping[str], now_us: int, *, name: str = "window") -> Window | None:
    """The time window of a stats-like read: ``window=<n>s|m|h|d`` (the last n units up to now) or
    ``start`` (and optionally ``end``, default now) in epoch milliseconds; ``None`` (all time) without
    them. Both forms at once are a 400."""
    raw = _single(params, name)
    start = _millis(params, "start", MAX_EPOCH_MS)
    end = _millis(params, "end", MAX_EPOCH_MS)
    if raw is not None:
        if start is not None or end is not None:
            raise BadRequest(name, "give either window or start/end, not both")
        return Window(start_us=max(0, now_us - duration_text(name, raw)), end_us=now_us)
    if start is None:
        if end is not None:
            raise BadRequest("start", "is required with end")
        return None
    try:
        return Window(start_us=start, end_us=now_us if end is None else end)
    except QueryError as exc:
        raise BadRequest(exc.param, exc.message) from None


def only(params: MultiMapping[str], known: tuple[str, ...]) -> None:
    """Reject parameters outside ``known`` (a misspelt filter must not silently widen a read)."""
    for name in params:
        if name not in known:
            raise BadRequest(name or "(empty name)", f"unknown parameter; known: {', '.join(known)}")


def required_name(params: MultiMapping[str], name: str) -> str:
    value = _name(params, name)
    if value is None:
        raise BadRequest(name, "is required")
    return value


def optional_name(params: MultiMapping[str], name: str) -> str | None:
    return _name(params, name)


def milliseconds(params: MultiMapping[str], name: str) -> int | None:
    """A non-negative duration in milliseconds, as microseconds."""
    return _millis(params, name, MAX_DURATION_MS)


def fraction(params: MultiMapping[str], name: str) -> float | None:
    """A number in (0, 1), e.g. ``tail=0.95``."""
    value = _number(params, name)
    if value is None:
        return None
    if not 0 < value < 1:
        raise BadRequest(name, "must be between 0 and 1 (exclusive), e.g. 0.95")
    return value


def integer(params: MultiMapping[str], name: str, default: int, *, low: int, high: int) -> int:
    value = _integer(params, name, default)
    if not low <= value <= high:
        raise BadRequest(name, f"must be between {low} and {high}")
    return value
