"""The rollup rows a window is read from: whatever ranges are chosen, their signed minutes are exactly the
window's, each once; and an hour is read as its row less minutes only where that reads fewer rows."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from shared.store.base import Window
from shared.store.rollups import HOUR, MINUTE, MINUTE_US
from shared.store.search import HOUR_ROW_COST, signed_window_ranges, window_ranges


def signed_minutes(ranges: list[tuple[int, int, int, int]]) -> Counter[int]:
    minutes: Counter[int] = Counter()
    for grain, first, end, sign in ranges:
        for bucket in range(first, end):
            for minute in range(bucket * 60, bucket * 60 + 60) if grain == HOUR else [bucket]:
                minutes[minute] += sign
    return minutes


def cost(ranges: list[tuple[int, int, int, int]], now_us: int) -> int:
    """Rows read, a minute row each, an hour row as :data:`HOUR_ROW_COST`; minutes taken out from now on
    free (nothing has started there yet)."""
    total = 0
    for grain, first, end, sign in ranges:
        if grain == HOUR:
            total += HOUR_ROW_COST * (end - first)
        else:
            total += sum(1 for m in range(first, end) if sign > 0 or m * MINUTE_US < now_us)
    return total


@given(start=st.integers(0, 3000), length=st.integers(1, 1500), now=st.integers(0, 5000))
def test_signed_ranges_cover_the_window_once(start: int, length: int, now: int) -> None:
    w = Window(start_us=start * MINUTE_US, end_us=(start + length) * MINUTE_US)
    ranges = signed_window_ranges(w, now * MINUTE_US)
    minutes = signed_minutes(ranges)
    assert {m for m, n in minutes.items() if n} == set(range(start, start + length))
    assert set(minutes.values()) <= {0, 1}
    plain = [(g, f, e, 1) for g, f, e in window_ranges(w)]
    assert cost(ranges, now * MINUTE_US) <= cost(plain, now * MINUTE_US)


def test_a_window_ending_now_reads_the_current_hour_row() -> None:
    # 10:20 to 11:20, now 11:20: hour 10 less 10:00-10:20, hour 11 less the minutes still to come
    w = Window(start_us=620 * MINUTE_US, end_us=680 * MINUTE_US)
    assert signed_window_ranges(w, 680 * MINUTE_US) == [
        (HOUR, 10, 12, 1),
        (MINUTE, 600, 620, -1),
        (MINUTE, 680, 720, -1),
    ]
    # the same window read an hour later: the last 20 minutes are rows to read, fewer than 40
    assert signed_window_ranges(w, 740 * MINUTE_US) == [
        (HOUR, 10, 11, 1),
        (MINUTE, 600, 620, -1),
        (MINUTE, 660, 680, 1),
    ]
