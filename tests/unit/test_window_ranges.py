"""The rollup rows a window is read from: whatever ranges are chosen, their signed minutes are exactly the
window's, each once; never more rows (by their cost) than the plain ranges; and a bounded number of rows
besides the whole hours, whichever minute of the hour the window starts and ends at."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from shared.store.base import Window
from shared.store.rollups import GRAIN_US, HOUR, MINUTE, MINUTE_US, TEN
from shared.store.search import (
    FUTURE_ROW_COST,
    MAX_EDGE_ROWS,
    MAX_RANGES,
    ROW_COST,
    signed_window_ranges,
    window_ranges,
)

Ranges = list[tuple[int, int, int, int]]


def minutes_of(grain: int, bucket: int) -> range:
    size = GRAIN_US[grain] // MINUTE_US
    return range(bucket * size, bucket * size + size)


def signed_minutes(ranges: Ranges) -> Counter[int]:
    minutes: Counter[int] = Counter()
    for grain, first, end, sign in ranges:
        for bucket in range(first, end):
            for minute in minutes_of(grain, bucket):
                minutes[minute] += sign
    return minutes


def cost(ranges: Ranges, now_us: int) -> int:
    """Rows read, each at its grain's :data:`ROW_COST`, or :data:`FUTURE_ROW_COST` if it starts after now
    (nothing has started there yet)."""
    total = 0
    for grain, first, end, _ in ranges:
        for bucket in range(first, end):
            total += FUTURE_ROW_COST if minutes_of(grain, bucket)[0] * MINUTE_US >= now_us else ROW_COST[grain]
    return total


def edge_rows(ranges: Ranges, window: Window, now_us: int) -> tuple[int, int]:
    """(rows, rows that start before now) besides the hour rows of the hours the window covers whole."""
    rows = before = 0
    for grain, first, end, sign in ranges:
        for bucket in range(first, end):
            minutes = minutes_of(grain, bucket)
            if (
                grain == HOUR
                and sign > 0
                and window.start_us <= minutes[0] * MINUTE_US < window.end_us - 59 * MINUTE_US
            ):
                continue
            rows += 1
            before += minutes[0] * MINUTE_US < now_us
    return rows, before


@given(start=st.integers(0, 3000), length=st.integers(1, 1500), now=st.integers(0, 5000))
def test_signed_ranges_cover_the_window_once_with_few_rows(start: int, length: int, now: int) -> None:
    w = Window(start_us=start * MINUTE_US, end_us=(start + length) * MINUTE_US)
    ranges = signed_window_ranges(w, now * MINUTE_US)
    minutes = signed_minutes(ranges)
    assert {m for m, n in minutes.items() if n} == set(range(start, start + length))
    assert set(minutes.values()) <= {0, 1}
    plain = [(g, f, e, 1) for g, f, e in window_ranges(w)]
    assert cost(ranges, now * MINUTE_US) <= cost(plain, now * MINUTE_US)
    rows, before = edge_rows(ranges, w, now * MINUTE_US)
    assert rows <= MAX_EDGE_ROWS
    assert before <= 16
    assert len(ranges) <= MAX_RANGES


def test_the_bounds_are_reached() -> None:
    """Windows starting at every minute of an hour, up to two hours long, read at the minutes around their
    start and end, mid-way, and at the next ten minutes' and hour's start: the bounds are the most rows
    any of them reads (so they are stated tight)."""
    most = [0, 0, 0]
    for start in range(600, 660):
        for end in range(start + 1, start + 121):
            w = Window(start_us=start * MINUTE_US, end_us=end * MINUTE_US)
            nows = {start - 1, start, start + 1, (start + end) // 2, end - 1, end, end + 1}
            for now in nows | {-(-end // 10) * 10, -(-end // 60) * 60}:
                ranges = signed_window_ranges(w, now * MINUTE_US)
                rows, before = edge_rows(ranges, w, now * MINUTE_US)
                most = [max(most[0], rows), max(most[1], before), max(most[2], len(ranges))]
    assert most == [MAX_EDGE_ROWS, 16, MAX_RANGES]


def test_a_window_ending_now_reads_the_current_hour_row() -> None:
    # 10:20 to 11:20, now 11:20: hour 10 less 10:00-10:20 (two ten-minute rows), hour 11 less the
    # ten-minute rows still to come
    w = Window(start_us=620 * MINUTE_US, end_us=680 * MINUTE_US)
    assert signed_window_ranges(w, 680 * MINUTE_US) == [
        (HOUR, 10, 12, 1),
        (TEN, 60, 62, -1),
        (TEN, 68, 72, -1),
    ]
    # the same window read an hour later: 11:00-11:20 is two ten-minute rows
    assert signed_window_ranges(w, 740 * MINUTE_US) == [(HOUR, 10, 11, 1), (TEN, 66, 68, 1), (TEN, 60, 62, -1)]


def test_a_window_starting_at_31_reads_ten_minute_rows() -> None:
    # 10:31 to 11:31, now 11:31: 10:30-11:00 less 10:30, then hour 11 less what is still to come
    w = Window(start_us=631 * MINUTE_US, end_us=691 * MINUTE_US)
    assert signed_window_ranges(w, 691 * MINUTE_US) == [
        (HOUR, 11, 12, 1),
        (TEN, 63, 66, 1),
        (TEN, 70, 72, -1),
        (MINUTE, 630, 631, -1),
        (MINUTE, 691, 700, -1),
    ]
    # 10:35 to 11:35 read later: five ten-minute rows and ten minutes, no hour row
    w = Window(start_us=635 * MINUTE_US, end_us=695 * MINUTE_US)
    assert signed_window_ranges(w, 800 * MINUTE_US) == [(TEN, 64, 69, 1), (MINUTE, 635, 640, 1), (MINUTE, 690, 695, 1)]
