"""What a long-running loop needs to stop on time and to retry without hammering: a sleep that a stop
event cuts short, and exponential back-off."""

from __future__ import annotations

import asyncio


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` (0 or less: no wait, but a pass through the event loop), or until ``stop`` is set,
    whichever comes first. True when ``stop`` is set (before or during the wait), False on timeout."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


class Backoff:
    """Exponential back-off for a retried operation: the delays after consecutive failures are ``first_s``,
    twice that, four times..., at most ``max_s`` (seconds); :meth:`reset` after a success starts over."""

    def __init__(self, first_s: float = 0.5, max_s: float = 10.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next_s = first_s

    def next(self) -> float:
        """The delay (s) to wait after the failure that just happened; the next call returns double it."""
        delay = self._next_s
        self._next_s = min(delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        """The operation succeeded: the next failure waits ``first_s`` again."""
        self._next_s = self.first_s
