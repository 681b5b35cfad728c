"""Packed sketches (:mod:`shared.store.sketch`, layout v5): what a store merges in its upserts and sums on
read equals the same sums over plain bins, for any bins and counts, through both of ``merged_packed``'s
paths (a dict below :data:`NUMPY_FROM` entries, numpy above)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.store import sketch
from shared.store.sketch import ENTRY, add_packed, has_negative, merged_packed, pack, unpack

bins = st.dictionaries(st.integers(0, 2_000), st.integers(-(10**12), 10**12), max_size=60)
positive = st.dictionaries(st.integers(0, 2_000), st.integers(1, 10**12), max_size=60)


def _plus(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    total = dict(a)
    for index, n in b.items():
        total[index] = total.get(index, 0) + n
    return total


@given(positive)
def test_pack_is_sorted_fixed_width_and_round_trips(stored: dict[int, int]) -> None:
    packed = pack(stored.items())
    assert len(packed) == ENTRY.size * len(stored)
    assert [index for index, _ in ENTRY.iter_unpack(packed)] == sorted(stored)
    assert unpack(packed) == stored


@given(positive, bins)
def test_add_packed_is_the_sum_without_the_bins_at_zero_or_below(stored: dict[int, int], delta: dict[int, int]) -> None:
    expected = {index: n for index, n in _plus(stored, delta).items() if n > 0}
    assert unpack(add_packed(pack(stored.items()), pack(delta.items()))) == expected
    assert add_packed(None, pack(stored.items())) == pack(stored.items())
    assert has_negative(pack(delta.items())) == any(n < 0 for n in delta.values())


@given(st.lists(positive, max_size=8), st.integers(1, 400))
def test_merged_packed_sums_many_sketches_by_either_path(sketches: list[dict[int, int]], copies: int) -> None:
    many = sketches * copies  # past NUMPY_FROM entries for most draws
    expected: dict[int, int] = {}
    for one in many:
        expected = _plus(expected, one)
    assert merged_packed(pack(one.items()) for one in many) == {i: n for i, n in expected.items() if n > 0}


def test_sums_on_both_sides_of_the_numpy_threshold() -> None:
    small = pack([(3, 1)])
    assert merged_packed([small] * (sketch.NUMPY_FROM - 1)) == {3: sketch.NUMPY_FROM - 1}
    assert merged_packed([small] * (sketch.NUMPY_FROM + 1)) == {3: sketch.NUMPY_FROM + 1}
