"""The Jaeger decoders, protobuf and gogo jsonpb JSON (one ``model.Span`` per message): the span shape of
jaeger-idl's ``model.proto``, both trace id lengths, the parent among the references, the Collector's
tags (kind, status, scope), the process as the resource, one mapping for both encodings, detection from
the bytes, and malformed input rejected with a reason. Messages are built as the Collector's Kafka
exporter writes them (:mod:`tests.collector`)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codecs import DecodeError, decoder_for, format_of
from shared.codecs.jaeger import JaegerSpan as JaegerSpanMessage
from shared.codecs.jaeger import decode_jaeger_json, decode_jaeger_proto
from shared.models import Log, Span
from tests.collector import (
    CHILD_OF,
    FOLLOWS_FROM,
    JAEGER_BINARY,
    JAEGER_BOOL,
    JAEGER_FLOAT64,
    JAEGER_INT64,
    JAEGER_STRING,
    JaegerKeyValue,
    JaegerSpan,
    jaeger_json_span,
    jaeger_proto_span,
)

T0_NS = 1_732_500_000_123_456_789
HIGH, LOW = 0x5AF7183FB1D4CF5F, 0x0123456789ABCDEF


def _kv(key: str, v_type: int, value: Any) -> JaegerKeyValue:
    return JaegerKeyValue(key, v_type, value)


def _span(**changes: Any) -> JaegerSpan:
    """A server span of ``backend`` called by a client span, with tags of every type, a log, a process."""
    fields: dict[str, Any] = {
        "trace_high": HIGH,
        "trace_low": LOW,
        "span_id": 0x352BFF9A74CA9AD2,
        "operation_name": "GET /api",
        "references": [(HIGH, LOW, 0x6B221D5BC9E6496C, CHILD_OF)],
        "start_ns": T0_NS,
        "duration_ns": 1_431_999,
        "tags": [
            _kv("otel.scope.name", JAEGER_STRING, "shop.web"),
            _kv("otel.scope.version", JAEGER_STRING, "1.2"),
            _kv("http.method", JAEGER_STRING, "GET"),
            _kv("http.status_code", JAEGER_INT64, -7),
            _kv("retry", JAEGER_BOOL, True),
            _kv("ratio", JAEGER_FLOAT64, 0.25),
            _kv("blob", JAEGER_BINARY, b"\x00\xff"),
            _kv("span.kind", JAEGER_STRING, "server"),
        ],
        "logs": [(T0_NS + 5_000, [_kv("event", JAEGER_STRING, "cache miss"), _kv("attempt", JAEGER_INT64, 2)])],
        "service_name": "backend",
        "process_tags": [_kv("host.name", JAEGER_STRING, "web-1"), _kv("cpus", JAEGER_INT64, 8)],
    }
    return JaegerSpan(**(fields | changes))


EXPECTED = Span(
    trace_id="5af7183fb1d4cf5f0123456789abcdef",
    span_id="352bff9a74ca9ad2",
    parent_span_id="6b221d5bc9e6496c",
    service_name="backend",
    operation_name="GET /api",
    start_time_us=T0_NS // 1000,
    duration_us=1431,
    kind="server",
    tags={"http.method": "GET", "http.status_code": -7, "retry": True, "ratio": 0.25, "blob": "AP8="},
    logs=(Log(timestamp_us=(T0_NS + 5_000) // 1000, fields={"event": "cache miss", "attempt": 2}),),
    resource={"host.name": "web-1", "cpus": 8},
    scope_name="shop.web",
    scope_version="1.2",
)


def _both(span: JaegerSpan) -> Span:
    """The span through both encodings, which must agree."""
    [from_proto] = decode_jaeger_proto(jaeger_proto_span(span))
    [from_json] = decode_jaeger_json(jaeger_json_span(span))
    assert from_proto == from_json
    assert isinstance(from_proto, Span)
    return from_proto


def test_the_exporters_span_in_both_encodings() -> None:
    assert _both(_span()) == EXPECTED


def test_a_64_bit_trace_id_is_its_16_character_low_half() -> None:
    span = _both(_span(trace_high=0, references=[(0, LOW, 0x6B221D5BC9E6496C, CHILD_OF)]))
    assert (span.trace_id, span.parent_span_id) == ("0123456789abcdef", "6b221d5bc9e6496c")
    message = JaegerSpanMessage.FromString(jaeger_proto_span(_span()))
    message.trace_id = message.trace_id[8:]  # 8 bytes: accepted as the same 64-bit id
    message.references[0].trace_id = message.references[0].trace_id[8:]
    [short] = decode_jaeger_proto(message.SerializeToString())
    assert isinstance(short, Span)
    assert (short.trace_id, short.parent_span_id) == ("0123456789abcdef", "6b221d5bc9e6496c")


def test_the_parent_is_the_first_child_of_reference_into_the_same_trace() -> None:
    other_trace = (HIGH + 1, LOW, 0x1111111111111111, CHILD_OF)
    follows = (HIGH, LOW, 0x2222222222222222, FOLLOWS_FROM)
    child_of = (HIGH, LOW, 0x3333333333333333, CHILD_OF)
    assert _both(_span(references=[other_trace, follows, child_of])).parent_span_id == "3333333333333333"
    assert _both(_span(references=[other_trace, follows])).parent_span_id == "2222222222222222"
    assert _both(_span(references=[other_trace])).parent_span_id is None
    assert _both(_span(references=[(HIGH, LOW, 0x352BFF9A74CA9AD2, CHILD_OF)])).parent_span_id is None  # itself
    assert _both(_span(references=[])).parent_span_id is None


@pytest.mark.parametrize(
    ("tags", "status", "kind"),
    [
        ([_kv("error", JAEGER_BOOL, True)], "error", None),
        ([_kv("error", JAEGER_STRING, "true")], "error", None),
        ([_kv("otel.status_code", JAEGER_STRING, "ERROR")], "error", None),
        ([_kv("otel.status_code", JAEGER_STRING, "OK"), _kv("error", JAEGER_BOOL, False)], "success", None),
        ([_kv("span.kind", JAEGER_STRING, "producer")], "success", "producer"),
        ([_kv("span.kind", JAEGER_STRING, "internal")], "success", "internal"),
    ],
)
def test_status_and_kind_from_the_collectors_tags(tags: list[JaegerKeyValue], status: str, kind: str | None) -> None:
    span = _both(_span(tags=tags))
    assert (span.status, span.kind) == (status, kind)
    assert "span.kind" not in span.tags
    assert {k for k in span.tags} == {kv.key for kv in tags if kv.key != "span.kind"}  # status tags are kept


def test_an_unknown_span_kind_tag_stays_a_tag() -> None:
    span = _both(_span(tags=[_kv("span.kind", JAEGER_STRING, "rpc")]))
    assert (span.kind, span.tags) == (None, {"span.kind": "rpc"})


def test_defaults_a_zero_duration_and_a_span_without_process() -> None:
    message = JaegerSpanMessage.FromString(jaeger_proto_span(_span(duration_ns=0, operation_name="")))
    message.ClearField("process")
    [span] = decode_jaeger_proto(message.SerializeToString())
    assert isinstance(span, Span)
    assert (span.duration_us, span.operation_name, span.service_name, span.resource) == (
        0,
        "unknown",
        "unknown_service",
        {},
    )
    body = json.loads(jaeger_json_span(_span(duration_ns=0)))
    assert "duration" not in body  # jsonpb leaves the zero duration out
    [from_json] = decode_jaeger_json(json.dumps(body).encode())
    assert isinstance(from_json, Span) and from_json.duration_us == 0


def test_json_accepts_numbers_for_enums_and_int64_and_offsets_in_times() -> None:
    body = json.loads(jaeger_json_span(_span()))
    body["tags"][3] = {"key": "http.status_code", "vType": 2, "vInt64": -7}
    body["references"][0]["refType"] = 0
    body["startTime"] = "2024-11-25T03:00:00.123456789+01:00"  # the same instant as T0_NS
    assert decode_jaeger_json(json.dumps(body).encode()) == [EXPECTED]


@pytest.mark.parametrize(
    ("text", "micros"),
    [("0.001431999s", 1431), ("1431999ns", 1431), ("1.431999ms", 1431), ("1431us", 1431), ("1431µs", 1431),
     ("1m0.5s", 60_500_000), ("1h", 3_600_000_000), ("0", 0), ("+2s", 2_000_000)],
)  # fmt: skip
def test_json_durations_in_any_form_jsonpb_reads(text: str, micros: int) -> None:
    """jsonpb reads a Duration with Go's ``time.ParseDuration``: Jaeger's own fixtures write ``22938000ns``."""
    [span] = decode_jaeger_json(_json(duration=text))
    assert isinstance(span, Span) and span.duration_us == micros


def test_json_non_finite_floats() -> None:
    body = json.loads(jaeger_json_span(_span(tags=[])))
    body["tags"] = [{"key": k, "vType": "FLOAT64", "vFloat64": k} for k in ("NaN", "Infinity", "-Infinity")]
    [span] = decode_jaeger_json(json.dumps(body).encode())
    assert isinstance(span, Span) and span.tags == {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}


def _json(**changes: Any) -> bytes:
    body = json.loads(jaeger_json_span(_span()))
    for key, value in changes.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    return json.dumps(body).encode()


ZERO_TRACE = base64.b64encode(bytes(16)).decode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "not a Jaeger JSON span"),
        (b"[]", "not a Jaeger JSON span"),
        (b"{", "not a Jaeger JSON span"),
        (_json(traceId=None), "traceId is missing"),
        (_json(traceId=ZERO_TRACE), "traceId is all zeros"),
        (_json(traceId="AAAA"), "traceId must be 16 bytes, got 3"),
        (_json(traceId="5af7183fb1d4cf5f"), "traceId must be 16 bytes, got 12"),
        (_json(traceId="not base64!"), "traceId is not base64"),
        (_json(spanId=None), "spanId is missing"),
        (_json(spanId="AAAAAAAAAAA="), "spanId is all zeros"),
        (_json(startTime=None), "startTime is missing"),
        (_json(startTime="yesterday"), "startTime is not an RFC 3339 time"),
        (_json(startTime="2024-13-01T00:00:00Z"), "startTime is not an RFC 3339 time"),
        (_json(startTime="1969-12-31T23:59:59Z"), "startTime is before 1970"),
        (_json(startTime="9999-01-01T00:00:00Z"), "startTime out of range"),
        (_json(duration="5 ms"), "duration is not a duration such as '0.5s'"),
        (_json(duration="1d"), "duration is not a duration such as '0.5s'"),
        (_json(tags=[{"key": "k", "vType": "MAP"}]), "vType: unknown value 'MAP'"),
        (_json(tags=[{"key": "k", "vType": "INT64", "vInt64": "x"}]), "vInt64 is not an integer"),
        (_json(tags=[{"key": "k", "vType": "FLOAT64", "vFloat64": "big"}]), "vFloat64 is not a number"),
        (_json(tags=[{"key": "k", "vType": "BINARY", "vBinary": "%%"}]), "vBinary is not base64"),
        (_json(references=[{"traceId": "AAAA", "spanId": "AAAA", "refType": "SIBLING"}]), "refType: unknown value"),
        (_json(operationName=5), "not a Jaeger JSON span: Expected `str`, got `int` - at `$.operationName`"),
    ],
)
def test_malformed_json_is_rejected_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as error:
        decode_jaeger_json(value)
    assert reason in str(error.value)


def _proto(**changes: Any) -> bytes:
    message = JaegerSpanMessage.FromString(jaeger_proto_span(_span()))
    for key, value in changes.items():
        setattr(message, key, value)
    data: bytes = message.SerializeToString()
    return data


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x0a\x05abc", "not a protobuf Jaeger span"),
        (_proto(trace_id=b""), "traceId is missing"),
        (_proto(trace_id=bytes(range(1, 13))), "traceId must be 16 bytes, got 12"),
        (_proto(span_id=bytes(4)), "spanId must be 8 bytes, got 4"),
        (_proto(span_id=bytes(8)), "spanId is all zeros"),
        (b"\x0a\x10" + bytes(range(1, 17)) + b"\x12\x08" + bytes(range(1, 9)), "startTime is missing"),
    ],
)
def test_malformed_proto_is_rejected_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as error:
        decode_jaeger_proto(value)
    assert reason in str(error.value)


def test_registered_and_detected_from_the_bytes() -> None:
    proto, text = jaeger_proto_span(_span()), jaeger_json_span(_span())
    assert decoder_for("jaeger_proto") is decode_jaeger_proto
    assert decoder_for("jaeger_json") is decode_jaeger_json
    for topic in ("jaeger_proto", "jaeger_json"):
        assert format_of(None, topic, proto) == "jaeger_proto"
        assert format_of(None, topic, text) == "jaeger_json"
        assert format_of(None, topic, b"\n " + text) == "jaeger_json"
        assert format_of("application/json", topic, proto) == "jaeger_json"  # a header wins
        assert format_of("application/x-protobuf", topic, text) == "jaeger_proto"
        assert format_of(None, topic, b"\xff\xff") == topic  # neither: the topic's format says what is wrong


# -- properties -----------------------------------------------------------------------------------------

ids64 = st.integers(1, 2**64 - 1)
keys = st.text(min_size=1, max_size=20)
key_values = st.one_of(
    st.builds(JaegerKeyValue, keys, st.just(JAEGER_STRING), st.text(max_size=20)),
    st.builds(JaegerKeyValue, keys, st.just(JAEGER_BOOL), st.booleans()),
    st.builds(JaegerKeyValue, keys, st.just(JAEGER_INT64), st.integers(-(2**63), 2**63 - 1)),
    st.builds(JaegerKeyValue, keys, st.just(JAEGER_FLOAT64), st.floats(allow_nan=False, allow_infinity=False)),
    st.builds(JaegerKeyValue, keys, st.just(JAEGER_BINARY), st.binary(max_size=12)),
)
times = st.integers(1000, 4_000_000_000 * 10**9)  # from 1 µs: a start of 0 µs is "missing"
jaeger_spans = st.builds(
    JaegerSpan,
    trace_high=st.integers(0, 2**64 - 1),
    trace_low=ids64,
    span_id=ids64,
    operation_name=st.text(max_size=300),
    references=st.lists(
        st.tuples(st.integers(0, 2**64 - 1), ids64, ids64, st.sampled_from([CHILD_OF, FOLLOWS_FROM])), max_size=3
    ),
    start_ns=times,
    duration_ns=st.integers(-(10**12), 10**15),
    tags=st.lists(key_values, max_size=5),
    logs=st.lists(st.tuples(times, st.lists(key_values, max_size=3)), max_size=2),
    service_name=st.text(max_size=300),
    process_tags=st.lists(key_values, max_size=4),
)


def _plain(kv: JaegerKeyValue) -> object:
    return base64.b64encode(kv.value).decode() if isinstance(kv.value, bytes) else kv.value


@given(jaeger_spans)
def test_any_exporter_span_decodes_alike_in_both_encodings(span: JaegerSpan) -> None:
    decoded = _both(span)
    trace_hex = f"{span.trace_low:016x}" if span.trace_high == 0 else f"{span.trace_high:016x}{span.trace_low:016x}"
    assert (decoded.trace_id, decoded.span_id) == (trace_hex, f"{span.span_id:016x}")
    assert decoded.start_time_us == span.start_ns // 1000
    assert decoded.duration_us == max(0, int(span.duration_ns / 1000))  # Go's division truncates toward zero
    same_trace = [r for r in span.references if (r[0], r[1]) == (span.trace_high, span.trace_low)]
    parents = [r[2] for r in same_trace if r[3] == CHILD_OF] or [r[2] for r in same_trace]
    expected_parent = f"{parents[0]:016x}" if parents and parents[0] != span.span_id else None
    assert decoded.parent_span_id == expected_parent
    assert decoded.service_name == (span.service_name[:256] or "unknown_service")
    assert decoded.resource == {kv.key[:256]: _plain(kv) for kv in span.process_tags}
    assert len(decoded.logs) == len(span.logs)
    assert msgspec.convert(msgspec.to_builtins(decoded), Span) == decoded  # a valid native span


@given(st.binary(max_size=300), st.sampled_from([None, "application/json", "application/x-protobuf"]))
def test_any_bytes_raise_only_decode_errors(value: bytes, content_type: str | None) -> None:
    try:
        events = decoder_for(format_of(content_type, "jaeger_proto", value))(value)
    except DecodeError:
        return
    for event in events:
        assert msgspec.convert(msgspec.to_builtins(event), Span) == event


def test_the_proto_class_has_model_protos_field_numbers() -> None:
    """Field numbers of jaeger-idl's ``proto/api_v2/model.proto`` ``Span``."""
    numbers = {f.name: f.number for f in JaegerSpanMessage.DESCRIPTOR.fields}
    assert numbers == {
        "trace_id": 1, "span_id": 2, "operation_name": 3, "references": 4, "flags": 5, "start_time": 6,
        "duration": 7, "tags": 8, "logs": 9, "process": 10, "process_id": 11, "warnings": 12,
    }  # fmt: skip
    assert struct.unpack(">Q", jaeger_proto_span(_span())[20:28])[0] == 0x352BFF9A74CA9AD2
