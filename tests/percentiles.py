"""Exact percentiles, from first principles, for the tests of the latency sketch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction


def exact_percentile(values: Sequence[int], q: float) -> int:
    """The q-quantile (0..1) of ``values`` by nearest rank: the ``ceil(q n)``-th smallest (at least the first)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(str(q)) * len(ordered)))
    return ordered[rank - 1]
