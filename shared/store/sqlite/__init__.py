"""SQLite backend: the embedded default. One file, WAL, one writer connection per process.

All SQL of a call runs in one dedicated thread (one handoff per transaction, never per row); the
writer's trace cache (:class:`~shared.store.cache.TraceCache`) is only touched from that thread. The
algorithms are the SQL backends' (:mod:`shared.store.sql`); what is SQLite's is the layout
(:mod:`.schema`), its SQL (:mod:`.driver`), and here the connection, its thread, the writer lock and the
checkpointer (docs/adr/0005-sqlite-writer-lock-and-wal.md).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec

from shared.sampling import Sampler
from shared.store.cache import TraceCache
from shared.store.encoding import Dictionaries
from shared.store.sql import writer
from shared.store.sql.driver import Job, run_sync
from shared.store.sql.store import SqlStore, _ignore
from shared.store.sqlite.driver import DIALECT, SqliteDriver, add_functions, create_or_migrate

T = TypeVar("T")
PURGE_CHUNK: Final = 2000
"""Traces deleted per purge transaction (short transactions: writers are not held up for long). Also what
a worker holds at once for a round (candidates, chunks, the plan): 5,000 made each round a passing peak
of tens of MiB that the worker's resident memory kept."""
WAL_TRUNCATE_WAIT_MS: Final = 200
"""How long emptying the log waits for readers to move to the newest snapshot (writers wait meanwhile);
past that it gives up until the next turn."""
PAGE_SIZE: Final = 16384
"""Bytes a page of a new file (SQLite's default is 4096). A chunk or trace row of a few KiB shares a page
with its neighbours instead of spilling into overflow pages: 7% fewer bytes a span on the demo workload,
9% on the realistic one (``python -m bench.layout``)."""
PAGE_CACHE_KIB: Final = 32768
"""SQLite's page cache of a connection that serves reads (the API, a worker's finalizer process)."""
WORKER_PAGE_CACHE_KIB: Final = 8192
"""A worker's: its trace cache already holds the states it reads back, so what it reads from the file
is index pages."""


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


class SqliteStore(SqlStore):
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
        self.dicts = Dictionaries()
        self.shared_by_processes = path != ":memory:"
        """Another process can open this store when it is a file (not ``:memory:``)."""

    dialect = DIALECT
    concurrent_finalizes = 1
    """One writer at a time: shares of a round would only queue on the write lock."""
    purge_chunk = PURGE_CHUNK

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
            add_functions(conn)
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a new file's; an existing one keeps its own
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

        Writers of a file first queue on the writer lock (:func:`writer_lock_path`, ``flock``), which the
        kernel hands over the moment its holder commits; SQLite's own lock, taken right after, stays the one
        that makes the transactions safe (docs/adr/0005-sqlite-writer-lock-and-wal.md).

        A failed statement or COMMIT is rolled back unless SQLite already did so itself (it does on a full
        disk): the error raised is the one that failed, never a "cannot rollback" hiding it."""
        conn = self._conn
        assert conn is not None, "store is closed"
        lock = self._writer_lock
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLITE_FULL and SQLITE_IOERR roll the transaction back themselves
                    conn.execute("ROLLBACK")
                raise
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

    async def _commit(self, job: Job[T], committed: Callable[[T], None] = _ignore) -> T:
        def run() -> T:
            result = self._tx(lambda c: run_sync(job(SqliteDriver(c, self.dicts))))
            committed(result)  # on this thread, the only one that touches the cache
            return result

        return await self._run(run)

    async def _snapshot(self, job: Job[T]) -> T:
        return await self._run(self._read, lambda c: run_sync(job(SqliteDriver(c, self.dicts))))

    async def check(self) -> None:
        await self._run(self._read, lambda c: c.execute("SELECT 1").fetchone())

    def _checkpoint_loop(self, settings: Checkpoints) -> None:
        """PASSIVE checkpoints from a second connection: they copy WAL pages into the database file while
        writers go on appending (never blocking them); a checkpoint that meets a lock just waits a turn.

        A PASSIVE checkpoint never lets the log start over under a steady load, so when the log is over
        ``settings.wal_limit_bytes`` after a turn, a TRUNCATE checkpoint copies the few frames the turn
        left, with new writers held back, and empties the file. It waits at most
        :data:`WAL_TRUNCATE_WAIT_MS` for readers of an older snapshot, else tries again next turn
        (docs/adr/0005-sqlite-writer-lock-and-wal.md)."""
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
                    pass  # busy (or the disk is full): the next turn catches up
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError:
                pass  # the log stays; the next connection to open the file checkpoints it
        finally:
            conn.close()

    async def close(self) -> None:
        await self._close_planner()
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

    # -- the finalizer's SQL -------------------------------------------------------------------------

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

    async def _planned(self, trace_ids: Sequence[str], sampler: Sampler | None) -> writer.Planned | None:
        """With no copy of the states here (a finalizer process), the round is planned in a read
        transaction, reading the chunks back, so that the writer of the spans is not held up by it; the
        write transaction uses the plan if the rows are unchanged."""
        if self.cache is not None:
            return None
        return await self._snapshot(lambda d: writer.plan_round(d, None, trace_ids, sampler=sampler))
