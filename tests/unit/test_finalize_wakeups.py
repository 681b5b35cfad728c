"""When the finalize loop's next round runs: as soon as the next trace the worker wrote is due (its write
time plus the grace window), never later than the loop's interval, at once for a trace that became due
after the last round started, and never sooner than the spacing after the last round's start."""

from __future__ import annotations

import heapq
from typing import Any, cast

from ingest.worker import ROUND_SPACING_S, Worker, now_us
from shared.settings import Settings

INTERVAL = 0.125


def worker() -> Worker:
    return Worker(Settings.from_env({}, grace_ms=500), cast(Any, object()))


def test_nothing_written_waits_the_interval() -> None:
    assert worker()._next_round_in(now_us(), INTERVAL) == INTERVAL


def test_wakes_when_the_next_written_trace_is_due() -> None:
    w = worker()
    now = now_us()
    heapq.heappush(w._due_soon, now + 40_000)
    heapq.heappush(w._due_soon, now + 90_000)
    delay = w._next_round_in(now - 30_000, INTERVAL)  # the last round started 30 ms ago
    assert 0.0 < delay <= 0.041 + 0.001
    assert len(w._due_soon) == 2  # neither is covered yet


def test_a_due_time_beyond_the_interval_waits_the_interval() -> None:
    w = worker()
    heapq.heappush(w._due_soon, now_us() + 2_000_000)
    assert w._next_round_in(now_us(), INTERVAL) == INTERVAL


def test_due_times_the_last_round_covered_are_dropped() -> None:
    w = worker()
    started = now_us()
    for due in (started - 5_000, started - 1, started):
        heapq.heappush(w._due_soon, due)
    assert w._next_round_in(started, INTERVAL) == INTERVAL
    assert w._due_soon == []


def test_a_trace_due_since_the_last_round_started_runs_the_next_round_at_once() -> None:
    w = worker()
    started = now_us() - 50_000  # a round of 50 ms
    heapq.heappush(w._due_soon, started + 1)  # became due while that round ran
    assert w._next_round_in(started, INTERVAL) <= 0.001 + 1e-6


def test_rounds_start_at_least_the_spacing_apart() -> None:
    w = worker()
    started = now_us()
    heapq.heappush(w._due_soon, started + 1_000)  # due 1 ms after a round that just started
    delay = w._next_round_in(started, INTERVAL)
    assert ROUND_SPACING_S - 0.005 <= delay <= ROUND_SPACING_S
