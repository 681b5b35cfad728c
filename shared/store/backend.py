"""What every backend's store does the same way at the contract's write and finalize entry points: an
empty call does nothing, a batch is grouped by trace (every trace must have its shard), and the
contributions of first finalizations go to ``on_first`` once the round is stored. A backend implements
:meth:`Backend._write` and :meth:`Backend._finalize`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence

from shared.analysis import TraceAnalysis
from shared.models import Span, SpanFinish
from shared.sampling import Sampler
from shared.store.base import WriteResult
from shared.store.cache import TraceCache
from shared.store.rollups import Contribution
from shared.store.writing import NOTHING_WRITTEN, WriteBatch, group_batch


class Backend(ABC):
    """The contract's ``write_batch`` and ``finalize`` (see :class:`~shared.store.base.TraceWriter` and
    :class:`~shared.store.base.TraceFinalizer`) over a backend's own write and finalize."""

    cache: TraceCache | None

    @abstractmethod
    async def _write(self, batch: WriteBatch) -> WriteResult:
        """Write a non-empty batch and put the states it leaves into the cache once they are stored."""

    @abstractmethod
    async def _finalize(
        self, trace_ids: Sequence[str], now_us: int, sampler: Sampler | None
    ) -> tuple[list[TraceAnalysis], list[Contribution]]:
        """Finalize the active traces among (non-empty) ``trace_ids``; the analyses written and the
        contributions of the traces finalized for the first time."""

    async def write_batch(
        self,
        spans: Sequence[Span],
        finishes: Sequence[SpanFinish],
        *,
        shards: Mapping[str, str],
        now_us: int,
        grace_us: int,
        idle_us: int,
    ) -> WriteResult:
        if not spans and not finishes:
            return NOTHING_WRITTEN
        events = group_batch(spans, finishes, shards)
        return await self._write(
            WriteBatch(events=events, shards=shards, now_us=now_us, grace_us=grace_us, idle_us=idle_us)
        )

    async def finalize(
        self,
        trace_ids: Sequence[str],
        *,
        now_us: int,
        sampler: Sampler | None = None,
        on_first: Callable[[Sequence[Contribution]], None] | None = None,
    ) -> list[TraceAnalysis]:
        if not trace_ids:
            return []
        analyses, first = await self._finalize(trace_ids, now_us, sampler)
        if on_first is not None and first:
            on_first(first)
        return analyses
