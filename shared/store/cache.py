"""The writer's copy of the traces it wrote: a bounded, byte-accounted LRU of :class:`TraceState`.

A worker writes a trace's chunks and, most of the time, finalizes the same trace moments later. Keeping
the merged state it wrote lets it finalize (and de-duplicate the next batch) without reading the chunks
back. The store stays the truth: an entry is used only when it is provably the stored state, i.e. when
its key (the trace row's incarnation ``tid`` and chunk count) equals the row's, read under the same lock
as the write or finalization; anything else reads the chunks. Losing an entry (eviction, restart,
rebalance) costs one read, never correctness.

Memory is bounded in bytes: each entry is charged ``PYTHON_BYTES_PER_ENCODED_BYTE`` times the encoded
size of its chunks, and the least recently used entries go when the total passes the budget. Why a cache:
docs/adr/0004-trace-cache.md.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from shared.store.chunks import TraceState

PYTHON_BYTES_PER_ENCODED_BYTE: Final = 6.0
"""Estimated resident bytes of a cached state per byte of its chunks' msgpack before compression (decoded
spans, dicts): measured 5.6 on demo traces and 5.8 on realistic ones (tracemalloc, 1,000 states each); it
was 4.5 per byte of layout v2's named msgpack, 1.35x the positional one."""


class TraceCache:
    """``trace_id -> (tid, TraceState)``, least recently used first. Not thread-safe: one owner."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, tuple[int, TraceState, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _cost(state: TraceState) -> int:
        return int(state.nbytes * PYTHON_BYTES_PER_ENCODED_BYTE) + 200

    def take(self, trace_id: str, tid: int, version: int) -> TraceState | None:
        """Remove and return the cached state if it is the stored one (same incarnation ``tid`` and chunk
        count ``version``), else drop the entry and return ``None``.

        Taking (not peeking) is what keeps the cache honest across transactions: a state is mutated only
        while it is out of the cache, and :meth:`put` back only after the transaction committed. A failed
        transaction simply never puts it back.
        """
        entry = self._entries.pop(trace_id, None)
        if entry is None:
            self.misses += 1
            return None
        self.bytes -= entry[2]
        if entry[0] != tid or entry[1].version != version:
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def version(self, trace_id: str) -> int | None:
        """The chunk count of the cached state of ``trace_id`` (``None``: none cached), without taking it."""
        entry = self._entries.get(trace_id)
        return None if entry is None else entry[1].version

    def put(self, trace_id: str, tid: int, state: TraceState) -> None:
        """Remember ``state`` (the stored state of incarnation ``tid``) as the newest entry."""
        if self.max_bytes <= 0:
            return
        old = self._entries.pop(trace_id, None)
        if old is not None:
            self.bytes -= old[2]
        cost = self._cost(state)
        if cost > self.max_bytes // 4:  # one huge trace must not flush everything else
            return
        self._entries[trace_id] = (tid, state, cost)
        self.bytes += cost
        while self.bytes > self.max_bytes:
            _, (_, _, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def discard(self, trace_ids: Iterable[str]) -> None:
        for trace_id in trace_ids:
            old = self._entries.pop(trace_id, None)
            if old is not None:
                self.bytes -= old[2]

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
