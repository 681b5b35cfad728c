"""How a message's format is chosen (:func:`shared.codecs.format_of`): the content-type header when it names
one, else the payload's first bytes, else the topic's format. The OpenTelemetry Collector's Kafka exporter
sets no content-type for any encoding (its ``internal/kafkaclient/headers.go`` writes only
``include_metadata_keys``), so the payload has to tell; and whatever the bytes, only DecodeError escapes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.decoding import all_native, content_type
from shared.codecs import DecodeError, decoder_for, detect, format_of
from shared.models import SPAN_CONTENT_TYPE
from tests.collector import pdata_json, zipkin_json, zipkin_proto

TOPIC_FORMATS = ["otlp_proto", "otlp_json", "zipkin_json", "zipkin_proto"]


def _request(spans: int = 1, resources: int = 1) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for r in range(resources):
        rs = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc-{r}"
        scope = rs.scope_spans.add()
        scope.scope.name = "lib"
        for i in range(spans):
            span = scope.spans.add(trace_id=bytes(range(1, 17)), span_id=bytes([r + 1, i + 1] * 4), name=f"op {i}")
            span.start_time_unix_nano = 1_700_000_000_000_000_000 + i
            span.end_time_unix_nano = span.start_time_unix_nano + 1000
    return request


@pytest.mark.parametrize("topic", ["otlp_proto", "otlp_json"])
def test_otlp_without_a_header_is_detected_whatever_the_topic_setting(topic: str) -> None:
    request = _request(spans=3, resources=2)
    proto, as_json = request.SerializeToString(), pdata_json(request)
    assert format_of(None, topic, proto) == "otlp_proto"
    assert format_of(None, topic, as_json) == "otlp_json"
    assert format_of(None, topic, b" \r\n\t" + as_json) == "otlp_json"
    assert decoder_for(format_of(None, topic, as_json))(as_json) == decoder_for("otlp_proto")(proto)
    assert format_of(None, topic, b"") == "otlp_proto"  # an empty request is valid protobuf (no spans)


@pytest.mark.parametrize("topic", ["zipkin_json", "zipkin_proto"])
def test_zipkin_without_a_header_is_detected(topic: str) -> None:
    request = _request(spans=2)
    proto, as_json = zipkin_proto(request), zipkin_json(request)
    assert format_of(None, topic, proto) == "zipkin_proto"
    assert format_of(None, topic, as_json) == "zipkin_json"
    assert format_of(None, topic, b'\n{"traceId": "1", "id": "2", "timestamp": 3}') == "zipkin_json"  # one span


def test_a_content_type_header_wins_and_picks_within_the_topics_schema() -> None:
    proto = _request().SerializeToString()
    assert format_of("application/json", "otlp_proto", proto) == "otlp_json"  # wins over the bytes
    assert format_of("application/x-protobuf; charset=binary", "otlp_json", b"{}") == "otlp_proto"
    assert format_of("application/x-protobuf", "zipkin_json", b"[]") == "zipkin_proto"
    assert format_of("application/json", "zipkin_proto", b"\x0a\x00") == "zipkin_json"
    assert format_of("application/vnd.tracing.span+json;v=1", "otlp_proto", proto) == "native"
    # a content type naming nothing this topic carries: the bytes decide
    assert format_of("text/plain", "otlp_proto", b"{}") == "otlp_json"
    assert format_of("application/json", "native", b"\x0a\x00") == "native"  # one encoding: nothing to detect


def test_json_starting_with_a_newline_is_not_taken_for_protobuf() -> None:
    """``\\n`` is 0x0A, protobuf's tag of field 1, wire type 2; the next byte ``{`` reads as a length of 123,
    so the JSON would have to end exactly at byte 125 and continue with 0x0A records to pass as protobuf."""
    body = b"\n" + pdata_json(_request())
    assert len(body) != 125
    assert detect(body, "otlp_proto") == "otlp_json"
    assert detect(b"\n[" + b" " * 90 + b"]", "zipkin_json") == "zipkin_json"


def test_protobuf_whose_first_record_is_123_bytes_long_is_still_protobuf() -> None:
    """The other side of the ambiguity: a real request may start ``0x0A 0x7B`` (``\n{``); its records'
    payloads are well-formed protobuf, so it stays protobuf."""
    for length in range(1, 80):
        request = _request()
        request.resource_spans[0].resource.attributes[0].value.string_value = "s" * length
        value = request.SerializeToString()
        if value[:2] == b"\n{":
            break
    else:
        raise AssertionError("no service name length gives a 123-byte ResourceSpans")
    assert detect(value, "otlp_json") == "otlp_proto"
    assert format_of(None, "otlp_json", value) == "otlp_proto"


@pytest.mark.parametrize(
    ("value", "found"),
    [
        (b"\x0a\x00", "otlp_proto"),  # one empty ResourceSpans
        (b"\x0a\x80\x01" + b"x" * 128, "otlp_proto"),  # a two-byte length
        (b"\x0a\x05abc", None),  # shorter than its length says
        (b"\x0a\x80", None),  # the length never ends
        (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", None),  # a varint longer than 64 bits
        (b"\x12\x00", None),  # field 2: not an ExportTraceServiceRequest
        (b"\x0a\x00\x12\x00", None),  # field 1 then field 2
        (b"not json", None),
        (b"   ", None),
    ],
)
def test_protobuf_records_are_checked_to_the_last_byte(value: bytes, found: str | None) -> None:
    assert detect(value, "otlp_proto") == found


TOPIC = st.sampled_from(TOPIC_FORMATS)


@given(st.binary(max_size=400), TOPIC, st.sampled_from([None, "application/json", "application/x-protobuf"]))
@example(b"\x0a\x00", "zipkin_json", None)
@example(b" [", "otlp_proto", None)
@example(b"{", "zipkin_proto", "application/x-protobuf")
def test_any_bytes_on_any_topic_raise_only_decode_errors(value: bytes, topic: str, content_type: str | None) -> None:
    fmt = format_of(content_type, topic, value)
    assert fmt in (topic, *(f for f in TOPIC_FORMATS if f.split("_")[0] == topic.split("_")[0]))
    try:
        decoder_for(fmt)(value)
    except DecodeError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(json_values, st.text(alphabet=" \t\r\n", max_size=4), TOPIC)
def test_json_documents_are_json_unless_they_are_exactly_field_1_records(
    document: object, whitespace: str, topic: str
) -> None:
    value = (whitespace + json.dumps(document)).encode()
    found = detect(value, topic)
    if isinstance(document, dict | list):
        assert found is not None and (found.endswith("json") or value[0] == 0x0A)
    else:
        assert found is None or value[0] == 0x0A


@given(st.integers(0, 5), st.integers(0, 3), TOPIC)
def test_every_serialized_request_is_protobuf(spans: int, resources: int, topic: str) -> None:
    value = _request(spans, resources).SerializeToString()
    assert detect(value, topic) == ("otlp_proto" if topic.startswith("otlp") else "zipkin_proto")


_HEADER_KEYS = st.sampled_from(["content-type", "Content-Type", "trace-id", ""])
_HEADER_VALUES = st.sampled_from(
    [SPAN_CONTENT_TYPE.encode(), b"application/json", b"application/x-protobuf", b"", "é".encode("latin-1")]
)


@given(st.lists(st.lists(st.tuples(_HEADER_KEYS, _HEADER_VALUES), max_size=3) | st.none(), max_size=6))
def test_the_worker_takes_a_fetch_as_native_exactly_when_every_first_content_type_is(
    headers: list[list[tuple[str, bytes]] | None],
) -> None:
    """The fast check that a fetch is all native spans (decoded in one call) agrees with reading each
    message's content type as the one-by-one path does."""
    messages = [SimpleNamespace(headers=h or (), value=b"{}") for h in headers]
    expected = all(content_type(m) in (None, SPAN_CONTENT_TYPE) for m in messages)
    assert all_native(messages) == expected
