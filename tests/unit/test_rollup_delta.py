"""RollupDelta's grains: the hour and all-time rows are the sums of the minute rows, for every series, and
the dependency rows per hour (the SQL backends') agree with the dependency rows at every grain (a backend
that keeps each grain as the sum of the one below); the rows with packed sketches the SQL stores upsert,
derived in one pass, are the counter rows joined with the bin rows of every grain."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.analysis import analyze
from shared.demo import make_trace
from shared.store.rollups import (
    COUNTERS,
    HOUR,
    MINUTE,
    MINUTE_US,
    PLAIN_GRAINS,
    SQL_GRAINS,
    TOTAL,
    Contribution,
    Counters,
    RollupDelta,
    contribution,
)
from shared.store.sketch import pack

services = st.sampled_from(["a", "b", "c"])


@st.composite
def contributions(draw: st.DrawFn) -> tuple[Contribution, int]:
    minute = draw(st.integers(0, 300))
    deps = draw(st.lists(st.tuples(services, services, st.integers(1, 5), st.integers(0, 1)), max_size=3))
    share = Contribution(
        start_us=minute * MINUTE_US + draw(st.integers(0, MINUTE_US - 1)),
        failed=draw(st.booleans()),
        duration_us=draw(st.integers(0, 10**7)),
        endpoint=(draw(services), "op"),
        ops=[],
        deps=deps,
        tags=[],
        contexts=[],
    )
    return share, draw(st.sampled_from([1, -1]))


@given(st.lists(contributions(), max_size=12))
def test_dependency_grains_sum_the_minutes(shares: list[tuple[Contribution, int]]) -> None:
    delta = RollupDelta()
    for share, sign in shares:
        delta.add(share, sign)
    expected_minutes: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for share, sign in shares:
        for parent, child, calls, errors in share.deps:
            row = expected_minutes[share.start_us // MINUTE_US, parent, child]
            row[0] += sign * calls
            row[1] += sign * errors
    grains = delta.dep_grain_rows()
    for grain, size in ((MINUTE, 1), (HOUR, 60), (TOTAL, None)):
        expected: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for (minute, parent, child), (calls, errors) in expected_minutes.items():
            row = expected[0 if size is None else minute // size, parent, child]
            row[0] += calls
            row[1] += errors
        got = {(b, p, c): v for g, b, (p, c), v in grains if g == grain}
        assert got == {k: v for k, v in expected.items() if any(v)}
    hours = {(b, p, c): v for g, b, (p, c), v in grains if g == HOUR}
    assert {(h, p, c): [n, e] for h, p, c, n, e in delta.dep_rows()} == hours


def joined(
    rows: Sequence[tuple[int, int, Any, Counters]], bin_rows: Sequence[tuple[int, int, Any, list[int]]]
) -> list[tuple[int, int, Any, Counters, bytes]]:
    """The counter rows of each grain joined with the bin rows of their key (whose key ends with the bin),
    packed; a key with bins and no counters gets a row of zeros."""
    bins: dict[tuple[int, int, Any], list[tuple[int, int]]] = defaultdict(list)
    for grain, bucket, key, (n,) in bin_rows:
        bins[grain, bucket, key[:-1]].append((key[-1], n))
    out = [(g, b, key, values, pack(bins.pop((g, b, key), ()))) for g, b, key, values in rows]
    out.extend((g, b, key, [0] * COUNTERS, pack(pairs)) for (g, b, key), pairs in bins.items())
    return sorted(out, key=lambda row: (row[0], row[1], row[2]))


@st.composite
def demo_shares(draw: st.DrawFn) -> list[tuple[Contribution, int]]:
    """Demo traces (real operations, sketches and contexts) starting over a few minutes to a few hours,
    some added twice and some taken out again, as re-finalization and purge do."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    spread_minutes = draw(st.sampled_from([1, 3, 25, 200]))
    shares: list[tuple[Contribution, int]] = []
    for _ in range(draw(st.integers(0, 12))):
        start = draw(st.integers(0, spread_minutes * MINUTE_US))
        trace = make_trace(rng, 1_700_000_000_000_000 + start)
        share = contribution(analyze(trace[0].trace_id, trace), trace)
        shares.append((share, 1))
        if draw(st.booleans()):
            shares.append((share, draw(st.sampled_from([1, -1]))))
    return shares


@settings(max_examples=60, deadline=None)
@given(demo_shares(), st.sampled_from([SQL_GRAINS, PLAIN_GRAINS]))
def test_sketch_rows_are_the_counter_rows_joined_with_the_bin_rows(
    shares: list[tuple[Contribution, int]], grains: tuple[int, ...]
) -> None:
    delta = RollupDelta()
    for share, sign in shares:
        delta.add(share, sign)
    assert delta.op_sketch_rows(grains) == joined(delta.op_rows(grains), delta.op_bin_rows(grains))
    assert delta.endpoint_sketch_rows(grains) == joined(delta.endpoint_rows(grains), delta.endpoint_bin_rows(grains))
    for share, sign in shares:
        delta.add(share, -sign)
    assert delta.op_sketch_rows(grains) == [] and delta.endpoint_sketch_rows(grains) == []
