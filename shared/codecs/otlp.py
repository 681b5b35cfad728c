"""OTLP traces: ``ExportTraceServiceRequest`` as protobuf (``otlp_proto``) or OTLP/JSON (``otlp_json``),
exactly as the OpenTelemetry Collector's Kafka exporter writes it (topic ``otlp_spans``, no message key).

One mapping turns an OTLP span into a native :class:`~shared.models.Span`: :func:`build_span`, fed by the
protobuf decoder, the JSON decoder and the SDK exporter (:mod:`shared.otel`) alike.

==========================================  ================================================================
OTLP                                        native span
==========================================  ================================================================
resource attribute ``service.name``         ``service_name`` (missing or empty: ``unknown_service``)
other resource attributes                   ``resource`` (converted as ``attributes`` are), one dict shared
                                            by every span of the resource
scope ``name`` / ``version``                ``scope_name`` / ``scope_version`` (empty: ``None``; cut to 256)
``trace_id`` / ``span_id``                  lowercase hex (16 / 8 bytes; missing, wrong length or all zeros:
                                            :class:`DecodeError`)
``parent_span_id``                          lowercase hex; empty or all zeros: ``None`` (a root)
``name``                                    ``operation_name`` (empty: ``unknown``)
``kind`` 1..5                               internal, server, client, producer, consumer (0 or unknown: None)
``start_time_unix_nano``                    ``start_time_us`` (0: :class:`DecodeError`)
``end_time_unix_nano``                      ``duration_us`` = end - start (end before start: 0; 0: open span)
``status.code`` 2 (ERROR)                   ``status`` "error"; anything else "success"
``status.message``                          tag ``otel.status_description`` (when set)
``attributes``                              tags: string/bool/int/double as they are; arrays and kvlists as
                                            JSON text; bytes as base64; non-finite doubles as "NaN",
                                            "Infinity", "-Infinity"; empty values dropped
``events``                                  logs: ``time_unix_nano`` → ``timestamp_us``, attributes →
                                            fields, ``name`` → field ``event``
``trace_state``                             ``trace_state`` (empty: ``None``; longer than 512: ``None``)
``links``, ``flags``, scope attributes,     ignored (the native model has no place for them)
dropped counts
==========================================  ================================================================

Resource attributes were folded into the tags before spans had a ``resource``; :func:`shared.models.flat_tags`
gives that view back (the seed API shows it).

Names longer than 256 characters are cut to 256, tag keys likewise; empty tag keys are dropped.

OTLP/JSON follows the OTLP specification's "JSON Protobuf Encoding": keys are lowerCamelCase (the proto
field names, e.g. ``trace_id``, are accepted too, as protobuf's JSON parsers and the Collector's do);
64-bit integers are decimal strings or numbers; enums are integers (enum name strings are rejected);
``traceId``/``spanId``/``parentSpanId`` are hex, case-insensitive. Ids in base64 (what protobuf's standard
JSON mapping would write) are rejected with a reason saying so: the OTLP specification forbids them.
Unknown keys are ignored.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable
from typing import Any, Final, NamedTuple, TypeAlias

import msgspec
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from shared.codecs.errors import DecodeError
from shared.models import Event, Kind, Log, Span, Tags, TagValue

UNKNOWN_SERVICE: Final = "unknown_service"
UNKNOWN_OPERATION: Final = "unknown"
SERVICE_NAME: Final = "service.name"
STATUS_DESCRIPTION_TAG: Final = "otel.status_description"
EVENT_FIELD: Final = "event"
STATUS_CODE_ERROR: Final = 2
KINDS: Final[dict[int, Kind]] = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
"""OTLP ``Span.SpanKind`` numbers; 0 (unspecified) and unknown numbers map to no kind."""

TRACE_ID_BYTES: Final = 16
SPAN_ID_BYTES: Final = 8
MAX_NAME: Final = 256
MAX_TRACE_STATE: Final = 512
"""The longest ``tracestate`` the W3C Trace Context allows; a longer one is not kept."""

Plain: TypeAlias = "str | bool | int | float | bytes | list[Plain] | dict[str, Plain] | None"
"""An attribute value as plain Python data: what an OTLP ``AnyValue`` holds, or an SDK attribute value."""

_HEX: Final = re.compile(r"[0-9a-fA-F]*")
_BASE64: Final = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_NON_FINITE: Final = {math.inf: "Infinity", -math.inf: "-Infinity"}
_plain_json = msgspec.json.Encoder()


# -- the one mapping -----------------------------------------------------------------------------------


def bounded_name(value: str, default: str) -> str:
    """A service or operation name the model accepts: ``default`` when empty, cut to 256 characters."""
    return value[:MAX_NAME] if value else default


def tag_value(value: object) -> TagValue | None:
    """One attribute value (:data:`Plain`, or an SDK attribute value) as a tag value; ``None`` for an empty
    value (the attribute is dropped)."""
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return _NON_FINITE.get(value, "NaN")
    if value is None:
        return None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    try:
        return _plain_json.encode(value).decode()  # arrays and kvlists: JSON text (bytes inside as base64)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def to_tags(attributes: Iterable[tuple[str, object]]) -> Tags:
    """Attributes as tags: empty keys and empty values dropped, keys cut to 256 characters."""
    tags: Tags = {}
    for key, value in attributes:
        if key:
            converted = tag_value(value)
            if converted is not None:
                tags[key[:MAX_NAME]] = converted
    return tags


class ResourceInfo(NamedTuple):
    """What every span of one resource shares: its service name and its other attributes (as tags)."""

    service_name: str
    attributes: Tags


def resource_info(attributes: Iterable[tuple[str, object]]) -> ResourceInfo:
    tags = to_tags(attributes)
    service = tags.pop(SERVICE_NAME, None)
    return ResourceInfo(bounded_name(str(service) if service is not None else "", UNKNOWN_SERVICE), tags)


class ScopeInfo(NamedTuple):
    """An instrumentation scope's name and version; ``None`` where the producer gave none."""

    name: str | None
    version: str | None


NO_SCOPE: Final = ScopeInfo(None, None)


def scope_info(name: str | None, version: str | None) -> ScopeInfo:
    """A scope as the model holds it: empty strings become ``None``, longer ones are cut to 256."""
    if not name and not version:
        return NO_SCOPE
    return ScopeInfo(name[:MAX_NAME] if name else None, version[:MAX_NAME] if version else None)


def id_from_bytes(raw: bytes, size: int, what: str) -> str:
    """A protobuf id as lowercase hex; wrong length or all zeros is a :class:`DecodeError`."""
    if not raw:
        raise DecodeError(f"{what} is missing")
    if len(raw) != size:
        raise DecodeError(f"{what} must be {size} bytes, got {len(raw)}")
    if not any(raw):
        raise DecodeError(f"{what} is all zeros")
    return raw.hex()


def id_from_hex(text: str, size: int, what: str) -> str:
    """An OTLP/JSON id (case-insensitive hex of ``size`` bytes) as lowercase hex."""
    if not text:
        raise DecodeError(f"{what} is missing")
    if len(text) != 2 * size or not _HEX.fullmatch(text):
        reason = f"{what} must be {2 * size} hex characters, got {text[:80]!r}"
        if len(text) in (4 * ((size + 2) // 3), math.ceil(size * 4 / 3)) and _BASE64.fullmatch(text):
            reason += " (this looks like base64: OTLP/JSON encodes ids as hex, not base64)"
        raise DecodeError(reason)
    if text.count("0") == len(text):
        raise DecodeError(f"{what} is all zeros")
    return text.lower()


def id_from_int(value: int, size: int, what: str) -> str:
    """An SDK id (an int) as lowercase hex."""
    if not 0 < value < 1 << (8 * size):
        raise DecodeError(f"{what} is not a valid {size}-byte id: {value}")
    return format(value, f"0{2 * size}x")


def parent_from_bytes(raw: bytes) -> str | None:
    """A protobuf parent span id as lowercase hex: ``None`` when empty or all zeros (a root span)."""
    return id_from_bytes(raw, SPAN_ID_BYTES, "parentSpanId") if any(raw) else None


def parent_from_hex(text: str | None) -> str | None:
    """An OTLP/JSON parent span id as lowercase hex: ``None`` when empty or all zeros (a root span)."""
    return id_from_hex(text, SPAN_ID_BYTES, "parentSpanId") if text and text.strip("0") else None


def build_span(
    *,
    trace_id: str,
    span_id: str,
    parent_span_id: str | None,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    status_code: int,
    status_message: str,
    attributes: Iterable[tuple[str, object]],
    events: Iterable[tuple[int, str, Iterable[tuple[str, object]]]],
    resource: ResourceInfo,
    scope: ScopeInfo,
    trace_state: str = "",
) -> Span:
    """The native span for one OTLP span, its ids already normalized (``id_from_*``, ``parent_from_*``).

    Tags: the span's attributes, then the status message (``otel.status_description``). The resource's
    attributes go to ``resource`` (the same dict for every span of it) and the scope to ``scope_*``.
    """
    if start_ns <= 0:
        raise DecodeError(
            "startTimeUnixNano is missing" if start_ns == 0 else f"startTimeUnixNano is negative: {start_ns}"
        )
    start_us = start_ns // 1000
    duration_us = None if end_ns <= 0 else max(0, end_ns // 1000 - start_us)
    tags = to_tags(attributes)
    if status_message:
        tags[STATUS_DESCRIPTION_TAG] = status_message
    logs = tuple(
        Log(timestamp_us=max(0, time_ns) // 1000, fields=to_tags(fields) | {EVENT_FIELD: event_name})
        for time_ns, event_name, fields in events
    )
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        service_name=resource.service_name,
        operation_name=bounded_name(name, UNKNOWN_OPERATION),
        start_time_us=start_us,
        duration_us=duration_us,
        status="error" if status_code == STATUS_CODE_ERROR else "success",
        kind=KINDS.get(kind),
        tags=tags,
        logs=logs,
        resource=resource.attributes,
        scope_name=scope.name,
        scope_version=scope.version,
        trace_state=trace_state if 0 < len(trace_state) <= MAX_TRACE_STATE else None,
    )


def _where(r: int, s: int, i: int) -> str:
    return f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"


# -- protobuf --------------------------------------------------------------------------------------------


def _plain_pb(value: AnyValue) -> Plain:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_plain_pb(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _plain_pb(kv.value) for kv in value.kvlist_value.values}
    plain: Plain = getattr(value, which)  # string_value, bool_value, int_value, double_value, bytes_value
    return plain


def _pairs_pb(attributes: Iterable[KeyValue]) -> list[tuple[str, Plain]]:
    return [(kv.key, _plain_pb(kv.value)) for kv in attributes]


def decode_otlp_proto(value: bytes) -> list[Event]:
    """Decode one protobuf ``ExportTraceServiceRequest``. Raises :class:`DecodeError` with the reason."""
    try:
        request = ExportTraceServiceRequest.FromString(value)
    except (ProtobufDecodeError, RecursionError, ValueError) as exc:
        raise DecodeError(f"not a protobuf ExportTraceServiceRequest: {exc}") from None
    events: list[Event] = []
    try:
        for r, resource_spans in enumerate(request.resource_spans):
            resource = resource_info(_pairs_pb(resource_spans.resource.attributes))
            for s, scope_spans in enumerate(resource_spans.scope_spans):
                scope = scope_info(scope_spans.scope.name, scope_spans.scope.version)
                for i, span in enumerate(scope_spans.spans):
                    try:
                        events.append(
                            build_span(
                                trace_id=id_from_bytes(span.trace_id, TRACE_ID_BYTES, "traceId"),
                                span_id=id_from_bytes(span.span_id, SPAN_ID_BYTES, "spanId"),
                                parent_span_id=parent_from_bytes(span.parent_span_id),
                                name=span.name,
                                kind=span.kind,
                                start_ns=span.start_time_unix_nano,
                                end_ns=span.end_time_unix_nano,
                                status_code=span.status.code,
                                status_message=span.status.message,
                                attributes=_pairs_pb(span.attributes),
                                events=[(e.time_unix_nano, e.name, _pairs_pb(e.attributes)) for e in span.events],
                                resource=resource,
                                scope=scope,
                                trace_state=span.trace_state,
                            )
                        )
                    except DecodeError as exc:
                        raise DecodeError(f"{_where(r, s, i)}: {exc}") from None
    except RecursionError:
        raise DecodeError("attribute values nested too deeply") from None
    return events


# -- OTLP/JSON -------------------------------------------------------------------------------------------


class _Json(msgspec.Struct, rename="camel", kw_only=True):
    """Base of the OTLP/JSON shapes. Keys are lowerCamelCase; a field ``x_`` holds the same value spelled
    with the proto field name (``trace_id``), which proto3 JSON parsers accept too: it fills ``x`` when
    ``x`` is absent."""

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            if name[-1] == "_":
                alias = getattr(self, name)
                if alias is not None and getattr(self, name[:-1]) is None:
                    setattr(self, name[:-1], alias)


def _alias(name: str) -> Any:
    return msgspec.field(default=None, name=name)


class _AnyValue(_Json):
    string_value: str | None = None
    string_value_: str | None = _alias("string_value")
    bool_value: bool | None = None
    bool_value_: bool | None = _alias("bool_value")
    int_value: int | None = None
    int_value_: int | None = _alias("int_value")
    double_value: float | None = None
    double_value_: float | None = _alias("double_value")
    array_value: _ArrayValue | None = None
    array_value_: _ArrayValue | None = _alias("array_value")
    kvlist_value: _KeyValueList | None = None
    kvlist_value_: _KeyValueList | None = _alias("kvlist_value")
    bytes_value: bytes | None = None  # base64 in JSON
    bytes_value_: bytes | None = _alias("bytes_value")

    def plain(self) -> Plain:
        if self.string_value is not None:
            return self.string_value
        if self.bool_value is not None:
            return self.bool_value
        if self.int_value is not None:
            return self.int_value
        if self.double_value is not None:
            return self.double_value
        if self.array_value is not None:
            return [v.plain() for v in self.array_value.values]
        if self.kvlist_value is not None:
            return {kv.key: kv.value.plain() for kv in self.kvlist_value.values if kv.value is not None}
        return self.bytes_value


class _ArrayValue(_Json):
    values: list[_AnyValue] = []


class _KeyValue(_Json):
    key: str
    value: _AnyValue | None = None


class _KeyValueList(_Json):
    values: list[_KeyValue] = []


def _pairs_json(attributes: list[_KeyValue]) -> list[tuple[str, Plain]]:
    return [(kv.key, kv.value.plain() if kv.value is not None else None) for kv in attributes]


class _Resource(_Json):
    attributes: list[_KeyValue] = []


class _Scope(_Json):
    name: str = ""
    version: str = ""


class _Status(_Json):
    code: int = 0
    message: str = ""


class _SpanEvent(_Json):
    time_unix_nano: int | None = None
    time_unix_nano_: int | None = _alias("time_unix_nano")
    name: str = ""
    attributes: list[_KeyValue] = []


class _Span(_Json):
    trace_id: str | None = None
    trace_id_: str | None = _alias("trace_id")
    span_id: str | None = None
    span_id_: str | None = _alias("span_id")
    parent_span_id: str | None = None
    parent_span_id_: str | None = _alias("parent_span_id")
    trace_state: str | None = None
    trace_state_: str | None = _alias("trace_state")
    name: str = ""
    kind: int = 0
    start_time_unix_nano: int | None = None
    start_time_unix_nano_: int | None = _alias("start_time_unix_nano")
    end_time_unix_nano: int | None = None
    end_time_unix_nano_: int | None = _alias("end_time_unix_nano")
    attributes: list[_KeyValue] = []
    events: list[_SpanEvent] = []
    status: _Status | None = None


class _ScopeSpans(_Json):
    scope: _Scope | None = None
    spans: list[_Span] = []


class _ResourceSpans(_Json):
    resource: _Resource | None = None
    scope_spans: list[_ScopeSpans] | None = None
    scope_spans_: list[_ScopeSpans] | None = _alias("scope_spans")


class _Request(_Json):
    resource_spans: list[_ResourceSpans] | None = None
    resource_spans_: list[_ResourceSpans] | None = _alias("resource_spans")


_json_decoder = msgspec.json.Decoder(_Request, strict=False)  # strict=False: int64 as decimal strings


def decode_otlp_json(value: bytes) -> list[Event]:
    """Decode one OTLP/JSON ``ExportTraceServiceRequest``. Raises :class:`DecodeError` with the reason."""
    try:
        request = _json_decoder.decode(value)
    except msgspec.DecodeError as exc:  # ValidationError included: the message names the field
        raise DecodeError(f"not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    except RecursionError:
        raise DecodeError("not an OTLP/JSON ExportTraceServiceRequest: nested too deeply") from None
    events: list[Event] = []
    try:
        for r, resource_spans in enumerate(request.resource_spans or ()):
            resource_attributes = resource_spans.resource.attributes if resource_spans.resource else []
            resource = resource_info(_pairs_json(resource_attributes))
            for s, scope_spans in enumerate(resource_spans.scope_spans or ()):
                given = scope_spans.scope
                scope = scope_info(given.name, given.version) if given is not None else NO_SCOPE
                for i, span in enumerate(scope_spans.spans):
                    try:
                        events.append(_span_from_json(span, resource, scope))
                    except DecodeError as exc:
                        raise DecodeError(f"{_where(r, s, i)}: {exc}") from None
    except RecursionError:
        raise DecodeError("attribute values nested too deeply") from None
    return events


def _span_from_json(span: _Span, resource: ResourceInfo, scope: ScopeInfo) -> Span:
    trace_id = id_from_hex(span.trace_id or "", TRACE_ID_BYTES, "traceId")
    span_id = id_from_hex(span.span_id or "", SPAN_ID_BYTES, "spanId")
    status = span.status or _Status()
    return build_span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_from_hex(span.parent_span_id),
        name=span.name,
        kind=span.kind,
        start_ns=span.start_time_unix_nano or 0,
        end_ns=span.end_time_unix_nano or 0,
        status_code=status.code,
        status_message=status.message,
        attributes=_pairs_json(span.attributes),
        events=[(e.time_unix_nano or 0, e.name, _pairs_json(e.attributes)) for e in span.events],
        resource=resource,
        scope=scope,
        trace_state=span.trace_state or "",
    )
