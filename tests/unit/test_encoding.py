"""How chunks and contributions are stored (``shared/store/encoding.py``): every event reads back equal
whatever its ids, with every field the wire has, layout v2's chunks and contributions still read, and
decoding validates."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.models import ID_CHARS, Event, Log, Span, SpanFinish
from shared.store.encoding import (
    CHUNK_V1,
    StoredFinish,
    StoredSpan,
    decode_chunk,
    encode_chunk,
    pack_blob,
    pack_id,
    unpack_blob,
    unpack_id,
)
from shared.store.rollups import Contribution, decode_contribution, encode_contribution

ids = st.one_of(
    st.text(alphabet=ID_CHARS.decode(), min_size=1, max_size=64),
    st.binary(min_size=1, max_size=32).map(bytes.hex),  # lowercase hex, as most producers send
)
values = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.booleans())
tags = st.dictionaries(st.text(min_size=1, max_size=10), values, max_size=3)


def events(trace_id: str) -> st.SearchStrategy[Event]:
    span = st.builds(
        Span,
        trace_id=st.just(trace_id),
        span_id=ids,
        parent_span_id=st.one_of(st.none(), ids),
        service_name=st.text(min_size=1, max_size=8),
        operation_name=st.text(min_size=1, max_size=8),
        start_time_us=st.integers(0, 2**62),
        duration_us=st.one_of(st.none(), st.integers(0, 2**40)),
        status=st.sampled_from(["success", "error"]),
        kind=st.sampled_from([None, "server", "client"]),
        tags=tags,
        logs=st.lists(st.builds(Log, timestamp_us=st.integers(0, 2**62), fields=tags), max_size=2).map(tuple),
        resource=tags,
        scope_name=st.one_of(st.none(), st.text(min_size=1, max_size=8)),
        scope_version=st.one_of(st.none(), st.text(min_size=1, max_size=8)),
        trace_state=st.one_of(st.none(), st.text(max_size=12)),
    )
    finish = st.builds(
        SpanFinish,
        trace_id=st.just(trace_id),
        span_id=ids,
        end_time_us=st.integers(0, 2**62),
        status=st.sampled_from([None, "error"]),
        tags=tags,
    )
    return st.one_of(span, finish)


@given(ids.flatmap(lambda t: st.lists(events(t), max_size=5)))
def test_a_chunk_reads_back_equal_and_so_does_a_layout_v2_chunk(chunk: list[Event]) -> None:
    body = encode_chunk(chunk)
    assert body[0] == CHUNK_V1
    assert decode_chunk(body) == chunk
    assert decode_chunk(msgspec.msgpack.encode(chunk)) == chunk  # layout v2: named msgpack, no version byte


@pytest.mark.parametrize("value", ["a1", "AB", "abc", "00ff", "0" * 64, "x:y.z-1", "4bf92f3577b34da6a3ce929d0e0e4736"])
def test_an_id_comes_back_exactly(value: str) -> None:
    packed = pack_id(value)
    assert unpack_id(packed) == value
    assert isinstance(packed, bytes) == (value in ("a1", "00ff", "0" * 64, "4bf92f3577b34da6a3ce929d0e0e4736"))


def test_hex_ids_are_stored_as_bytes() -> None:
    spans = [
        Span(
            trace_id=f"{i:032x}",
            span_id=f"{i:016x}",
            service_name="s",
            operation_name="op",
            start_time_us=i,
            duration_us=1,
        )
        for i in range(1, 50)
    ]
    as_text = [msgspec.structs.replace(s, span_id=s.span_id.upper()) for s in spans]
    assert len(encode_chunk(spans)) < len(encode_chunk(as_text))


def test_a_stored_chunk_is_validated_when_read() -> None:
    bad = pack_blob(msgspec.msgpack.encode([b"\x01", [[0, b"\x02", "svc", "op", -5]]]))  # a negative start time
    with pytest.raises(msgspec.ValidationError):
        decode_chunk(bad)
    with pytest.raises(msgspec.ValidationError):
        decode_chunk(pack_blob(msgspec.msgpack.encode([b"\x01", [[0, b"", "svc", "op", 5]]])))  # an empty id


def _unset(event: msgspec.Struct) -> list[str]:
    """The fields of ``event`` left at their defaults."""
    unset = []
    for f in msgspec.structs.fields(event):
        default = f.default if f.default_factory is msgspec.NODEFAULT else f.default_factory()
        if getattr(event, f.name) == default:
            unset.append(f.name)
    return unset


def test_every_field_of_a_span_and_a_finish_reads_back() -> None:
    span = Span(
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        parent_span_id="Parent:1",  # not hex: stored as text
        service_name="checkout",
        operation_name="POST /pay",
        start_time_us=1_700_000_000_000_000,
        duration_us=1234,
        status="error",
        kind="server",
        tags={"http.status_code": 502, "retry": True, "ratio": 0.5, "peer": "db"},
        logs=(Log(timestamp_us=1_700_000_000_000_100, fields={"event": "exception"}),),
        resource={"host.name": "h1", "service.version": "2.1"},
        scope_name="io.opentelemetry.http",
        scope_version="1.2.0",
        trace_state="ot=th:c;rv:9b8233f7e3a151,vendor=x",
    )
    finish = SpanFinish(
        trace_id=span.trace_id, span_id=span.span_id, end_time_us=1_700_000_000_002_000, status="error", tags={"a": 1}
    )
    assert _unset(span) == [] and _unset(finish) == []  # a field added to the wire is set here, so it is stored
    assert decode_chunk(encode_chunk([span, finish])) == [span, finish]
    for wire, stored in ((Span, StoredSpan), (SpanFinish, StoredFinish)):
        assert _names(wire) - _names(stored) == {"trace_id"}  # once per chunk


def _names(struct: type[msgspec.Struct]) -> set[str]:
    return {f.name for f in msgspec.structs.fields(struct)}


def _share(**extra: object) -> Contribution:
    return Contribution(
        start_us=5,
        failed=False,
        duration_us=7,
        endpoint=("api", "GET /"),
        ops=[("api", "GET /", "server", 1, 0, 7, 7, 7, {3: 1}, 0, {})],
        deps=[("api", "db", 1, 0)],
        tags=[("http.method", "GET")],
        contexts=[(12, 7)],
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("extra", [{}, {"sketched": True}, {"sketched": True, "weight": 4}])
def test_contributions_of_both_layouts_read(extra: dict[str, object]) -> None:
    share = _share(**extra)
    stored = encode_contribution(share)
    assert stored[0] == CHUNK_V1 and unpack_blob(stored)[0] != CHUNK_V1
    assert decode_contribution(stored) == share
    assert decode_contribution(msgspec.msgpack.encode(share)) == share  # layout v2


@pytest.mark.parametrize("stored_fields", [8, 9])
def test_a_contribution_stored_before_the_sketch_or_the_weight_reads_with_their_defaults(stored_fields: int) -> None:
    full = _share(sketched=True, weight=3)
    older = msgspec.msgpack.encode(msgspec.structs.astuple(full)[:stored_fields])  # layout v2 as written then
    expected = msgspec.structs.replace(full, weight=1, sketched=stored_fields > 8)
    assert decode_contribution(older) == expected
    assert decode_contribution(encode_contribution(decode_contribution(older))) == expected  # re-encoded by v3
