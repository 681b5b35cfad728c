"""The services' clock: microseconds since the Unix epoch, injectable for tests."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]
"""Microseconds since the Unix epoch."""


def now_us() -> int:
    return time.time_ns() // 1000
