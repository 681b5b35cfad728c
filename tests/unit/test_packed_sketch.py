"""Packed sketches (:mod:`shared.store.sketch`, layout v5): what a store merges in its upserts and sums on
read equals the same sums over plain bins, for any bins and counts, one key or many summed at once."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from shared.store import sketch
from shared.store.sketch import ENTRY, add_packed, has_negative, merged_packed, pack, summed_many, summed_packed, unpack

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


@given(
    st.dictionaries(st.integers(0, 2_000), st.integers(1, 10**12), min_size=1, max_size=400),
    st.dictionaries(st.integers(0, 2_000), st.integers(-(10**12), 10**12), min_size=1, max_size=80),
)
def test_add_packed_gives_the_same_bytes_by_either_path(stored: dict[int, int], delta: dict[int, int]) -> None:
    """Small merges go through a dict, large ones (from :data:`~shared.store.sketch.ADD_NUMPY_FROM`
    entries) through numpy: the same bytes, the sum packed in bin order."""
    expected = pack((index, n) for index, n in _plus(stored, delta).items() if n > 0)
    assert add_packed(pack(stored.items()), pack(delta.items())) == expected
    assert sketch._added_numpy(pack(stored.items()), pack(delta.items())) == expected


@given(st.lists(positive, max_size=8), st.integers(1, 400))
def test_merged_packed_sums_many_sketches_by_either_path(sketches: list[dict[int, int]], copies: int) -> None:
    many = sketches * copies
    expected: dict[int, int] = {}
    for one in many:
        expected = _plus(expected, one)
    assert merged_packed(pack(one.items()) for one in many) == {i: n for i, n in expected.items() if n > 0}


@given(st.lists(st.tuples(st.lists(positive, max_size=4), st.lists(positive, max_size=3)), max_size=12))
def test_summed_many_equals_each_group_summed_alone(
    groups: list[tuple[list[dict[int, int]], list[dict[int, int]]]],
) -> None:
    """Many keys' sums in one pass: each equals its own, whatever the others hold (one sketch, none, only
    sketches to take out)."""
    packed = [([pack(one.items()) for one in plus], [pack(one.items()) for one in minus]) for plus, minus in groups]
    expected = []
    for plus, minus in groups:
        total: dict[int, int] = {}
        for one in plus:
            total = _plus(total, one)
        for one in minus:
            total = _plus(total, {i: -n for i, n in one.items()})
        expected.append(pack((i, n) for i, n in total.items() if n > 0))
    assert summed_many(packed) == expected


@given(st.lists(positive, max_size=6), st.lists(positive, max_size=6), st.integers(1, 300))
def test_summed_packed_takes_out_what_it_is_told_to(
    plus: list[dict[int, int]], minus: list[dict[int, int]], copies: int
) -> None:
    """A window read as hour rows less minutes: the signed sum, bins at 0 or below left out, packed as a
    store packs it, by either path."""
    expected: dict[int, int] = {}
    for one in plus * copies:
        expected = _plus(expected, one)
    for one in minus:
        expected = _plus(expected, {i: -n for i, n in one.items()})
    got = summed_packed([pack(one.items()) for one in plus * copies], [pack(one.items()) for one in minus])
    assert got == pack((i, n) for i, n in expected.items() if n > 0)


@given(st.lists(st.lists(st.tuples(st.integers(0, 9), positive), max_size=5), min_size=1, max_size=6))
def test_dense_rows_and_their_quantiles_equal_the_sketches(rows: list[list[tuple[int, dict[int, int]]]]) -> None:
    """Sketches placed in the rows of a dense array, row differences taken (as prefix sums are), and each
    row's quantiles read: the same as :func:`sketch.quantile` over the bins themselves."""
    placed = [(r, pack(one.items())) for r, row in enumerate(rows) for _, one in row]
    array, low = sketch.dense(placed, len(rows) + 1)
    per_row = [sketch.merged(one for _, one in row) for row in rows] + [{}]
    for q in (0.0, 0.5, 0.95, 0.99, 1.0):
        assert sketch.dense_quantiles(array, low, q) == [sketch.quantile(bins, q) for bins in per_row]
    differences = array[1:] - array[:-1]  # counts <= 0 count nothing
    expected = [
        sketch.quantile({i: n for i, n in _plus(b, {k: -v for k, v in a.items()}).items()}, 0.5)
        for a, b in itertools.pairwise(per_row)
    ]
    assert sketch.dense_quantiles(differences, low, 0.5) == expected


def test_sums_on_both_sides_of_the_numpy_threshold() -> None:
    one = pack([(3, 1)])
    for copies in (sketch.NUMPY_FROM - 1, sketch.NUMPY_FROM + 1):
        assert summed_many([([one] * copies, [one]), ([one, one], [])]) == [pack([(3, copies - 1)]), pack([(3, 2)])]
