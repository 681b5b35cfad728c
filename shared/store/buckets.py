"""The fixed latency histogram every rollup keeps: bucket upper bounds in µs, the last bucket open-ended."""

from __future__ import annotations

from typing import Final

BUCKET_BOUNDS_US: Final[tuple[int, ...]] = (
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
)
"""Upper bounds (µs) of the latency histogram buckets; one more bucket holds everything slower."""
