"""How chunks and other per-trace blobs are stored: compact msgpack, compressed with zstd.

A stored chunk is one version byte, then its payload:

* ``0x01`` (:data:`CHUNK_V1`, layout v3): a zstd frame of the msgpack array ``[trace id, [event, ...]]``,
  each event an array of its fields in a fixed order (no field names; trailing defaults left out; the
  trace id once per chunk, not per event). Ids that are lowercase hex of even length (W3C ids, B3, Jaeger)
  are stored as their raw bytes (8 or 16 for 16 or 32 characters), any other id as a one-element array
  of its text.
* no version byte (layout v2): the msgpack array of the events as on the wire (named fields, tagged by
  ``type``). A msgpack array starts with ``0x90``..``0x9f``, ``0xdc`` or ``0xdd``, never ``0x01``, so old
  chunks still read (Cassandra keeps them: it has no offline migration).

Decoding validates as the wire decoder does (msgspec: types, lengths, non-negative times, known enums).
Blobs (:func:`pack_blob`) take the same version byte before a zstd frame of their msgpack; a blob without
it is read as plain msgpack (layout v2). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Final

import msgspec
import zstandard

from shared.models import Event, Id, Kind, Log, Micros, Name, Span, SpanFinish, StatusInput, Tags, TraceState

CHUNK_V1: Final = 1
"""The version byte of a compressed chunk or blob."""
LEVEL: Final = 1
"""zstd level: on a trace's chunk (a few KB), level 3 saves 2% more bytes for 10-40% more CPU."""

RawId = Annotated[bytes, msgspec.Meta(min_length=1, max_length=32)]
StoredId = RawId | Annotated[list[Id], msgspec.Meta(min_length=1, max_length=1)]
"""An id as stored: raw bytes for lowercase hex, else its text in a one-element array (msgpack tells the
two apart by type, so decoding validates both). A list, not ``tuple[Id]``: msgspec 0.23 corrupts memory
with a fixed-length tuple beside ``bytes`` in a union."""


class StoredLog(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    timestamp_us: Micros
    fields: Tags = {}


class StoredSpan(msgspec.Struct, array_like=True, omit_defaults=True, tag=0, gc=False):
    """A :class:`~shared.models.Span` as a chunk stores it (without its trace id)."""

    span_id: StoredId
    service_name: Name
    operation_name: Name
    start_time_us: Micros
    duration_us: Micros | None = None
    parent_span_id: StoredId | None = None
    status: StatusInput = "success"
    kind: Kind | None = None
    tags: Tags = {}
    logs: list[StoredLog] = []
    resource: Tags = {}
    scope_name: Name | None = None
    scope_version: Name | None = None
    trace_state: TraceState | None = None


class StoredFinish(msgspec.Struct, array_like=True, omit_defaults=True, tag=1, gc=False):
    """A :class:`~shared.models.SpanFinish` as a chunk stores it (without its trace id)."""

    span_id: StoredId
    end_time_us: Micros
    status: StatusInput | None = None
    tags: Tags = {}


class StoredChunk(msgspec.Struct, array_like=True, gc=False):
    trace_id: StoredId
    events: list[StoredSpan | StoredFinish]


_encoder: Final = msgspec.msgpack.Encoder()
_v2_decoder: Final = msgspec.msgpack.Decoder(list[Span | SpanFinish])
_v1_decoder: Final = msgspec.msgpack.Decoder(StoredChunk)
_compressor: Final = zstandard.ZstdCompressor(level=LEVEL)
_decompressor: Final = zstandard.ZstdDecompressor()
_HEX: Final = frozenset("0123456789abcdef")


def pack_id(value: str) -> bytes | list[str]:
    """Lowercase hex of even length as its bytes (``bytes.hex`` gives it back exactly), else ``[text]``."""
    if len(value) % 2 or not _HEX.issuperset(value):
        return [value]
    return bytes.fromhex(value)


def unpack_id(value: bytes | list[str]) -> str:
    return value.hex() if isinstance(value, bytes) else value[0]


def _stored(event: Event) -> tuple[Any, ...]:
    """One event as the array :class:`StoredSpan` or :class:`StoredFinish` decodes (tag first)."""
    if type(event) is Span:
        parent = event.parent_span_id
        return (
            0,
            pack_id(event.span_id),
            event.service_name,
            event.operation_name,
            event.start_time_us,
            event.duration_us,
            None if parent is None else pack_id(parent),
            event.status,
            event.kind,
            event.tags,
            [(log.timestamp_us, log.fields) for log in event.logs],
            event.resource,
            event.scope_name,
            event.scope_version,
            event.trace_state,
        )
    assert type(event) is SpanFinish
    return (1, pack_id(event.span_id), event.end_time_us, event.status, event.tags)


def encode_chunk(events: Sequence[Event]) -> bytes:
    """One chunk's stored value (:data:`CHUNK_V1`); the events all belong to one trace."""
    trace_id = pack_id(events[0].trace_id) if events else ["-"]
    payload = _encoder.encode((trace_id, [_stored(e) for e in events]))
    return b"\x01" + _compressor.compress(payload)


def _span(trace_id: str, s: StoredSpan) -> Span:
    parent = s.parent_span_id
    return Span(
        trace_id=trace_id,
        span_id=unpack_id(s.span_id),
        parent_span_id=None if parent is None else unpack_id(parent),
        service_name=s.service_name,
        operation_name=s.operation_name,
        start_time_us=s.start_time_us,
        duration_us=s.duration_us,
        status=s.status,
        kind=s.kind,
        tags=s.tags,
        logs=tuple([Log(timestamp_us=g.timestamp_us, fields=g.fields) for g in s.logs]),
        resource=s.resource,
        scope_name=s.scope_name,
        scope_version=s.scope_version,
        trace_state=s.trace_state,
    )


def _finish(trace_id: str, f: StoredFinish) -> SpanFinish:
    return SpanFinish(
        trace_id=trace_id, span_id=unpack_id(f.span_id), end_time_us=f.end_time_us, status=f.status, tags=f.tags
    )


def decode_chunk(body: bytes) -> list[Event]:
    """A stored chunk's events, in order (either layout's chunks)."""
    if body[:1] != b"\x01":
        return _v2_decoder.decode(body)
    chunk = _v1_decoder.decode(_decompressor.decompress(memoryview(body)[1:]))
    trace_id = unpack_id(chunk.trace_id)
    return [_span(trace_id, e) if isinstance(e, StoredSpan) else _finish(trace_id, e) for e in chunk.events]


def payload_size(body: bytes) -> int:
    """The size of a stored chunk's msgpack before compression (the cache's measure of what it holds)."""
    if body[:1] != b"\x01":
        return len(body)
    size = zstandard.frame_content_size(memoryview(body)[1:])
    return size if size >= 0 else len(body)


def pack_blob(payload: bytes) -> bytes:
    """A msgpack blob as stored: the version byte and the payload compressed."""
    return b"\x01" + _compressor.compress(payload)


def unpack_blob(blob: bytes) -> bytes:
    """The msgpack of a stored blob (either layout's)."""
    if blob[:1] != b"\x01":
        return blob
    return _decompressor.decompress(memoryview(blob)[1:])
