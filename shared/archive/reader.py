"""Reads of archived traces from a block in an object store, by its :class:`~shared.archive.block.BlockMeta`:
only the row groups that can hold what is asked are fetched (ranged GETs), never the whole object.

* :meth:`BlockReader.get_trace`: the row groups whose trace-id range holds the id (most often one).
* :meth:`BlockReader.find_traces`: the hot store's search semantics (:class:`~shared.store.base.TraceQuery`:
  trace-level or same-span, service, operation, tags, durations, status, time range, newest first, offset
  and limit) over the row groups whose statistics (trace starts, durations, services) can match; the
  trace-level filters run on the summary columns, tags and same-span conditions on the candidates' spans
  with the functions every hot store uses (:mod:`shared.store.search`).

The Parquet footer of a block (its row groups' statistics) is fetched and parsed once and kept
(:data:`FOOTERS_KEPT` blocks' footers; :meth:`BlockReader.prefetch` fetches them ahead of the reads, as
soon as the blocks are known, so that no read waits for one). A read by id decodes only the columns of the
spans and of the trace's completeness (:data:`BY_ID_COLUMNS`), not the summary columns. A search reads the
row groups that can match newest first (a block's row groups follow each other in time), one at a time,
and stops once the row groups left cannot hold a trace newer than the last one the answer keeps.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.archive.block import SPAN_COLUMNS, TRACE_COLUMNS, BlockMeta, holding_groups, id_key
from shared.archive.objects import ObjectStore
from shared.models import Log, Span, Tags, TagValue
from shared.store.base import Completeness, StoredTrace, TraceQuery, TraceSummary
from shared.store.search import trace_has_matching_span, trace_has_tags

FOOTERS_KEPT: Final = 256
PREFETCH_AT_ONCE: Final = 4
"""Footers :meth:`BlockReader.prefetch` fetches at once."""
COMPLETENESS_COLUMNS: Final = ["late_spans", "refinalizations", "finalized_at_us"]
BY_ID_COLUMNS: Final = [*SPAN_COLUMNS, *COMPLETENESS_COLUMNS]
"""What a read by id decodes of a row group: its spans, and the completeness of their trace."""
HEADS_AT_ONCE: Final = 32
"""Candidate traces whose summary columns a search converts at once."""
PRUNED_BY: Final = ("service_name", "operation_name", "trace_duration_us")
"""The columns whose row-group statistics a search prunes by (:func:`_group_can_match`)."""
_VALUE_OF: Final[dict[str, Callable[[str], TagValue]]] = {
    "s": str,
    "i": int,
    "f": float,
    "b": lambda text: text == "true",
}


def typed_tags(pairs: Sequence[tuple[str, str]] | None, letters: str | None) -> Tags:
    """A tag map as written: the (key, text) pairs of a map column with the types its ``*_types`` gives."""
    if not pairs:
        return {}
    if letters is None:
        return dict(pairs)
    return {key: _VALUE_OF[letter](text) for (key, text), letter in zip(pairs, letters, strict=True)}


def _logs(logs: list[dict[str, Any]] | None) -> tuple[Log, ...]:
    return tuple(
        Log(timestamp_us=log["timestamp_us"], fields=typed_tags(log["fields"], log["field_types"]))
        for log in logs or ()
    )


def _id(binary: bytes | None, text: str | None) -> str | None:
    if binary is None:
        return None
    return text if text is not None else binary.hex()


def plain(table: pa.Table) -> pa.Table:
    """The table with its dictionary-encoded columns (names) as plain ones: converted to Python values ten
    times faster than a dictionary column's (one scalar a value)."""
    schema = table.schema
    if not any(pa.types.is_dictionary(f.type) for f in schema):
        return table
    return table.cast(
        pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema])
    )


def spans_of(table: pa.Table) -> list[Span]:
    """The spans of block rows (all of the table's rows; its span columns)."""
    rows = plain(table.select(SPAN_COLUMNS))
    c = {name: rows.column(name).to_pylist() for name in SPAN_COLUMNS}
    return [
        Span(
            trace_id=_id(c["trace_id"][i], c["trace_id_text"][i]) or "",
            span_id=_id(c["span_id"][i], c["span_id_text"][i]) or "",
            parent_span_id=_id(c["parent_span_id"][i], c["parent_span_id_text"][i]),
            service_name=c["service_name"][i],
            operation_name=c["operation_name"][i],
            start_time_us=c["start_time_us"][i],
            duration_us=c["duration_us"][i],
            status=c["status"][i],
            kind=c["kind"][i],
            tags=typed_tags(c["tags"][i], c["tag_types"][i]),
            logs=_logs(c["logs"][i]),
            resource=typed_tags(c["resource"][i], c["resource_types"][i]),
            scope_name=c["scope_name"][i],
            scope_version=c["scope_version"][i],
            trace_state=c["trace_state"][i],
        )
        for i in range(table.num_rows)
    ]


SEARCH_COLUMNS: Final = ["trace_id", "trace_id_text", "service_name", "operation_name", *TRACE_COLUMNS]
"""What a search without tags or same-span conditions reads of a row group (no tag maps, no logs)."""
SAME_SPAN_COLUMNS: Final = [*SEARCH_COLUMNS, "duration_us"]
"""What a same-span search without tags reads: its conditions (service, operation, duration) on each row."""
_NEWEST_FIRST: Final = [
    ("trace_start_us", "descending", "at_end"),
    ("trace_id", "descending", "at_end"),
    ("trace_id_text", "descending", "at_end"),  # a hex id (no text) after a text id of the same bytes
]


def _order_key(trace_id: str) -> tuple[bytes, int, str]:
    """A trace id's place in :data:`_NEWEST_FIRST` (after its start), as a sort key."""
    key, text = id_key(trace_id)
    return key, text is not None, text or ""


class _Trace:
    """One trace's rows ``[start, end)`` in a table read from a block, and its first row's
    :data:`SEARCH_COLUMNS` (its summary)."""

    __slots__ = ("end", "row", "start")

    def __init__(self, row: dict[str, Any], start: int, end: int) -> None:
        self.start, self.end = start, end
        self.row = row

    @property
    def trace_id(self) -> str:
        return _id(self.row["trace_id"], self.row["trace_id_text"]) or ""


def _trace_bounds(table: pa.Table) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The first row of each trace of a table read from a block, and the row after its last (a trace's
    rows are consecutive)."""
    n = table.num_rows
    keys = table.column("trace_id").combine_chunks()
    texts = pc.fill_null(table.column("trace_id_text"), "").combine_chunks()
    changed = pc.or_(
        pc.not_equal(keys.slice(1), keys.slice(0, n - 1)), pc.not_equal(texts.slice(1), texts.slice(0, n - 1))
    )
    firsts = np.concatenate([[0], np.flatnonzero(changed.to_numpy(zero_copy_only=False)) + 1]).astype(np.int64)
    return firsts, np.append(firsts[1:], n).astype(np.int64)


def _summary(trace: _Trace, services: list[str]) -> TraceSummary:
    """The trace's summary; ``services``: the service of each row of its table."""
    row = trace.row
    return TraceSummary(
        trace_id=trace.trace_id,
        root_service=row["root_service"],
        root_operation=row["root_operation"],
        start_us=row["trace_start_us"],
        duration_us=row["trace_duration_us"],
        span_count=row["span_count"],
        error_count=row["error_count"],
        status=row["trace_status"],
        complete=row["complete"],
        services=sorted(set(services[trace.start : trace.end])),
    )


Bounds = tuple[Any, Any] | None
"""A column's (min, max) in a row group, from its statistics (None: none kept)."""


class Footer:
    """A block's Parquet footer, parsed, and the row groups' statistics a search prunes by."""

    __slots__ = ("bounds", "meta")

    def __init__(self, data: bytes) -> None:
        self.meta: pq.FileMetaData = pq.read_metadata(pa.BufferReader(data))
        self.bounds: list[dict[str, Bounds]] = []
        if self.meta.num_row_groups == 0:
            return
        first = self.meta.row_group(0)
        where = {first.column(i).path_in_schema: i for i in range(first.num_columns)}
        for g in range(self.meta.num_row_groups):
            group = self.meta.row_group(g)
            bounds: dict[str, Bounds] = {}
            for name in PRUNED_BY:
                s = group.column(where[name]).statistics if name in where else None
                bounds[name] = (s.min, s.max) if s is not None and s.has_min_max else None
            self.bounds.append(bounds)


class BlockReader:
    """Reads of the blocks of one object store. Safe to share between tasks."""

    def __init__(self, store: ObjectStore, *, groups_kept: int = 0) -> None:
        """``groups_kept``: how many row groups read by id are kept decoded (the last ones read): Jaeger's
        search loads each trace it found, most often several of one row group."""
        self.store = store
        self._footers: OrderedDict[str, asyncio.Future[Footer]] = OrderedDict()
        self._groups_kept = groups_kept
        self._groups: OrderedDict[tuple[str, int], asyncio.Future[pa.Table]] = OrderedDict()

    async def _fetch_footer(self, name: str, meta: BlockMeta) -> Footer:
        end = meta.footer_offset + meta.footer_length + 8
        (data,) = await self.store.get_ranges(name, [(meta.footer_offset, end)])
        return await asyncio.to_thread(Footer, data)  # parsed on a thread: the loop keeps answering

    async def _footer(self, name: str, meta: BlockMeta) -> Footer:
        """The block's Parquet footer, parsed: kept (the last :data:`FOOTERS_KEPT`), fetched once by
        concurrent readers."""
        return await _kept(self._footers, name, FOOTERS_KEPT, lambda: self._fetch_footer(name, meta))

    def forget_all_but(self, names: Collection[str]) -> None:
        """Drop what is kept of the blocks not in ``names`` (those that left the catalog: expired, or
        compacted into others), so that the footers kept are the catalog's, not the last
        :data:`FOOTERS_KEPT` ever read."""
        for name in [n for n in self._footers if n not in names]:
            del self._footers[name]
        for group in [g for g in self._groups if g[0] not in names]:
            del self._groups[group]

    def prefetches(self, blocks: Sequence[tuple[str, BlockMeta]]) -> list[tuple[str, BlockMeta]]:
        """What :meth:`prefetch` would fetch of ``blocks``: the first :data:`FOOTERS_KEPT` (more would evict
        each other), those whose footer is not kept."""
        return [(name, meta) for name, meta in blocks[:FOOTERS_KEPT] if name not in self._footers]

    async def prefetch(self, blocks: Sequence[tuple[str, BlockMeta]]) -> None:
        """Fetch and keep the footers of ``blocks`` (most important first; see :meth:`prefetches`),
        :data:`PREFETCH_AT_ONCE` at a time, so reads find them kept. A block that cannot be read is left for
        a read to report."""
        wanted = self.prefetches(blocks)
        gate = asyncio.Semaphore(PREFETCH_AT_ONCE)

        async def fetch(name: str, meta: BlockMeta) -> None:
            async with gate:
                if name in self._footers:
                    return
                try:
                    await self._footer(name, meta)
                except Exception:  # a read of this block reports it; nothing waits on this
                    return

        # the oldest first, so that the newest are the last ones evicted when there are more than are kept
        await asyncio.gather(*(fetch(name, meta) for name, meta in reversed(wanted)))

    async def _read(
        self, name: str, meta: BlockMeta, groups: Sequence[int], columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Row groups of the block (``columns`` of them, or all), fetched alone (and the footer, unless
        kept)."""
        parts = [meta.row_groups[i] for i in groups]
        footer, fetched = await asyncio.gather(
            self._footer(name, meta), self.store.get_ranges(name, [(g.offset, g.offset + g.length) for g in parts])
        )
        # a file of the block's size that holds only what was fetched: Parquet reads no other byte of it (its
        # footer is given parsed)
        sparse = bytearray(meta.footer_offset)
        for part, data in zip(parts, fetched, strict=True):
            sparse[part.offset : part.offset + part.length] = data
        blocks = pq.ParquetFile(pa.BufferReader(pa.py_buffer(sparse)), metadata=footer.meta)
        # decoded on a thread (pyarrow lets go of the GIL): concurrent reads use both cores; not on pyarrow's
        # own threads besides (a row group's columns are small: handing them out cost more than it saved)
        return await asyncio.to_thread(
            blocks.read_row_groups,
            list(groups),
            columns=None if columns is None else list(columns),
            use_threads=False,
        )

    async def _trace_group(self, name: str, meta: BlockMeta, group: int) -> pa.Table:
        """The :data:`BY_ID_COLUMNS` of one row group: kept (the last ``groups_kept``), and read once by
        concurrent readers."""
        if not self._groups_kept:
            return await self._read(name, meta, [group], BY_ID_COLUMNS)
        return await _kept(
            self._groups, (name, group), self._groups_kept, lambda: self._read(name, meta, [group], BY_ID_COLUMNS)
        )

    async def get_trace(
        self, name: str, meta: BlockMeta, trace_id: str, groups: Sequence[int] | None = None
    ) -> StoredTrace | None:
        """The archived trace (state ``finalized``; ``analysis`` None: derived by the caller, as for a hot
        trace), or ``None`` when the block does not hold it. Its spans are in the block's order (by start).
        ``groups``: the row groups that can hold it when the caller knows them (:func:`holding_groups`)."""
        key, text = id_key(trace_id)
        if groups is None:
            groups = holding_groups(meta, key)
        if not groups:
            return None
        tables = [await self._trace_group(name, meta, i) for i in groups]
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        mine = pc.equal(table.column("trace_id"), pa.scalar(key, pa.binary()))
        text_column = table.column("trace_id_text")
        mine = pc.and_(mine, pc.is_null(text_column) if text is None else pc.equal(text_column, text))
        at = np.flatnonzero(pc.fill_null(mine, False).to_numpy(zero_copy_only=False))
        if not len(at):
            return None
        # a trace's rows are consecutive in its row group (sorted by trace id): a slice, not a copy
        rows = table.slice(int(at[0]), int(at[-1]) - int(at[0]) + 1)
        first = {name: rows.column(name)[0].as_py() for name in COMPLETENESS_COLUMNS}
        return StoredTrace(
            trace_id=trace_id,
            state="finalized",
            spans=spans_of(rows),
            analysis=None,
            completeness=Completeness(**first),
        )

    async def find_traces(self, name: str, meta: BlockMeta, query: TraceQuery) -> list[TraceSummary]:
        """The block's traces matching ``query`` as the hot stores' ``find_traces`` answers: newest first
        (trace start, then trace id, descending), ``query.offset`` skipped, at most ``query.limit``. A
        caller merging several blocks asks each for ``offset + limit`` from offset 0."""
        if query.status == "active" or not _block_can_match(meta, query):
            return []
        footer = await self._footer(name, meta)
        groups = [i for i, bounds in enumerate(footer.bounds) if _group_can_match(bounds, meta, i, query)]
        groups.sort(key=lambda i: meta.row_groups[i].end_us, reverse=True)
        columns = None if query.tags else SAME_SPAN_COLUMNS if query.same_span else SEARCH_COLUMNS
        wanted = query.offset + query.limit
        found: list[TraceSummary] = []
        for i in groups:
            if len(found) >= wanted and meta.row_groups[i].end_us < found[wanted - 1].start_us:
                break  # no trace of this row group or an older one can be among the newest kept
            table = await self._read(name, meta, [i], columns)
            mine: list[TraceSummary] = []
            services: list[str] | None = None
            for trace in _candidates(table, query):
                if len(mine) == wanted:
                    break
                if _spans_match(table, trace, query):
                    if services is None:
                        services = table.column("service_name").cast(pa.string()).to_pylist()
                    mine.append(_summary(trace, services))
            found = sorted([*found, *mine], key=lambda t: (t.start_us, *_order_key(t.trace_id)), reverse=True)
            del found[wanted:]
        return found[query.offset :]


def _block_can_match(meta: BlockMeta, query: TraceQuery) -> bool:
    if query.start_us is not None and meta.end_us < query.start_us:
        return False
    if query.end_us is not None and meta.start_us > query.end_us:
        return False
    if query.service_name is not None:
        if query.operation_name is not None:
            return (query.service_name, query.operation_name) in {tuple(op) for op in meta.operations}
        return query.service_name in meta.services
    if query.operation_name is not None:
        return any(op == query.operation_name for _, op in meta.operations)
    return True


def _group_can_match(bounds: dict[str, Bounds], meta: BlockMeta, index: int, query: TraceQuery) -> bool:
    """Whether a row group's trace starts (the block's metadata), trace durations and services (its
    statistics: ``bounds``) allow a match."""
    mine = meta.row_groups[index]
    if query.start_us is not None and mine.end_us < query.start_us:
        return False
    if query.end_us is not None and mine.start_us > query.end_us:
        return False
    for column, value in (("service_name", query.service_name), ("operation_name", query.operation_name)):
        b = bounds.get(column)
        if value is not None and b is not None and not b[0] <= value <= b[1]:
            return False
    b = bounds.get("trace_duration_us")
    if query.same_span or b is None:
        return True
    return _within(b[1], query.min_duration_us, None) and _within(b[0], None, query.max_duration_us)


K = TypeVar("K")
V = TypeVar("V")


async def _kept(kept: OrderedDict[K, asyncio.Future[V]], key: K, most: int, make: Callable[[], Awaitable[V]]) -> V:
    """``make()``'s value for ``key``, kept in ``kept`` (the last ``most`` used) and made once by concurrent
    callers; a failure is not kept."""
    pending = kept.get(key)
    if pending is None:
        pending = asyncio.ensure_future(make())
        kept[key] = pending
        while len(kept) > most:
            kept.popitem(last=False)
    else:
        kept.move_to_end(key)
    try:
        return await asyncio.shield(pending)
    except BaseException:
        if kept.get(key) is pending and pending.done():
            del kept[key]  # a failed read is not kept
        raise


def _candidates(table: pa.Table, query: TraceQuery) -> Iterator[_Trace]:
    """The traces of ``table`` whose summary columns and (trace-level) service and operation match, newest
    first (made as they are reached: the caller stops at its limit)."""
    firsts, ends = _trace_bounds(table)
    heads = table.select(TRACE_COLUMNS).take(pa.array(firsts))
    keep = np.ones(len(firsts), dtype=bool)
    keep &= _within_array(heads.column("trace_start_us").to_numpy(), query.start_us, query.end_us)
    if not query.same_span:
        durations = heads.column("trace_duration_us").to_numpy()
        keep &= _within_array(durations, query.min_duration_us, query.max_duration_us)
    if query.status is not None:
        keep &= _equal(heads.column("trace_status"), query.status)
    span_durations = query.same_span and (query.min_duration_us is not None or query.max_duration_us is not None)
    if query.service_name is not None or query.operation_name is not None or span_durations:
        # a row (span) with the service and the operation; of a same-span search also with its duration
        # in bounds (``duration_us or 0``, as span_matches reads it): all at once, on one row
        hit = np.ones(table.num_rows, dtype=bool)
        for column, value in (("service_name", query.service_name), ("operation_name", query.operation_name)):
            if value is not None:
                hit &= _equal(table.column(column), value)
        if span_durations:
            durations = pc.fill_null(table.column("duration_us"), 0).to_numpy()
            hit &= _within_array(durations, query.min_duration_us, query.max_duration_us)
        has = np.zeros(len(firsts), dtype=bool)
        has[np.repeat(np.arange(len(firsts)), ends - firsts)[hit]] = True
        keep &= has
    chosen = np.flatnonzero(keep)
    ids = table.select([key for key, _, _ in _NEWEST_FIRST]).take(pa.array(firsts[chosen]))
    order = chosen[pc.sort_indices(ids, sort_keys=_NEWEST_FIRST).to_numpy()]
    summaries = table.select(SEARCH_COLUMNS)
    for at in range(0, len(order), HEADS_AT_ONCE):  # the caller most often stops at its limit
        part = order[at : at + HEADS_AT_ONCE]
        rows = plain(summaries.take(pa.array(firsts[part]))).to_pylist()
        for row, first, end in zip(rows, firsts[part].tolist(), ends[part].tolist(), strict=True):
            yield _Trace(row, first, end)


def _equal(column: pa.ChunkedArray, value: str) -> npt.NDArray[np.bool_]:
    equal: npt.NDArray[np.bool_] = pc.fill_null(pc.equal(column.cast(pa.string()), value), False).to_numpy(
        zero_copy_only=False
    )
    return equal


def _within_array(values: npt.NDArray[np.int64], low: int | None, high: int | None) -> npt.NDArray[np.bool_]:
    keep = np.ones(len(values), dtype=bool)
    if low is not None:
        keep &= values >= low
    if high is not None:
        keep &= values <= high
    return keep


def _within(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _spans_match(table: pa.Table, trace: _Trace, query: TraceQuery) -> bool:
    """The conditions on a candidate's spans: every tag on some span (trace-level), or one span with all
    the conditions at once (same-span)."""
    if not query.tags:
        return True  # a same-span search's other conditions are those of _candidates
    spans = spans_of(table.slice(trace.start, trace.end - trace.start))
    if query.same_span:
        return trace_has_matching_span(spans, query)
    return trace_has_tags(spans, query.tags)
