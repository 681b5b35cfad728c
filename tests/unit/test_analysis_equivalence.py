"""The rewritten analysis equals the frozen oracle (``analysis_oracle.py``) exactly, on every input.

"Exactly" means: every field of the TraceAnalysis, with the same Python types (tuple stays tuple, int stays
int), the same float values bit for bit (``repr`` equal, so ``0.0`` and ``-0.0`` differ), and the same dict
order (``serviceBreakdown`` is ordered largest first). ``span_tree`` returns the same forest, holding the
very same span objects.

Both implementations of the core run here: the one ``shared.analysis`` loaded (the compiled build when it
is fresh) and the pure-Python source, which a stale or missing build falls back to.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import analysis
from shared.compiled import load_source, source_path
from shared.demo import make_trace
from shared.models import Span
from tests.unit import analysis_oracle as oracle
from tests.unit.exact import assert_exactly_equal
from tests.unit.span_strategies import T0, big_shapes, hostile_traces, nested_traces

CORES = {"loaded": analysis.core, "source": load_source("shared.analysis_core", source_path(analysis.core))}


def forest_shape(roots: list[Any]) -> Iterator[tuple[int, int, list[str]]]:
    """(depth, id of the span object, children's span ids) for every node, depth first, iteratively."""
    stack = [(0, node) for node in reversed(roots)]
    while stack:
        depth, node = stack.pop()
        yield depth, id(node.span), [kid.span.span_id for kid in node.children]
        stack.extend((depth + 1, kid) for kid in reversed(node.children))


def assert_same_as_oracle(spans: list[Span], core: str, trace_id: str = "t") -> None:
    expected = oracle.analyze(trace_id, spans)
    if core == "loaded":
        assert_exactly_equal(analysis.analyze(trace_id, spans), expected)
    else:
        layout, share, types = analysis.SPAN_LAYOUT, analysis.BOTTLENECK_SHARE_PERCENT, analysis._RESULT_TYPES
        assert_exactly_equal(CORES[core].analyze(trace_id, spans, layout, share, types), expected)
        return
    new_roots = analysis.span_tree(spans)
    old_roots = oracle.span_tree(spans)
    assert [root.span.span_id for root in new_roots] == [root.span.span_id for root in old_roots]
    assert list(forest_shape(new_roots)) == list(forest_shape(old_roots))


def test_both_cores_are_distinct_modules() -> None:
    assert CORES["source"] is not CORES["loaded"]
    assert str(CORES["source"].__file__).endswith(".py")


@pytest.mark.parametrize("core", list(CORES))
@settings(max_examples=300, deadline=None)
@given(spans=hostile_traces())
def test_hostile_traces_match_the_oracle(core: str, spans: list[Span]) -> None:
    assert_same_as_oracle(spans, core)


@pytest.mark.parametrize("core", list(CORES))
@settings(max_examples=150, deadline=None)
@given(spans=nested_traces())
def test_nested_traces_match_the_oracle(core: str, spans: list[Span]) -> None:
    assert_same_as_oracle(spans, core)


# --- rounding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("core", list(CORES))
@settings(max_examples=300, deadline=None)
@given(x=st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 100) | st.floats(0, 2**51))
def test_round2_is_round_to_two_decimals(core: str, x: float) -> None:
    assert repr(CORES[core]._round2(x)) == repr(round(x, 2))


@pytest.mark.parametrize("core", list(CORES))
@settings(max_examples=300, deadline=None)
@given(x=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**60), 2**60).map(lambda n: n / 2))
def test_round_is_round(core: str, x: float) -> None:
    try:
        expected: int | type[Exception] = round(x)
    except (ValueError, OverflowError) as error:
        expected = type(error)
        with pytest.raises(expected):
            CORES[core]._round(x)
    else:
        assert CORES[core]._round(x) == expected


@pytest.mark.parametrize("core", list(CORES))
@settings(max_examples=300, deadline=None)
@given(hundredths=st.integers(0, 10**9), ulps=st.integers(-4, 4))
def test_round2_near_ties(core: str, hundredths: int, ulps: int) -> None:
    # x within a few ulps of a decimal tie (k + 0.5) / 100: where x * 100 can land exactly on k + 0.5
    x = (hundredths + 0.5) / 100
    for _ in range(abs(ulps)):
        x = math.nextafter(x, math.inf if ulps > 0 else -math.inf)
    assert repr(CORES[core]._round2(x)) == repr(round(x, 2))


# --- the demo traffic and the big shapes ----------------------------------------------------------------


@pytest.mark.parametrize("core", list(CORES))
@pytest.mark.parametrize("seed", range(2))
def test_demo_traces_match_the_oracle(core: str, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(200):
        spans = make_trace(rng, T0 + i * 1000, error_rate=0.1 if seed % 2 else 0.01)
        assert_same_as_oracle(spans, core, spans[0].trace_id)


@pytest.mark.parametrize("core", list(CORES))
@pytest.mark.parametrize("shape", list(big_shapes()))
def test_big_shapes_match_the_oracle(core: str, shape: str) -> None:
    assert_same_as_oracle(big_shapes()[shape], core)
