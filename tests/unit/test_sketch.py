"""The latency sketch alone: relative accuracy, weights, merging and exact subtraction, and how the keys
of a contribution carry both the fixed bucket and the bin."""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.store import sketch
from shared.store.buckets import BUCKET_BOUNDS_US
from tests.percentiles import exact_percentile

DURATIONS = st.integers(0, 2**62)
WEIGHTED = st.lists(st.tuples(st.integers(0, 10**11), st.integers(1, 50)), min_size=1, max_size=60)
QUANTILES = st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0])


@given(DURATIONS)
def test_a_bin_stands_for_every_value_in_it_within_alpha(duration: int) -> None:
    value = sketch.bin_value(sketch.bin_of(duration))
    assert abs(value - duration) <= sketch.ALPHA * duration * (1 + 1e-9)
    assert 0 <= sketch.bin_of(duration) < sketch.STRIDE


@settings(max_examples=300, deadline=None)  # expands up to 3,000 weighted observations
@given(WEIGHTED, QUANTILES)
def test_weighted_quantiles_are_within_one_percent(observations: list[tuple[int, int]], q: float) -> None:
    bins: sketch.Bins = {}
    for duration, weight in observations:
        sketch.add_to(bins, [(sketch.bin_of(duration), 1)], weight)
    expanded = [d for d, w in observations for _ in range(w)]
    exact = exact_percentile(expanded, q)
    assert abs(sketch.quantile(bins, q) - exact) <= 0.01 * exact * (1 + 1e-9)


@settings(deadline=None)
@given(st.lists(WEIGHTED, min_size=1, max_size=5), WEIGHTED)
def test_merging_adds_and_a_subtracted_part_leaves_exactly_the_rest(
    parts: list[list[tuple[int, int]]], extra: list[tuple[int, int]]
) -> None:
    def of(observations: list[tuple[int, int]]) -> sketch.Bins:
        return sketch.add_to({}, [(sketch.bin_of(d), w) for d, w in observations])

    whole = of([o for part in parts for o in part])
    assert sketch.merged(of(part) for part in parts) == whole
    with_extra = sketch.add_to(dict(whole), of(extra).items())
    assert sketch.add_to(with_extra, of(extra).items(), -1) == whole  # no bin left at 0


@given(DURATIONS)
def test_a_key_holds_the_fixed_bucket_and_the_bin(duration: int) -> None:
    bucket, index = sketch.split_key(sketch.key_of(duration))
    assert bucket == bisect.bisect_left(BUCKET_BOUNDS_US, duration)
    assert index == sketch.bin_of(duration)
    assert sketch.fixed_bucket(sketch.key_of(duration)) == bucket


def test_a_fixed_bucket_alone_counts_at_its_midpoint() -> None:
    assert sketch.split_key(0) == (0, sketch.bin_of(50))
    assert sketch.split_key(6) == (6, sketch.bin_of(7_500))  # (5 ms, 10 ms]
    assert sketch.split_key(len(BUCKET_BOUNDS_US)) == (len(BUCKET_BOUNDS_US), sketch.bin_of(90_000_000))
    assert len(set(sketch.LEGACY_BINS)) == len(BUCKET_BOUNDS_US) + 1
    assert sketch.from_fixed([0, 2, 0, 1]) == {sketch.LEGACY_BINS[1]: 2, sketch.LEGACY_BINS[3]: 1}
    assert sketch.quantile(sketch.from_fixed([0] * 6 + [3]), 0.5) == sketch.bin_value(sketch.bin_of(7_500))


def test_an_empty_sketch_reads_zero_and_negative_bins_count_nothing() -> None:
    assert sketch.quantile({}, 0.5) == 0.0
    assert sketch.quantile({sketch.bin_of(100): -1}, 0.5) == 0.0
    assert sketch.quantile({sketch.bin_of(0): 3}, 0.99) == 0.0


def _walk(bins: sketch.Bins, q: float) -> float:
    """The nearest-rank quantile by walking the positive bins one by one, for :func:`sketch.quantiles`."""
    walked = [index for index in sorted(bins) for _ in range(bins[index]) if bins[index] > 0]
    return sketch.bin_value(walked[sketch.rank_of(q, len(walked)) - 1]) if walked else 0.0


@given(st.dictionaries(st.integers(0, 3_000), st.integers(-5, 40), max_size=60), st.lists(QUANTILES, max_size=6))
def test_several_quantiles_in_one_pass_are_each_by_rank(bins: sketch.Bins, qs: list[float]) -> None:
    ascending = sorted(qs)
    assert sketch.quantiles(bins, ascending) == [_walk(bins, q) for q in ascending]
    assert [sketch.quantile(bins, q) for q in ascending] == [_walk(bins, q) for q in ascending]
