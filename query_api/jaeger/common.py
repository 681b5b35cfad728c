"""What both Jaeger-compatible APIs share: Jaeger's parameter syntaxes, search building, rendering.

Parameter syntaxes, as Jaeger's query service reads them:

* Go durations (``minDuration=1.2s``, ``query.durationMin=100ms``): a sequence of decimal numbers with a
  unit each (``ns``, ``us``/``µs``, ``ms``, ``s``, ``m``, ``h``), optionally signed; ``0`` needs no unit.
* RFC 3339 times with up to nanosecond precision (``2024-11-25T02:00:00.5Z``, ``...+01:00``).
* Go booleans (``1 t T TRUE true True 0 f F FALSE false False``).

A bad value raises :class:`ParamError`; each API words it its own way (Jaeger's classic API says
``unable to parse param 'x': ...``, the v3 gateway ``malformed parameter x: ...``): see
:mod:`query_api.jaeger.errors`.

Search semantics are this store's (see :class:`~shared.store.base.TraceQuery`), which differ from Jaeger's
span-level matching: service/operation, each tag and the duration range are matched per trace (any span may
satisfy each condition; the duration is the trace's), and only finalized traces are searched. A tag filter
``error=true`` finds failed traces (a span with status error), since the error status is not stored as a tag.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

from shared.store.base import StoredTrace, TraceQuery, TraceStatus
from shared.store.tags import tag_text

from ..shapes import is_id
from .errors import Failure, ParamError

T = TypeVar("T")

MAX_RESULTS: Final = 1000
"""Largest number of traces one search returns (the store's limit); larger requests are capped."""
RENDER_INLINE_MAX_SPANS: Final = 2000
"""Results with more spans than this are converted and encoded in a worker thread."""
MAX_EPOCH_US: Final = 10**16
"""Largest accepted epoch time (year 2286), so every bound fits a 64-bit integer in the store."""
JS_MAX_SAFE_INTEGER: Final = 2**53 - 1
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

_GO_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_GO_PART: Final = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+\- ])(\d{2}):(\d{2}))"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_GO_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


# -- parameter syntaxes ------------------------------------------------------------------------------


def trace_id_param(param: str, value: str) -> str:
    """A trace id parameter, checked with the wire format's id rule."""
    if not is_id(value):
        raise ParamError(param, "a trace id is 1..64 characters of [A-Za-z0-9._:-]")
    return value


def go_duration_ns(text: str) -> int:
    """A Go duration string (``time.ParseDuration``) in nanoseconds; ``ValueError`` with Go's wording."""
    rest = text
    negative = False
    if rest[:1] in ("+", "-"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f'invalid duration "{text}"')
    total = 0
    pos = 0
    while pos < len(rest):
        part = _GO_PART.match(rest, pos)
        if part is None or part.end() == pos:  # pragma: no cover - the pattern always matches
            raise ValueError(f'invalid duration "{text}"')
        whole, fraction, unit = part.group(1), part.group(2) or "", part.group(3)
        if not whole and not fraction:
            raise ValueError(f'invalid duration "{text}"')
        if not unit:
            raise ValueError(f'missing unit in duration "{text}"')
        scale = _GO_UNIT_NS.get(unit)
        if scale is None:
            raise ValueError(f'unknown unit "{unit}" in duration "{text}"')
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        if total > INT64_MAX:
            raise ValueError(f'invalid duration "{text}"')
        pos = part.end()
    return -total if negative else total


def rfc3339_ns(text: str) -> int:
    """An RFC 3339 time (``time.RFC3339Nano``) as nanoseconds since the epoch; ``ValueError`` if invalid.

    A space where the offset sign belongs is read as ``+`` (an unencoded ``+`` in a URL arrives as one).
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f'cannot parse "{text}" as an RFC 3339 time (e.g. 2006-01-02T15:04:05.999999999Z)')
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f'cannot parse "{text}" as an RFC 3339 time: {exc}') from None
    offset_s = 0
    if match.group(8) is not None:
        offset_hours, offset_minutes = int(match.group(9)), int(match.group(10))
        if offset_hours > 23 or offset_minutes > 59:
            raise ValueError(f'cannot parse "{text}" as an RFC 3339 time: time zone offset out of range')
        offset_s = (offset_hours * 60 + offset_minutes) * 60 * (-1 if match.group(8) == "-" else 1)
    seconds = (moment - _EPOCH) // timedelta(seconds=1) - offset_s
    return seconds * 1_000_000_000 + int((match.group(7) or "").ljust(9, "0"))


def go_bool(param: str, text: str) -> bool:
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ParamError(param, f'invalid syntax: "{text}" is not a boolean')


def integer(param: str, text: str, *, bits: int = 64) -> int:
    """A decimal integer that fits a signed ``bits``-bit integer (Go's ``strconv.ParseInt``)."""
    if re.fullmatch(r"[+-]?\d+", text) is None:
        raise ParamError(param, f'invalid syntax: "{text}" is not an integer')
    value = int(text)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise ParamError(param, f'value out of range: "{text}"')
    return value


def first(params: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """The first non-empty value among ``names`` (canonical name first, then aliases) with its name."""
    for name in names:
        value = params.get(name, "")
        if value:
            return name, value
    return None


def duration_bounds_us(low: tuple[str, str] | None, high: tuple[str, str] | None) -> tuple[int | None, int | None]:
    """Go-duration search bounds as whole microseconds (a duration of 0 means no bound, as in Jaeger).

    The bounds are rounded inwards (min up, max down), so ``maxDuration=1500ns`` keeps traces of 1 µs.
    """
    low_ns = _duration_ns(low)
    high_ns = _duration_ns(high)
    if low is not None and high is not None and low_ns and high_ns and high_ns < low_ns:
        raise Failure(400, f"'{high[0]}' should be greater than '{low[0]}'")
    return (-(-low_ns // 1000) if low_ns else None), (high_ns // 1000 if high_ns else None)


def _duration_ns(given: tuple[str, str] | None) -> int:
    if given is None:
        return 0
    name, text = given
    try:
        value = go_duration_ns(text)
    except ValueError as exc:
        raise ParamError(name, str(exc)) from None
    if value < 0:
        raise ParamError(name, f'a duration must not be negative, got "{text}"')
    return value


def result_limit(value: int, default: int) -> int:
    """A requested number of traces: ``default`` when not positive, capped at :data:`MAX_RESULTS`."""
    return default if value <= 0 else min(value, MAX_RESULTS)


def tag_filters(pairs: Iterable[tuple[str, str]]) -> tuple[TraceStatus | None, tuple[tuple[str, str], ...]]:
    """Search tags as (status, remaining tags): ``error=true`` becomes the ``failed`` status (our spans
    carry the error as their status, not as a tag). Later pairs win over earlier ones with the same key."""
    tags = dict(pairs)
    status: TraceStatus | None = None
    if tags.get("error") == "true":
        del tags["error"]
        status = "failed"
    return status, tuple(tags.items())


def json_tag_value(param: str, key: str, value: object) -> str:
    """A value of a JSON tag map as the string the tag index holds (strings as they are)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return tag_text(value)
    raise ParamError(param, f"the value of {key!r} must be a string, number or boolean")


def build_query(
    *,
    service: str | None,
    operation: str | None,
    tags: Iterable[tuple[str, str]],
    min_duration_us: int | None,
    max_duration_us: int | None,
    start_us: int | None,
    end_us: int | None,
    limit: int,
) -> TraceQuery:
    """A Jaeger search as Jaeger's stores run it: service, operation, every tag and the duration bounds
    must hold on ONE span (the memory store's ``validSpan`` checks them all on each span; the Cassandra
    and Badger stores keep their tag and duration indexes per service and operation). ``error=true``
    also matches a span whose status is an error (Jaeger's error tag); the trace must then be failed."""
    status, _ = tag_filters(tags)
    return TraceQuery(
        service_name=service or None,
        operation_name=operation or None,
        min_duration_us=min_duration_us,
        max_duration_us=max_duration_us,
        status=status,
        tags=tuple(dict(tags).items()),
        start_us=start_us,
        end_us=end_us,
        limit=limit,
        same_span=True,
    )


# -- rendering ---------------------------------------------------------------------------------------


async def render(traces: Sequence[StoredTrace], convert: Callable[[], T]) -> T:
    """``convert()``, in a worker thread when the traces are large (the event loop keeps serving).

    ``convert`` may run in another thread: it encodes with ``msgspec.json.encode`` (state per call), not
    with the app's shared encoder."""
    if sum(len(trace.spans) for trace in traces) > RENDER_INLINE_MAX_SPANS:
        return await asyncio.to_thread(convert)
    return convert()


def is_js_safe(value: int) -> bool:
    return -JS_MAX_SAFE_INTEGER <= value <= JS_MAX_SAFE_INTEGER


def non_finite_text(value: float) -> str:
    """NaN and infinities as proto3 JSON spells them (JSON numbers cannot hold them)."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


__all__ = [
    "MAX_EPOCH_US",
    "build_query",
    "duration_bounds_us",
    "first",
    "go_bool",
    "go_duration_ns",
    "integer",
    "is_js_safe",
    "json_tag_value",
    "non_finite_text",
    "render",
    "result_limit",
    "rfc3339_ns",
    "tag_filters",
    "trace_id_param",
]
