"""The latency sketch every rollup keeps beside its fixed buckets: logarithmic bins with a relative
accuracy of 1% (DDSketch, Masson et al., VLDB 2019), so a quantile read from a window's rows is within 1%
of the exact value of the trace or span at that rank, however the rows are merged. Pure: no I/O.

* A duration ``x`` µs > 0 falls in bin ``ceil(log(x) / log(gamma)) + 1`` with ``gamma = (1 + alpha) /
  (1 - alpha)``, ``alpha = 0.01``: bin ``i`` holds ``(gamma^(i-2), gamma^(i-1)]`` and stands for
  ``2 gamma^(i-1) / (gamma + 1)``, within ``alpha`` of every value in it. Bin 0 holds 0 (and anything
  below 1 µs). 1 µs .. 60 s spans about 900 bins; a window keeps only the non-empty ones (sparse: rows
  of (key, bin, count)).
* Bins are counts, so sketches merge by adding, a weighted observation adds its weight, and a
  contribution subtracts exactly.
* The q-quantile is the value at rank ``max(1, ceil(q n))`` of the ``n`` observations (nearest rank): the
  bin where the running count reaches that rank, read as the value the bin stands for.

A trace's per-operation histograms (:data:`~shared.store.rollups.OpShare`) key each span by its fixed
bucket and its bin at once (:func:`split_key`): the worker's span metrics keep the Prometheus ``le``
buckets of :data:`~shared.store.buckets.BUCKET_BOUNDS_US` exact, and the rollups get the sketch. Keys
below :data:`STRIDE` are fixed buckets alone (contributions stored before the sketch): they count at
their bucket's midpoint, which is also where the rollups kept before the sketch were converted to.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np

from shared.analysis import core
from shared.store.buckets import BUCKET_BOUNDS_US

Bins = dict[int, int]
"""bin -> count."""

ALPHA: Final[float] = core.SKETCH_ALPHA
GAMMA: Final[float] = core.SKETCH_GAMMA
STRIDE: Final[int] = core.SKETCH_STRIDE


def bin_of(duration_us: int) -> int:
    """The sketch bin of a duration (µs)."""
    result: int = core.sketch_bin(duration_us)
    return result


def bin_value(index: int) -> float:
    """The value (µs) bin ``index`` stands for: within :data:`ALPHA` of every value in it."""
    return 0.0 if index <= 0 else 2 * GAMMA ** (index - 1) / (GAMMA + 1)


def _midpoint(bucket: int) -> int:
    low = 0 if bucket == 0 else BUCKET_BOUNDS_US[bucket - 1]
    high = BUCKET_BOUNDS_US[bucket] if bucket < len(BUCKET_BOUNDS_US) else low * 2
    return (low + high) // 2


LEGACY_BINS: Final = tuple(bin_of(_midpoint(b)) for b in range(len(BUCKET_BOUNDS_US) + 1))
"""Per fixed bucket, the bin of its midpoint (the open-ended bucket's: 90 s): where counts kept in fixed
buckets alone go."""


def split_key(key: int) -> tuple[int, int]:
    """(fixed bucket, sketch bin) of a histogram key of a contribution (see the module's text)."""
    result: tuple[int, int] = core.split_key(key, LEGACY_BINS)
    return result


def key_of(duration_us: int) -> int:
    """The histogram key of a duration in a contribution: its fixed bucket and its bin."""
    result: int = core.sketch_key(list(BUCKET_BOUNDS_US), duration_us)
    return result


def fixed_bucket(key: int) -> int:
    """The fixed bucket (index into the ``le`` bounds) of a contribution's histogram key."""
    return split_key(key)[0]


def add_to(bins: Bins, more: Iterable[tuple[int, int]], weight: int = 1) -> Bins:
    """Add ``weight`` times each (bin, count) of ``more`` to ``bins`` (dropping bins that reach 0)."""
    for index, n in more:
        total = bins.get(index, 0) + weight * n
        if total:
            bins[index] = total
        else:
            bins.pop(index, None)
    return bins


def merged(sketches: Iterable[Mapping[int, int]]) -> Bins:
    """The sum of sketches."""
    total: Bins = {}
    for bins in sketches:
        if total:
            add_to(total, bins.items())
        else:  # the first non-empty one copied: a service's sketch is often one row's
            total = {index: n for index, n in bins.items() if n}
    return total


def rank_of(q: float, total: int) -> int:
    """The 1-based rank of the q-quantile (0..1) of ``total`` observations: nearest rank, at least 1."""
    return max(1, math.ceil(q * total - 1e-9))


def quantile(bins: Mapping[int, int], q: float) -> float:
    """The q-quantile (0..1) in µs, within :data:`ALPHA` of the exact value at :func:`rank_of`; 0 when
    empty. Bins with a count <= 0 (a store's rows mid-subtraction) count nothing."""
    return quantiles(bins, (q,))[0]


def quantiles(bins: Mapping[int, int], qs: Sequence[float]) -> list[float]:
    """:func:`quantile` of each of ``qs`` (in ascending order), in one pass over the sorted bins."""
    positive = sorted((index, n) for index, n in bins.items() if n > 0)
    total = sum(n for _, n in positive)
    if total <= 0:
        return [0.0] * len(qs)
    ranks = [rank_of(q, total) for q in qs]
    out: list[float] = []
    seen = 0
    for index, n in positive:
        seen += n
        while len(out) < len(ranks) and seen >= ranks[len(out)]:
            out.append(bin_value(index))
        if len(out) == len(ranks):
            break
    return out


def from_fixed(histogram: Iterable[int]) -> Bins:
    """The bins of a fixed-bucket histogram, each bucket's count at its midpoint."""
    return {LEGACY_BINS[b]: n for b, n in enumerate(histogram) if n}


# -- packed sketches: a store's value ----------------------------------------------------------------------

ENTRY: Final = struct.Struct(">hq")
"""A packed sketch is its (bin, count) entries in bin order, 10 bytes each: the bin a big-endian 16-bit
integer, the count a big-endian 64-bit one (as PostgreSQL's ``int2send`` and ``int8send`` write them, so
its ``sketch_add`` function reads and writes the same bytes). A stored sketch holds counts > 0 alone; a
delta (:func:`pack` of a contribution's bins) may hold negative ones. Bins reach about 1,100 (an hour)."""
PACKED: Final = np.dtype([("bin", ">i2"), ("n", ">i8")])
"""The same entries as a numpy record, to read many sketches at once (:func:`summed_many`)."""
NUMPY_FROM: Final = 512
"""Entries from which :func:`summed_many` sums with numpy."""


def pack(bins: Iterable[tuple[int, int]]) -> bytes:
    """The packed form of ``(bin, count)`` pairs (each bin once), zero counts left out."""
    return b"".join([ENTRY.pack(index, n) for index, n in sorted(bins) if n])


def unpack(packed: bytes) -> Bins:
    """A packed sketch as bins."""
    return dict(ENTRY.iter_unpack(packed))


ADD_NUMPY_FROM: Final = 64
"""Entries (stored and delta together) from which :func:`add_packed` merges with numpy: below, a dict is
quicker than numpy's fixed cost; above, numpy's sort and sums are (an hour's or all time's sketch of an
operation holds hundreds of bins, merged at every upsert of its row)."""


def add_packed(stored: bytes | None, delta: bytes | None) -> bytes:
    """``stored`` plus ``delta``, the bins whose count falls to 0 or below left out: the merge of a
    store's upsert (SQLite calls it as the function ``sketch_add``)."""
    if stored and delta and len(stored) + len(delta) >= ADD_NUMPY_FROM * ENTRY.size:
        return _added_numpy(stored, delta)
    bins = unpack(stored) if stored else {}
    if delta:
        for index, n in ENTRY.iter_unpack(delta):
            bins[index] = bins.get(index, 0) + n
    return pack((index, n) for index, n in bins.items() if n > 0)


def _added_numpy(stored: bytes, delta: bytes) -> bytes:
    """:func:`add_packed` of two non-empty sketches by numpy: the entries of both sorted by bin (stably),
    each bin's counts summed, the sums > 0 packed in bin order (the same bytes as the dict's merge)."""
    both = np.concatenate((np.frombuffer(stored, dtype=PACKED), np.frombuffer(delta, dtype=PACKED)))
    both = both[np.argsort(both["bin"], kind="stable")]
    bins = both["bin"]
    starts = np.flatnonzero(np.concatenate(([True], bins[1:] != bins[:-1])))
    sums = np.add.reduceat(both["n"].astype(np.int64), starts)
    kept = sums > 0
    out = np.empty(int(np.count_nonzero(kept)), dtype=PACKED)
    out["bin"] = bins[starts][kept]
    out["n"] = sums[kept]
    return out.tobytes()


def has_negative(packed: bytes) -> bool:
    """Whether a packed delta takes something out."""
    return any(n < 0 for _, n in ENTRY.iter_unpack(packed))


def merged_packed(sketches: Iterable[bytes]) -> Bins:
    """The sum of packed sketches as bins (those with a count > 0)."""
    return {index: n for index, n in ENTRY.iter_unpack(summed_packed(list(sketches))) if n > 0}


def summed_packed(sketches: Sequence[bytes], less: Sequence[bytes] = ()) -> bytes:
    """The sum of packed sketches minus those of ``less``, packed, the bins with a count > 0 alone (a single
    sketch is taken as stored: each bin once, its counts > 0)."""
    return summed_many([(sketches, less)])[0]


def summed_many(groups: Sequence[tuple[Sequence[bytes], Sequence[bytes]]]) -> list[bytes]:
    """:func:`summed_packed` of each (sketches, less) group, all summed by one numpy ``bincount``: a read
    of many keys costs a handful of array operations, not a dict per key (below :data:`NUMPY_FROM`
    entries in all, a dict is quicker than numpy's fixed cost)."""
    out = [b""] * len(groups)
    parts: list[bytes] = []
    owners: list[int] = []
    signs: list[int] = []
    for i, (plus, minus) in enumerate(groups):
        present = [part for part in plus if part]
        if len(present) == 1 and not any(minus):
            out[i] = present[0]
            continue
        for sign, some in ((1, present), (-1, minus)):
            for part in some:
                if part:
                    parts.append(part)
                    owners.append(i)
                    signs.append(sign)
    if not parts:
        return out
    if sum(len(part) for part in parts) < NUMPY_FROM * ENTRY.size:
        return _summed_small(out, parts, owners, signs)
    sizes = [len(part) // ENTRY.size for part in parts]
    entries = np.frombuffer(b"".join(parts), dtype=PACKED)
    owner = np.repeat(np.array(owners, dtype=np.int64), sizes)
    weights = entries["n"].astype(np.float64) * np.repeat(np.array(signs, dtype=np.float64), sizes)
    bins = entries["bin"].astype(np.int64)
    width = int(bins.max()) + 1
    # float sums are exact below 2^53, far above any count a store adds up
    sums = np.rint(np.bincount(owner * width + bins, weights=weights, minlength=len(groups) * width))
    cells = np.flatnonzero(sums > 0)
    packed = np.empty(len(cells), dtype=PACKED)
    packed["bin"], packed["n"] = cells % width, sums[cells]
    data = packed.tobytes()
    ends = np.searchsorted(cells // width, np.arange(len(groups) + 1)).tolist()
    for i in sorted(set(owners)):
        out[i] = data[ends[i] * ENTRY.size : ends[i + 1] * ENTRY.size]
    return out


def _summed_small(out: list[bytes], parts: list[bytes], owners: list[int], signs: list[int]) -> list[bytes]:
    totals: dict[int, Bins] = {}
    for part, owner, sign in zip(parts, owners, signs, strict=True):
        total = totals.setdefault(owner, {})
        for index, n in ENTRY.iter_unpack(part):
            total[index] = total.get(index, 0) + sign * n
    for owner, total in totals.items():
        out[owner] = pack((index, n) for index, n in total.items() if n > 0)
    return out


# -- many sketches at once: rows of a dense array ----------------------------------------------------------

Dense = np.ndarray[Any, np.dtype[np.float64]]
"""Sketches as the rows of an array: column ``j`` counts the bin ``low + j`` (floats: sums of counts are
exact below 2^53)."""


def dense(placed: Sequence[tuple[int, bytes]], rows: int) -> tuple[Dense, int]:
    """The packed sketches of ``placed`` ((row, packed) pairs; rows may repeat, their sketches add up) as
    a ``rows`` x bins array, and the bin of its first column."""
    parts = [(row, packed) for row, packed in placed if packed]
    if not parts:
        return np.zeros((rows, 1)), 0
    entries = np.frombuffer(b"".join(packed for _, packed in parts), dtype=PACKED)
    at = np.repeat(np.array([row for row, _ in parts]), [len(packed) // ENTRY.size for _, packed in parts])
    bins = entries["bin"].astype(np.int64)
    low = int(bins.min())
    width = int(bins.max()) - low + 1
    counts = np.bincount(at * width + bins - low, weights=entries["n"], minlength=rows * width)
    return counts.astype(np.float64).reshape(rows, width), low


def dense_quantiles(sketches: Dense, low: int, q: float) -> list[float]:
    """:func:`quantile` of each row of ``sketches`` (:func:`dense`; counts <= 0 count nothing)."""
    running = np.cumsum(np.clip(sketches, 0, None), axis=1)
    totals = [int(t) for t in np.rint(running[:, -1])] if running.shape[1] else [0] * len(running)
    ranks = np.array([rank_of(q, t) for t in totals], dtype=np.float64)
    found = (running < ranks[:, None] - 0.5).sum(axis=1).tolist()
    return [bin_value(low + j) if total > 0 else 0.0 for j, total in zip(found, totals, strict=True)]
