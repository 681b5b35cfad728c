"""RollupDelta's grains: the hour and all-time rows are the sums of the minute rows, for every series, and
the dependency rows per hour (the SQL backends') agree with the dependency rows at every grain (a backend
that keeps each grain as the sum of the one below)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from shared.store.rollups import HOUR, MINUTE, MINUTE_US, TOTAL, Contribution, RollupDelta

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
