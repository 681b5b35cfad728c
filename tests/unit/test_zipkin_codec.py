"""The Zipkin v2 decoders, JSON and proto3: the documented span shape, Zipkin's id rules, what the
OpenTelemetry Collector's translator puts in tags, one mapping for both encodings, and malformed input
rejected with a reason."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codecs import DecodeError, decoder_for, format_of
from shared.codecs.zipkin import decode_zipkin_json, decode_zipkin_proto
from shared.models import Event, Log, Span
from tests.collector import ZipkinEndpoint, ZipkinSpan, zipkin_proto_span

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


# -- the mapping of what the OpenTelemetry Collector puts in Zipkin spans ------------------------------


def test_collector_tags_become_scope_kind_and_resource() -> None:
    """The Collector's Zipkin translator folds the instrumentation scope (``otel.library.*``), the span kind
    ``internal`` (``span.kind``) and the resource attributes into tags; they are sorted back out, as the
    Collector's own Zipkin receiver does (``to_translator.go``). Other tags, the status tags included, stay."""
    tags = {
        "otel.library.name": "shop.web", "otel.library.version": "0.9", "span.kind": "internal",
        "host.name": "web-1", "service.version": "1.2", "telemetry.sdk.language": "python", "k8s.pod.name": "p",
        "deployment.environment": "prod", "http.method": "GET", "otel.status_code": "Error", "error": "true",
        "otel.status_description": "boom", "db.system": "sqlite", "service.name": "kept-as-a-tag",
    }  # fmt: skip
    [span] = _decode({"traceId": "5af7183fb1d4cf5f", "id": "abc", "timestamp": 1, "tags": tags})
    assert (span.kind, span.scope_name, span.scope_version, span.status) == ("internal", "shop.web", "0.9", "error")
    assert span.resource == {
        "host.name": "web-1", "service.version": "1.2", "telemetry.sdk.language": "python", "k8s.pod.name": "p",
        "deployment.environment": "prod"}  # fmt: skip
    assert span.tags == {
        "http.method": "GET", "otel.status_code": "Error", "error": "true", "otel.status_description": "boom",
        "db.system": "sqlite", "service.name": "kept-as-a-tag"}  # fmt: skip
    # a kind given by the span wins, and the tag goes; OpenTelemetry's newer scope tag names count too
    tags = {"span.kind": "server", "otel.scope.name": "lib", "otel.library.name": "old"}
    [span] = _decode({"traceId": "5af7183fb1d4cf5f", "id": "abc", "timestamp": 1, "kind": "CLIENT", "tags": tags})
    assert (span.kind, span.scope_name, span.scope_version) == ("client", "lib", None)
    assert span.tags == {"span.kind": "server"}


def test_go_nulls_and_huge_times() -> None:
    """Go's ``encoding/json`` writes a nil slice or map as ``null``; times beyond 10^16 µs are refused (they
    would overflow the store's 64-bit columns once a duration is added)."""
    [span] = _decode(SERVER | {"annotations": None, "tags": None})
    assert (span.logs, span.tags) == ((), {"peer.service": "frontend"})
    with pytest.raises(DecodeError, match="timestamp out of range"):
        _decode(SERVER | {"timestamp": 2**63})
    with pytest.raises(DecodeError, match=r"annotations\[0\].timestamp out of range"):
        _decode(SERVER | {"annotations": [{"timestamp": 10**17, "value": "x"}]})


# -- proto3 ListOfSpans ------------------------------------------------------------------------------------


def _zipkin_model(span: dict[str, Any]) -> ZipkinSpan:
    """A Zipkin v2 JSON span as zipkin-go's model (what the proto encoder of :mod:`tests.collector` takes)."""
    trace = span["traceId"].rjust(32, "0")

    def endpoint(name: str) -> ZipkinEndpoint | None:
        given = span.get(name)
        return None if given is None else ZipkinEndpoint(service_name=given.get("serviceName", ""))

    return ZipkinSpan(
        trace_high=int(trace[:16], 16),
        trace_low=int(trace[16:], 16),
        id=int(span["id"], 16),
        parent=int(span["parentId"], 16) if span.get("parentId") else None,
        name=span.get("name", ""),
        kind=span.get("kind", ""),
        timestamp_ns=span.get("timestamp", 0) * 1000,
        duration_ns=span.get("duration", 0) * 1000,
        local=endpoint("localEndpoint"),
        remote=endpoint("remoteEndpoint"),
        annotations=[(a["timestamp"] * 1000, a["value"]) for a in span.get("annotations", [])],
        tags=span.get("tags", {}),
        shared=span.get("shared", False),
    )


def _proto(*spans: dict[str, Any]) -> bytes:
    return b"".join(
        b"\x0a" + _varint(len(body)) + body for body in (zipkin_proto_span(_zipkin_model(s)) for s in spans)
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_proto_is_mapped_as_json_is() -> None:
    """One mapping for both encodings: the documented example, a shared span and a 64-bit trace id (which
    zipkin-go's proto encoder writes as 16 bytes with a zero high half, and a root's parent as 8 zero bytes)."""
    shared = {k: v for k, v in (SERVER | {"id": CLIENT["id"], "shared": True}).items() if k != "parentId"}
    spans = [SERVER, CLIENT, shared, {"traceId": "1", "id": "2", "timestamp": 3, "name": "Upper Case Stays"}]
    decoded = decode_zipkin_proto(_proto(*spans))
    assert decoded == decode_zipkin_json(json.dumps(spans).encode())
    assert [s.trace_id for s in decoded][-1] == "0000000000000001"
    assert [getattr(s, "parent_span_id", "?") for s in decoded] == ["6b221d5bc9e6496c", None, "6b221d5bc9e6496c", None]
    assert decode_zipkin_proto(b"") == []
    assert decoder_for("zipkin_proto") is decode_zipkin_proto


def test_proto_kinds_and_unknown_fields() -> None:
    for number, kind in ((1, "client"), (2, "server"), (3, "producer"), (4, "consumer"), (0, None), (9, None)):
        span_bytes = zipkin_proto_span(_zipkin_model({"traceId": "1", "id": "2", "timestamp": 3}))
        span_bytes += b"\x20" + _varint(number)  # field 4 (kind), varint
        span_bytes += b"\xa8\x06\x01"  # field 101, varint 1: a field this decoder does not know, skipped
        [span] = decode_zipkin_proto(_record(1, span_bytes))
        assert isinstance(span, Span) and span.kind == kind


def _record(number: int, data: bytes) -> bytes:
    return bytes([number << 3 | 2]) + _varint(len(data)) + data


ID = b"\x00" * 7 + b"\x01"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_record(1, _record(1, b"abc")), "traceId must be 8 or 16 bytes, got 3"),
        (_record(1, _record(1, ID) + _record(3, b"")), "id must be 8 bytes, got 0"),
        (_record(1, _record(1, ID) + _record(2, b"ab") + _record(3, ID)), "parentId must be 0 or 8 bytes, got 2"),
        (_record(1, _record(1, b"\x00" * 8) + _record(3, ID)), "traceId is all zeros"),
        (_record(1, _record(1, ID) + _record(3, ID)), "timestamp is missing"),
        (_record(1, _record(1, ID) + _record(3, ID) + b"\x31" + b"\x00" * 4), "not a Zipkin proto3"),  # short fixed64
        (_record(1, _record(1, ID) + _record(3, ID) + _record(5, b"\xff\xfe")), "not a Zipkin proto3"),  # not UTF-8
        (b"\x0a\x05abc", "not a Zipkin proto3 ListOfSpans"),  # shorter than its length
    ],
)
def test_malformed_proto_is_rejected_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_zipkin_proto(value)


proto_spans = st.fixed_dictionaries(
    {"traceId": st.sampled_from(["5af7183fb1d4cf5f", "5af7183fb1d4cf5f5af7183fb1d4cf5f", "1"]),
     "id": st.sampled_from(["352bff9a74ca9ad2", "1", "0"]), "timestamp": st.integers(0, 2 * 10**16)},
    optional={
        "parentId": st.sampled_from(["6b221d5bc9e6496c", "352bff9a74ca9ad2"]),
        "name": st.text(max_size=300), "kind": st.sampled_from(["SERVER", "CLIENT", "PRODUCER", "CONSUMER"]),
        "duration": st.integers(0, 2 * 10**16), "shared": st.booleans(),
        "localEndpoint": st.fixed_dictionaries({}, optional={"serviceName": st.text(max_size=300)}),
        "remoteEndpoint": st.fixed_dictionaries({}, optional={"serviceName": st.text(min_size=1, max_size=20)}),
        "tags": st.dictionaries(st.text(max_size=300), st.text(max_size=5), max_size=3),
        "annotations": st.lists(st.fixed_dictionaries({"timestamp": st.integers(1, 10**16),
                                                       "value": st.text(max_size=5)}), max_size=2),
    },
)  # fmt: skip


@given(st.lists(proto_spans, max_size=4))
def test_random_proto_lists_decode_as_their_json_does(spans: list[dict[str, Any]]) -> None:
    """What the proto decoder makes of a list is what the JSON decoder makes of the same spans: the same
    spans, or a DecodeError (the one mapping rejects the same spans for the same reason)."""
    try:
        expected: list[Event] | str = decode_zipkin_json(json.dumps(spans).encode())
    except DecodeError as exc:
        expected = str(exc).split(": ", 1)[0]  # "span <i>"
    try:
        got: list[Event] | str = decode_zipkin_proto(_proto(*spans))
    except DecodeError as exc:
        got = str(exc).split(": ", 1)[0]
    assert got == expected


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_errors(value: bytes) -> None:
    try:
        events = decode_zipkin_proto(value)
    except DecodeError:
        return
    for event in events:
        assert msgspec.convert(msgspec.to_builtins(event), Span) == event
