"""The data model: native wire events and the spans every codec produces.

Wire names are camelCase (``traceId``, ``startTimeUs``); Python attributes are snake_case with units in
the name. Times are integer microseconds since the Unix epoch. Every Struct here is validated by msgspec
at decode time (ids, non-negative times, known enum values), so inner code can trust its types.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Final, Literal

import msgspec

ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,64}$"
ID_CHARS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
"""An opaque trace or span id: 1..64 of ``[A-Za-z0-9._:-]`` (W3C lowercase hex recommended).

msgspec checks the length at decode time; the character set is checked for a whole batch at once by
:func:`invalid_id` (one ``bytes.translate`` instead of a regex per id: decoding is twice as fast).
"""

Micros = Annotated[int, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
TagValue = str | int | float | bool
TraceState = Annotated[str, msgspec.Meta(max_length=512)]
"""A W3C ``tracestate`` header value (at most 512 characters, as the W3C Trace Context allows)."""
Tags = dict[Annotated[str, msgspec.Meta(min_length=1, max_length=256)], TagValue]

Status = Literal["success", "error"]
StatusInput = Literal["success", "ok", "error", "failed", "failure"]
"""Accepted on input; normalized to :data:`Status` (``ok`` → success, ``failed``/``failure`` → error)."""
Kind = Literal["server", "client", "producer", "consumer", "internal"]

STATUS_OF: Final[dict[str, Status]] = {
    "success": "success",
    "ok": "success",
    "error": "error",
    "failed": "error",
    "failure": "error",
}

_ID_RE: Final = re.compile(ID_PATTERN)

SPAN_CONTENT_TYPE: Final = "application/vnd.tracing.span+json;v=1"

SCOPE_NAME_TAG: Final = "otel.scope.name"
SCOPE_VERSION_TAG: Final = "otel.scope.version"
"""The tag names an instrumentation scope takes where spans show it among their tags (the seed API, Jaeger's
classic span tags), as OpenTelemetry's non-OTLP exporters name it."""


class Log(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    """A timestamped event inside a span."""

    timestamp_us: Micros
    fields: Tags = {}


class Span(msgspec.Struct, kw_only=True, rename="camel", tag="span", tag_field="type", omit_defaults=True, gc=False):
    """A span record: complete (``duration_us`` set) or open (``duration_us`` is ``None`` until finished).

    Also the wire event ``{"type": "span", ...}`` of the native topic. ``status`` holds the normalized
    value after decoding (see :data:`STATUS_OF`).

    ``resource`` holds what describes the producer rather than the operation: OpenTelemetry's resource
    attributes other than ``service.name`` (which is ``service_name``), e.g. ``host.name``,
    ``service.version``; Jaeger shows them as the process's tags. ``scope_name``/``scope_version`` name the
    instrumentation scope (the library that recorded the span), when the producer says. All three are
    optional (wire ``resource``, ``scopeName``, ``scopeVersion``) and omitted on the wire when unset.
    ``trace_state`` is the W3C ``tracestate`` of the span's context (wire ``traceState``), when the producer
    sent one: OpenTelemetry's probability sampling writes its threshold there (``ot=th:...``, see
    :mod:`shared.adjusted_counts`).
    Spans decoded from one OTLP resource share one ``resource`` dict: treat it as read-only.

    ``gc=False`` and a tuple of logs keep a decoded span (and its tags dict, which holds only atomic
    values) out of the cyclic garbage collector: a batch of 100k spans would otherwise trigger collections
    costing more than the decoding itself (measured 3x). Spans never take part in reference cycles.
    """

    trace_id: Id
    span_id: Id
    parent_span_id: Id | None = None
    service_name: Name
    operation_name: Name
    start_time_us: Micros
    duration_us: Micros | None = None
    status: StatusInput = "success"
    kind: Kind | None = None
    tags: Tags = {}
    logs: tuple[Log, ...] = ()
    resource: Tags = {}
    scope_name: Name | None = None
    scope_version: Name | None = None
    trace_state: TraceState | None = None

    def __post_init__(self) -> None:
        self.status = STATUS_OF[self.status]

    @property
    def end_time_us(self) -> int | None:
        return None if self.duration_us is None else self.start_time_us + self.duration_us

    @property
    def is_root(self) -> bool:
        return self.parent_span_id is None


class SpanFinish(
    msgspec.Struct, kw_only=True, rename="camel", tag="finish", tag_field="type", omit_defaults=True, gc=False
):
    """Closes an open span: sets its end time, optionally its status; ``tags`` merge into the span's."""

    trace_id: Id
    span_id: Id
    end_time_us: Micros
    status: StatusInput | None = None
    tags: Tags = {}

    def __post_init__(self) -> None:
        if self.status is not None:
            self.status = STATUS_OF[self.status]


Event = Span | SpanFinish
"""One native wire event."""


def flat_tags(span: Span) -> Tags:
    """The span's tags with its resource attributes and scope (as ``otel.scope.name``/``otel.scope.version``)
    folded in; the span's own tags win on a shared key. The span's ``tags`` itself when it has neither.

    This is how spans looked before resources were kept apart, and what the seed API still shows.
    """
    if not span.resource and span.scope_name is None and span.scope_version is None:
        return span.tags
    merged: Tags = dict(span.resource)
    if span.scope_name is not None:
        merged[SCOPE_NAME_TAG] = span.scope_name
    if span.scope_version is not None:
        merged[SCOPE_VERSION_TAG] = span.scope_version
    merged.update(span.tags)
    return merged


def merge_finish(span: Span, finish: SpanFinish) -> Span:
    """Apply a finish event to its span: duration from the end time (never negative), status, tags."""
    duration = max(0, finish.end_time_us - span.start_time_us)
    tags = span.tags | finish.tags if finish.tags else span.tags
    return msgspec.structs.replace(span, duration_us=duration, status=finish.status or span.status, tags=tags)


def invalid_id(events: Sequence[Event]) -> tuple[int, str, str] | None:
    """The first id outside ``[A-Za-z0-9._:-]`` as (event index, wire field name, value), else ``None``."""
    blob = "".join([e.trace_id + e.span_id + (getattr(e, "parent_span_id", None) or "") for e in events])
    if blob.isascii() and not blob.encode().translate(None, ID_CHARS):
        return None
    for i, event in enumerate(events):
        for attr, wire in (("trace_id", "traceId"), ("span_id", "spanId"), ("parent_span_id", "parentSpanId")):
            value = getattr(event, attr, None)
            if value is not None and not _ID_RE.fullmatch(value):
                return i, wire, value
    return None  # unreachable: the blob held a bad character
