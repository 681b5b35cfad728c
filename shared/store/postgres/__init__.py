"""PostgreSQL backend (asyncpg): one database shared by many ingest workers and API replicas.

The layout is SQLite's (:mod:`shared.store.postgres.schema`), the planning is shared
(:mod:`shared.store.writing`, :mod:`shared.store.finalizing`), the read SQL too (:mod:`shared.store.sql`).
What differs is concurrency, since here many processes write at once: :mod:`.writer` explains the locking.

The writer's trace cache is only used from the event loop, and a state is out of the cache while a
transaction uses it: it goes back only after the commit, so a failed or retried transaction can never
leave a state in the cache that the database does not hold.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Final, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
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
from shared.store.postgres import reader, writer
from shared.store.postgres.migrate import create_or_migrate
from shared.store.postgres.writer import pg_text, py_text
from shared.store.rollups import Contribution
from shared.store.writing import group_batch

T = TypeVar("T")
RETRIES: Final = 10
"""Attempts of a write transaction that hit a deadlock, a serialization failure or a ``Conflict``. Four
writers creating the same traces at once on a loaded 2-core machine once conflicted six times in a row
(each attempt can meet a trace that yet another writer created meanwhile); the waits between attempts
grow to :data:`RETRY_MAX_S`, at most about 1.5 s in all."""
RETRY_MAX_S: Final = 0.25
PURGE_CHUNK: Final = 2000  # traces deleted per purge transaction

_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError, writer.Conflict)
_json: Final = msgspec.json.Encoder()

__all__ = ["PostgresStore", "pg_text", "py_text"]


class PostgresStore:
    """The shared store: any number of worker and API processes may use one database at once."""

    def __init__(self, pool: asyncpg.Pool, *, cache_bytes: int = 0) -> None:
        self._pool = pool
        self.cache = TraceCache(cache_bytes) if cache_bytes > 0 else None

    shared_by_processes = True
    """Another process can open this store (see :func:`ingest.finalizer.client.separate_finalizer`)."""
    concurrent_finalizes = 2
    """How many ``finalize`` calls a finalizer process runs at once, each on its own connection and its own
    share of a round's traces: one is analyzed while the server writes the other's rows (a round's
    transaction spends about half its time waiting for the server). Safe as any two workers' rounds are:
    the rows are locked ``FOR UPDATE SKIP LOCKED``, and the rollup rows in key order."""

    @classmethod
    async def open(cls, url: str, *, min_size: int = 1, max_size: int = 10, cache_bytes: int = 0) -> PostgresStore:
        """Connect (a pool) and create or migrate the schema; several processes may do this at once.
        ``cache_bytes`` > 0 keeps the writer's copy of recent traces (workers)."""
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        # Query parameters of the URL that asyncpg does not know are server settings (e.g. search_path);
        # they win over these defaults. JIT only adds latency to short statements like ours.
        given = parse_qs(urlsplit(url).query)
        defaults = {"jit": "off", "work_mem": "64MB", "application_name": "tracing"}
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            server_settings={k: v for k, v in defaults.items() if k not in given},
        )
        try:
            async with pool.acquire() as conn:
                await create_or_migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, cache_bytes=cache_bytes)

    # -- plumbing -------------------------------------------------------------------------------------

    async def _write(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` in one READ COMMITTED transaction; retry it whole (up to :data:`RETRIES` times) on
        deadlock, serialization failure or :class:`~shared.store.postgres.writer.Conflict`."""
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    return await fn(conn)
            except _RETRYABLE:
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(min(RETRY_MAX_S, random.uniform(0.005, 0.02) * 2**attempt))
        raise AssertionError("unreachable")

    async def _read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` in one read-only REPEATABLE READ transaction (one consistent snapshot)."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await fn(conn)

    async def check(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def close(self) -> None:
        await self._pool.close()

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
        done = await self._write(
            lambda c: writer.write_batch(
                c, self.cache, batch, shards=shards, now_us=now_us, grace_us=grace_us, idle_us=idle_us
            )
        )
        if self.cache is not None:  # committed: the states are the stored ones now
            for trace_id, state in done.states.items():
                self.cache.put(trace_id, done.tids[trace_id], state)
        return done.plan.result

    async def due_traces(self, shards: Collection[str], now_us: int, limit: int) -> list[str]:
        if not shards:
            return []
        rows = await self._pool.fetch(
            "SELECT trace_id FROM traces WHERE state = 'active' AND due_us <= $1 AND shard = ANY($2::text[])"
            " ORDER BY due_us LIMIT $3",
            now_us,
            list(shards),
            limit,
        )
        return [r[0] for r in rows]

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
        done = await self._write(lambda c: writer.finalize(c, self.cache, trace_ids, now_us=now_us, sampler=sampler))
        if self.cache is not None:
            dropped = {trace_id for trace_id, _, _ in done.plan.dropped}
            for trace_id, state in done.states.items():
                if trace_id not in dropped:
                    self.cache.put(trace_id, done.tids[trace_id], state)
        if on_first is not None and done.plan.first:
            on_first(done.plan.first)
        return done.plan.analyses

    async def purge(self, before_us: int, *, shards: Collection[str] | None = None) -> int:
        total = 0
        while True:  # in chunks: short transactions, and traces being written or finalized are skipped
            purged = await self._write(lambda c: writer.purge(c, before_us, PURGE_CHUNK))
            if self.cache is not None:
                self.cache.discard(purged)
            total += len(purged)
            if len(purged) < PURGE_CHUNK:
                return total

    async def record_heartbeat(self, heartbeat: Heartbeat) -> None:
        await self._pool.execute(
            "INSERT INTO heartbeats VALUES ($1, $2, $3) ON CONFLICT (worker_id) DO UPDATE SET"
            " updated_us = excluded.updated_us, body = excluded.body",
            pg_text(heartbeat.worker_id),
            heartbeat.updated_at_us,
            _json.encode(heartbeat).decode(),
        )

    # -- reads ----------------------------------------------------------------------------------------

    async def heartbeats(self, *, newer_than_us: int = 0) -> list[Heartbeat]:
        return await self._read(lambda c: reader.heartbeats(c, newer_than_us))

    async def get_trace(self, trace_id: str) -> StoredTrace | None:
        return await self._read(lambda c: reader.get_trace(c, trace_id))

    async def trace_of_span(self, span_id: str) -> str | None:
        return await self._read(lambda c: reader.trace_of_span(c, span_id))

    async def find_traces(self, query: TraceQuery) -> list[TraceSummary]:
        return await self._read(lambda c: reader.find_traces(c, query))

    async def stats(self, *, slowest: int = 5, window: Window | None = None) -> StoreStats:
        return await self._read(lambda c: reader.stats(c, slowest=slowest, window=window))

    async def rollups(
        self,
        series: Literal["operations", "endpoints"],
        window: Window | None,
        *,
        step_us: int | None = None,
        service: str | None = None,
        operation: str | None = None,
    ) -> list[RollupRow]:
        return await self._read(
            lambda c: reader.rollups(c, series, window, step_us=step_us, service=service, operation=operation)
        )

    async def critical_contexts(
        self, window: Window | None, *, service: str | None = None, operation: str | None = None
    ) -> list[ContextRow]:
        return await self._read(lambda c: reader.critical_contexts(c, window, service=service, operation=operation))

    async def slow_trace_contexts(
        self, service: str, operation: str, window: Window | None, *, min_duration_us: int, limit: int
    ) -> TailContexts:
        return await self._read(
            lambda c: reader.slow_trace_contexts(
                c, service, operation, window, min_duration_us=min_duration_us, limit=limit
            )
        )

    async def services(self) -> list[str]:
        return await self._read(reader.services)

    async def operations(self, service: str) -> list[str]:
        return await self._read(lambda c: reader.operations(c, service))

    async def operation_kinds(self, service: str) -> list[tuple[str, str]]:
        return await self._read(lambda c: reader.operation_kinds(c, service))

    async def dependencies(self, since_us: int = 0, until_us: int | None = None) -> list[Dependency]:
        return await self._read(lambda c: reader.dependencies(c, since_us, until_us))
