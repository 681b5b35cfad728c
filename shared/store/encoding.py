"""How chunks and other per-trace blobs are stored: compact msgpack, compressed with zstd.

A stored chunk is one version byte, then its payload:

* ``0x01`` (:data:`CHUNK_V1`, layout v3): a zstd frame of the msgpack array ``[trace id, [event, ...]]``,
  each event an array of its fields in a fixed order (no field names; trailing defaults left out; the
  trace id once per chunk, not per event). Ids that are lowercase hex of even length (W3C ids, B3, Jaeger)
  are stored as their raw bytes (8 or 16 for 16 or 32 characters), any other id as a one-element array
  of its text.
* ``0x02`` (:data:`CHUNK_DICT`, layout v3 too): the same msgpack, compressed with one of the store's zstd
  dictionaries: the dictionary's id (an unsigned LEB128 varint), then the frame. A writer trains its
  dictionary on the first chunks it writes (:class:`Dictionaries`); a reader loads a dictionary the first
  time a chunk names it. A chunk of a few spans takes about half the bytes it takes without.
* no version byte (layout v2): the msgpack array of the events as on the wire (named fields, tagged by
  ``type``). A msgpack array starts with ``0x90``..``0x9f``, ``0xdc`` or ``0xdd``, never ``0x01`` or
  ``0x02``, so old chunks still read (Cassandra keeps them: it has no offline migration).

Decoding validates as the wire decoder does (msgspec: types, lengths, non-negative times, known enums).
Blobs (:func:`pack_blob`) take the same version byte before a zstd frame of their msgpack; a blob without
it is read as plain msgpack (layout v2). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Final

import msgspec
import zstandard

from shared.models import Event, Id, Kind, Log, Micros, Name, Span, SpanFinish, StatusInput, Tags, TraceState

CHUNK_V1: Final = 1
"""The version byte of a compressed chunk or blob."""
CHUNK_DICT: Final = 2
"""The version byte of a chunk compressed with a dictionary (its id follows as a varint)."""
LEVEL: Final = 1
"""zstd level: on a trace's chunk (a few KB), level 3 saves 2% more bytes for 10-40% more CPU."""

DICT_BYTES: Final = 32 << 10
"""A trained dictionary's size. Trained on 1 MiB of chunks of 1 to 4 spans, 16, 32 and 64 KiB took demo
chunks to 55-57 bytes a span (208 without) and realistic ones to 100-105 (288 without); 32 KiB was the
best on realistic ones, and as good as 64 and 110 KiB on whole-trace chunks."""
SAMPLE_BYTES: Final = 1 << 20
"""The chunk payloads a writer collects before it trains its dictionary. 1 MiB (115 whole demo traces,
about a second of one worker's writes) gave as good a dictionary as 2 and 4 MiB, and trains in about
0.2 s."""
SAMPLE_CHUNKS: Final = 64
"""At least this many chunks, too."""
SAMPLE_MAX_CHUNK: Final = 64 << 10
"""Larger chunks are not sampled (the samples stay under 4 MiB): they gain little from a dictionary."""

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
_compressor: Final = zstandard.ZstdCompressor(level=LEVEL)  # write_content_size: payload_size reads it
_decompressor: Final = zstandard.ZstdDecompressor()
_HEX: Final = frozenset("0123456789abcdef")


def varint(value: int) -> bytes:
    """``value`` (>= 0) as an unsigned LEB128 varint: 7 bits a byte, low bits first."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def dict_id(body: bytes) -> tuple[int, int]:
    """The dictionary a :data:`CHUNK_DICT` chunk names, and where its frame starts."""
    value = shift = 0
    for pos in range(1, min(len(body), 11)):
        byte = body[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
        shift += 7
    raise ValueError("a chunk's dictionary id is cut short")


class Dictionaries:
    """One store's zstd dictionaries: those loaded by id (a reader loads one the first time a chunk names
    it: :meth:`missing`, :meth:`load`), the one its writer compresses new chunks with (:meth:`use`), and,
    while the writer has none, the payloads of the chunks it writes, to train one from (:meth:`samples`).

    Dictionaries live in the store (table ``zstd_dicts``) and are never changed or deleted, so a loaded
    one stays good. Used by one thread at a time (the store's connection thread, or its event loop)."""

    __slots__ = ("_current", "_data", "_decompressors", "_sampled", "_samples", "checked")

    def __init__(self) -> None:
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {}
        self._data: dict[int, bytes] = {}
        """The body of each loaded dictionary (for :meth:`reader`)."""
        self._current: tuple[int, bytes, zstandard.ZstdCompressor] | None = None
        """The writer's dictionary: its id, the header of its chunks, its compressor."""
        self._samples: list[bytes] | None = []
        self._sampled = 0
        self.checked = False
        """Whether the writer looked for a dictionary in the store (on its first write: it uses the newest)."""

    @property
    def current(self) -> int | None:
        """The id of the dictionary new chunks are compressed with."""
        return None if self._current is None else self._current[0]

    def missing(self, bodies: Iterable[bytes]) -> set[int]:
        """The dictionaries these chunks name that are not loaded."""
        loaded = self._decompressors
        return {i for body in bodies if body[:1] == b"\x02" and (i := dict_id(body)[0]) not in loaded}

    def load(self, ident: int, body: bytes) -> None:
        """Read the chunks that name dictionary ``ident`` (stored as ``body``)."""
        if ident not in self._decompressors:
            self._data[ident] = body
            self._decompressors[ident] = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(body))

    def bodies(self) -> dict[int, bytes]:
        """The body of each loaded dictionary, by id: what :meth:`of` reads the same chunks with, with
        decompressors of its own (a decompressor is not to be used by two threads at once), on another
        thread or in another process."""
        return dict(self._data)

    @staticmethod
    def of(bodies: Mapping[int, bytes]) -> Dictionaries:
        """Dictionaries that read the chunks compressed with these (:meth:`bodies`); they write none."""
        other = Dictionaries()
        other._samples = None
        for ident, body in bodies.items():
            other.load(ident, body)
        return other

    def use(self, ident: int, body: bytes) -> None:
        """Compress new chunks with dictionary ``ident`` (stored as ``body``); sampling stops."""
        self.load(ident, body)
        data = zstandard.ZstdCompressionDict(body)
        data.precompute_compress(level=LEVEL)  # digested once, not at every chunk
        # no dictionary id in the frame: the chunk's header names it
        compressor = zstandard.ZstdCompressor(level=LEVEL, dict_data=data, write_dict_id=False)
        self._current = (ident, bytes((CHUNK_DICT,)) + varint(ident), compressor)
        self._samples = None

    def compress(self, payload: bytes) -> bytes:
        """A chunk's msgpack as stored."""
        current = self._current
        if current is not None:
            return current[1] + current[2].compress(payload)
        samples = self._samples
        if samples is not None and len(payload) <= SAMPLE_MAX_CHUNK:
            samples.append(payload)
            self._sampled += len(payload)
        return b"\x01" + _compressor.compress(payload)

    def decompress(self, body: bytes) -> bytes:
        """The msgpack of a :data:`CHUNK_DICT` chunk, its dictionary loaded."""
        named, start = dict_id(body)
        decompressor = self._decompressors.get(named)
        if decompressor is None:
            raise ValueError(f"a chunk compressed with zstd dictionary {named}, which is not loaded")
        return decompressor.decompress(memoryview(body)[start:])

    def samples(self) -> list[bytes] | None:
        """Once the writer has written enough chunks without a dictionary, their payloads, to train one
        from (:func:`train`); collecting starts over (until :meth:`use` or :meth:`stop_sampling`)."""
        samples = self._samples
        if samples is None or self._sampled < SAMPLE_BYTES or len(samples) < SAMPLE_CHUNKS:
            return None
        self._samples, self._sampled = [], 0
        return samples

    def stop_sampling(self) -> None:
        """No dictionary could be trained from these chunks: write them plain from now on."""
        self._samples = None


def train(samples: list[bytes]) -> bytes | None:
    """A dictionary for chunks like ``samples`` (their msgpack); None when zstd cannot train one from them."""
    chunks: list[bytes | bytearray | memoryview[int]] = list(samples)
    try:
        return zstandard.train_dictionary(DICT_BYTES, chunks, level=LEVEL).as_bytes()
    except zstandard.ZstdError:
        return None


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


def encode_chunk(events: Sequence[Event], dicts: Dictionaries | None = None) -> bytes:
    """One chunk's stored value; the events all belong to one trace. With ``dicts``, compressed with its
    writer's dictionary (:data:`CHUNK_DICT`) if it has one, else plain (:data:`CHUNK_V1`) and sampled."""
    trace_id = pack_id(events[0].trace_id) if events else ["-"]
    payload = _encoder.encode((trace_id, [_stored(e) for e in events]))
    if dicts is None:
        return b"\x01" + _compressor.compress(payload)
    return dicts.compress(payload)


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


def decode_chunk(body: bytes, dicts: Dictionaries | None = None) -> list[Event]:
    """A stored chunk's events, in order (any version's chunks; ``dicts``: the store's dictionaries, with
    every one the chunk may name loaded)."""
    version = body[:1]
    if version == b"\x01":
        payload = _decompressor.decompress(memoryview(body)[1:])
    elif version == b"\x02":
        if dicts is None:
            raise ValueError(f"a chunk compressed with zstd dictionary {dict_id(body)[0]}, and no dictionaries given")
        payload = dicts.decompress(body)
    else:
        return _v2_decoder.decode(body)
    chunk = _v1_decoder.decode(payload)
    trace_id = unpack_id(chunk.trace_id)
    return [_span(trace_id, e) if isinstance(e, StoredSpan) else _finish(trace_id, e) for e in chunk.events]


def payload_size(body: bytes) -> int:
    """The size of a stored chunk's msgpack before compression (the cache's measure of what it holds)."""
    version = body[:1]
    if version == b"\x01":
        start = 1
    elif version == b"\x02":
        start = dict_id(body)[1]
    else:
        return len(body)
    size = zstandard.frame_content_size(memoryview(body)[start:])
    return size if size >= 0 else len(body)


def pack_blob(payload: bytes) -> bytes:
    """A msgpack blob as stored: the version byte and the payload compressed."""
    return b"\x01" + _compressor.compress(payload)


def unpack_blob(blob: bytes) -> bytes:
    """The msgpack of a stored blob (either layout's)."""
    if blob[:1] != b"\x01":
        return blob
    return _decompressor.decompress(memoryview(blob)[1:])
