"""The OTLP decoders: protobuf made by the official OTLP encoder from real SDK spans, OTLP/JSON (by hand
after the specification's example, and protobuf's own JSON rendering), the SDK exporter's mapping, and
every kind of malformed request rejected with a reason."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from google.protobuf.json_format import MessageToDict, MessageToJson
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from shared.codecs import DECODERS, DecodeError, decoder_for, format_of
from shared.codecs.otlp import decode_otlp_json, decode_otlp_proto
from shared.models import Log, Span, Tags, flat_tags
from shared.otel import span_from_sdk, spans_from_sdk

T0 = 1_732_500_000_000_000_000  # ns


@pytest.fixture
def sdk_spans() -> Iterator[list[ReadableSpan]]:
    """A server span with a client child (error) and an internal grandchild, from the real SDK."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout", "deployment.environment": "test", "region": "eu"})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop.checkout", "2.1.0")
    root = tracer.start_span(
        "POST /checkout",
        kind=SpanKind.SERVER,
        start_time=T0,
        attributes={"http.method": "POST", "http.status_code": 500, "ratio": 0.25, "retry": True, "region": "us"},
    )
    root.add_event("cache miss", {"key": "cart:42", "attempt": 2}, timestamp=T0 + 1_500_000)
    ctx = _context_of(root)
    child = tracer.start_span("charge", context=ctx, kind=SpanKind.CLIENT, start_time=T0 + 2_000_000)
    child.set_attribute("items", ["a", "b"])
    child.set_attribute("amounts", [1, 2, 3])
    child.set_status(Status(StatusCode.ERROR, "card declined"))
    grandchild = tracer.start_span("validate", context=_context_of(child), start_time=T0 + 2_500_999)
    grandchild.end(end_time=T0 + 3_000_000)
    child.end(end_time=T0 + 9_000_000)
    root.end(end_time=T0 + 10_000_000)
    yield list(memory.get_finished_spans())
    provider.shutdown()


def _context_of(span: Any) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def _request(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    request: ExportTraceServiceRequest = encode_spans(spans)
    return request


def _expected(spans: list[ReadableSpan]) -> dict[str, Span]:
    """What the decoders must produce, worked out from the SDK spans independently of the mapping code."""
    by_name = {s.name: s for s in spans}
    root, child, grandchild = by_name["POST /checkout"], by_name["charge"], by_name["validate"]
    trace_id = f"{root.context.trace_id:032x}"
    root_id, child_id = f"{root.context.span_id:016x}", f"{child.context.span_id:016x}"
    resource: Tags = {
        k: v
        for k, v in root.resource.attributes.items()
        if k != "service.name" and isinstance(v, str | bool | int | float)
    }
    assert len(resource) == len(root.resource.attributes) - 1 and resource["region"] == "eu"
    common: dict[str, Any] = {
        "trace_id": trace_id,
        "service_name": "checkout",
        "resource": resource,
        "scope_name": "shop.checkout",
        "scope_version": "2.1.0",
    }
    return {
        "POST /checkout": Span(
            **common,
            span_id=root_id,
            operation_name="POST /checkout",
            start_time_us=T0 // 1000,
            duration_us=10_000,
            kind="server",
            tags={"http.method": "POST", "http.status_code": 500, "ratio": 0.25, "retry": True, "region": "us"},
            logs=(Log(timestamp_us=T0 // 1000 + 1500, fields={"key": "cart:42", "attempt": 2, "event": "cache miss"}),),
        ),
        "charge": Span(
            **common,
            span_id=child_id,
            parent_span_id=root_id,
            operation_name="charge",
            start_time_us=T0 // 1000 + 2000,
            duration_us=7000,
            status="error",
            kind="client",
            tags={"items": '["a","b"]', "amounts": "[1,2,3]", "otel.status_description": "card declined"},
        ),
        "validate": Span(
            **common,
            span_id=f"{grandchild.context.span_id:016x}",
            parent_span_id=child_id,
            operation_name="validate",
            start_time_us=T0 // 1000 + 2500,  # 2_500_999 ns is 2500 µs after T0 (floor)
            duration_us=500,  # ends at 3000 µs
            kind="internal",
        ),
    }


def _by_name(events: list[Any]) -> dict[str, Span]:
    assert all(isinstance(e, Span) for e in events)
    return {e.operation_name: e for e in events}


def test_protobuf_from_the_official_encoder(sdk_spans: list[ReadableSpan]) -> None:
    events = decode_otlp_proto(_request(sdk_spans).SerializeToString())
    assert _by_name(events) == _expected(sdk_spans)


def test_sdk_exporter_mapping_is_the_decoders(sdk_spans: list[ReadableSpan]) -> None:
    assert _by_name(spans_from_sdk(sdk_spans)) == _expected(sdk_spans)
    assert [span_from_sdk(s) for s in sdk_spans] == decode_otlp_proto(_request(sdk_spans).SerializeToString())


def _hex_ids(node: Any) -> Any:
    """protobuf's JSON rendering with its base64 ids turned into the hex the OTLP spec requires."""
    if isinstance(node, dict):
        return {
            k: base64.b64decode(v).hex().upper() if k in {"traceId", "spanId", "parentSpanId"} else _hex_ids(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def test_json_from_protobufs_json_mapping_with_hex_ids(sdk_spans: list[ReadableSpan]) -> None:
    request = _request(sdk_spans)
    as_dict = MessageToDict(request, use_integers_for_enums=True)
    assert isinstance(as_dict["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"], str)  # int64
    body = json.dumps(_hex_ids(as_dict)).encode()
    assert decode_otlp_json(body) == decode_otlp_proto(request.SerializeToString())


def test_json_with_proto_field_names(sdk_spans: list[ReadableSpan]) -> None:
    """Keys spelled as the proto fields (``resource_spans``, ``trace_id``), which protobuf's JSON parsers and
    the Collector also accept."""
    request = _request(sdk_spans)
    as_dict = MessageToDict(request, use_integers_for_enums=True, preserving_proto_field_name=True)
    assert "resource_spans" in as_dict
    text = json.dumps(as_dict)
    for name in ("trace_id", "span_id", "parent_span_id"):
        text = text.replace(f'"{name}"', f'"{name}_b64"')
    as_dict = json.loads(text)

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k.removesuffix("_b64"): base64.b64decode(v).hex() if k.endswith("_b64") else fix(v)
                for k, v in node.items()
            }
        return [fix(v) for v in node] if isinstance(node, list) else node

    assert decode_otlp_json(json.dumps(fix(as_dict)).encode()) == decode_otlp_proto(request.SerializeToString())


def test_protobufs_default_json_rendering_is_rejected_with_a_reason(sdk_spans: list[ReadableSpan]) -> None:
    """``MessageToJson`` writes ids as base64 and enums as names; the OTLP/JSON spec forbids both."""
    request = _request(sdk_spans)
    with pytest.raises(DecodeError, match="kind"):
        decode_otlp_json(MessageToJson(request).encode())
    with pytest.raises(DecodeError, match=r"traceId.*looks like base64"):
        decode_otlp_json(MessageToJson(request, use_integers_for_enums=True).encode())


# A request written by hand after the specification's example (examples/trace.json in opentelemetry-proto):
# uppercase hex ids, nanoseconds as JSON numbers or decimal strings, integer enums, typed AnyValues.
HAND_WRITTEN = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [
                    {"key": "service.name", "value": {"stringValue": "my.service"}},
                    {"key": "host.name", "value": {"stringValue": "web-1"}},
                ]
            },
            "scopeSpans": [
                {
                    "scope": {
                        "name": "my.library",
                        "version": "1.0.0",
                        "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "ignored"}}],
                    },
                    "spans": [
                        {
                            "traceId": "5B8EFFF798038103D269B633813FC60C",
                            "spanId": "EEE19B7EC3C1B174",
                            "parentSpanId": "EEE19B7EC3C1B173",
                            "name": "I'm a server span",
                            "startTimeUnixNano": 1544712660000000000,
                            "endTimeUnixNano": "1544712661000000000",
                            "kind": 2,
                            "attributes": [
                                {"key": "my.span.attr", "value": {"stringValue": "some value"}},
                                {"key": "http.status_code", "value": {"intValue": "503"}},
                                {"key": "ratio", "value": {"doubleValue": 0.5}},
                                {"key": "sampled", "value": {"boolValue": True}},
                                {"key": "host.name", "value": {"stringValue": "span-wins"}},
                                {
                                    "key": "list",
                                    "value": {
                                        "arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}, {}]}
                                    },
                                },
                                {
                                    "key": "map",
                                    "value": {
                                        "kvlistValue": {"values": [{"key": "k", "value": {"boolValue": False}}]}
                                    },
                                },
                                {"key": "raw", "value": {"bytesValue": "AAEC"}},
                                {"key": "inf", "value": {"doubleValue": "Infinity"}},
                                {"key": "empty", "value": {}},
                                {"key": "no.value"},
                            ],
                            "events": [
                                {
                                    "timeUnixNano": "1544712660500000000",
                                    "name": "exception",
                                    "attributes": [{"key": "exception.type", "value": {"stringValue": "Boom"}}],
                                }
                            ],
                            "links": [{"traceId": "5B8EFFF798038103D269B633813FC60D", "spanId": "EEE19B7EC3C1B175"}],
                            "status": {"code": 2, "message": "upstream unavailable"},
                            "droppedAttributesCount": 0,
                            "someFutureField": {"ignored": True},
                        },
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b173",
                            "parentSpanId": "",
                            "name": "root, still open",
                            "startTimeUnixNano": "1544712659000000000",
                            "status": {"code": 1},
                        },
                    ],
                }
            ],
        },
        {"resource": {"attributes": []}, "scopeSpans": [{"spans": [
            {
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "0000000000000001",
                "parentSpanId": "0000000000000000",
                "name": "",
                "startTimeUnixNano": "1544712662000000000",
                "endTimeUnixNano": "1544712661000000000",
                "kind": 0,
            }
        ]}]},
    ]
}  # fmt: skip


def test_hand_written_json_after_the_spec_example() -> None:
    server, root, other = decode_otlp_json(json.dumps(HAND_WRITTEN).encode())
    trace_id = "5b8efff798038103d269b633813fc60c"
    assert server == Span(
        trace_id=trace_id,
        span_id="eee19b7ec3c1b174",
        parent_span_id="eee19b7ec3c1b173",
        service_name="my.service",
        operation_name="I'm a server span",
        start_time_us=1544712660000000,
        duration_us=1_000_000,
        status="error",
        kind="server",
        tags={
            "my.span.attr": "some value",
            "http.status_code": 503,
            "ratio": 0.5,
            "sampled": True,
            "host.name": "span-wins",
            "list": '["a",1,null]',
            "map": '{"k":false}',
            "raw": "AAEC",
            "inf": "Infinity",
            "otel.status_description": "upstream unavailable",
        },
        logs=(Log(timestamp_us=1544712660500000, fields={"exception.type": "Boom", "event": "exception"}),),
        resource={"host.name": "web-1"},
        scope_name="my.library",
        scope_version="1.0.0",
    )
    assert (
        flat_tags(server)
        == {
            "host.name": "span-wins",  # the span's attribute wins over the resource's, as before
            "otel.scope.name": "my.library",
            "otel.scope.version": "1.0.0",
        }
        | server.tags
    )
    assert isinstance(root, Span) and root.resource is server.resource  # one dict per resource, shared by its spans
    assert isinstance(root, Span) and root.kind is None
    assert root.parent_span_id is None and root.duration_us is None and root.status == "success"
    # no service.name → unknown_service; empty name → unknown; all-zero parent → root; end < start → 0
    assert isinstance(other, Span)
    assert (other.service_name, other.operation_name, other.parent_span_id) == ("unknown_service", "unknown", None)
    assert (other.duration_us, other.kind, other.tags) == (0, None, {})


def test_empty_requests_carry_no_spans() -> None:
    assert decode_otlp_proto(b"") == []
    assert decode_otlp_proto(ExportTraceServiceRequest().SerializeToString()) == []
    assert decode_otlp_json(b"{}") == []
    assert decode_otlp_json(b'{"resourceSpans": []}') == []


def _json_span(**overrides: Any) -> bytes:
    span: dict[str, Any] = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "op",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661000000000",
    } | overrides
    span = {k: v for k, v in span.items() if v is not None}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"traceId": None}, "traceId is missing"),
        ({"traceId": "5b8efff798038103"}, "traceId must be 32 hex"),
        ({"traceId": "00000000000000000000000000000000"}, "traceId is all zeros"),
        ({"traceId": "zz8efff798038103d269b633813fc60c"}, "traceId must be 32 hex"),
        ({"traceId": "W47/95gDgQPSabYzgT/GDA=="}, "looks like base64"),
        ({"spanId": None}, "spanId is missing"),
        ({"spanId": "7uGbfsPBsXQ="}, "spanId.*looks like base64"),
        ({"spanId": "0000000000000000"}, "spanId is all zeros"),
        ({"parentSpanId": "abc"}, "parentSpanId must be 16 hex"),
        ({"startTimeUnixNano": None}, "startTimeUnixNano is missing"),
        ({"startTimeUnixNano": "soon"}, "startTimeUnixNano"),
        ({"kind": "SPAN_KIND_SERVER"}, "kind"),
        ({"attributes": [{"value": {"stringValue": "no key"}}]}, "key"),
        ({"attributes": [{"key": "b", "value": {"bytesValue": "not base64!"}}]}, "base64"),
    ],
)
def test_malformed_json_spans_are_rejected_with_a_reason(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as info:
        decode_otlp_json(_json_span(**overrides))
    assert "spans[0]" in str(info.value) or "$.resourceSpans[0]" in str(info.value)


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b"null", b"not json", b'{"resourceSpans": {}}', b'{"resourceSpans": [1]}', b"[" * 100_000],
)
def test_malformed_json_requests(body: bytes) -> None:
    with pytest.raises(DecodeError, match="OTLP/JSON"):
        decode_otlp_json(body)


def _proto_request(**span_fields: Any) -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    span.span_id = bytes.fromhex("eee19b7ec3c1b174")
    span.name = "op"
    span.start_time_unix_nano = 1544712660000000000
    for name, value in span_fields.items():
        setattr(span, name, value)
    return request.SerializeToString()


def test_protobuf_mapping_details() -> None:
    [span] = decode_otlp_proto(_proto_request(parent_span_id=bytes(8), kind=4))
    assert isinstance(span, Span)
    assert (span.parent_span_id, span.kind, span.duration_us, span.service_name) == (
        None,
        "producer",
        None,
        "unknown_service",
    )
    [span] = decode_otlp_proto(_proto_request(end_time_unix_nano=1544712659000000000, kind=99))
    assert isinstance(span, Span) and (span.duration_us, span.kind) == (0, None)


def test_the_trace_state_is_kept() -> None:
    """OTLP ``trace_state`` (the W3C tracestate, where probability sampling writes ``ot=th:...``) is kept
    as ``trace_state``, from protobuf and from JSON (either spelling); empty or over 512 characters: none."""
    state = "ot=th:c;rv:0123456789abcd,vendor=x"
    [pb] = decode_otlp_proto(_proto_request(trace_state=state))
    [camel] = decode_otlp_json(_json_span(traceState=state))
    [snake] = decode_otlp_json(_json_span(trace_state=state))
    assert [s.trace_state for s in (pb, camel, snake) if isinstance(s, Span)] == [state] * 3
    for value in ("", "a=" + "b" * 511):
        [none] = decode_otlp_proto(_proto_request(trace_state=value))
        assert isinstance(none, Span) and none.trace_state is None
    assert msgspec.json.decode(msgspec.json.encode(pb), type=Span).trace_state == state  # wire traceState


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"trace_id": b""}, "traceId is missing"),
        ({"trace_id": bytes(16)}, "traceId is all zeros"),
        ({"trace_id": b"\x01" * 8}, "traceId must be 16 bytes, got 8"),
        ({"span_id": b""}, "spanId is missing"),
        ({"span_id": b"\x01" * 16}, "spanId must be 8 bytes"),
        ({"parent_span_id": b"\x01" * 4}, "parentSpanId must be 8 bytes"),
        ({"start_time_unix_nano": 0}, "startTimeUnixNano is missing"),
    ],
)
def test_malformed_protobuf_spans_are_rejected_with_a_reason(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=rf"resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[0\]: {reason}"):
        decode_otlp_proto(_proto_request(**fields))


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x05abc", b'{"resourceSpans": []}', b"\x0a\x02\x12\x80"])
def test_malformed_protobuf_requests(body: bytes) -> None:
    with pytest.raises(DecodeError, match="protobuf"):
        decode_otlp_proto(body)


def test_deeply_nested_attribute_values() -> None:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(50):
        value = {"arrayValue": {"values": [value]}}
    [span] = decode_otlp_json(_json_span(attributes=[{"key": "deep", "value": value}]))
    assert isinstance(span, Span) and span.tags["deep"] == "[" * 50 + '"leaf"' + "]" * 50


def test_non_finite_doubles() -> None:
    attributes = [{"key": k, "value": {"doubleValue": k}} for k in ("NaN", "Infinity", "-Infinity")]
    [span] = decode_otlp_json(_json_span(attributes=attributes))
    assert isinstance(span, Span) and span.tags == {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}
    assert not any(isinstance(v, float) and math.isnan(v) for v in span.tags.values())


def test_long_names_and_keys_are_cut() -> None:
    [span] = decode_otlp_json(_json_span(name="n" * 300, attributes=[{"key": "k" * 300, "value": {"intValue": 1}}]))
    assert isinstance(span, Span) and span.operation_name == "n" * 256 and span.tags == {"k" * 256: 1}
    # what the decoder builds passes the model's own validation
    assert msgspec.convert(msgspec.to_builtins(span), Span) == span


def test_registered_formats_and_content_types() -> None:
    assert decoder_for("otlp_proto") is decode_otlp_proto and decoder_for("otlp_json") is decode_otlp_json
    assert set(DECODERS) == {
        "native",
        "otlp_proto",
        "otlp_json",
        "zipkin_json",
        "zipkin_proto",
        "jaeger_proto",
        "jaeger_json",
    }
    assert format_of("application/x-protobuf", "otlp_json") == "otlp_proto"
    assert format_of("application/json; charset=utf-8", "otlp_proto") == "otlp_json"
    assert format_of(None, "otlp_proto") == "otlp_proto"
    # the generic types only choose between OTLP's encodings: elsewhere the topic's format stays
    assert format_of("application/json", "zipkin_json") == "zipkin_json"
    assert format_of("application/json", "native") == "native"
    assert format_of("application/x-protobuf", "zipkin_json") == "zipkin_proto"
    assert format_of("application/vnd.tracing.span+json;v=1", "otlp_proto") == "native"


# -- fuzzing: nothing but DecodeError escapes ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
SPAN_KEYS = [
    "traceId",
    "spanId",
    "parentSpanId",
    "name",
    "kind",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "attributes",
    "events",
    "status",
    "trace_id",
]
ids = st.sampled_from(["5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "", "00", "x" * 32])
any_values = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "stringValue": st.text(max_size=5),
            "intValue": st.integers() | st.text(max_size=5),
            "doubleValue": st.floats() | st.sampled_from(["NaN", "Infinity", "1.5", "x"]),
            "boolValue": json_values,
            "bytesValue": st.text(max_size=8),
        },
    ),
    lambda inner: (
        st.fixed_dictionaries({"arrayValue": st.fixed_dictionaries({"values": st.lists(inner, max_size=3)})})
        | st.fixed_dictionaries(
            {
                "kvlistValue": st.fixed_dictionaries(
                    {
                        "values": st.lists(
                            st.fixed_dictionaries({"key": st.text(max_size=3), "value": inner}), max_size=3
                        )
                    }
                )
            }
        )
    ),
    max_leaves=8,
)
otlp_spans = st.dictionaries(
    st.sampled_from(SPAN_KEYS),
    json_values | ids | st.lists(st.fixed_dictionaries({"key": st.text(max_size=3), "value": any_values}), max_size=3),
)
otlp_requests = st.builds(lambda spans: {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}, st.lists(otlp_spans))


def _only_decode_errors(decode: Any, value: bytes) -> None:
    try:
        events = decode(value)
    except DecodeError:
        return
    for event in events:  # whatever decodes is valid by the model's own rules
        assert msgspec.convert(msgspec.to_builtins(event), type(event)) == event


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_errors(value: bytes) -> None:
    for decode in DECODERS.values():
        _only_decode_errors(decode, value)


@given(json_values | otlp_requests)
def test_random_json_raises_only_decode_errors(document: Any) -> None:
    value = json.dumps(document).encode()
    for decode in DECODERS.values():
        _only_decode_errors(decode, value)


@given(st.data())
def test_corrupted_protobuf_raises_only_decode_errors(data: st.DataObject) -> None:
    valid = bytearray(_proto_request(kind=2, end_time_unix_nano=1544712661000000000))
    for _ in range(data.draw(st.integers(1, 4))):
        valid[data.draw(st.integers(0, len(valid) - 1))] = data.draw(st.integers(0, 255))
    _only_decode_errors(decode_otlp_proto, bytes(valid))
