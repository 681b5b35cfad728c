"""The Zipkin v2 JSON decoder: the documented span shape, Zipkin's id rules, and malformed input rejected
with a reason."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codecs import DecodeError, decoder_for, format_of
from shared.codecs.zipkin import decode_zipkin_json
from shared.models import Log, Span

# The shape of Zipkin's documented v2 example (a server span of "backend" called by "frontend"), plus the
# client span that called it and an annotation.
SERVER = {
    "id": "352bff9a74ca9ad2",
    "traceId": "5af7183fb1d4cf5f",
    "parentId": "6b221d5bc9e6496c",
    "name": "get /api",
    "timestamp": 1556604172355737,
    "duration": 1431,
    "kind": "SERVER",
    "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
    "remoteEndpoint": {"serviceName": "frontend", "ipv4": "172.19.0.2", "port": 58648},
    "tags": {"http.method": "GET", "http.path": "/api"},
    "annotations": [{"timestamp": 1556604172356000, "value": "wr"}],
}
CLIENT = {
    "id": "6b221d5bc9e6496c",
    "traceId": "5af7183fb1d4cf5f",
    "name": "get",
    "timestamp": 1556604172355000,
    "duration": 5000,
    "kind": "CLIENT",
    "localEndpoint": {"serviceName": "frontend"},
    "tags": {"http.status_code": "500", "error": "500"},
    "debug": True,
}


def _decode(*spans: dict[str, Any]) -> list[Span]:
    events = decode_zipkin_json(json.dumps(list(spans)).encode())
    assert all(isinstance(e, Span) for e in events)
    return events  # type: ignore[return-value]


def test_documented_example() -> None:
    server, client = _decode(SERVER, CLIENT)
    assert server == Span(
        trace_id="5af7183fb1d4cf5f",
        span_id="352bff9a74ca9ad2",
        parent_span_id="6b221d5bc9e6496c",
        service_name="backend",
        operation_name="get /api",
        start_time_us=1556604172355737,
        duration_us=1431,
        kind="server",
        tags={"http.method": "GET", "http.path": "/api", "peer.service": "frontend"},
        logs=(Log(timestamp_us=1556604172356000, fields={"event": "wr"}),),
    )
    assert client == Span(
        trace_id="5af7183fb1d4cf5f",
        span_id="6b221d5bc9e6496c",
        service_name="frontend",
        operation_name="get",
        start_time_us=1556604172355000,
        duration_us=5000,
        status="error",
        kind="client",
        tags={"http.status_code": "500", "error": "500"},
    )


def test_a_single_span_object_is_accepted() -> None:
    assert decode_zipkin_json(json.dumps(SERVER).encode()) == _decode(SERVER)
    assert decode_zipkin_json(b"[]") == []


def test_defaults_and_open_spans() -> None:
    bare = {"traceId": "5AF7183FB1D4CF5F5AF7183FB1D4CF5F", "id": "352BFF9A74CA9AD2", "timestamp": 10}
    [span] = _decode(bare)
    assert span == Span(
        trace_id="5af7183fb1d4cf5f5af7183fb1d4cf5f",
        span_id="352bff9a74ca9ad2",
        service_name="unknown",
        operation_name="unknown",
        start_time_us=10,
    )
    assert span.duration_us is None  # open: no duration yet
    [span] = _decode(bare | {"duration": 0, "name": "", "kind": "INTERNAL", "localEndpoint": {}})
    assert (span.duration_us, span.operation_name, span.kind, span.service_name) == (None, "unknown", None, "unknown")


def test_zipkin_id_normalization() -> None:
    [span] = _decode({"traceId": "0000000000000000" + "5af7183fb1d4cf5f", "id": "abc", "parentId": "1", "timestamp": 1})
    assert (span.trace_id, span.span_id, span.parent_span_id) == (
        "5af7183fb1d4cf5f",
        "0000000000000abc",
        "0000000000000001",
    )
    [span] = _decode({"traceId": "5af7183fb1d4cf5f1", "id": "abc", "parentId": "0000000000000000", "timestamp": 1})
    assert (span.trace_id, span.parent_span_id) == ("0000000000000005af7183fb1d4cf5f1", None)
    [span] = _decode({"traceId": "5af7183fb1d4cf5f", "id": "abc", "parentId": "abc", "timestamp": 1})
    assert span.parent_span_id is None  # a span is never its own parent


def test_shared_server_span_keeps_both_halves() -> None:
    """B3 single-host spans: the server half reuses the client's id; both must survive the store's upsert."""
    server = SERVER | {"id": CLIENT["id"], "parentId": None, "shared": True}
    server = {k: v for k, v in server.items() if v is not None}
    client, shared = _decode(CLIENT, server)
    assert client.span_id == "6b221d5bc9e6496c" and client.kind == "client"
    assert shared.span_id == "6b221d5bc9e6496c:shared"
    assert shared.parent_span_id == "6b221d5bc9e6496c"
    assert shared.tags["shared"] is True
    assert msgspec.convert(msgspec.to_builtins(shared), Span) == shared  # a valid native id
    # shared on a client span means nothing (Zipkin drops it)
    [span] = _decode(CLIENT | {"shared": True})
    assert span.span_id == CLIENT["id"] and "shared" not in span.tags


def test_peer_service_tag_set_by_the_span_wins() -> None:
    [span] = _decode(SERVER | {"tags": {"peer.service": "explicit"}})
    assert span.tags["peer.service"] == "explicit"


@pytest.mark.parametrize(
    ("span", "reason"),
    [
        ({k: v for k, v in SERVER.items() if k != "traceId"}, "traceId"),
        ({k: v for k, v in SERVER.items() if k != "id"}, "`id`"),
        ({k: v for k, v in SERVER.items() if k != "timestamp"}, "timestamp is missing"),
        (SERVER | {"timestamp": 0}, "timestamp is missing"),
        (SERVER | {"timestamp": -1}, "timestamp"),
        (SERVER | {"duration": -5}, "duration"),
        (SERVER | {"traceId": "x" * 16}, "traceId must be 1 to 32 hex"),
        (SERVER | {"traceId": "a" * 33}, "traceId must be 1 to 32 hex"),
        (SERVER | {"traceId": "0" * 32}, "traceId is all zeros"),
        (SERVER | {"id": "0" * 16}, "id is all zeros"),
        (SERVER | {"id": "a" * 17}, "id must be 1 to 16 hex"),
        (SERVER | {"parentId": "not-hex"}, "parentId must be 1 to 16 hex"),
        (SERVER | {"tags": {"a": None}}, "tags"),
        (SERVER | {"tags": ["a"]}, "tags"),
        (SERVER | {"annotations": [{"value": "x"}]}, "timestamp"),
    ],
)
def test_malformed_spans_are_rejected_with_a_reason(span: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_zipkin_json(json.dumps([CLIENT, span]).encode())


@pytest.mark.parametrize("body", [b"", b"{", b"null", b"3", b'"spans"', b"[[]]", b"[" * 100_000])
def test_malformed_messages(body: bytes) -> None:
    with pytest.raises(DecodeError, match="Zipkin"):
        decode_zipkin_json(body)


def test_registered() -> None:
    assert decoder_for("zipkin_json") is decode_zipkin_json
    assert format_of("application/json", "zipkin_json") == "zipkin_json"


junk = st.none() | st.booleans() | st.integers(-10, 2**63) | st.text(max_size=40) | st.lists(st.integers(), max_size=2)
hex_ids = st.sampled_from(["5af7183fb1d4cf5f", "5AF7183FB1D4CF5F5af7183fb1d4cf5f", "0" * 16, "abc", "0" * 16 + "1"])
zipkin_spans = st.fixed_dictionaries(
    {"traceId": hex_ids | junk, "id": hex_ids | junk, "timestamp": st.integers(-1, 2**62) | junk},
    optional={
        "parentId": hex_ids | junk,
        "name": st.text(max_size=300) | junk,
        "kind": st.sampled_from(["SERVER", "CLIENT", "PRODUCER", "CONSUMER", "LOCAL"]) | junk,
        "duration": st.integers(-1, 2**40) | junk,
        "shared": st.booleans() | junk,
        "localEndpoint": st.fixed_dictionaries({}, optional={"serviceName": st.text(max_size=300) | junk}) | junk,
        "remoteEndpoint": st.fixed_dictionaries({}, optional={"serviceName": st.text() | junk}) | junk,
        "tags": st.dictionaries(st.text(max_size=300), st.text(max_size=5) | junk, max_size=3) | junk,
        "annotations": st.lists(
            st.fixed_dictionaries({"timestamp": st.integers(-1, 2**62) | junk, "value": st.text(max_size=5) | junk})
        )
        | junk,
    },
)


@given(st.lists(zipkin_spans, max_size=4))
def test_random_span_lists_raise_only_decode_errors(spans: list[dict[str, Any]]) -> None:
    try:
        events = decode_zipkin_json(json.dumps(spans).encode())
    except DecodeError:
        return
    for event in events:
        assert msgspec.convert(msgspec.to_builtins(event), Span) == event
