"""The wall clock in the project's unit of time."""

from __future__ import annotations

import time


def now_us() -> int:
    """The wall-clock time in microseconds since the Unix epoch (the unit of every ``*_us`` field)."""
    return time.time_ns() // 1000
