"""The archive's block format: finalized traces as one Parquet file (docs/archive.md describes it for users).

A block holds one row per span, compressed with zstd. Its row groups follow each other in time (the
traces taken by start, a row group ending at the first trace boundary past :data:`ROW_GROUP_SPANS` spans),
and each row group is sorted by trace id then span start (spans of equal start keep the order they were
given in): a search over an hour reads only the row groups whose starts overlap it, newest first. Ids are
binary: lowercase hex ids of even length (W3C, B3, Jaeger) as their raw bytes, any other id as its UTF-8
text with the text itself in the ``*_text`` column beside (null for hex ids), so every id reads back
exactly. Names are dictionary-encoded. Tag maps hold each
value's text as searches match it (:func:`~shared.store.tags.tag_text`); the ``*_types`` column beside a
map gives each value's type (one letter an entry: ``s`` str, ``i`` int, ``f`` float, ``b`` bool; null when
all are strings), so a span read back equals the span written.

The trace's summary columns (the analysis's start, duration, status, root, counts) repeat on each of its
rows (runs of one value: nearly free after encoding), so a search filters and prunes row groups by their
statistics without the spans. The rest of the analysis is derived from the spans on read, as the SQL hot
stores do (layout v3): stored as msgpack beside the spans it took 28 bytes a demo span, nearly as much as
the spans' 33 (bench/archive.py, ADR 0016).

A row group holds whole traces, about :data:`ROW_GROUP_SPANS` spans: reading one trace by id fetches the
row groups whose trace-id range holds it and whose Bloom filter of trace ids (:attr:`RowGroupMeta.trace_filter`,
in the metadata the hot store registers) does not rule it out: one row group, about 70 KB of demo spans,
and another about once in 60,000 row groups searched.

:func:`write_block` makes a block and its :class:`BlockMeta` (what the hot store registers so reads find
the block and the row groups to fetch without opening it). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from shared.analysis import TraceAnalysis, analyze
from shared.models import Log, Span, Tags
from shared.store.base import StoredTrace
from shared.store.encoding import pack_id
from shared.store.tags import tag_text

FORMAT_VERSION: Final = 1
"""Written in each block's key-value metadata (``tracing.archive.version``)."""
ROW_GROUP_SPANS: Final = 2048
"""Spans a row group holds (whole traces: a row group ends at the first trace boundary past this). A read by
id fetches and decodes one row group: at 50,000 spans, 2,048 take 34.8 bytes a demo span and 66.6 a
realistic one, against 32.6 and 64.3 for 4,096, for half the decoding of every trace read (Jaeger's search
reads 20 of them)."""
ZSTD_LEVEL: Final = 9
"""Blocks are written once and read many times. Bytes a span (demo / realistic) and demo spans/s written, at
200,000 spans: level 1 35.4 / 71.3 at 48,500; 3 33.4 / 68.7 at 46,100; 9 32.6 / 64.4 at 42,500; 15 32.5 /
62.7 at 37,600 (and realistic ones 30% slower)."""

_DICT: Final = pa.dictionary(pa.int32(), pa.string())
_TAGS: Final = pa.map_(pa.string(), pa.string())
LOG_TYPE: Final = pa.struct([("timestamp_us", pa.int64()), ("fields", _TAGS), ("field_types", pa.string())])
SCHEMA: Final = pa.schema(
    [
        ("trace_id", pa.binary()),
        ("trace_id_text", pa.string()),
        ("span_id", pa.binary()),
        ("span_id_text", pa.string()),
        ("parent_span_id", pa.binary()),
        ("parent_span_id_text", pa.string()),
        ("service_name", _DICT),
        ("operation_name", _DICT),
        ("start_time_us", pa.int64()),
        ("duration_us", pa.int64()),
        ("status", _DICT),
        ("kind", _DICT),
        ("tags", _TAGS),
        ("tag_types", pa.string()),
        ("logs", pa.list_(LOG_TYPE)),
        ("resource", _TAGS),
        ("resource_types", pa.string()),
        ("scope_name", _DICT),
        ("scope_version", _DICT),
        ("trace_state", pa.string()),
        # the trace's summary, on each of its rows
        ("trace_start_us", pa.int64()),
        ("trace_duration_us", pa.int64()),
        ("trace_status", _DICT),
        ("root_service", _DICT),
        ("root_operation", _DICT),
        ("span_count", pa.int32()),
        ("error_count", pa.int32()),
        ("complete", pa.bool_()),
        ("late_spans", pa.int32()),
        ("refinalizations", pa.int32()),
        ("finalized_at_us", pa.int64()),
    ]
)
SPAN_COLUMNS: Final = SCHEMA.names[: SCHEMA.get_field_index("trace_start_us")]
"""The columns of the span itself."""
TRACE_COLUMNS: Final = SCHEMA.names[SCHEMA.get_field_index("trace_start_us") :]
"""The columns of the span's trace (the same on each of its rows)."""

STATISTICS: Final = [
    "trace_id",
    "service_name",
    "operation_name",
    "trace_start_us",
    "trace_duration_us",
    "trace_status",
]
"""The columns whose row-group statistics (min, max) the footer keeps: those reads prune by."""


BLOCKS: Final = "blocks"
"""The folder of the blocks, below the archive's root."""


def block_name(shard: int, window_start_us: int, unique: str) -> str:
    """The object name of a block of shard ``shard`` and the time window starting at ``window_start_us``:
    ``blocks/YYYY-MM-DD/HHMM-<shard>-<unique>.parquet`` (UTC), so a day's blocks share a folder (listed and
    deleted together at retention) and names sort by window. ``unique`` tells apart blocks of one window
    (e.g. a fresh UUID's hex)."""
    if not unique or "/" in unique:
        raise ValueError(f"not a block name part: {unique!r}")
    at = datetime.fromtimestamp(window_start_us / 1_000_000, UTC)
    return f"{BLOCKS}/{at:%Y-%m-%d}/{at:%H%M}-{shard:04}-{unique}.parquet"


_NAMED: Final = re.compile(rf"{BLOCKS}/\d{{4}}-\d{{2}}-\d{{2}}/\d{{4}}-(\d{{4,}})-[^/]+")


def block_shard(name: str) -> int | None:
    """The shard number of an object named as :func:`block_name` names blocks; ``None`` for any other."""
    named = _NAMED.fullmatch(name)
    return int(named[1]) if named else None


class RowGroupMeta(msgspec.Struct, frozen=True, kw_only=True, array_like=True, gc=False):
    """One row group: its traces' binary id range (inclusive), where its bytes are, what it holds."""

    first_trace: bytes
    last_trace: bytes
    offset: int
    length: int
    spans: int
    traces: int
    start_us: int
    """The earliest trace start in it."""
    end_us: int
    """The latest trace start in it."""
    trace_filter: bytes = b""
    """A Bloom filter of its trace ids (:func:`holding_groups`): every row group of a block spans nearly the
    whole id range, so without it a read by id would fetch a row group of every block. Empty for blocks
    written before it: such a row group may hold any id of its range."""


class BlockMeta(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What reads need of a block without opening it: registered in the hot store beside its name.

    ``start_us``/``end_us``: the earliest and latest trace start (µs) in it; ``services`` and ``operations``
    (``[service, operation]``, sorted) of every span; ``size``: the object's bytes; ``footer_offset`` and
    ``footer_length``: where the Parquet footer is (the row groups' statistics a search prunes with)."""

    version: int = FORMAT_VERSION
    start_us: int
    end_us: int
    services: list[str]
    operations: list[tuple[str, str]]
    span_count: int
    trace_count: int
    size: int
    footer_offset: int
    footer_length: int
    row_groups: list[RowGroupMeta]


class Block(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    data: bytes
    meta: BlockMeta


_meta_encoder: Final = msgspec.msgpack.Encoder()
_meta_decoder: Final = msgspec.msgpack.Decoder(BlockMeta)


def encode_meta(meta: BlockMeta) -> bytes:
    """A block's metadata as the hot store keeps it (msgpack; about 60 bytes a row group, plus the names)."""
    return _meta_encoder.encode(meta)


def decode_meta(data: bytes) -> BlockMeta:
    """:func:`encode_meta` undone, validated (``msgspec.ValidationError`` on a malformed value)."""
    return _meta_decoder.decode(data)


FILTER_BITS: Final = 24
"""Bits a trace of a row group's :attr:`RowGroupMeta.trace_filter` (3 bytes a trace, 6 KB a block of 2,000
traces), with :data:`FILTER_HASHES` bits set a trace: a row group that does not hold an id passes for it
about once in 70,000."""
FILTER_HASHES: Final = 12


def _filter_hashes(key: bytes) -> tuple[int, int]:
    digest = hashlib.blake2b(key, digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1


def trace_filter(keys: Iterable[bytes], count: int) -> bytes:
    """The Bloom filter of ``count`` binary trace ids (:func:`id_key`)."""
    bits = max(64, count * FILTER_BITS)
    array = bytearray((bits + 7) // 8)
    bits = len(array) * 8
    for key in keys:
        h1, h2 = _filter_hashes(key)
        for i in range(FILTER_HASHES):
            bit = (h1 + i * h2) % bits
            array[bit >> 3] |= 1 << (bit & 7)
    return bytes(array)


def _in_filter(array: bytes, hashes: tuple[int, int]) -> bool:
    if not array:
        return True
    bits = len(array) * 8
    h1, h2 = hashes
    for i in range(FILTER_HASHES):
        bit = (h1 + i * h2) % bits
        if not array[bit >> 3] & (1 << (bit & 7)):
            return False
    return True


def holding_groups(meta: BlockMeta, key: bytes) -> list[int]:
    """The row groups of the block that can hold the binary trace id ``key`` (:func:`id_key`): those whose
    id range holds it and whose filter does not rule it out."""
    hashes: tuple[int, int] | None = None
    groups = []
    for i, g in enumerate(meta.row_groups):
        if g.first_trace <= key <= g.last_trace:
            hashes = hashes or _filter_hashes(key)
            if _in_filter(g.trace_filter, hashes):
                groups.append(i)
    return groups


class GroupIndex:
    """The row groups of many blocks (a catalog, newest block first) that can hold a trace id, at once:
    :func:`holding_groups` over every block, with the Bloom filters probed as arrays (numpy) instead of a
    row group at a time; the id ranges are checked on the few row groups the filters let through."""

    def __init__(self, metas: Sequence[BlockMeta]) -> None:
        import numpy as np

        self._metas = list(metas)
        where: list[tuple[int, int]] = []
        filters: list[bytes] = []
        for b, meta in enumerate(self._metas):
            for g, group in enumerate(meta.row_groups):
                where.append((b, g))
                filters.append(group.trace_filter)
        self._where = where
        sizes = np.array([len(f) for f in filters], dtype=np.uint64)
        self._bits = np.maximum(sizes * np.uint64(8), np.uint64(1))
        self._unfiltered = sizes == 0  # written before filters: may hold any id of its range
        self._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.uint64) if filters else sizes
        # a zero byte at the end: what an empty filter (never read: it passes) points at
        self._filters = np.frombuffer(b"".join(filters) + b"\0", dtype=np.uint8)
        self._steps = np.arange(FILTER_HASHES, dtype=np.uint64)[:, None]

    def holders(self, key: bytes) -> list[tuple[int, list[int]]]:
        """The blocks (their places in the catalog, in its order) that can hold the binary trace id ``key``
        (:func:`id_key`), each with its row groups that can (as :func:`holding_groups` gives them)."""
        import numpy as np

        if not self._where:
            return []
        h1, h2 = _filter_hashes(key)
        bits = self._bits
        # (h1 + i * h2) % bits, as _in_filter computes it, without leaving 64 bits: both reduced first
        at = (np.uint64(h1) % bits + self._steps * (np.uint64(h2) % bits)) % bits
        probed = self._filters[self._offsets + (at >> np.uint64(3))] & (np.uint8(1) << (at & np.uint64(7)))
        passing = np.flatnonzero(np.all(probed != 0, axis=0) | self._unfiltered)
        found: dict[int, list[int]] = {}
        for i in passing.tolist():
            b, g = self._where[i]
            group = self._metas[b].row_groups[g]
            if group.first_trace <= key <= group.last_trace:
                found.setdefault(b, []).append(g)
        return sorted(found.items())


def id_key(value: str) -> tuple[bytes, str | None]:
    """An id as the binary column holds it, and its ``*_text`` column (None for lowercase hex)."""
    packed = pack_id(value)
    if isinstance(packed, bytes):
        return packed, None
    return value.encode(), value


def typed_text(values: Tags) -> tuple[list[tuple[str, str]], str | None]:
    """A tag map as the block stores it: (key, value text) pairs and their type letters (None: all str)."""
    pairs: list[tuple[str, str]] = []
    letters: list[str] = []
    plain = True
    for key, value in values.items():
        kind = type(value)
        if kind is str:
            letters.append("s")
        else:
            plain = False
            letters.append("b" if kind is bool else "i" if kind is int else "f")
        pairs.append((key, tag_text(value) if kind is not float else repr(value)))
    return pairs, None if plain else "".join(letters)


Keyed = tuple[bytes, str | None, StoredTrace, TraceAnalysis]


def _row_groups(traces: Iterable[StoredTrace], row_group_spans: int) -> list[list[Keyed]]:
    """The traces (analysed when they are not) cut into row groups by start, each sorted by trace id."""
    keyed = [(*id_key(t.trace_id), t, t.analysis or analyze(t.trace_id, t.spans)) for t in traces]
    keyed.sort(key=lambda item: (item[3].start_us, item[0], item[1] or ""))
    groups: list[list[Keyed]] = []
    group: list[Keyed] = []
    spans = 0
    for item in keyed:
        group.append(item)
        spans += len(item[2].spans)
        if spans >= row_group_spans:
            groups.append(group)
            group, spans = [], 0
    if group:
        groups.append(group)
    for group in groups:
        group.sort(key=lambda item: (item[0], item[1] or ""))
    return groups


class _Columns:
    """The column values of one row group, appended a trace at a time."""

    def __init__(self) -> None:
        self.values: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}

    def add(self, key: bytes, text: str | None, trace: StoredTrace, analysis: TraceAnalysis) -> None:
        spans = sorted(trace.spans, key=lambda span: span.start_time_us)
        for span in spans:
            self._span(key, text, span)
        c, n = trace.completeness, len(spans)
        summary = (
            analysis.start_us,
            analysis.duration_us,
            "failed" if analysis.failed else "completed",
            analysis.root_service,
            analysis.root_operation,
            analysis.span_count,
            analysis.error_count,
            analysis.complete,
            c.late_spans,
            c.refinalizations,
            c.finalized_at_us,
        )
        for name, value in zip(TRACE_COLUMNS, summary, strict=True):
            self.values[name].extend([value] * n)

    def _span(self, key: bytes, text: str | None, span: Span) -> None:
        v = self.values
        v["trace_id"].append(key)
        v["trace_id_text"].append(text)
        for name, ident in (("span_id", span.span_id), ("parent_span_id", span.parent_span_id)):
            binary, ident_text = (None, None) if ident is None else id_key(ident)
            v[name].append(binary)
            v[name + "_text"].append(ident_text)
        for name in ("service_name", "operation_name", "start_time_us", "duration_us", "status", "kind"):
            v[name].append(getattr(span, name))
        for name, tags in (("tags", span.tags), ("resource", span.resource)):
            pairs, letters = typed_text(tags)
            v[name].append(pairs)
            v["tag_types" if name == "tags" else "resource_types"].append(letters)
        v["logs"].append([_log(log) for log in span.logs])
        for name in ("scope_name", "scope_version", "trace_state"):
            v[name].append(getattr(span, name))

    def table(self) -> pa.Table:
        return pa.table([pa.array(self.values[f.name], f.type) for f in SCHEMA], schema=SCHEMA)


def _log(log: Log) -> dict[str, Any]:
    pairs, letters = typed_text(log.fields)
    return {"timestamp_us": log.timestamp_us, "fields": pairs, "field_types": letters}


def write_block(traces: Iterable[StoredTrace], *, row_group_spans: int = ROW_GROUP_SPANS) -> Block:
    """The block of these traces and its metadata. A trace without an analysis is analyzed here."""
    sink = pa.BufferOutputStream()
    sorting = [pq.SortingColumn(SCHEMA.get_field_index(name)) for name in ("trace_id", "start_time_us")]
    metadata = {b"tracing.archive.version": str(FORMAT_VERSION).encode()}
    services: set[str] = set()
    operations: set[tuple[str, str]] = set()
    groups: list[tuple[bytes, bytes, int, int, int, int, bytes]] = []
    with pq.ParquetWriter(
        sink,
        SCHEMA.with_metadata(metadata),
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        sorting_columns=sorting,
        write_statistics=STATISTICS,
    ) as writer:
        for group in _row_groups(traces, row_group_spans):
            columns = _Columns()
            for key, text, trace, analysis in group:
                columns.add(key, text, trace, analysis)
                services.update(span.service_name for span in trace.spans)
                operations.update((span.service_name, span.operation_name) for span in trace.spans)
            spans_in = sum(len(item[2].spans) for item in group)
            writer.write_table(columns.table(), row_group_size=spans_in)
            starts = [item[3].start_us for item in group]
            ids = trace_filter([item[0] for item in group], len(group))
            groups.append((group[0][0], group[-1][0], spans_in, len(group), min(starts), max(starts), ids))
    data = sink.getvalue().to_pybytes()
    return Block(data=data, meta=_meta(data, groups, services, operations))


def _meta(
    data: bytes,
    groups: Sequence[tuple[bytes, bytes, int, int, int, int, bytes]],
    services: set[str],
    operations: set[tuple[str, str]],
) -> BlockMeta:
    footer_length = int.from_bytes(data[-8:-4], "little")
    file_meta = pq.read_metadata(pa.BufferReader(data))
    row_groups = []
    for i, (first, last, spans, traces, start, end, ids) in enumerate(groups):
        offset, length = row_group_range(file_meta.row_group(i))
        row_groups.append(
            RowGroupMeta(
                first_trace=first,
                last_trace=last,
                offset=offset,
                length=length,
                spans=spans,
                traces=traces,
                start_us=start,
                end_us=end,
                trace_filter=ids,
            )
        )
    return BlockMeta(
        start_us=min((g.start_us for g in row_groups), default=0),
        end_us=max((g.end_us for g in row_groups), default=0),
        services=sorted(services),
        operations=sorted(operations),
        span_count=sum(g.spans for g in row_groups),
        trace_count=sum(g.traces for g in row_groups),
        size=len(data),
        footer_offset=len(data) - 8 - footer_length,
        footer_length=footer_length,
        row_groups=row_groups,
    )


def row_group_range(group: pq.RowGroupMetaData) -> tuple[int, int]:
    """Where a row group's column chunks are in the file: (offset, length)."""
    start, end = 2**63, 0
    for i in range(group.num_columns):
        column = group.column(i)
        first = column.data_page_offset
        if column.has_dictionary_page and column.dictionary_page_offset is not None:
            first = min(first, column.dictionary_page_offset)
        start = min(start, first)
        end = max(end, first + column.total_compressed_size)
    return start, end - start
