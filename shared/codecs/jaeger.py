"""Jaeger spans: one ``jaeger.api_v2.Span`` (jaeger-idl's ``proto/api_v2/model.proto``) per message, as
protobuf (``jaeger_proto``) or as gogo ``jsonpb`` JSON (``jaeger_json``), exactly as the OpenTelemetry
Collector's Kafka exporter writes them with ``encoding: jaeger_proto`` / ``jaeger_json`` (its
``jaeger_marshaler.go``; read back by the Collector's Kafka receiver, ``jaeger_unmarshaler.go``): every
span carries its ``process``, the message key is the trace id in hex, there is no content-type header.

One mapping, :func:`build_span`, turns a Jaeger span into a native :class:`~shared.models.Span`, fed by
both decoders (the JSON one decodes the base64 ids to bytes first, so the id rules are one):

=================================  =====================================================================
Jaeger ``model.Span``              native span
=================================  =====================================================================
``trace_id`` (16 bytes: high and   lowercase hex: the 16 characters of the low half when the high half
low 64 bits, big-endian; 8 bytes   is zero (a 64-bit id, spelled as Zipkin's codec spells it), else 32;
accepted too)                      all zeros or another length: :class:`DecodeError`
``span_id`` (8 bytes)              lowercase hex, 16 characters; all zeros: :class:`DecodeError`
``references``                     ``parent_span_id``: the first ``CHILD_OF`` reference into the same
                                   trace, else the first ``FOLLOWS_FROM`` one (a consumer following its
                                   producer); none: a root. Other references are not kept
``operation_name``                 ``operation_name`` (empty: ``unknown``)
``start_time``                     ``start_time_us`` (missing or 0: :class:`DecodeError`)
``duration``                       ``duration_us`` (negative: 0); Jaeger spans are always complete
``tags``                           tags, typed by ``v_type``: string, bool, int64, float64 (non-finite:
                                   "NaN", "Infinity", "-Infinity"), binary as base64 text
tag ``span.kind``                  ``kind`` when it names one (tag removed)
tag ``error`` true, or tag         ``status`` "error" (tags kept); else "success"
``otel.status_code`` = ``ERROR``
tags ``otel.scope.name`` /         ``scope_name`` / ``scope_version`` (tags removed), where the Collector
``otel.library.name`` (+ version)  puts an OpenTelemetry span's instrumentation scope
``logs``                           logs: ``timestamp`` → ``timestamp_us``, ``fields`` as tags (the
                                   Collector writes an event's name as the field ``event``)
``process.service_name``           ``service_name`` (missing or empty: ``unknown_service``)
``process.tags``                   ``resource``: what Jaeger shows as the process's tags
``flags``, ``process_id``,         ignored
``warnings``
=================================  =====================================================================

The JSON form is gogo ``jsonpb`` with its defaults: lowerCamelCase keys (``traceId``, ``operationName``,
``vType``...), fields at their zero value left out (``vType`` of a string tag, ``refType`` of a
``CHILD_OF`` reference, a zero ``duration``), ids base64 (Jaeger's ``TraceID.MarshalJSON`` writes the 16
bytes, ``SpanID.MarshalJSON`` the 8), enums by name (numbers accepted), int64 as a decimal string (numbers
accepted), timestamps RFC 3339 (``2024-01-02T03:04:05.123456Z``; offsets accepted), durations as the
exporter writes them, seconds with a fraction and an ``s`` (``0.000123s``), or in any other form of Go's
``time.ParseDuration``, which ``jsonpb`` reads them with (``22938000ns``). Unknown keys are ignored.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Final

import msgspec

from shared.codecs.descriptors import FieldType, add_enum, add_message, message_class, proto3_file
from shared.codecs.errors import DecodeError
from shared.codecs.otlp import UNKNOWN_SERVICE, bounded_name, to_tags
from shared.codecs.zipkin import (
    KIND_TAG,
    MAX_MICROS,
    SCOPE_NAME_TAGS,
    SCOPE_VERSION_TAGS,
    TAG_KINDS,
    UNKNOWN,
    decode_spans,
    pop_first,
)
from shared.models import Event, Kind, Log, Span, Tags

CHILD_OF: Final = 0
FOLLOWS_FROM: Final = 1
REF_TYPES: Final = {"CHILD_OF": CHILD_OF, "FOLLOWS_FROM": FOLLOWS_FROM}
VALUE_TYPES: Final = {"STRING": 0, "BOOL": 1, "INT64": 2, "FLOAT64": 3, "BINARY": 4}
"""``jaeger.api_v2.ValueType`` numbers by name; an unknown number reads as a string tag."""
ERROR_TAG: Final = "error"
STATUS_CODE_TAG: Final = "otel.status_code"

Pair = tuple[str, object]
"""A tag or log field as (key, plain value), before :func:`~shared.codecs.otlp.to_tags`."""


# -- the one mapping -----------------------------------------------------------------------------------


def trace_id_hex(raw: bytes) -> str:
    """A Jaeger trace id (16 bytes, or 8) as lowercase hex: 16 characters when its high half is zero."""
    if not raw:
        raise DecodeError("traceId is missing")
    if len(raw) not in (8, 16):
        raise DecodeError(f"traceId must be 16 bytes, got {len(raw)}")
    if not any(raw):
        raise DecodeError("traceId is all zeros")
    return raw[-8:].hex() if not any(raw[:-8]) else raw.hex()


def span_id_hex(raw: bytes, what: str = "spanId") -> str:
    if not raw:
        raise DecodeError(f"{what} is missing")
    if len(raw) != 8:
        raise DecodeError(f"{what} must be 8 bytes, got {len(raw)}")
    if not any(raw):
        raise DecodeError(f"{what} is all zeros")
    return raw.hex()


def parent_of(trace_id: str, span_id: str, references: Iterable[tuple[bytes, bytes, int]]) -> str | None:
    """The parent span id among (trace id, span id, ref type) references (see the module's table);
    references elsewhere, or with ids that are not ids, are passed over."""
    found: dict[int, str] = {}
    for ref_trace, ref_span, ref_type in references:
        if ref_type in found or len(ref_span) != 8 or not any(ref_span) or len(ref_trace) not in (8, 16):
            continue
        if any(ref_trace) and trace_id_hex(ref_trace) == trace_id:
            found[ref_type] = ref_span.hex()
    parent = found.get(CHILD_OF, found.get(FOLLOWS_FROM))
    return None if parent == span_id else parent


def build_span(
    *,
    trace_id: bytes,
    span_id: bytes,
    references: Sequence[tuple[bytes, bytes, int]],
    operation_name: str,
    start_us: int,
    duration_us: int,
    tags: Iterable[Pair],
    logs: Iterable[tuple[int, Iterable[Pair]]],
    service_name: str,
    process_tags: Iterable[Pair],
) -> Span:
    """The native span for one Jaeger span, its ids as raw bytes, its times in µs."""
    trace = trace_id_hex(trace_id)
    span = span_id_hex(span_id)
    if start_us <= 0:
        raise DecodeError("startTime is missing" if start_us == 0 else f"startTime is before 1970: {start_us} µs")
    span_logs = tuple(Log(timestamp_us=max(0, t), fields=to_tags(fields)) for t, fields in logs)
    for what, micros in (("startTime", start_us), ("duration", duration_us), *_log_times(span_logs)):
        if micros > MAX_MICROS:
            raise DecodeError(f"{what} out of range: {micros} (at most {MAX_MICROS} microseconds)")
    span_tags: Tags = to_tags(tags)
    kind_tag = span_tags.get(KIND_TAG)
    kind: Kind | None = TAG_KINDS.get(kind_tag) if isinstance(kind_tag, str) else None
    if kind is not None:
        del span_tags[KIND_TAG]
    failed = span_tags.get(ERROR_TAG) in (True, "true") or span_tags.get(STATUS_CODE_TAG) == "ERROR"
    scope_name = pop_first(span_tags, SCOPE_NAME_TAGS)
    scope_version = pop_first(span_tags, SCOPE_VERSION_TAGS)
    return Span(
        trace_id=trace,
        span_id=span,
        parent_span_id=parent_of(trace, span, references),
        service_name=bounded_name(service_name, UNKNOWN_SERVICE),
        operation_name=bounded_name(operation_name, UNKNOWN),
        start_time_us=start_us,
        duration_us=max(0, duration_us),
        status="error" if failed else "success",
        kind=kind,
        tags=span_tags,
        logs=span_logs,
        resource=to_tags(process_tags),
        scope_name=scope_name,
        scope_version=scope_version,
    )


def _log_times(logs: tuple[Log, ...]) -> list[tuple[str, int]]:
    return [(f"logs[{i}].timestamp", log.timestamp_us) for i, log in enumerate(logs)]


def _value(v_type: int, text: str, flag: bool, number: int, real: float, blob: bytes) -> object:
    """A ``KeyValue``'s value by its type: BOOL, INT64, FLOAT64, BINARY; STRING or unknown: the text."""
    if v_type == 1:
        return flag
    if v_type == 2:
        return number
    if v_type == 3:
        return real
    if v_type == 4:
        return blob
    return text


# -- protobuf --------------------------------------------------------------------------------------------


def _span_class() -> Any:
    """The ``jaeger.api_v2.Span`` message class, built from jaeger-idl's ``model.proto`` field numbers and
    types (``google.protobuf.Timestamp``/``Duration`` as messages of the same two fields)."""
    f = FieldType
    p = ".jaeger.api_v2."
    file = proto3_file("kafka_tracing/jaeger_model.proto", "jaeger.api_v2")
    add_enum(file, "ValueType", *VALUE_TYPES)
    add_enum(file, "SpanRefType", *REF_TYPES)
    for name, nanos_type in (("Timestamp", f.TYPE_INT32), ("Duration", f.TYPE_INT32)):
        add_message(file, name, ("seconds", 1, f.TYPE_INT64, ""), ("nanos", 2, nanos_type, ""))
    add_message(file, "KeyValue", ("key", 1, f.TYPE_STRING, ""), ("v_type", 2, f.TYPE_ENUM, p + "ValueType"),
                ("v_str", 3, f.TYPE_STRING, ""), ("v_bool", 4, f.TYPE_BOOL, ""), ("v_int64", 5, f.TYPE_INT64, ""),
                ("v_float64", 6, f.TYPE_DOUBLE, ""), ("v_binary", 7, f.TYPE_BYTES, ""))  # fmt: skip
    add_message(file, "Log", ("timestamp", 1, f.TYPE_MESSAGE, p + "Timestamp"),
                ("fields", 2, f.TYPE_MESSAGE, p + "KeyValue[]"))  # fmt: skip
    add_message(file, "SpanRef", ("trace_id", 1, f.TYPE_BYTES, ""), ("span_id", 2, f.TYPE_BYTES, ""),
                ("ref_type", 3, f.TYPE_ENUM, p + "SpanRefType"))  # fmt: skip
    add_message(file, "Process", ("service_name", 1, f.TYPE_STRING, ""), ("tags", 2, f.TYPE_MESSAGE, p + "KeyValue[]"))
    add_message(
        file,
        "Span",
        ("trace_id", 1, f.TYPE_BYTES, ""), ("span_id", 2, f.TYPE_BYTES, ""), ("operation_name", 3, f.TYPE_STRING, ""),
        ("references", 4, f.TYPE_MESSAGE, p + "SpanRef[]"), ("flags", 5, f.TYPE_UINT32, ""),
        ("start_time", 6, f.TYPE_MESSAGE, p + "Timestamp"), ("duration", 7, f.TYPE_MESSAGE, p + "Duration"),
        ("tags", 8, f.TYPE_MESSAGE, p + "KeyValue[]"), ("logs", 9, f.TYPE_MESSAGE, p + "Log[]"),
        ("process", 10, f.TYPE_MESSAGE, p + "Process"), ("process_id", 11, f.TYPE_STRING, ""),
        ("warnings", 12, f.TYPE_STRING, "[]"),
    )  # fmt: skip
    return message_class(file, "jaeger.api_v2.Span")


JaegerSpan: Final = _span_class()
"""The protobuf class of one ``jaeger.api_v2.Span`` (what the exporter's ``span.Marshal()`` writes)."""


def _pairs_pb(key_values: Iterable[Any]) -> list[Pair]:
    return [
        (kv.key, _value(kv.v_type, kv.v_str, kv.v_bool, kv.v_int64, kv.v_float64, kv.v_binary)) for kv in key_values
    ]


def _micros_pb(moment: Any) -> int:
    return int(moment.seconds) * 1_000_000 + int(moment.nanos) // 1000


def decode_jaeger_proto(value: bytes) -> list[Event]:
    """Decode one protobuf ``jaeger.api_v2.Span``. Raises :class:`DecodeError` with the reason."""
    span = decode_spans(JaegerSpan.FromString, value, "a protobuf Jaeger span")
    return [
        build_span(
            trace_id=span.trace_id,
            span_id=span.span_id,
            references=[(r.trace_id, r.span_id, r.ref_type) for r in span.references],
            operation_name=span.operation_name,
            start_us=_micros_pb(span.start_time),
            duration_us=_micros_pb(span.duration),
            tags=_pairs_pb(span.tags),
            logs=[(_micros_pb(log.timestamp), _pairs_pb(log.fields)) for log in span.logs],
            service_name=span.process.service_name,
            process_tags=_pairs_pb(span.process.tags),
        )
    ]


# -- JSON (gogo jsonpb) ------------------------------------------------------------------------------------


class _KeyValue(msgspec.Struct, rename="camel", kw_only=True):
    key: str = ""
    v_type: str | int = 0
    v_str: str = ""
    v_bool: bool = False
    v_int64: str | int = 0
    v_float64: str | float = 0.0
    v_binary: str = ""


class _Ref(msgspec.Struct, rename="camel", kw_only=True):
    trace_id: str = ""
    span_id: str = ""
    ref_type: str | int = 0


class _Log(msgspec.Struct, kw_only=True):
    timestamp: str = ""
    fields: list[_KeyValue] | None = None


class _Process(msgspec.Struct, rename="camel", kw_only=True):
    service_name: str = ""
    tags: list[_KeyValue] | None = None


class _Span(msgspec.Struct, rename="camel", kw_only=True):
    trace_id: str = ""
    span_id: str = ""
    operation_name: str = ""
    references: list[_Ref] | None = None
    start_time: str = ""
    duration: str = ""
    tags: list[_KeyValue] | None = None
    logs: list[_Log] | None = None
    process: _Process | None = None


_json_decoder = msgspec.json.Decoder(_Span)
_TIMESTAMP: Final = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_DURATION_PART: Final = re.compile(r"(\d{1,20}(?:\.\d{0,20})?|\.\d{1,20})(ns|us|µs|μs|ms|s|m|h)")
_DURATION: Final = re.compile(f"(?:{_DURATION_PART.pattern}){{1,8}}")
_UNIT_NS: Final = {
    "ns": 1,
    "us": 1000,
    "µs": 1000,
    "μs": 1000,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_NON_FINITE: Final = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _bytes(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{what} is not base64: {text[:80]!r}") from None


def _timestamp_us(text: str, what: str) -> int:
    """An RFC 3339 time as µs since the epoch (fraction cut to µs); ``""`` (left out): 0."""
    if not text:
        return 0
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise DecodeError(f"{what} is not an RFC 3339 time: {text[:80]!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError as exc:
        raise DecodeError(f"{what} is not an RFC 3339 time: {text[:80]!r} ({exc})") from None
    seconds = calendar.timegm(moment.timetuple())
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1_000_000 + int((fraction or "0").ljust(9, "0")) // 1000


def _duration_us(text: str) -> int:
    """A duration as gogo ``jsonpb`` reads it (Go's ``time.ParseDuration``: ``0.000123s`` as the exporter
    writes it, or ``22938000ns``, ``1m30.5s``...) in µs, cut toward zero; ``""`` (left out): 0."""
    if not text:
        return 0
    body = text.lstrip("+-")
    if body != "0" and _DURATION.fullmatch(body) is None:
        raise DecodeError(f"duration is not a duration such as '0.5s' or '1500us': {text[:80]!r}")
    nanos = sum(Decimal(number) * _UNIT_NS[unit] for number, unit in _DURATION_PART.findall(body))
    micros = int(nanos / 1000)
    return -micros if text.startswith("-") else micros


def _enum(value: str | int, names: dict[str, int], what: str) -> int:
    if isinstance(value, int):
        return value
    if value not in names:
        raise DecodeError(f"{what}: unknown value {value[:80]!r}")
    return names[value]


def _int64(value: str | int) -> int:
    try:
        return int(value)
    except ValueError:
        raise DecodeError(f"vInt64 is not an integer: {str(value)[:80]!r}") from None


def _float64(value: str | float) -> float:
    if isinstance(value, str):
        if value not in _NON_FINITE:
            raise DecodeError(f"vFloat64 is not a number: {value[:80]!r}")
        return _NON_FINITE[value]
    return value


def _pairs_json(key_values: list[_KeyValue] | None) -> list[Pair]:
    return [
        (
            kv.key,
            _value(
                _enum(kv.v_type, VALUE_TYPES, "vType"),
                kv.v_str,
                kv.v_bool,
                _int64(kv.v_int64),
                _float64(kv.v_float64),
                _bytes(kv.v_binary, "vBinary"),
            ),
        )
        for kv in key_values or ()
    ]


def decode_jaeger_json(value: bytes) -> list[Event]:
    """Decode one ``jsonpb`` ``jaeger.api_v2.Span``. Raises :class:`DecodeError` with the reason."""
    span: _Span = decode_spans(_json_decoder.decode, value, "a Jaeger JSON span")
    process = span.process or _Process()
    references = [
        (_bytes(r.trace_id, "references.traceId"), _bytes(r.span_id, "references.spanId"),
         _enum(r.ref_type, REF_TYPES, "refType"))
        for r in span.references or ()
    ]  # fmt: skip
    return [
        build_span(
            trace_id=_bytes(span.trace_id, "traceId"),
            span_id=_bytes(span.span_id, "spanId"),
            references=references,
            operation_name=span.operation_name,
            start_us=_timestamp_us(span.start_time, "startTime"),
            duration_us=_duration_us(span.duration),
            tags=_pairs_json(span.tags),
            logs=[(_timestamp_us(log.timestamp, "logs.timestamp"), _pairs_json(log.fields)) for log in span.logs or ()],
            service_name=process.service_name,
            process_tags=_pairs_json(process.tags),
        )
    ]
