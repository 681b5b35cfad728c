"""The services' clock: microseconds since the Unix epoch, injectable for tests."""

from __future__ import annotations

from collections.abc import Callable

from shared.clock import now_us

Clock = Callable[[], int]
"""Microseconds since the Unix epoch (:func:`shared.clock.now_us` in production)."""

__all__ = ["Clock", "now_us"]
