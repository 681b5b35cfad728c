"""The native codec: round trips, and every kind of bad event rejected with a reason."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codecs import DecodeError, decoder_for, format_of
from shared.codecs.native import decode_native, decode_native_many, encode_native
from shared.models import Event, Log, Span, SpanFinish

ids = st.from_regex(r"\A[A-Za-z0-9._:-]{1,64}\Z")
tag_values = st.one_of(
    st.text(max_size=20),
    st.integers(-(2**53), 2**53),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
tags = st.dictionaries(st.text(min_size=1, max_size=10), tag_values, max_size=4)
spans = st.builds(
    Span,
    trace_id=ids,
    span_id=ids,
    parent_span_id=st.none() | ids,
    service_name=st.text(min_size=1, max_size=20),
    operation_name=st.text(min_size=1, max_size=20),
    start_time_us=st.integers(0, 2**62),
    duration_us=st.none() | st.integers(0, 2**40),
    status=st.sampled_from(["success", "error"]),
    kind=st.none() | st.sampled_from(["server", "client", "producer", "consumer", "internal"]),
    tags=tags,
    logs=st.lists(st.builds(Log, timestamp_us=st.integers(0, 2**62), fields=tags), max_size=2).map(tuple),
    resource=tags,
    scope_name=st.none() | st.text(min_size=1, max_size=20),
    scope_version=st.none() | st.text(min_size=1, max_size=20),
)
finishes = st.builds(
    SpanFinish,
    trace_id=ids,
    span_id=ids,
    end_time_us=st.integers(0, 2**62),
    status=st.none() | st.sampled_from(["success", "error"]),
    tags=tags,
)

GOOD = {
    "type": "span",
    "traceId": "trace-abc-123",
    "spanId": "span-root-001",
    "serviceName": "api-gateway",
    "operationName": "handleUserRequest",
    "startTimeUs": 1732500000000000,
    "durationUs": 123000,
}


@given(st.lists(st.one_of(spans, finishes), min_size=1, max_size=5))
def test_round_trip(events: list[Span | SpanFinish]) -> None:
    assert decode_native(encode_native(events)) == events
    assert decode_native(encode_native(events[0])) == [events[0]]


def test_seed_style_ids_and_status_synonyms() -> None:
    for given_status, stored in [
        ("ok", "success"),
        ("failed", "error"),
        ("failure", "error"),
        ("error", "error"),
    ]:
        [span] = decode_native(msgspec.json.encode(GOOD | {"status": given_status}))
        assert isinstance(span, Span)
        assert span.status == stored
        assert span.trace_id == "trace-abc-123"


def test_resource_and_scope_are_optional_fields() -> None:
    """``resource``, ``scopeName`` and ``scopeVersion`` (added with defaults: events without them decode as
    before) travel on the wire when set and are left out when not."""
    plain = (
        b'{"type": "span", "traceId": "t", "spanId": "s", "serviceName": "a", "operationName": "b", "startTimeUs": 1}'
    )
    (span,) = decode_native(plain)
    assert isinstance(span, Span) and (span.resource, span.scope_name, span.scope_version) == ({}, None, None)
    assert b"resource" not in encode_native(span) and b"scope" not in encode_native(span)
    full = msgspec.structs.replace(span, resource={"host.name": "h"}, scope_name="lib", scope_version="1")
    assert b'"resource":{"host.name":"h"},"scopeName":"lib","scopeVersion":"1"' in encode_native(full)
    assert decode_native(encode_native(full)) == [full]


def test_open_span_and_finish() -> None:
    body = {k: v for k, v in GOOD.items() if k != "durationUs"}
    finish = {
        "type": "finish",
        "traceId": "t",
        "spanId": "s",
        "endTimeUs": 5,
        "status": "failed",
        "tags": {"a": 1},
    }
    span, fin = decode_native(msgspec.json.encode([body, finish]))
    assert isinstance(span, Span) and span.duration_us is None
    assert isinstance(fin, SpanFinish) and fin.status == "error" and fin.tags == {"a": 1}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "malformed"),
        (b'{"type": "span"', "truncated"),
        (
            msgspec.json.encode({k: v for k, v in GOOD.items() if k != "spanId"}),
            "missing required field `spanId`",
        ),
        (
            msgspec.json.encode(GOOD | {"startTimeUs": "soon"}),
            "Expected `int`, got `str` - at `$.startTimeUs`",
        ),
        (msgspec.json.encode(GOOD | {"traceId": "has space"}), "at `$.traceId`"),
        (msgspec.json.encode(GOOD | {"traceId": ""}), "at `$.traceId`"),
        (msgspec.json.encode(GOOD | {"spanId": "x" * 65}), "at `$.spanId`"),
        (msgspec.json.encode([GOOD, GOOD | {"parentSpanId": "p/../x"}]), "at `$[1].parentSpanId`"),
        (msgspec.json.encode(GOOD | {"spanId": "spän"}), "at `$.spanId`"),
        (msgspec.json.encode(GOOD | {"durationUs": -1}), ">= 0 - at `$.durationUs`"),
        (msgspec.json.encode(GOOD | {"type": "metric"}), "Invalid value 'metric' - at `$.type`"),
        (
            msgspec.json.encode({k: v for k, v in GOOD.items() if k != "type"}),
            "missing required field `type`",
        ),
        (msgspec.json.encode(GOOD | {"status": "meh"}), "at `$.status`"),
        (msgspec.json.encode(GOOD | {"tags": {"a": [1]}}), "at `$.tags"),
        (msgspec.json.encode([GOOD, GOOD | {"kind": "lunch"}]), "at `$[1].kind`"),
        (b"42", "Expected"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_native(value)
    assert reason.lower() in str(info.value).lower()


def test_format_detection_by_content_type() -> None:
    assert format_of("application/vnd.tracing.span+json;v=1", "other") == "native"
    assert format_of(None, "native") == "native"
    assert format_of("text/plain", "native") == "native"
    assert decoder_for("native") is decode_native
    with pytest.raises(DecodeError):
        decoder_for("nope")


MESSAGES = st.lists(
    st.sampled_from(
        [
            b'{"type":"span","traceId":"t1","spanId":"a","serviceName":"s","operationName":"o","startTimeUs":1}',
            b'[{"type":"finish","traceId":"t2","spanId":"b","endTimeUs":5}]',
            b"[]",
            b'{"type":"span","traceId":"bad id","spanId":"a","serviceName":"s","operationName":"o","startTimeUs":1}',
            b"{not json",
            b'{"type":"span"} {"type":"span"}',
            b"",
        ]
    ),
    min_size=1,
    max_size=6,
)


@given(MESSAGES)
def test_many_messages_decode_as_one_by_one(values: list[bytes]) -> None:
    """One call for many messages gives what decoding them one by one gives, or ``None`` (then one by
    one) as soon as any of them would be rejected."""
    events: list[Event] = []
    try:
        for value in values:
            events += decode_native(value)
    except DecodeError:
        assert decode_native_many(values) is None
    else:
        assert decode_native_many(values) == events
