"""PostgreSQL backend (asyncpg): one database shared by many ingest workers and API replicas.

The algorithms are the SQL backends' (:mod:`shared.store.sql`); what is PostgreSQL's is the layout
(:mod:`.schema`), its SQL and the locking that lets many processes write at once (:mod:`.driver`), and
here the pool and its transactions, retried whole on a deadlock or a conflict.

The writer's trace cache is only used from the event loop, and a state is out of the cache while a
transaction uses it: it goes back only after the commit, so a failed or retried transaction can never
leave a state in the cache that the database does not hold.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection
from typing import Final, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg

from shared.store.cache import TraceCache
from shared.store.encoding import Dictionaries
from shared.store.postgres.driver import DIALECT, Conflict, PostgresDriver, create_or_migrate, pg_text, py_text
from shared.store.sql.driver import Job
from shared.store.sql.store import SqlStore, _ignore

T = TypeVar("T")
RETRIES: Final = 10
"""Attempts of a write transaction that hit a deadlock, a serialization failure or a ``Conflict``; the
waits between attempts grow to :data:`RETRY_MAX_S`, at most about 1.5 s in all."""
RETRY_MAX_S: Final = 0.25
PURGE_CHUNK: Final = 2000  # traces deleted per purge transaction

_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError, Conflict)

__all__ = ["PostgresStore", "pg_text", "py_text"]


class PostgresStore(SqlStore):
    """The shared store: any number of worker and API processes may use one database at once."""

    def __init__(self, pool: asyncpg.Pool, *, cache_bytes: int = 0) -> None:
        self._pool = pool
        self.cache = TraceCache(cache_bytes) if cache_bytes > 0 else None
        self.dicts = Dictionaries()

    shared_by_processes = True
    """Any number of processes share the database."""
    concurrent_finalizes = 2
    """A finalizer process's round in two shares, each on its own connection: one is analyzed while the
    server writes the other's rows (docs/adr/0006-postgres-rounds-in-two-shares.md). Safe as any two
    workers' rounds are: the rows are locked ``FOR UPDATE SKIP LOCKED``, and the rollup rows in key order."""
    purge_chunk = PURGE_CHUNK
    dialect = DIALECT

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

    async def _commit(self, job: Job[T], committed: Callable[[T], None] = _ignore) -> T:
        """One READ COMMITTED transaction; retried whole (up to :data:`RETRIES` times) on deadlock,
        serialization failure or :class:`~shared.store.postgres.driver.Conflict`."""
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    result = await job(PostgresDriver(conn, self.dicts))
            except _RETRYABLE:
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(min(RETRY_MAX_S, random.uniform(0.005, 0.02) * 2**attempt))
            else:
                committed(result)
                return result
        raise AssertionError("unreachable")

    async def _snapshot(self, job: Job[T]) -> T:
        """One read-only REPEATABLE READ transaction (one consistent snapshot)."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await job(PostgresDriver(conn, self.dicts))

    async def check(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def close(self) -> None:
        await self._close_planner()
        await self._pool.close()

    # -- the finalizer's SQL -------------------------------------------------------------------------

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
