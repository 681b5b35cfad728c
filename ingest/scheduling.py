"""When and where this worker's finalize rounds run: one scheduler for both paths, the worker's finalizer
process (docs/adr/0003-finalizer-process.md) or this process."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from typing import Final

from ingest.finalizer.client import FinalizerError, FinalizerProcess
from ingest.finalizer.protocol import RoundDone
from ingest.metrics import WorkerCounters, WorkerMetrics
from ingest.ownership import Ownership
from ingest.store_full import StoreFull, log_failure
from shared.clock import now_us
from shared.gc_tuning import Trimmer
from shared.lifecycle import Backoff, sleep_unless_stopped
from shared.sampling import sampler_for
from shared.settings import Settings
from shared.store import TraceStore

log = logging.getLogger("ingest.worker")

ROUND_SPACING_S: Final = 0.02
"""The finalize loop's rounds start at least this far apart (see :meth:`Wakeups.next_round_in`): at a high
rate a batch is written every few ms, and a round per batch would spend the worker on round trips."""


class Wakeups:
    """When the traces this worker wrote become due (µs), as a min-heap: a batch's write time plus the grace
    window, the latest due time ``TraceStore.write_batch`` gives a trace whose root finished. Only a hint
    for when to wake: the store's due scan decides what is due."""

    def __init__(self) -> None:
        self._due: list[int] = []

    def __len__(self) -> int:
        return len(self._due)

    def add(self, due_us: int) -> None:
        heapq.heappush(self._due, due_us)

    def next_round_in(self, covered_us: int, interval: float) -> float:
        """Seconds until the next finalize round: when the next trace this worker wrote becomes due (so a
        trace is finalized as its grace window ends, not up to a tick later), at most ``interval`` (traces
        due by idle timeout, or written by other workers), and not before :data:`ROUND_SPACING_S` after
        the last round started. ``covered_us``: when the last round started; it finalized everything due
        by then (those due times are dropped)."""
        due = self._due
        while due and due[0] <= covered_us:
            heapq.heappop(due)
        if not due:
            return interval
        now = now_us()
        soonest = (covered_us - now) / 1e6 + ROUND_SPACING_S
        return min(interval, max(0.0, soonest, (due[0] - now) / 1e6 + 0.001))


class FinalizeScheduler:
    """Finalizes the due traces of the shards this worker owns, one round at a time under
    :attr:`Ownership.finalizing`: in ``process`` (the worker's finalizer process) when there is one, else
    in this process on ``store``. Rounds run from :meth:`run`'s loop and, with a trace cache and no
    process, before each fetch (:meth:`catch_up`)."""

    def __init__(
        self,
        settings: Settings,
        store: TraceStore,
        ownership: Ownership,
        counters: WorkerCounters,
        metrics: WorkerMetrics,
        process: FinalizerProcess | None,
        *,
        store_full: StoreFull,
    ) -> None:
        self.process = process
        self._store_full = store_full
        self.wakeups = Wakeups()
        self._store = store
        self._ownership = ownership
        self._counters = counters
        self._metrics = metrics
        self._sampler = sampler_for(settings)
        self._limit = settings.finalize_batch
        self._grace_us = settings.grace_us
        self._interval = min(0.25, max(0.02, settings.grace_ms / 4000))
        self._catches_up = store.cache is not None and process is None

    async def start(self) -> None:
        """Start the finalizer process, if any, so that it is ready before the first round (a round would
        start it too: a failure here is logged and retried by the rounds)."""
        if self.process is not None:
            try:
                await self.process.start()
            except FinalizerError as exc:
                log.warning("%s; finalize rounds will retry", exc)

    async def stop(self) -> None:
        """Stop the finalizer process, if any (it ends a round in flight first)."""
        if self.process is not None:
            await self.process.stop()

    def written(self, written_us: int) -> None:
        """A batch written at ``written_us`` (µs) changed spans: a root finished in it is due one grace
        window after the write, at the latest."""
        self.wakeups.add(written_us + self._grace_us)

    async def finalize_due(self) -> int:
        """Finalize every trace of this worker's shards that is due now, in rounds of up to
        ``finalize_batch``; returns how many. Each round's traces are counted as it ends, so those of
        rounds before a failed one count too. Raises what the store (or the process) raised."""
        before = self._counters.traces_finalized
        async with self._ownership.finalizing:
            if self.process is not None:
                await self._finalize_in_child(self.process)
            else:
                await self._finalize_here()
        return self._counters.traces_finalized - before

    async def _finalize_in_child(self, process: FinalizerProcess) -> None:
        shards = self._ownership.shards
        if not shards:
            return
        errors: list[str] = []

        def counted(done: RoundDone, seconds: float) -> None:
            self._metrics.spans.add(done.span_sums)
            self._count(done.due, done.finalized, seconds)
            if done.error is not None:
                errors.append(done.error)

        await process.rounds(lambda: sorted(shards), self._limit, counted)
        if errors:  # after counting what the rounds did finalize
            raise FinalizerError(errors[0])

    async def _finalize_here(self) -> None:
        shards, store = self._ownership.shards, self._store
        if shards and self._sampler is not None:
            await self._sampler.refresh(store, now_us())
        while shards:
            started = time.perf_counter()
            due_ids = await store.due_traces(set(shards), now_us(), self._limit)
            analyses = await store.finalize(
                due_ids, now_us=now_us(), sampler=self._sampler, on_first=self._metrics.spans.observe
            )
            self._count(len(due_ids), len(analyses), time.perf_counter() - started)
            if len(due_ids) < self._limit:
                return

    def _count(self, due: int, finalized: int, seconds: float) -> None:
        self._counters.traces_finalized += finalized
        if due:
            self._metrics.finalize_seconds.observe(seconds)

    async def finalize_or_log(self) -> bool:
        """:meth:`finalize_due`, a failure logged (a full store once, see :mod:`ingest.store_full`): the
        store may be briefly unavailable, and the traces stay due in it. False when it failed."""
        try:
            await self.finalize_due()
        except Exception as exc:
            log_failure("finalize", exc, self._store_full)
            return False
        self._store_full.succeeded("finalize")
        return True

    async def catch_up(self) -> None:
        """Before a fetch: finalize what is due when this process finalizes from its trace cache, so that
        a backlog's fetches do not run ahead of finalization and evict the traces it is about to finalize
        (docs/adr/0004-trace-cache.md). A finalizer process reads its traces back: nothing to do then."""
        if self._catches_up and self._ownership.shards:
            await self.finalize_or_log()

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set, each started when :meth:`Wakeups.next_round_in` says, or after a
        failed round, with a back-off (twice the interval, doubling up to 10 s)."""
        backoff = Backoff(first_s=2 * self._interval)
        trim = Trimmer()  # what the batches, rounds and purges of this process freed, back to the system
        while not stop.is_set():
            started_us = now_us()
            if await self.finalize_or_log():
                backoff.reset()
                wait = self.wakeups.next_round_in(started_us, self._interval)
            else:
                wait = backoff.next()
            await trim()
            await sleep_unless_stopped(stop, wait)
