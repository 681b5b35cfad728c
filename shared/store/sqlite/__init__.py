"""SQLite backend: the embedded default. One file, WAL, one writer connection per process.

All SQL of a call runs in one dedicated thread (one handoff per transaction, never per row); the
writer's trace cache (:class:`~shared.store.cache.TraceCache`) is only touched from that thread. The
layout is :mod:`shared.store.sqlite.schema`; writes are :mod:`.writer`, reads :mod:`.reader`.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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
from shared.store.sqlite import reader, writer
from shared.store.sqlite.migrate import create_or_migrate
from shared.store.writing import group_batch

T = TypeVar("T")
PURGE_CHUNK: Final = 5000
"""Traces deleted per purge transaction (short transactions: writers are not held up for long)."""
WAL_TRUNCATE_WAIT_MS: Final = 200
"""How long emptying the log waits for readers to move to the newest snapshot (writers wait meanwhile);
past that it gives up until the next turn."""
PAGE_CACHE_KIB: Final = 32768
"""SQLite's page cache of a connection that serves reads (the API, a worker's finalizer process)."""
WORKER_PAGE_CACHE_KIB: Final = 8192
"""A worker's: its trace cache already holds the states it reads back, so what it reads from the file
is index pages; with 100k active traces (bench f) a 32 MiB page cache was a tenth of its peak RSS."""


class Checkpoints(msgspec.Struct, frozen=True, kw_only=True):
    """The checkpointer thread's settings (see :meth:`SqliteStore._checkpoint_loop`)."""

    interval_s: float = 0.5
    """How often it copies the write-ahead log into the database file."""
    wal_limit_bytes: int = 64 << 20
    """When the log is larger than this after a turn, it empties the log."""


CHECKPOINTS: Final = Checkpoints()


_json: Final = msgspec.json.Encoder()


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs.db`` → ``/abs.db``; ``sqlite:///:memory:``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return url[len(prefix) :] or ":memory:"


def writer_lock_path(path: str) -> str:
    """The file beside the database that its writers queue on (see :meth:`SqliteStore._tx`); empty, and
    safe to delete while no process has the store open."""
    return path + "-lock"


def file_size(path: Path) -> int:
    """The file's size in bytes; 0 when it does not exist (a write-ahead log before the first write)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class SqliteStore:
    """The embedded store. Safe for one writer process plus any number of reader processes (WAL); several
    writer processes work too (one transaction at a time), each with its own cache, which then mostly
    misses."""

    def __init__(
        self,
        path: str,
        *,
        cache_bytes: int = 0,
        checkpoints: Checkpoints | None = CHECKPOINTS,
        page_cache_kib: int = PAGE_CACHE_KIB,
    ) -> None:
        self._path = path
        self._page_cache_kib = page_cache_kib
        self._checkpoints = checkpoints
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._stop_checkpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._writer_lock: int | None = None
        self.cache = TraceCache(cache_bytes) if cache_bytes > 0 else None
        self.shared_by_processes = path != ":memory:"
        """Whether another process can open this store (a file, not ``:memory:``)."""

    concurrent_finalizes = 1

    @classmethod
    async def open(
        cls,
        url_or_path: str,
        *,
        cache_bytes: int = 0,
        checkpoints: Checkpoints | None = CHECKPOINTS,
        page_cache_kib: int = PAGE_CACHE_KIB,
    ) -> SqliteStore:
        """Open (creating or migrating the file). ``cache_bytes`` > 0 keeps the writer's copy of recent
        traces (workers); readers need none. ``checkpoints``: the checkpointer thread's settings, which
        keeps the write-ahead log bounded; None when another connection to the file runs one (see
        :func:`shared.store.open_store`). ``page_cache_kib``: SQLite's page cache of the connection."""
        path = sqlite_path(url_or_path) if url_or_path.startswith("sqlite:") else url_or_path
        store = cls(path, cache_bytes=cache_bytes, checkpoints=checkpoints, page_cache_kib=page_cache_kib)
        await store._run(store._connect)
        return store

    # -- plumbing -------------------------------------------------------------------------------------

    def _connect(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=30.0)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = -{int(self._page_cache_kib)}")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA busy_timeout = 30000")
            create_or_migrate(conn, self._path)
        except BaseException:
            conn.close()
            raise
        if self._path != ":memory:":
            # Checkpoints (the only fsyncs with synchronous=NORMAL) run in a thread of their own instead of
            # inside whichever commit crosses the WAL threshold: the write path never waits for one.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._writer_lock = os.open(writer_lock_path(self._path), os.O_RDWR | os.O_CREAT, 0o644)
        if self._path != ":memory:" and self._checkpoints is not None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(self._checkpoints,), name="sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()
        self._conn = conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction (BEGIN IMMEDIATE: takes the write lock up front).

        Writers of a file first queue on the writer lock (:func:`writer_lock_path`, ``flock``): the
        kernel hands it over the moment its holder commits. SQLite's own lock, taken by ``BEGIN
        IMMEDIATE`` right after, stays the one that makes the transactions safe; but a writer that finds
        it taken polls it, sleeping 1, 2, 5, 10, 15, 20, 25 ms... between tries, and so woke up to 13 ms
        after the other process's commit. In a 6.5 s drain of one span per message, a worker and its
        finalizer process, both writing all the time, spent 0.7-1.1 s and 0.4-0.6 s in those waits; the
        finalizer process is the bottleneck of a drain, and the lock made it 1.09x faster (median of 4
        interleaved pairs, ``bench/pairs.py --wire native-span``)."""
        conn = self._conn
        assert conn is not None, "store is closed"
        lock = self._writer_lock
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one read transaction (a consistent snapshot)."""
        conn = self._conn
        assert conn is not None, "store is closed"
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    async def check(self) -> None:
        await self._run(self._read, lambda c: c.execute("SELECT 1").fetchone())

    def _checkpoint_loop(self, settings: Checkpoints) -> None:
        """PASSIVE checkpoints from a second connection: they copy WAL pages into the database file while
        writers go on appending (never blocking them); a checkpoint that meets a lock just waits a turn.

        A PASSIVE checkpoint never lets the log start over: that needs a turn that copied every frame, and
        then a writer that begins before anyone appends. Under a steady load (a batch every few ms, the
        finalizer process's rounds, the API's reads) that moment never comes, and the log grew without
        bound: 1.25 GB after 4 minutes at 5,000 spans/s, beside an 889 MB database. So when the log is
        over ``settings.wal_limit_bytes`` after a turn, a TRUNCATE checkpoint copies the few frames the
        turn left, with new writers held back, and empties the file. It waits at most
        :data:`WAL_TRUNCATE_WAIT_MS` for readers of an older snapshot, else tries again next turn."""
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=30.0, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {WAL_TRUNCATE_WAIT_MS}")  # only TRUNCATE waits; PASSIVE never does
        wal = Path(self._path + "-wal")
        try:
            while not self._stop_checkpoints.wait(settings.interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    if file_size(wal) > settings.wal_limit_bytes:
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.OperationalError:
                    pass  # busy: the next turn catches up
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    async def close(self) -> None:
        self._stop_checkpoints.set()
        if self._writer_lock is not None:
            lock, self._writer_lock = self._writer_lock, None
            await self._run(os.close, lock)
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

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

        def job() -> WriteResult:
            done = self._tx(
                lambda c: writer.write_batch(
                    c, cache, batch, shards=shards, now_us=now_us, grace_us=grace_us, idle_us=idle_us
                )
            )
            if cache is not None:  # committed: the states are the stored ones now
                for trace_id, state in done.states.items():
                    cache.put(trace_id, done.tids[trace_id], state)
            return done.plan.result

        return await self._run(job)

    async def due_traces(self, shards: Collection[str], now_us: int, limit: int) -> list[str]:
        if not shards:
            return []
        shards_doc = _json.encode(list(shards)).decode()

        def read(c: sqlite3.Connection) -> list[str]:
            rows = c.execute(
                "SELECT trace_id FROM traces WHERE state = 'active' AND due_us <= ?1"
                " AND shard IN (SELECT value FROM json_each(?2)) ORDER BY due_us LIMIT ?3",
                (now_us, shards_doc, limit),
            ).fetchall()
            return [r[0] for r in rows]

        return await self._run(self._read, read)

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

        def job() -> writer.Finalized:
            planned = None
            if cache is None:
                # No copy of the states here (a finalizer process, see ingest/finalizer/): plan the round
                # in a read transaction, reading the chunks back, so that the writer of the spans is not
                # held up by it; the write transaction uses the plan if the rows are unchanged.
                planned = self._read(lambda c: writer.plan_round(c, None, trace_ids, sampler=sampler))
            done = self._tx(
                lambda c: writer.finalize(c, cache, trace_ids, now_us=now_us, sampler=sampler, planned=planned)
            )
            if cache is not None:
                dropped = {trace_id for trace_id, _, _ in done.plan.dropped}
                for trace_id, state in done.states.items():
                    if trace_id not in dropped:
                        cache.put(trace_id, done.tids[trace_id], state)
            return done

        done = await self._run(job)
        if on_first is not None and done.plan.first:
            on_first(done.plan.first)
        return done.plan.analyses

    async def purge(self, before_us: int, *, shards: Collection[str] | None = None) -> int:
        def job() -> int:
            total = 0
            while True:
                purged = self._tx(lambda c: writer.purge(c, before_us, PURGE_CHUNK))
                if self.cache is not None:
                    self.cache.discard(purged)
                total += len(purged)
                if len(purged) < PURGE_CHUNK:
                    return total

        return await self._run(job)

    async def record_heartbeat(self, heartbeat: Heartbeat) -> None:
        body = _json.encode(heartbeat).decode()

        def tx(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO heartbeats VALUES (?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET"
                " updated_us = excluded.updated_us, body = excluded.body",
                (heartbeat.worker_id, heartbeat.updated_at_us, body),
            )

        await self._run(self._tx, tx)

    # -- reads ----------------------------------------------------------------------------------------

    async def heartbeats(self, *, newer_than_us: int = 0) -> list[Heartbeat]:
        return await self._run(self._read, lambda c: reader.heartbeats(c, newer_than_us))

    async def get_trace(self, trace_id: str) -> StoredTrace | None:
        return await self._run(self._read, lambda c: reader.get_trace(c, trace_id))

    async def trace_of_span(self, span_id: str) -> str | None:
        return await self._run(self._read, lambda c: reader.trace_of_span(c, span_id))

    async def find_traces(self, query: TraceQuery) -> list[TraceSummary]:
        return await self._run(self._read, lambda c: reader.find_traces(c, query))

    async def stats(self, *, slowest: int = 5, window: Window | None = None) -> StoreStats:
        return await self._run(self._read, lambda c: reader.stats(c, slowest=slowest, window=window))

    async def rollups(
        self,
        series: Literal["operations", "endpoints"],
        window: Window | None,
        *,
        step_us: int | None = None,
        service: str | None = None,
        operation: str | None = None,
    ) -> list[RollupRow]:
        return await self._run(
            self._read,
            lambda c: reader.rollups(c, series, window, step_us=step_us, service=service, operation=operation),
        )

    async def critical_contexts(
        self, window: Window | None, *, service: str | None = None, operation: str | None = None
    ) -> list[ContextRow]:
        return await self._run(
            self._read, lambda c: reader.critical_contexts(c, window, service=service, operation=operation)
        )

    async def slow_trace_contexts(
        self, service: str, operation: str, window: Window | None, *, min_duration_us: int, limit: int
    ) -> TailContexts:
        return await self._run(
            self._read,
            lambda c: reader.slow_trace_contexts(
                c, service, operation, window, min_duration_us=min_duration_us, limit=limit
            ),
        )

    async def services(self) -> list[str]:
        return await self._run(self._read, reader.services)

    async def operations(self, service: str) -> list[str]:
        return await self._run(self._read, lambda c: reader.operations(c, service))

    async def operation_kinds(self, service: str) -> list[tuple[str, str]]:
        return await self._run(self._read, lambda c: reader.operation_kinds(c, service))

    async def dependencies(self, since_us: int = 0, until_us: int | None = None) -> list[Dependency]:
        return await self._run(self._read, lambda c: reader.dependencies(c, since_us, until_us))
