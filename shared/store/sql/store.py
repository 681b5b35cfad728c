"""The :class:`~shared.store.base.TraceStore` methods of the SQL backends, written once over two
transaction runners a backend supplies: :meth:`SqlStore._commit` (a write transaction) and
:meth:`SqlStore._snapshot` (a read transaction), each handing the algorithm a driver on its connection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from typing import Any, Final, Literal, TypeVar

import msgspec

from shared.analysis import Dependency, TraceAnalysis
from shared.models import Span, SpanFinish
from shared.sampling import Sampler
from shared.store.base import (
    ContextRow,
    Heartbeat,
    RollupRow,
    StoredTrace,
    StoreStats,
    TailContexts,
    TraceQuery,
    TraceSummary,
    Window,
    WriteResult,
)
from shared.store.cache import TraceCache
from shared.store.rollups import Contribution
from shared.store.sql import reader, writer
from shared.store.sql.driver import SqlDriver
from shared.store.writing import group_batch

T = TypeVar("T")
Job = Callable[[SqlDriver], Coroutine[Any, Any, T]]

HEARTBEAT: Final = (
    "INSERT INTO heartbeats VALUES (?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET"
    " updated_us = excluded.updated_us, body = excluded.body"
)

_json: Final = msgspec.json.Encoder()


def _ignore(_: object) -> None:
    pass


class SqlStore(ABC):
    """A SQL backend's store: the contract's methods, over the backend's transactions and driver."""

    cache: TraceCache | None
    purge_chunk: int
    """Traces deleted per purge transaction (short transactions: writers are not held up for long)."""

    @abstractmethod
    async def _commit(self, job: Job[T], committed: Callable[[T], None] = _ignore) -> T:
        """Run ``job`` in one write transaction; once it committed, ``committed(result)``, where the cache
        is used (the backend's connection thread, or the event loop)."""

    @abstractmethod
    async def _snapshot(self, job: Job[T]) -> T:
        """Run ``job`` in one read transaction (a consistent snapshot)."""

    async def _planned(self, trace_ids: Sequence[str], sampler: Sampler | None) -> writer.Planned | None:
        """A finalize round planned before its write transaction, or ``None`` (planned inside it)."""
        return None

    # -- writes ---------------------------------------------------------------------------------------

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
            return WriteResult(spans_changed=0, traces_touched=0, late_spans=0)
        batch = group_batch(spans, finishes, shards)
        cache = self.cache
        done = await self._commit(
            lambda d: writer.write_batch(
                d, cache, batch, shards=shards, now_us=now_us, grace_us=grace_us, idle_us=idle_us
            ),
            _ignore if cache is None else lambda done: done.remember(cache),
        )
        return done.plan.result

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
        cache = self.cache
        planned = await self._planned(trace_ids, sampler)
        done = await self._commit(
            lambda d: writer.finalize(d, cache, trace_ids, now_us=now_us, sampler=sampler, planned=planned),
            _ignore if cache is None else lambda done: done.remember(cache),
        )
        if on_first is not None and done.plan.first:
            on_first(done.plan.first)
        return done.plan.analyses

    async def purge(self, before_us: int, *, shards: Collection[str] | None = None) -> int:
        cache, limit = self.cache, self.purge_chunk
        total = 0
        while True:  # in chunks: short transactions, and traces being written or finalized are skipped
            purged = await self._commit(
                lambda d: writer.purge(d, before_us, limit), _ignore if cache is None else cache.discard
            )
            total += len(purged)
            if len(purged) < limit:
                return total

    async def record_heartbeat(self, heartbeat: Heartbeat) -> None:
        body = _json.encode(heartbeat).decode()

        async def job(d: SqlDriver) -> None:
            await d.execute(
                d.dialect.sql(HEARTBEAT), [d.dialect.text(heartbeat.worker_id), heartbeat.updated_at_us, body]
            )

        await self._commit(job)

    # -- reads ----------------------------------------------------------------------------------------

    async def heartbeats(self, *, newer_than_us: int = 0) -> list[Heartbeat]:
        return await self._snapshot(lambda d: reader.heartbeats(d, newer_than_us))

    async def get_trace(self, trace_id: str) -> StoredTrace | None:
        return await self._snapshot(lambda d: reader.get_trace(d, trace_id))

    async def trace_of_span(self, span_id: str) -> str | None:
        return await self._snapshot(lambda d: reader.trace_of_span(d, span_id))

    async def find_traces(self, query: TraceQuery) -> list[TraceSummary]:
        return await self._snapshot(lambda d: reader.find_traces(d, query))

    async def stats(self, *, slowest: int = 5, window: Window | None = None) -> StoreStats:
        return await self._snapshot(lambda d: reader.stats(d, slowest=slowest, window=window))

    async def rollups(
        self,
        series: Literal["operations", "endpoints"],
        window: Window | None,
        *,
        step_us: int | None = None,
        service: str | None = None,
        operation: str | None = None,
    ) -> list[RollupRow]:
        return await self._snapshot(
            lambda d: reader.rollups(d, series, window, step_us=step_us, service=service, operation=operation)
        )

    async def critical_contexts(
        self, window: Window | None, *, service: str | None = None, operation: str | None = None
    ) -> list[ContextRow]:
        return await self._snapshot(lambda d: reader.critical_contexts(d, window, service=service, operation=operation))

    async def slow_trace_contexts(
        self, service: str, operation: str, window: Window | None, *, min_duration_us: int, limit: int
    ) -> TailContexts:
        return await self._snapshot(
            lambda d: reader.slow_trace_contexts(
                d, service, operation, window, min_duration_us=min_duration_us, limit=limit
            )
        )

    async def services(self) -> list[str]:
        return await self._snapshot(reader.services)

    async def operations(self, service: str) -> list[str]:
        return await self._snapshot(lambda d: reader.operations(d, service))

    async def operation_kinds(self, service: str) -> list[tuple[str, str]]:
        return await self._snapshot(lambda d: reader.operation_kinds(d, service))

    async def dependencies(self, since_us: int = 0, until_us: int | None = None) -> list[Dependency]:
        return await self._snapshot(lambda d: reader.dependencies(d, since_us, until_us))
