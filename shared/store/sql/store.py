"""The :class:`~shared.store.base.TraceStore` methods of the SQL backends, written once over two
transaction runners a backend supplies: :meth:`SqlStore._commit` (a write transaction) and
:meth:`SqlStore._snapshot` (a read transaction), each handing the algorithm a driver on its connection.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import time
from abc import abstractmethod
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Final, TypeVar

import msgspec

from shared.analysis import TraceAnalysis, analyze_aside
from shared.gc_tuning import trim_malloc
from shared.sampling import Sampler
from shared.store.backend import Backend
from shared.store.base import (
    ArchivedBlock,
    Heartbeat,
    StoredTrace,
    WriteResult,
)
from shared.store.cache import TraceCache
from shared.store.encoding import Dictionaries, train
from shared.store.rollups import Contribution
from shared.store.sql import archive, dicts, writer
from shared.store.sql.driver import Job, SqlDriver
from shared.store.sql.reader import SqlReader
from shared.store.writing import WriteBatch

T = TypeVar("T")

HEARTBEAT: Final = (
    "INSERT INTO heartbeats VALUES (?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET"
    " updated_us = excluded.updated_us, body = excluded.body"
)

_json: Final = msgspec.json.Encoder()


def _ignore(_: object) -> None:
    pass


class SqlStore(Backend, SqlReader):
    """A SQL backend's store: the contract's methods, over the backend's transactions and driver."""

    cache: TraceCache | None
    dicts: Dictionaries
    """The zstd dictionaries of the chunks this store read or writes (loaded on the store's thread)."""
    _samples: list[bytes] | None = None
    """Chunk payloads a write handed over, to train the writer's dictionary from before the next write."""
    purge_by_owner = False
    purge_chunk: int
    """Traces deleted per purge transaction (short transactions: writers are not held up for long)."""
    _unswept_us: int | None = None
    """The latest start of a trace this store moved to the archive whose ``op_index`` and ``tag_index``
    rows no sweep has passed yet: purges sweep, even when they delete nothing, until one passes it."""
    _planner: ProcessPoolExecutor | None = None
    """The process that plans large purge rounds (:data:`writer.PLAN_APART_MIN`), started at the first."""
    _sweep_pending: bool = False
    """Whether traces were purged since the last sweep."""
    _swept_at: float | None = None
    """When this store last swept the search indexes (``time.monotonic()`` s; ``None``: never)."""

    @abstractmethod
    async def _commit(self, job: Job[T], committed: Callable[[T], None] = _ignore) -> T:
        """Run ``job`` in one write transaction; once it committed, ``committed(result)``, where the cache
        is used (the backend's connection thread, or the event loop)."""

    async def _planned(self, trace_ids: Sequence[str], sampler: Sampler | None) -> writer.Planned | None:
        """A finalize round planned before its write transaction, or ``None`` (planned inside it)."""
        return None

    # -- writes ---------------------------------------------------------------------------------------

    async def _write(self, batch: WriteBatch) -> WriteResult:
        cache = self.cache
        samples, self._samples = self._samples, None
        if samples is not None:
            await self._train(samples)
        done = await self._commit(
            lambda d: writer.write_batch(d, cache, batch), _ignore if cache is None else lambda w: w.remember(cache)
        )
        if done.samples is not None:  # never cleared here: a write beside this one may have handed some over
            self._samples = done.samples
        return done.plan.result

    async def _train(self, samples: list[bytes]) -> None:
        """Train a dictionary from the chunks written so far (in a thread: about 0.2 s), store it in a
        transaction of its own, then compress with it (:mod:`.dicts`)."""
        body = await asyncio.to_thread(train, samples)
        own = self.dicts
        if body is None:
            own.stop_sampling()
            return
        await self._commit(lambda d: dicts.store(d, body), lambda ident: own.use(ident, body))

    async def _finalize(
        self, trace_ids: Sequence[str], now_us: int, sampler: Sampler | None
    ) -> tuple[list[TraceAnalysis], list[Contribution]]:
        cache = self.cache
        planned = await self._planned(trace_ids, sampler)
        done = await self._commit(
            lambda d: writer.finalize(d, cache, trace_ids, now_us=now_us, sampler=sampler, planned=planned),
            _ignore if cache is None else lambda f: f.remember(cache),
        )
        return done.plan.analyses, done.plan.first

    async def purge(self, before_us: int, *, shards: Collection[str] | None = None) -> int:
        cache, limit = self.cache, self.purge_chunk
        total = 0
        while True:  # in chunks: short transactions, and traces being written or finalized are skipped
            planned = await self._purge_planned(before_us, limit)
            if planned is None:
                break
            purged = await self._commit(
                functools.partial(writer.purge, before_us=before_us, limit=limit, planned=planned),
                _ignore if cache is None else lambda p: cache.discard(p.ids),
            )
            total += len(purged.ids)
            if not purged.more:
                break
        await self._trim_planner()
        self._sweep_pending = self._sweep_pending or total > 0 or self._unswept_us is not None
        if self._sweep_pending and self._sweep_due(before_us):
            await self._sweep(before_us)
        return total

    def _sweep_due(self, before_us: int) -> bool:
        """Whether the search indexes are swept now: at the first purge, then once
        :data:`writer.SWEEP_SHARE` of the retention (``before_us``'s age) passed since the last sweep."""
        swept_at = self._swept_at
        if swept_at is None:
            return True
        retention_s = max(0.0, time.time() - before_us / 1e6)
        return time.monotonic() - swept_at >= writer.SWEEP_SHARE * retention_s

    async def _sweep(self, before_us: int) -> None:
        """The ``op_index`` and ``tag_index`` rows of the traces purged or archived before ``before_us``
        out: one pass per hash slice, a transaction each."""
        unswept = self._unswept_us
        if unswept is not None and unswept < before_us:
            self._unswept_us = None
        self._sweep_pending = self._unswept_us is not None
        for low, high in writer.sweep_slices():
            await self._commit(functools.partial(writer.sweep_index, before_us=before_us, low=low, high=high))
        self._swept_at = time.monotonic()

    async def _purge_planned(self, before_us: int, limit: int) -> writer.PurgePlan | None:
        """A purge round planned before its write transaction so that writers are not held up by it: its
        candidates and their chunks read in a read transaction, their shares derived and their correction
        summed on a thread of their own (the store's thread, or the event loop, goes on meanwhile);
        ``None`` when there is nothing to purge. The write transaction uses it for the rows unchanged
        since."""
        rows, chunks, bodies = await self._snapshot(lambda d: writer.purge_reads(d, before_us, limit))
        if not rows:
            return None
        if len(chunks) < writer.PLAN_APART_MIN:
            return await asyncio.to_thread(writer.plan_purge_apart, rows, chunks, bodies)
        planner = self._planner
        if planner is None:  # started at the first large round: spawned, not forked from a threaded process
            planner = self._planner = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return await asyncio.get_running_loop().run_in_executor(
                planner, writer.plan_purge_apart, rows, chunks, bodies
            )
        except BrokenProcessPool:  # the process died: this purge fails, the next starts another
            self._planner = None
            planner.shutdown(wait=False)
            raise

    async def _trim_planner(self) -> None:
        """The purge planner process's free pages back to the system: the chunks of the rounds it was
        handed are freed only once each call returned, so it trims in a call of its own."""
        planner = self._planner
        if planner is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(planner, trim_malloc)
        except BrokenProcessPool:  # the next large round starts another
            self._planner = None
            planner.shutdown(wait=False)

    async def _close_planner(self) -> None:
        """Stop the purge planner process, if one was started."""
        planner, self._planner = self._planner, None
        if planner is not None:
            await asyncio.to_thread(planner.shutdown, True)

    # -- archive --------------------------------------------------------------------------------------

    async def archive_due(self, before_us: int, *, shard: str, limit: int) -> list[StoredTrace]:
        traces = await self._snapshot(lambda d: archive.due_traces(d, before_us, shard, limit))
        return [msgspec.structs.replace(t, analysis=await analyze_aside(t.trace_id, t.spans)) for t in traces]

    async def register_block(self, block: ArchivedBlock, trace_ids: Sequence[str]) -> None:
        cache = self.cache
        await self._commit(lambda d: archive.register(d, block, trace_ids), _ignore if cache is None else cache.discard)
        self._unswept_us = max(block.end_us, self._unswept_us or block.end_us)

    async def archived_blocks(self, *, start_us: int | None = None, end_us: int | None = None) -> list[ArchivedBlock]:
        return await self._snapshot(lambda d: archive.blocks(d, start_us, end_us))

    async def drop_blocks(self, names: Sequence[str]) -> None:
        if names:
            await self._commit(lambda d: archive.drop(d, names))

    async def pin_trace(self, trace_id: str) -> None:
        now_us = time.time_ns() // 1000
        await self._commit(lambda d: archive.pin(d, trace_id, now_us))

    async def pinned_traces(self) -> set[str]:
        return await self._snapshot(archive.pins)

    async def record_heartbeat(self, heartbeat: Heartbeat) -> None:
        body = _json.encode(heartbeat).decode()

        async def job(d: SqlDriver) -> None:
            await d.execute(
                d.dialect.sql(HEARTBEAT), [d.dialect.text(heartbeat.worker_id), heartbeat.updated_at_us, body]
            )

        await self._commit(job)
