"""When the finalize loop's next round runs: as soon as the next trace the worker wrote is due (its write
time plus the grace window), never later than the loop's interval, at once for a trace that became due
after the last round started, and never sooner than the spacing after the last round's start."""

from __future__ import annotations

from ingest.scheduling import ROUND_SPACING_S, Wakeups
from shared.clock import now_us

INTERVAL = 0.125


def test_nothing_written_waits_the_interval() -> None:
    assert Wakeups().next_round_in(now_us(), INTERVAL) == INTERVAL


def test_wakes_when_the_next_written_trace_is_due() -> None:
    w = Wakeups()
    now = now_us()
    w.add(now + 40_000)
    w.add(now + 90_000)
    delay = w.next_round_in(now - 30_000, INTERVAL)  # the last round started 30 ms ago
    assert 0.0 < delay <= 0.041 + 0.001
    assert len(w) == 2  # neither is covered yet


def test_a_due_time_beyond_the_interval_waits_the_interval() -> None:
    w = Wakeups()
    w.add(now_us() + 2_000_000)
    assert w.next_round_in(now_us(), INTERVAL) == INTERVAL


def test_due_times_the_last_round_covered_are_dropped() -> None:
    w = Wakeups()
    started = now_us()
    for due in (started - 5_000, started - 1, started):
        w.add(due)
    assert w.next_round_in(started, INTERVAL) == INTERVAL
    assert len(w) == 0


def test_a_trace_due_since_the_last_round_started_runs_the_next_round_at_once() -> None:
    w = Wakeups()
    started = now_us() - 50_000  # a round of 50 ms
    w.add(started + 1)  # became due while that round ran
    assert w.next_round_in(started, INTERVAL) <= 0.001 + 1e-6


def test_rounds_start_at_least_the_spacing_apart() -> None:
    w = Wakeups()
    started = now_us()
    w.add(started + 1_000)  # due 1 ms after a round that just started
    delay = w.next_round_in(started, INTERVAL)
    assert ROUND_SPACING_S - 0.005 <= delay <= ROUND_SPACING_S
