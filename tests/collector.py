"""What the OpenTelemetry Collector's Kafka exporter writes for one batch of traces, per traces encoding, so
the tests can produce exactly those messages without a Collector.

Read for it (the contrib Kafka exporter around v0.165, and the libraries it calls):

* ``exporter/kafkaexporter/kafka_exporter.go``: one message per exported batch, or with
  ``partition_traces_by_id`` one per trace (``batchpersignal.SplitTraces``) keyed by the trace id as 32
  lowercase hex characters (``traceutil.TraceIDToHexOrEmptyString``); no key otherwise;
* ``exporter/kafkaexporter/marshaler.go`` (``getTracesMarshaler``) and
  ``internal/marshaler/pdata_marshaler.go``: ``otlp_proto`` is pdata's ``ProtoMarshaler``, ``otlp_json``
  its ``JSONMarshaler``, ``zipkin_proto`` / ``zipkin_json`` the Zipkin translator's marshalers;
* ``internal/kafkaclient/headers.go``: headers only from ``include_metadata_keys`` (none by default), so
  never a content-type;
* pdata ``ptrace/json_test.go``: the JSON form (hex ids, ``parentSpanId`` ``""`` on roots, 64-bit integers
  and nanosecond times as strings, enums as integers, ``status`` always present, empty fields left out);
* ``pkg/translator/zipkin/zipkinv2/from_translator.go``: OTLP → Zipkin (resource attributes and the scope
  as ``otel.library.*`` become tags, ``span.kind=internal``, ``error``/``otel.status_code``/
  ``otel.status_description``, events as annotations ``name|{attributes}|dropped``);
* openzipkin/zipkin-go ``model/span.go`` (JSON: lower-cased name, times rounded to microseconds, sub-µs
  durations as 1) and ``proto/zipkin_proto3/encode_proto.go`` (proto3: 16-byte trace ids, an 8-byte zero
  parent id on roots, the duration truncated to microseconds), after zipkin-api's ``zipkin2.proto``;
* ``exporter/kafkaexporter/jaeger_marshaler.go``: ``jaeger_proto`` / ``jaeger_json`` write one message per
  span, its ``Process`` set to its batch's, keyed by ``TraceID.String()`` (jaeger ``model/ids.go``: hex with
  no leading zeros, the low half alone when the high half is zero), value ``span.Marshal()`` (gogo) or
  gogo ``jsonpb.Marshaler{}``; ``pkg/translator/jaeger/traces_to_jaegerproto.go`` (OTLP → ``model.Span``:
  resource attributes as the process's typed tags, the scope as ``otel.scope.name``/``version`` tags,
  ``span.kind``, ``otel.status_code``, ``error``, ``otel.status_description``, the parent as the first
  ``CHILD_OF`` reference, events as logs with their name as field ``event``), after jaeger-idl's
  ``proto/api_v2/model.proto``.
"""

from __future__ import annotations

import base64
import datetime
import json
import struct
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

Encoding = Literal["otlp_proto", "otlp_json", "zipkin_proto", "zipkin_json", "jaeger_proto", "jaeger_json"]
NO_SERVICE_NAME = "OTLPResourceNoServiceName"  # tracetranslator.ResourceNoServiceName


@dataclass
class Message:
    """One Kafka record as the exporter produces it; ``headers`` stays empty (see the module docstring)."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def export(
    request: ExportTraceServiceRequest, encoding: Encoding, *, partition_traces_by_id: bool = False
) -> list[Message]:
    """The records the exporter writes for one batch (``request``)."""
    if encoding.startswith("jaeger"):  # one message per span, always keyed
        return jaeger_messages(request, encoding)
    marshal = {"otlp_proto": _otlp_proto, "otlp_json": pdata_json, "zipkin_proto": zipkin_proto,
               "zipkin_json": zipkin_json}[encoding]  # fmt: skip
    if not partition_traces_by_id:
        return [Message(None, marshal(request))]
    return [Message(trace_id.hex().encode(), marshal(part)) for trace_id, part in split_traces(request).items()]


def split_traces(request: ExportTraceServiceRequest) -> dict[bytes, ExportTraceServiceRequest]:
    """``batchpersignal.SplitTraces``: one request per trace id (in order of first span), each keeping its
    spans' resources and scopes."""
    parts: dict[bytes, ExportTraceServiceRequest] = {}
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            targets: dict[bytes, ScopeSpans] = {}
            for span in ss.spans:
                target = targets.get(span.trace_id)
                if target is None:
                    part = parts.setdefault(span.trace_id, ExportTraceServiceRequest())
                    if not part.resource_spans or part.resource_spans[-1].resource != rs.resource:
                        new_rs = part.resource_spans.add()
                        new_rs.resource.CopyFrom(rs.resource)
                        new_rs.schema_url = rs.schema_url
                    target = targets[span.trace_id] = part.resource_spans[-1].scope_spans.add()
                    target.scope.CopyFrom(ss.scope)
                    target.schema_url = ss.schema_url
                target.spans.add().CopyFrom(span)
    return parts


def _otlp_proto(request: ExportTraceServiceRequest) -> bytes:
    value: bytes = request.SerializeToString()
    return value


# -- pdata's JSON marshaler ------------------------------------------------------------------------------


def pdata_json(request: ExportTraceServiceRequest) -> bytes:
    """``ptrace.JSONMarshaler`` output (compact, keys in proto field order)."""
    return json.dumps({"resourceSpans": [_resource_spans(rs) for rs in request.resource_spans]},
                      separators=(",", ":"), ensure_ascii=False).encode()  # fmt: skip


def _any(value: AnyValue) -> dict[str, Any]:
    which = value.WhichOneof("value")
    if which == "string_value":
        return {"stringValue": value.string_value}
    if which == "bool_value":
        return {"boolValue": value.bool_value}
    if which == "int_value":
        return {"intValue": str(value.int_value)}
    if which == "double_value":
        return {"doubleValue": value.double_value}
    if which == "array_value":
        return {"arrayValue": {"values": [_any(v) for v in value.array_value.values]}}
    if which == "kvlist_value":
        return {"kvlistValue": {"values": _attributes(value.kvlist_value.values)}}
    if which == "bytes_value":
        return {"bytesValue": base64.b64encode(value.bytes_value).decode()}
    return {}


def _attributes(attributes: Any) -> list[dict[str, Any]]:
    return [{"key": kv.key, "value": _any(kv.value)} for kv in attributes]


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value:
        out[key] = value


def _resource_spans(rs: ResourceSpans) -> dict[str, Any]:
    resource: dict[str, Any] = {}
    _put(resource, "attributes", _attributes(rs.resource.attributes))
    _put(resource, "droppedAttributesCount", rs.resource.dropped_attributes_count)
    out: dict[str, Any] = {"resource": resource, "scopeSpans": [_scope_spans(ss) for ss in rs.scope_spans]}
    _put(out, "schemaUrl", rs.schema_url)
    return out


def _scope_spans(ss: ScopeSpans) -> dict[str, Any]:
    scope: dict[str, Any] = {}
    _put(scope, "name", ss.scope.name)
    _put(scope, "version", ss.scope.version)
    _put(scope, "attributes", _attributes(ss.scope.attributes))
    out: dict[str, Any] = {"scope": scope, "spans": [_span(span) for span in ss.spans]}
    _put(out, "schemaUrl", ss.schema_url)
    return out


def _span(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": span.trace_id.hex(), "spanId": span.span_id.hex()}
    _put(out, "traceState", span.trace_state)
    out["parentSpanId"] = span.parent_span_id.hex()
    _put(out, "flags", span.flags)
    out["name"] = span.name
    _put(out, "kind", span.kind)
    _put(out, "startTimeUnixNano", str(span.start_time_unix_nano) if span.start_time_unix_nano else "")
    _put(out, "endTimeUnixNano", str(span.end_time_unix_nano) if span.end_time_unix_nano else "")
    _put(out, "attributes", _attributes(span.attributes))
    _put(out, "droppedAttributesCount", span.dropped_attributes_count)
    events = []
    for event in span.events:
        rendered: dict[str, Any] = {}
        _put(rendered, "timeUnixNano", str(event.time_unix_nano) if event.time_unix_nano else "")
        _put(rendered, "name", event.name)
        _put(rendered, "attributes", _attributes(event.attributes))
        _put(rendered, "droppedAttributesCount", event.dropped_attributes_count)
        events.append(rendered)
    _put(out, "events", events)
    _put(out, "droppedEventsCount", span.dropped_events_count)
    status: dict[str, Any] = {}
    _put(status, "message", span.status.message)
    _put(status, "code", span.status.code)
    out["status"] = status
    return out


# -- the Zipkin translator (from_translator.go) ----------------------------------------------------------


@dataclass
class ZipkinEndpoint:
    service_name: str = ""
    ipv4: bytes = b""
    port: int = 0


@dataclass
class ZipkinSpan:
    """zipkin-go's ``model.SpanModel``, the fields the translator sets (times in nanoseconds)."""

    trace_high: int
    trace_low: int
    id: int
    parent: int | None
    name: str
    kind: str  # "" (absent), "CLIENT", "SERVER", "PRODUCER", "CONSUMER"
    timestamp_ns: int
    duration_ns: int
    local: ZipkinEndpoint | None
    remote: ZipkinEndpoint | None
    annotations: list[tuple[int, str]]
    tags: dict[str, str]
    shared: bool = False


_KINDS = {Span.SPAN_KIND_CLIENT: "CLIENT", Span.SPAN_KIND_SERVER: "SERVER", Span.SPAN_KIND_PRODUCER: "PRODUCER",
          Span.SPAN_KIND_CONSUMER: "CONSUMER"}  # fmt: skip


def as_string(value: AnyValue) -> str:
    """pcommon ``Value.AsString``: strings as they are, numbers and booleans as Go prints them, bytes as
    base64, arrays and maps as compact JSON."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return format(Decimal(repr(value.double_value)), "f")  # strconv.FormatFloat(v, 'f', -1, 64)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if which is None:
        return ""
    return _go_json(_raw(value))


def _raw(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_raw(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, which) if which else None


def _go_json(value: Any) -> str:
    """``encoding/json``: compact, map keys sorted, ``<``, ``>`` and ``&`` escaped."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def zipkin_spans(request: ExportTraceServiceRequest) -> list[ZipkinSpan]:
    """``FromTranslator.FromTraces``."""
    out: list[ZipkinSpan] = []
    for rs in request.resource_spans:
        if not rs.resource.attributes and not rs.scope_spans:
            continue
        resource_tags = {kv.key: as_string(kv.value) for kv in rs.resource.attributes}
        service = _service_name(resource_tags)
        for ss in rs.scope_spans:
            for kv in ss.scope.attributes:  # one dict for the whole resource, as the translator mutates it
                resource_tags[kv.key] = as_string(kv.value)
            if ss.scope.name:
                resource_tags["otel.library.name"] = ss.scope.name
            if ss.scope.version:
                resource_tags["otel.library.version"] = ss.scope.version
            out.extend(_zipkin_span(span, service, resource_tags) for span in ss.spans)
    return out


def _service_name(tags: dict[str, str]) -> str:
    """``extractZipkinServiceName``: ``service.name``, else a fallback attribute (named by a tag), removed."""
    if "service.name" in tags:
        return tags.pop("service.name")
    for key in ("faas.name", "k8s.deployment.name", "process.executable.name"):
        if key in tags:
            tags["zipkin.service_name_source"] = key
            return tags.pop(key)
    return NO_SERVICE_NAME


def _ip(text: str) -> bytes:
    """``net.ParseIP`` of an IPv4 address: its 16-byte IPv4-in-IPv6 form (which the proto encoder copies)."""
    return b"\x00" * 10 + b"\xff\xff" + bytes(int(part) for part in text.split("."))


def _zipkin_span(span: Span, service: str, resource_tags: dict[str, str]) -> ZipkinSpan:
    tags = dict(resource_tags) | {kv.key: as_string(kv.value) for kv in span.attributes}
    if span.trace_state:
        tags["w3c.tracestate"] = span.trace_state
    if span.kind == Span.SPAN_KIND_INTERNAL:
        tags["span.kind"] = "internal"
    local = ZipkinEndpoint(service_name=service)
    if "net.host.ip" in tags:
        local.ipv4 = _ip(tags.pop("net.host.ip"))
    if "net.host.port" in tags:
        local.port = int(tags.pop("net.host.port"))
    remote: ZipkinEndpoint | None = None
    if "peer.service" in tags or "net.peer.ip" in tags:
        remote = ZipkinEndpoint(service_name=tags.pop("peer.service", ""))
        if "net.peer.ip" in tags:
            remote.ipv4 = _ip(tags.pop("net.peer.ip"))
        if "net.peer.port" in tags:
            remote.port = int(tags.pop("net.peer.port"))
    if span.status.code == Status.STATUS_CODE_ERROR:
        tags["error"] = "true"
    else:
        tags.pop("error", None)
    if span.status.code != Status.STATUS_CODE_UNSET:
        tags["otel.status_code"] = "Error" if span.status.code == Status.STATUS_CODE_ERROR else "Ok"
        if span.status.message:
            tags["otel.status_description"] = span.status.message
    annotations = []
    for event in span.events:
        if not event.attributes and not event.dropped_attributes_count:
            annotations.append((event.time_unix_nano, event.name))
        else:
            attributes = _go_json({kv.key: _raw(kv.value) for kv in event.attributes})
            annotations.append((event.time_unix_nano, f"{event.name}|{attributes}|{event.dropped_attributes_count}"))
    high, low = struct.unpack(">QQ", span.trace_id)
    parent = struct.unpack(">Q", span.parent_span_id)[0] if span.parent_span_id else None
    return ZipkinSpan(
        trace_high=high,
        trace_low=low,
        id=struct.unpack(">Q", span.span_id)[0],
        parent=parent,
        name=span.name,
        kind=_KINDS.get(span.kind, ""),
        timestamp_ns=span.start_time_unix_nano,
        duration_ns=span.end_time_unix_nano - span.start_time_unix_nano if span.end_time_unix_nano else 0,
        local=local,
        remote=remote,
        annotations=annotations,
        tags=tags,
    )


def round_to_micros(ns: int) -> int:
    """Go's ``time.Time.Round(time.Microsecond)`` for times after the epoch (halves away from zero)."""
    return (ns + 500) // 1000


def json_duration_micros(ns: int) -> int:
    """zipkin-go's JSON duration: below 1 µs but positive is 1 µs, else rounded to the nearest µs."""
    return (1 if ns > 0 else 0) if ns < 1000 else (ns + 500) // 1000


def zipkin_json(request: ExportTraceServiceRequest) -> bytes:
    """The ``zipkin_json`` encoding: ``json.Marshal`` of the translated spans (zipkin-go's ``MarshalJSON``)."""
    return ("[" + ",".join(_zipkin_json_span(s) for s in zipkin_spans(request)) + "]").encode()


def _endpoint_json(endpoint: ZipkinEndpoint | None) -> dict[str, Any] | None:
    if endpoint is None or (not endpoint.service_name and not endpoint.ipv4 and not endpoint.port):
        return None
    out: dict[str, Any] = {}
    _put(out, "serviceName", endpoint.service_name)
    _put(out, "ipv4", ".".join(str(b) for b in endpoint.ipv4[-4:]))
    _put(out, "port", endpoint.port)
    return out


def _zipkin_json_span(span: ZipkinSpan) -> str:
    out: dict[str, Any] = {}
    _put(out, "timestamp", round_to_micros(span.timestamp_ns) if span.timestamp_ns else 0)
    _put(out, "duration", json_duration_micros(span.duration_ns))
    out["traceId"] = f"{span.trace_high:016x}{span.trace_low:016x}" if span.trace_high else f"{span.trace_low:016x}"
    out["id"] = f"{span.id:016x}"
    if span.parent is not None:
        out["parentId"] = f"{span.parent:016x}"
    _put(out, "name", span.name.lower())
    _put(out, "kind", span.kind)
    _put(out, "shared", span.shared)
    _put(out, "localEndpoint", _endpoint_json(span.local))
    _put(out, "remoteEndpoint", _endpoint_json(span.remote))
    _put(out, "annotations", [{"timestamp": round_to_micros(t), "value": v} for t, v in span.annotations])
    _put(out, "tags", dict(sorted(span.tags.items())))
    return _go_json(out)


# -- protobuf wire format (what Go's proto.Marshal writes for zipkin2.proto3) ----------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _len_field(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _uint_field(number: int, value: int) -> bytes:
    return _tag(number, 0) + _varint(value) if value else b""


def _fixed64_field(number: int, value: int) -> bytes:
    return _tag(number, 1) + struct.pack("<Q", value) if value else b""


def _str_field(number: int, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _len_field(number, data) if data else b""


def zipkin_proto(request: ExportTraceServiceRequest) -> bytes:
    """The ``zipkin_proto`` encoding: a ``ListOfSpans`` as ``zipkin_proto3.SpanSerializer`` writes it (map
    entries sorted by key: Go writes them in any order)."""
    return b"".join(_len_field(1, zipkin_proto_span(span)) for span in zipkin_spans(request))


def _endpoint_proto(endpoint: ZipkinEndpoint) -> bytes:
    return _str_field(1, endpoint.service_name) + _str_field(2, endpoint.ipv4) + _uint_field(4, endpoint.port)


def zipkin_proto_span(span: ZipkinSpan) -> bytes:
    """One ``zipkin2.proto3.Span`` (``modelSpanToProtoSpan``): fields in number order, defaults left out."""
    kinds = {"CLIENT": 1, "SERVER": 2, "PRODUCER": 3, "CONSUMER": 4}
    out = _len_field(1, struct.pack(">QQ", span.trace_high, span.trace_low))
    out += _len_field(2, struct.pack(">Q", span.parent or 0))
    out += _len_field(3, struct.pack(">Q", span.id))
    out += _uint_field(4, kinds.get(span.kind, 0))
    out += _str_field(5, span.name)
    out += _fixed64_field(6, round_to_micros(span.timestamp_ns) if span.timestamp_ns else 0)
    out += _uint_field(7, span.duration_ns // 1000)
    if span.local is not None:
        out += _len_field(8, _endpoint_proto(span.local))
    if span.remote is not None:
        out += _len_field(9, _endpoint_proto(span.remote))
    for timestamp_ns, value in span.annotations:
        out += _len_field(10, _fixed64_field(1, timestamp_ns // 1000) + _str_field(2, value))
    for key, value in sorted(span.tags.items()):
        out += _len_field(11, _str_field(1, key) + _str_field(2, value))
    out += _uint_field(13, 1 if span.shared else 0)
    return out


# -- Jaeger: pkg/translator/jaeger (traces_to_jaegerproto.go), gogo Marshal and gogo jsonpb ---------------

JAEGER_STRING, JAEGER_BOOL, JAEGER_INT64, JAEGER_FLOAT64, JAEGER_BINARY = range(5)
JAEGER_VALUE_TYPES = ("STRING", "BOOL", "INT64", "FLOAT64", "BINARY")
CHILD_OF, FOLLOWS_FROM = 0, 1


@dataclass
class JaegerKeyValue:
    key: str
    v_type: int
    value: str | bool | int | float | bytes


@dataclass
class JaegerSpan:
    """One ``model.Span`` as the exporter marshals it, its ``Process`` set (``span.Process = batch.Process``)."""

    trace_high: int
    trace_low: int
    span_id: int
    operation_name: str
    references: list[tuple[int, int, int, int]]  # (trace high, trace low, span id, ref type)
    start_ns: int
    duration_ns: int
    tags: list[JaegerKeyValue]
    logs: list[tuple[int, list[JaegerKeyValue]]]
    service_name: str
    process_tags: list[JaegerKeyValue]

    @property
    def key(self) -> bytes:
        """``TraceID.String()``: the low half alone in hex (no leading zeros) when the high half is zero."""
        if self.trace_high == 0:
            return f"{self.trace_low:x}".encode()
        return f"{self.trace_high:x}{self.trace_low:016x}".encode()


def _jaeger_kv(key: str, value: AnyValue) -> JaegerKeyValue:
    """``attributeToJaegerProtoTag``: typed scalars, bytes as BINARY, arrays and maps as their JSON text."""
    which = value.WhichOneof("value")
    if which == "bool_value":
        return JaegerKeyValue(key, JAEGER_BOOL, value.bool_value)
    if which == "int_value":
        return JaegerKeyValue(key, JAEGER_INT64, value.int_value)
    if which == "double_value":
        return JaegerKeyValue(key, JAEGER_FLOAT64, value.double_value)
    if which == "bytes_value":
        return JaegerKeyValue(key, JAEGER_BINARY, value.bytes_value)
    return JaegerKeyValue(key, JAEGER_STRING, as_string(value))


def _jaeger_status_tags(span: Span) -> list[JaegerKeyValue]:
    kinds = {Span.SPAN_KIND_INTERNAL: "internal", **{k: v.lower() for k, v in _KINDS.items()}}
    tags = [JaegerKeyValue("span.kind", JAEGER_STRING, kinds[span.kind])] if span.kind in kinds else []
    if span.status.code == Status.STATUS_CODE_ERROR:
        tags += [JaegerKeyValue("otel.status_code", JAEGER_STRING, "ERROR"), JaegerKeyValue("error", JAEGER_BOOL, True)]
    elif span.status.code == Status.STATUS_CODE_OK:
        tags.append(JaegerKeyValue("otel.status_code", JAEGER_STRING, "OK"))
    if span.status.message:
        tags.append(JaegerKeyValue("otel.status_description", JAEGER_STRING, span.status.message))
    return tags


def jaeger_spans(request: ExportTraceServiceRequest) -> list[JaegerSpan]:
    """``jaeger.ProtoFromTraces``, each span with its batch's process: tags are the scope
    (``otel.scope.name``/``version``), the attributes, ``span.kind``, the status; the parent is the first
    reference (``CHILD_OF``); events become logs with the name as field ``event``."""
    out = []
    for rs in request.resource_spans:
        attributes = {kv.key: kv.value for kv in rs.resource.attributes}
        service = attributes["service.name"].string_value if "service.name" in attributes else NO_SERVICE_NAME
        process = [_jaeger_kv(k, v) for k, v in attributes.items() if k != "service.name"]
        for ss in rs.scope_spans:
            scope = [JaegerKeyValue(k, JAEGER_STRING, v) for k, v in
                     (("otel.scope.name", ss.scope.name), ("otel.scope.version", ss.scope.version)) if v]  # fmt: skip
            for span in ss.spans:
                high, low = struct.unpack(">QQ", span.trace_id)
                refs = (
                    [(high, low, struct.unpack(">Q", span.parent_span_id)[0], CHILD_OF)] if span.parent_span_id else []
                )
                logs = [(e.time_unix_nano, ([JaegerKeyValue("event", JAEGER_STRING, e.name)] if e.name else [])
                         + [_jaeger_kv(kv.key, kv.value) for kv in e.attributes]) for e in span.events]  # fmt: skip
                tags = scope + [_jaeger_kv(kv.key, kv.value) for kv in span.attributes] + _jaeger_status_tags(span)
                out.append(JaegerSpan(
                    high, low, struct.unpack(">Q", span.span_id)[0], span.name, refs, span.start_time_unix_nano,
                    span.end_time_unix_nano - span.start_time_unix_nano, tags, logs, service, process,
                ))  # fmt: skip
    return out


def _jaeger_kv_proto(kv: JaegerKeyValue) -> bytes:
    """gogo's ``KeyValue.Marshal``: fields in number order, proto3 defaults left out."""
    out = _str_field(1, kv.key) + _uint_field(2, kv.v_type)
    value = kv.value
    if kv.v_type == JAEGER_STRING:
        out += _str_field(3, str(value))
    elif kv.v_type == JAEGER_BOOL:
        out += _uint_field(4, int(bool(value)))
    elif kv.v_type == JAEGER_INT64:
        out += _uint_field(5, int(value) & (1 << 64) - 1)  # two's complement, as a 10-byte varint
    elif kv.v_type == JAEGER_FLOAT64:
        out += _tag(6, 1) + struct.pack("<d", value) if value != 0 else b""
    else:
        out += _str_field(7, bytes(value))  # type: ignore[arg-type]
    return out


def _seconds_nanos(ns: int) -> bytes:
    """A ``Timestamp`` or ``Duration`` message (Go's division: the nanos take the sign of the whole)."""
    seconds, nanos = abs(ns) // 1_000_000_000, abs(ns) % 1_000_000_000
    sign = -1 if ns < 0 else 1
    return _uint_field(1, sign * seconds & (1 << 64) - 1) + _uint_field(2, sign * nanos & (1 << 64) - 1)


def jaeger_proto_span(span: JaegerSpan) -> bytes:
    """gogo's ``Span.Marshal``: the ids always (16 and 8 bytes), ``start_time`` and ``duration`` always
    (non-nullable), everything else only when set."""
    out = _len_field(1, struct.pack(">QQ", span.trace_high, span.trace_low))
    out += _len_field(2, struct.pack(">Q", span.span_id))
    out += _str_field(3, span.operation_name)
    for high, low, span_id, ref_type in span.references:
        ref = _len_field(1, struct.pack(">QQ", high, low)) + _len_field(2, struct.pack(">Q", span_id))
        out += _len_field(4, ref + _uint_field(3, ref_type))
    out += _len_field(6, _seconds_nanos(span.start_ns)) + _len_field(7, _seconds_nanos(span.duration_ns))
    out += b"".join(_len_field(8, _jaeger_kv_proto(kv)) for kv in span.tags)
    for timestamp_ns, fields in span.logs:
        log = _len_field(1, _seconds_nanos(timestamp_ns)) + b"".join(_len_field(2, _jaeger_kv_proto(f)) for f in fields)
        out += _len_field(9, log)
    process = _str_field(1, span.service_name) + b"".join(
        _len_field(2, _jaeger_kv_proto(kv)) for kv in span.process_tags
    )
    return out + _len_field(10, process)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _jsonpb_fraction(ns: int) -> str:
    """jsonpb's 0, 3, 6 or 9 fractional digits."""
    text = f"{ns:09d}".removesuffix("000").removesuffix("000").removesuffix("000")
    return f".{text}" if text else ""


def _jsonpb_time(ns: int) -> str:
    moment = datetime.datetime.fromtimestamp(ns // 1_000_000_000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + _jsonpb_fraction(ns % 1_000_000_000) + "Z"


def _jsonpb_duration(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    return f"{sign}{abs(ns) // 1_000_000_000}{_jsonpb_fraction(abs(ns) % 1_000_000_000)}s"


def _jaeger_kv_json(kv: JaegerKeyValue) -> dict[str, Any]:
    """jsonpb of a ``KeyValue``: zero values left out (``vType`` of a string), int64 as a string, bytes base64."""
    out: dict[str, Any] = {"key": kv.key} if kv.key else {}
    if kv.v_type:
        out["vType"] = JAEGER_VALUE_TYPES[kv.v_type]
    field, value = {JAEGER_STRING: ("vStr", kv.value), JAEGER_BOOL: ("vBool", kv.value),
                    JAEGER_INT64: ("vInt64", str(kv.value)), JAEGER_FLOAT64: ("vFloat64", kv.value),
                    JAEGER_BINARY: ("vBinary", _b64(kv.value) if isinstance(kv.value, bytes) else "")
                    }[kv.v_type]  # fmt: skip
    if kv.value not in ("", False, 0, b""):
        out[field] = value
    return out


def jaeger_json_span(span: JaegerSpan) -> bytes:
    """gogo ``jsonpb.Marshaler{}`` of a ``model.Span``: lowerCamelCase keys in field order, zero values
    left out (a zero span id or duration, ``refType`` CHILD_OF), ids base64 (``TraceID.MarshalJSON``: 16
    bytes), times RFC 3339, the duration in seconds."""
    out: dict[str, Any] = {"traceId": _b64(struct.pack(">QQ", span.trace_high, span.trace_low))}
    if span.span_id:
        out["spanId"] = _b64(struct.pack(">Q", span.span_id))
    if span.operation_name:
        out["operationName"] = span.operation_name
    if span.references:
        out["references"] = [
            {"traceId": _b64(struct.pack(">QQ", high, low)), "spanId": _b64(struct.pack(">Q", span_id))}
            | ({"refType": "FOLLOWS_FROM"} if ref_type == FOLLOWS_FROM else {})
            for high, low, span_id, ref_type in span.references
        ]
    out["startTime"] = _jsonpb_time(span.start_ns)
    if span.duration_ns:
        out["duration"] = _jsonpb_duration(span.duration_ns)
    if span.tags:
        out["tags"] = [_jaeger_kv_json(kv) for kv in span.tags]
    if span.logs:
        out["logs"] = [{"timestamp": _jsonpb_time(t), "fields": [_jaeger_kv_json(f) for f in fields]}
                       for t, fields in span.logs]  # fmt: skip
    process: dict[str, Any] = {"serviceName": span.service_name} if span.service_name else {}
    if span.process_tags:
        process["tags"] = [_jaeger_kv_json(kv) for kv in span.process_tags]
    out["process"] = process
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()


def jaeger_messages(request: ExportTraceServiceRequest, encoding: Encoding) -> list[Message]:
    """``jaegerMarshaler.Marshal``: one message per span, keyed by ``TraceID.String()``, no headers."""
    marshal = jaeger_proto_span if encoding == "jaeger_proto" else jaeger_json_span
    return [Message(span.key, marshal(span)) for span in jaeger_spans(request)]


__all__ = [
    "Encoding",
    "JaegerKeyValue",
    "JaegerSpan",
    "Message",
    "ZipkinEndpoint",
    "ZipkinSpan",
    "as_string",
    "export",
    "jaeger_json_span",
    "jaeger_messages",
    "jaeger_proto_span",
    "jaeger_spans",
    "json_duration_micros",
    "pdata_json",
    "round_to_micros",
    "split_traces",
    "zipkin_json",
    "zipkin_proto",
    "zipkin_proto_span",
    "zipkin_spans",
]
