"""Retention: traces older than ``TRACING_RETENTION_H`` deleted by every worker, every
``TRACING_RETENTION_CHECK_S`` (idempotent; cheap when there is nothing to delete). Pinned traces are never
deleted (the store skips them).

With an archive (``TRACING_ARCHIVE_URL``), finalized traces leave the hot store by moving into it
(:mod:`ingest.archiving`), and the purge keeps what is due to move but not yet moved: its bound is the
older of the two ages (``TRACING_RETENTION_H``, ``TRACING_ARCHIVE_AFTER_H``), and it waits until this
worker's last archive round succeeded (every trace due then moved), so an object store away for longer than
the retention delays the purge rather than losing traces."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from ingest.archiving import HOUR_US, Archiver
from ingest.ownership import Ownership
from ingest.store_full import StoreFull, log_failure
from shared.clock import now_us
from shared.lifecycle import sleep_unless_stopped
from shared.settings import Settings
from shared.store import TraceStore

log = logging.getLogger("ingest.worker")


class Retention:
    """Purges the traces past the retention window from ``store``."""

    def __init__(
        self,
        settings: Settings,
        store: TraceStore,
        ownership: Ownership,
        store_full: StoreFull,
        archiver: Archiver | None = None,
    ) -> None:
        self._store_full = store_full
        self._archiver = archiver
        hours = settings.retention_h if archiver is None else max(settings.retention_h, settings.archive_after_h)
        self._retention_us = int(hours * HOUR_US)
        self._check_s = settings.retention_check_s
        self._store = store
        self._ownership = ownership

    async def purge_expired(self) -> int:
        """Delete traces older than the retention window (rollups corrected by the store); returns how
        many. On a store whose rollup rows have one writer per shard (``purge_by_owner``), the purge
        corrects them too, so it runs under :attr:`Ownership.finalizing`, like a finalize round: a revoked
        worker must not be purging while the next owner starts. Elsewhere it runs beside the finalize
        rounds (its transactions are short), which do not wait for the whole purge."""
        if self._archiver is not None and not self._archiver.caught_up():
            return 0
        before = now_us() - self._retention_us
        async with self._ownership.finalizing if self._store.purge_by_owner else contextlib.nullcontext():
            purged = await self._store.purge(before, shards=set(self._ownership.shards))
        if purged:
            log.info("retention: purged %d traces that started before %d", purged, before)
        return purged

    async def run(self, stop: asyncio.Event) -> None:
        """Purge every check interval until ``stop`` is set, the first after a random delay (so that the
        workers of a group do not purge at once); a failed purge is logged (a full store once, see
        :mod:`ingest.store_full`)."""
        delay = random.uniform(1.0, self._check_s)
        while not await sleep_unless_stopped(stop, delay):
            try:
                await self.purge_expired()
                self._store_full.succeeded("retention purge")
            except Exception as exc:
                log_failure("retention purge", exc, self._store_full)
            delay = self._check_s
