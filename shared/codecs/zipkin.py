"""Zipkin v2 spans: a JSON list (``zipkin_json``; a single span object is accepted too), as Zipkin's Kafka
reporters and the OpenTelemetry Collector's ``zipkin_json`` encoding write it, or a proto3 ``ListOfSpans``
(``zipkin_proto``, zipkin-api's ``zipkin2.proto``), as the Collector's ``zipkin_proto`` encoding and
zipkin-reporter's PROTO3 encoding write it; both on the ``zipkin`` topic, no message key.

One mapping, :func:`build_span`, turns a Zipkin span into a native :class:`~shared.models.Span`, fed by both
decoders (the protobuf one hands it the ids as hex text, so the id rules are one):

=================================  =====================================================================
Zipkin v2                          native span
=================================  =====================================================================
``traceId``                        lowercase hex, normalized as Zipkin does: 1..32 hex characters, padded
                                   on the left to 16 or 32; a 32-character id whose high 64 bits are zero
                                   becomes its 16-character low half; all zeros: :class:`DecodeError`
                                   (protobuf: 8 or 16 bytes)
``id``                             lowercase hex, 1..16 characters padded to 16; all zeros: DecodeError
                                   (protobuf: 8 bytes)
``parentId``                       as ``id``; absent, all zeros or equal to ``id``: ``None`` (a root)
``name``                           ``operation_name`` (absent or empty: ``unknown``)
``kind``                           server, client, producer, consumer; absent: the tag ``span.kind`` if it
                                   names a kind (the Collector writes ``internal`` there; tag removed),
                                   else no kind
``timestamp`` (µs)                 ``start_time_us`` (absent or 0: :class:`DecodeError`)
``duration`` (µs)                  ``duration_us`` (absent or 0, Zipkin's "unknown": an open span)
``localEndpoint.serviceName``      ``service_name`` (absent or empty: ``unknown``)
``remoteEndpoint.serviceName``     tag ``peer.service`` (unless the span has that tag already)
``tags``                           tags; a tag ``error`` (any value) makes the status "error"
tags ``otel.scope.name`` /         ``scope_name`` / ``scope_version`` (tags removed): where the Collector
``otel.library.name`` (+ version)  puts an OpenTelemetry span's instrumentation scope
tags of OpenTelemetry's resource   ``resource`` (tags removed): the Collector folds resource attributes
namespaces (see below)             into Zipkin tags; its own Zipkin receiver moves them back likewise
``annotations``                    logs: ``timestamp`` → ``timestamp_us``, ``value`` → field ``event``
``shared: true``                   tag ``shared`` = true, and the span id becomes ``<id>:shared``
``debug``, endpoint addresses      ignored
=================================  =====================================================================

Resource tags: keys starting with one of :data:`RESOURCE_PREFIXES` (``host.``, ``k8s.``, ``service.``,
``telemetry.sdk.``, ...) or equal to one of :data:`RESOURCE_KEYS`: the namespaces of OpenTelemetry's resource
semantic conventions that hold no span attributes. Zipkin itself has no resource, so this only sorts what an
OpenTelemetry producer (through the Collector) put there.

Why ``<id>:shared``: with B3 "single host spans" the server half of an RPC reuses the client's span id
(``shared: true``). The store keys spans by (trace id, span id), so the server half would overwrite the
client half. Renamed, the server half becomes a child of the client half (its ``parentId`` is set to the
shared id) and both are kept; spans the server started still hang off the shared id, i.e. the client half.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final

import msgspec
from google.protobuf.message import DecodeError as ProtobufDecodeError

from shared.codecs.descriptors import FieldType, add_enum, add_message, message_class, proto3_file
from shared.codecs.errors import DecodeError
from shared.codecs.otlp import bounded_name, to_tags
from shared.models import Event, Kind, Log, Span, Tags, TagValue

UNKNOWN: Final = "unknown"
SHARED_SUFFIX: Final = ":shared"
KINDS: Final[dict[str, Kind]] = {"SERVER": "server", "CLIENT": "client", "PRODUCER": "producer", "CONSUMER": "consumer"}
PROTO_KINDS: Final[dict[int, str]] = {1: "CLIENT", 2: "SERVER", 3: "PRODUCER", 4: "CONSUMER"}
"""``zipkin2.proto3.Span.Kind`` numbers; 0 (unspecified) and unknown numbers are no kind."""
KIND_TAG: Final = "span.kind"
SERVICE: Final = "service.name"
TAG_KINDS: Final[dict[str, Kind]] = {k: k for k in ("internal", "server", "client", "producer", "consumer")}
SCOPE_NAME_TAGS: Final = ("otel.scope.name", "otel.library.name")
SCOPE_VERSION_TAGS: Final = ("otel.scope.version", "otel.library.version")
RESOURCE_PREFIXES: Final = (
    "browser.", "cloud.", "container.", "deployment.", "device.", "host.", "k8s.", "os.", "process.",
    "service.", "telemetry.", "webengine.", "aws.ecs.", "aws.eks.", "aws.log.", "gcp.cloud_run.", "gcp.gce.",
    "heroku.", "faas.instance", "faas.max_memory", "faas.version",
)  # fmt: skip
RESOURCE_KEYS: Final = frozenset({"faas.id", "faas.name", "zipkin.service_name_source"})
MAX_MICROS: Final = 10**16
"""Largest timestamp or duration accepted (year 2286 in epoch microseconds): start + duration always fits a
64-bit integer in the store, where protobuf's fixed64 (and JSON) could otherwise carry up to 2^64 - 1."""

Micros = Annotated[int, msgspec.Meta(ge=0)]
_HEX: Final = re.compile(r"[0-9a-fA-F]+")


# -- the one mapping -----------------------------------------------------------------------------------


def build_span(
    *,
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    name: str,
    kind: str | None,
    timestamp_us: int,
    duration_us: int,
    shared: bool,
    local_service: str,
    remote_service: str,
    annotations: Iterable[tuple[int, str]],
    tags: Mapping[str, TagValue],
) -> Span:
    """The native span for one Zipkin span; ids as hex text (see the module's table), ``kind`` as Zipkin
    spells it (``SERVER``...), 0 for an absent timestamp or duration, ``""`` for an absent service."""
    trace_id = _trace_id(trace_id)
    span_id = _span_id(span_id, "id")
    parent = _span_id(parent_id, "parentId") if parent_id and parent_id.strip("0") else None
    if parent == span_id:
        parent = None
    if not timestamp_us:
        raise DecodeError("timestamp is missing")
    logs = tuple(Log(timestamp_us=timestamp, fields={"event": value}) for timestamp, value in annotations)
    for what, micros in (("timestamp", timestamp_us), ("duration", duration_us), *_annotation_times(logs)):
        if micros > MAX_MICROS:
            raise DecodeError(f"{what} out of range: {micros} (at most {MAX_MICROS} microseconds)")
    span_tags: Tags = to_tags(tags.items())
    status_error = "error" in span_tags
    native_kind = KINDS.get(kind) if kind else None
    if native_kind is None and KIND_TAG in span_tags:
        tag_kind = span_tags.pop(KIND_TAG)
        native_kind = TAG_KINDS.get(tag_kind) if isinstance(tag_kind, str) else None
    scope_name = pop_first(span_tags, SCOPE_NAME_TAGS)
    scope_version = pop_first(span_tags, SCOPE_VERSION_TAGS)
    resource: Tags = {}
    for key in [k for k in span_tags if _RESOURCE_KEY.get(k) or (k not in _RESOURCE_KEY and _is_resource(k))]:
        resource[key] = span_tags.pop(key)
    if remote_service:
        span_tags.setdefault("peer.service", remote_service)
    if shared and native_kind != "client":
        span_tags["shared"] = True
        parent, span_id = span_id, span_id + SHARED_SUFFIX
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        service_name=bounded_name(local_service, UNKNOWN),
        operation_name=bounded_name(name, UNKNOWN),
        start_time_us=timestamp_us,
        duration_us=duration_us or None,
        status="error" if status_error else "success",
        kind=native_kind,
        tags=span_tags,
        logs=logs,
        resource=resource,
        scope_name=scope_name,
        scope_version=scope_version,
    )


_RESOURCE_KEY: Final[dict[str, bool]] = {}
"""Tag key → whether it names a resource attribute (keys repeat across spans; bounded like the redactor's)."""


def _is_resource(key: str) -> bool:
    found = (key.startswith(RESOURCE_PREFIXES) or key in RESOURCE_KEYS) and key != SERVICE
    if len(_RESOURCE_KEY) < 100_000:
        _RESOURCE_KEY[key] = found
    return found


def _annotation_times(logs: tuple[Log, ...]) -> list[tuple[str, int]]:
    return [(f"annotations[{i}].timestamp", log.timestamp_us) for i, log in enumerate(logs)]


def pop_first(tags: Tags, keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` found in ``tags`` as a scope field (empty: ``None``); all of them removed."""
    found: str | None = None
    for key in keys:
        value = tags.pop(key, None)
        if found is None and value is not None and value != "":
            found = str(value)[:256]
    return found


def _hex(text: str, max_length: int, what: str) -> str:
    if not text or len(text) > max_length or not _HEX.fullmatch(text):
        raise DecodeError(f"{what} must be 1 to {max_length} hex characters, got {text[:80]!r}")
    if not text.strip("0"):
        raise DecodeError(f"{what} is all zeros")
    return text.lower()


def _trace_id(text: str) -> str:
    trace_id = _hex(text, 32, "traceId")
    if len(trace_id) == 32 and trace_id.startswith("0" * 16):
        return trace_id[16:]  # 64-bit id in 128-bit form: the same trace as its 16-character spelling
    return trace_id.zfill(16 if len(trace_id) <= 16 else 32)


def _span_id(text: str | None, what: str) -> str:
    return _hex(text or "", 16, what).zfill(16)


def decode_spans(decode: Any, value: bytes, what: str) -> Any:
    try:
        return decode(value)
    except (msgspec.DecodeError, ProtobufDecodeError, ValueError) as exc:  # ValidationError included
        raise DecodeError(f"not {what}: {exc}") from None
    except RecursionError:
        raise DecodeError(f"not {what}: nested too deeply") from None


# -- JSON ------------------------------------------------------------------------------------------------


class _Endpoint(msgspec.Struct, rename="camel", kw_only=True):
    service_name: str | None = None


class _Annotation(msgspec.Struct, kw_only=True):
    timestamp: Micros
    value: str


class _Span(msgspec.Struct, rename="camel", kw_only=True):
    trace_id: str
    id: str
    parent_id: str | None = None
    name: str | None = None
    kind: str | None = None
    timestamp: Micros | None = None
    duration: Micros | None = None
    shared: bool | None = None
    local_endpoint: _Endpoint | None = None
    remote_endpoint: _Endpoint | None = None
    annotations: list[_Annotation] | None = None  # Go's encoding/json writes a nil slice as null
    tags: dict[str, str | int | float | bool] | None = None  # Zipkin's are strings; other scalars kept


_json_decoder = msgspec.json.Decoder(list[_Span] | _Span)


def decode_zipkin_json(value: bytes) -> list[Event]:
    """Decode one Zipkin v2 JSON message. Raises :class:`DecodeError` with the reason."""
    decoded = decode_spans(_json_decoder.decode, value, "Zipkin v2 JSON")
    spans: list[_Span] = decoded if isinstance(decoded, list) else [decoded]
    events: list[Event] = []
    for i, span in enumerate(spans):
        try:
            events.append(
                build_span(
                    trace_id=span.trace_id,
                    span_id=span.id,
                    parent_id=span.parent_id,
                    name=span.name or "",
                    kind=span.kind,
                    timestamp_us=span.timestamp or 0,
                    duration_us=span.duration or 0,
                    shared=bool(span.shared),
                    local_service=(span.local_endpoint.service_name or "") if span.local_endpoint else "",
                    remote_service=(span.remote_endpoint.service_name or "") if span.remote_endpoint else "",
                    annotations=[(a.timestamp, a.value) for a in span.annotations or ()],
                    tags=span.tags or {},
                )
            )
        except DecodeError as exc:
            raise DecodeError(f"span {i}: {exc}") from None
    return events


# -- proto3 ----------------------------------------------------------------------------------------------


def _list_of_spans_class() -> Any:
    """The ``zipkin2.proto3.ListOfSpans`` message class, built from zipkin-api's ``zipkin2.proto`` field
    numbers and types."""
    f = FieldType
    file = proto3_file("kafka_tracing/zipkin2.proto", "zipkin2.proto3")
    add_message(file, "Endpoint", ("service_name", 1, f.TYPE_STRING, ""), ("ipv4", 2, f.TYPE_BYTES, ""),
                ("ipv6", 3, f.TYPE_BYTES, ""), ("port", 4, f.TYPE_INT32, ""))  # fmt: skip
    add_message(file, "Annotation", ("timestamp", 1, f.TYPE_FIXED64, ""), ("value", 2, f.TYPE_STRING, ""))
    span = add_message(
        file,
        "Span",
        ("trace_id", 1, f.TYPE_BYTES, ""), ("parent_id", 2, f.TYPE_BYTES, ""), ("id", 3, f.TYPE_BYTES, ""),
        ("kind", 4, f.TYPE_ENUM, ".zipkin2.proto3.Span.Kind"), ("name", 5, f.TYPE_STRING, ""),
        ("timestamp", 6, f.TYPE_FIXED64, ""), ("duration", 7, f.TYPE_UINT64, ""),
        ("local_endpoint", 8, f.TYPE_MESSAGE, ".zipkin2.proto3.Endpoint"),
        ("remote_endpoint", 9, f.TYPE_MESSAGE, ".zipkin2.proto3.Endpoint"),
        ("annotations", 10, f.TYPE_MESSAGE, ".zipkin2.proto3.Annotation[]"),
        ("tags", 11, f.TYPE_MESSAGE, ".zipkin2.proto3.Span.TagsEntry[]"),
        ("debug", 12, f.TYPE_BOOL, ""), ("shared", 13, f.TYPE_BOOL, ""),
    )  # fmt: skip
    entry = add_message(file, "TagsEntry", ("key", 1, f.TYPE_STRING, ""), ("value", 2, f.TYPE_STRING, ""), parent=span)
    entry.options.map_entry = True
    add_enum(span, "Kind", "SPAN_KIND_UNSPECIFIED", "CLIENT", "SERVER", "PRODUCER", "CONSUMER")
    add_message(file, "ListOfSpans", ("spans", 1, f.TYPE_MESSAGE, ".zipkin2.proto3.Span[]"))
    return message_class(file, "zipkin2.proto3.ListOfSpans")


ListOfSpans: Final = _list_of_spans_class()


def _proto_id(raw: bytes, sizes: tuple[int, ...], what: str) -> str:
    if len(raw) not in sizes:
        raise DecodeError(f"{what} must be {' or '.join(map(str, sizes))} bytes, got {len(raw)}")
    return raw.hex()


def decode_zipkin_proto(value: bytes) -> list[Event]:
    """Decode one proto3 ``ListOfSpans``. Raises :class:`DecodeError` with the reason."""
    spans = decode_spans(ListOfSpans.FromString, value, "a Zipkin proto3 ListOfSpans").spans
    events: list[Event] = []
    for i, span in enumerate(spans):
        try:
            events.append(
                build_span(
                    trace_id=_proto_id(span.trace_id, (8, 16), "traceId"),
                    span_id=_proto_id(span.id, (8,), "id"),
                    parent_id=_proto_id(span.parent_id, (0, 8), "parentId"),
                    name=span.name,
                    kind=PROTO_KINDS.get(span.kind),
                    timestamp_us=span.timestamp,
                    duration_us=span.duration,
                    shared=span.shared,
                    local_service=span.local_endpoint.service_name,
                    remote_service=span.remote_endpoint.service_name,
                    annotations=[(a.timestamp, a.value) for a in span.annotations],
                    tags=span.tags,
                )
            )
        except DecodeError as exc:
            raise DecodeError(f"span {i}: {exc}") from None
    return events
