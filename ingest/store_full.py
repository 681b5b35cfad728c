"""The store running out of space, as a worker says it: one line when it starts, one when it ends.

While the store is full its writes fail: batches (retried with a back-off, their offsets never
committed), finalize rounds, heartbeats, purges; some may still fit for a while (a batch into pages a
finalize round freed) while others do not. Logging each failure would bury the one thing an operator must
do, so the first disk-full failure of an episode logs one ERROR line (what happened, where, what to do)
and the others are quiet. The episode ends, with one INFO line, once every kind of write that failed has
succeeded since.
"""

from __future__ import annotations

import logging
import time

from shared.store.faults import disk_full, location, reason

log = logging.getLogger("ingest.worker")


class StoreFull:
    """Tracks the disk-full episodes of one worker's store."""

    def __init__(self, store_url: str) -> None:
        self._where = location(store_url)
        self._since: float | None = None
        self._failing: set[str] = set()

    def active(self) -> bool:
        """Whether some kind of write failed for lack of space and has not succeeded since."""
        return self._since is not None

    def failed(self, what: str, exc: BaseException) -> bool:
        """Whether ``exc``, a failure of the write ``what``, is the store running out of space; the first
        of an episode is logged."""
        if not disk_full(exc):
            return False
        self._failing.add(what)
        if self._since is None:
            self._since = time.monotonic()
            log.error(
                "store full: %s has no space left (%s); writes are retried with a back-off and no offset is"
                " committed for a batch that is not stored; free space on its filesystem (or grow it) and the"
                " worker resumes by itself",
                self._where,
                reason(exc),
            )
        return True

    def succeeded(self, what: str) -> None:
        """A write of kind ``what`` succeeded: the end of an episode when no other kind is still failing."""
        self._failing.discard(what)
        if self._since is not None and not self._failing:
            log.info("store writable again after %.1fs: every write succeeds, ingest resumed", self.elapsed())
            self._since = None

    def elapsed(self) -> float:
        return 0.0 if self._since is None else time.monotonic() - self._since


def log_failure(what: str, exc: BaseException, full: StoreFull) -> None:
    """Log a background write that failed and is retried later (a finalize round, a heartbeat, a purge):
    with its traceback, unless the store is full (which ``full`` says once)."""
    if not full.failed(what, exc):
        log.error("%s failed; will retry", what, exc_info=exc)
