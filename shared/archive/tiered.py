"""Reads through both tiers: the hot store first, then the archive's blocks, one answer for the caller.

* :meth:`TieredReads.get_trace`: the hot store's trace when it has a span of it; else the registered blocks
  whose row groups' trace-id ranges can hold the id, newest block first, the first that has it answering
  (the row groups' Bloom filters of every registered block probed at once: :class:`GroupIndex`).
  An archived trace's analysis is derived from its spans, as the SQL stores derive a finalized trace's.
* :meth:`TieredReads.find_traces`: the hot store's results, plus those of the registered blocks whose time
  range overlaps the query's (each block prunes by its metadata and row groups' statistics itself), latest
  first, :data:`BLOCKS_AT_ONCE` at a time, until the blocks left cannot hold a trace newer than the last
  one the answer keeps.
  A trace in both tiers (a registered block whose hot rows are still there) is answered once, from the hot
  store. Merged newest first by trace start, then by trace id (descending) in both tiers: the hot stores
  alone break ties by insertion order, which blocks do not keep.

The registered blocks (their decoded :class:`~shared.archive.block.BlockMeta`) are read from the hot store
at most every :data:`CATALOG_REFRESH_S` seconds, not per request; the footers of new blocks are fetched
then, in the background (:meth:`BlockReader.prefetch`), not by the first read that needs one. An object
store that cannot answer raises :class:`ArchiveUnavailable` (the API answers 503); reads that do not need
it are unaffected. Without an archive nothing of the block format (pyarrow) is imported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Literal, NamedTuple, TypeVar

import msgspec

from shared.analysis import analyze_aside
from shared.archive.objects import ObjectMissing, ObjectStore
from shared.store.base import ArchivedBlock, StoredTrace, TraceQuery, TraceStore, TraceSummary

if TYPE_CHECKING:  # the block modules need pyarrow (the ``archive`` extra): imported once an archive is read
    from shared.archive.block import BlockMeta, GroupIndex
    from shared.archive.reader import BlockReader

Tier = Literal["hot", "archive"]
CATALOG_REFRESH_S: Final = 5.0
"""How long the registered blocks read from the hot store are used before they are read again."""
BLOCKS_AT_ONCE: Final = 8
"""Blocks searched concurrently."""
GROUPS_KEPT: Final = 16
"""Row groups read by id kept decoded (1-1.5 MB each for 2,048 demo or realistic spans): Jaeger's search
loads the traces it found, most often several of one row group."""
PAGE_MAX: Final = 1000  # TraceQuery's largest limit
T = TypeVar("T")


class ArchiveUnavailable(Exception):
    """The archive's object store cannot answer now (a read that needs it is answered 503)."""


class TieredTrace(NamedTuple):
    trace: StoredTrace
    tier: Tier


class TieredSummary(NamedTuple):
    summary: TraceSummary
    tier: Tier


class Registered(NamedTuple):
    """A registered block and its decoded metadata."""

    block: ArchivedBlock
    meta: BlockMeta


def _newest_first(summary: TraceSummary) -> tuple[int, str]:
    return summary.start_us, summary.trace_id


async def _first(find: Callable[[TraceQuery], Awaitable[list[TraceSummary]]], query: TraceQuery) -> list[TraceSummary]:
    """The first ``offset + limit`` results of ``query`` from offset 0 (in pages of at most a search's
    largest limit): what a merge of several sources needs from each."""
    wanted = query.offset + query.limit
    found: list[TraceSummary] = []
    while len(found) < wanted:
        size = min(PAGE_MAX, wanted - len(found))
        page = await find(msgspec.structs.replace(query, offset=len(found), limit=size))
        found.extend(page)
        if len(page) < size:
            break
    return found


class TieredReads:
    """Trace reads over the hot ``store`` and, when ``objects`` is given, the archive behind it."""

    def __init__(
        self,
        store: TraceStore,
        objects: ObjectStore | None = None,
        *,
        refresh_s: float = CATALOG_REFRESH_S,
        blocks_at_once: int = BLOCKS_AT_ONCE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.reader: BlockReader | None = None
        if objects is not None:
            from shared.archive.reader import BlockReader

            self.reader = BlockReader(objects, groups_kept=GROUPS_KEPT)
        self._refresh_s = refresh_s
        self._blocks_at_once = blocks_at_once
        self._clock = clock
        self._catalog: list[Registered] = []
        self._newest: list[Registered] = []  # the catalog, newest block first (the order of reads by id)
        self._index: GroupIndex | None = None  # of ``_newest``; made by the first read by id
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        self._prefetching: asyncio.Task[None] | None = None

    @property
    def archived(self) -> bool:
        """Whether an archive is configured."""
        return self.reader is not None

    async def blocks(self) -> list[Registered]:
        """The registered blocks, by start (read again once :data:`CATALOG_REFRESH_S` old)."""
        from shared.archive.block import decode_meta

        async with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._refresh_s:
                catalog = [Registered(b, decode_meta(b.meta)) for b in await self.store.archived_blocks()]
                if [r.block for r in catalog] != [r.block for r in self._catalog]:
                    self._catalog = catalog
                    self._newest = sorted(catalog, key=lambda r: (r.block.created_us, r.block.start_us), reverse=True)
                    self._index = None
                    if self.reader is not None:
                        self.reader.forget_all_but({r.block.name for r in catalog})
                self._prefetch()
                self._read_at = now
            return self._catalog

    def _prefetch(self) -> None:
        """Fetch the footers of the blocks not kept yet, newest first, in the background (one task at once:
        a task under way is left to finish, and a later catalog read starts the next)."""
        reader = self.reader
        if reader is None or (self._prefetching is not None and not self._prefetching.done()):
            return
        newest = [(r.block.name, r.meta) for r in self._newest]
        if reader.prefetches(newest):
            self._prefetching = asyncio.get_running_loop().create_task(reader.prefetch(newest))

    async def _from_archive(self, read: Awaitable[T]) -> T:
        try:
            return await read
        except ObjectMissing:
            raise  # a block deleted under the read: the caller skips it
        except OSError as exc:
            raise ArchiveUnavailable(f"archive unavailable: {type(exc).__name__}: {exc}") from exc

    async def get_trace(self, trace_id: str, *, analyzed: bool = True) -> TieredTrace | None:
        """The trace from the hot store, else from the newest block holding it; ``None`` when neither has a
        span of it. ``analyzed=False``: an archived trace comes without its analysis (``None``; a read that
        answers only the spans need not derive it)."""
        hot = await self.store.get_trace(trace_id)
        if hot is not None and hot.spans:
            return TieredTrace(hot, "hot")
        if self.reader is None:
            return None
        reader = self.reader
        for registered, groups in await self._holders(trace_id):
            name = registered.block.name
            try:
                found = await self._from_archive(reader.get_trace(name, registered.meta, trace_id, groups))
            except ObjectMissing:
                continue
            if found is not None and found.spans:
                if not analyzed:
                    return TieredTrace(found, "archive")
                analysis = await analyze_aside(trace_id, found.spans)
                return TieredTrace(msgspec.structs.replace(found, analysis=analysis), "archive")
        return None

    async def _holders(self, trace_id: str) -> list[tuple[Registered, list[int]]]:
        """The blocks that can hold ``trace_id`` (a row group's trace-id range holds it, and its filter of
        trace ids does not rule it out), newest first, each with those row groups."""
        from shared.archive.block import GroupIndex, id_key

        key, _ = id_key(trace_id)
        await self.blocks()
        newest = self._newest
        if self._index is None:
            self._index = GroupIndex([r.meta for r in newest])
        return [(newest[b], groups) for b, groups in self._index.holders(key)]

    async def find_traces(self, query: TraceQuery) -> list[TieredSummary]:
        """The traces matching ``query`` in both tiers, newest first, ``offset`` and ``limit`` applied to
        the merged answer."""
        if self.reader is None:
            return [TieredSummary(s, "hot") for s in await self.store.find_traces(query)]
        merged = {s.trace_id: TieredSummary(s, "hot") for s in await _first(self.store.find_traces, query)}
        wanted = query.offset + query.limit
        for batch in await self._overlapping(query):
            if len(merged) >= wanted:  # a block can only matter if it holds a trace as new as the last kept
                floor = sorted((t.summary for t in merged.values()), key=_newest_first, reverse=True)[wanted - 1]
                batch = [r for r in batch if r.block.end_us >= floor.start_us]
                if not batch:
                    break
            for found in await asyncio.gather(*(self._search_block(r, query) for r in batch)):
                for summary in found:
                    merged.setdefault(summary.trace_id, TieredSummary(summary, "archive"))
        ordered = sorted(merged.values(), key=lambda t: _newest_first(t.summary), reverse=True)
        return ordered[query.offset : wanted]

    async def _overlapping(self, query: TraceQuery) -> list[list[Registered]]:
        """The blocks whose time range overlaps the query's, latest trace first, in batches searched at
        once."""
        low, high = query.start_us, query.end_us
        overlapping = [
            r
            for r in await self.blocks()
            if (low is None or r.block.end_us >= low) and (high is None or r.block.start_us <= high)
        ]
        overlapping.sort(key=lambda r: (r.block.end_us, r.block.created_us), reverse=True)
        at_once = self._blocks_at_once
        return [overlapping[i : i + at_once] for i in range(0, len(overlapping), at_once)]

    async def _search_block(self, registered: Registered, query: TraceQuery) -> list[TraceSummary]:
        """The first ``offset + limit`` matches of the block (none when its object is gone)."""
        reader = self.reader
        assert reader is not None

        async def find(q: TraceQuery) -> list[TraceSummary]:
            return await self._from_archive(reader.find_traces(registered.block.name, registered.meta, q))

        try:
            return await _first(find, query)
        except ObjectMissing:
            return []

    async def close(self) -> None:
        if self._prefetching is not None:
            self._prefetching.cancel()
            await asyncio.gather(self._prefetching, return_exceptions=True)
        if self.reader is not None:
            await self.reader.store.close()
