"""The rewritten analysis equals the frozen oracle (``analysis_oracle.py``) exactly, on every input.

"Exactly" means: every field of the TraceAnalysis, with the same Python types (tuple stays tuple, int stays
int), the same float values bit for bit (``repr`` equal, so ``0.0`` and ``-0.0`` differ), and the same dict
order (``serviceBreakdown`` is ordered largest first). ``span_tree`` returns the same forest, holding the
very same span objects.

Both implementations of the core run here: the one ``shared.analysis`` loaded (the compiled build when it
is fresh) and the pure-Python source, which a stale or missing build falls back to.
"""

from __future__ import annotations

import functools
import math
import random
import sys
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import analysis
from shared.compiled import load_source, source_path
from shared.demo import make_trace
from shared.models import Kind, Span, StatusInput
from tests.unit import analysis_oracle as oracle
from tests.unit.exact import assert_exactly_equal

T0 = 1_732_500_000_000_000
LOADED_CORE = sys.modules["shared.analysis_core"]  # what shared.analysis loaded: compiled, or the source
CORES = {"loaded": LOADED_CORE, "source": load_source("shared.analysis_core", source_path(LOADED_CORE))}


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
        layout, share, types = analysis._SPAN_LAYOUT, analysis.BOTTLENECK_SHARE_PERCENT, analysis._RESULT_TYPES
        assert_exactly_equal(CORES[core].analyze(trace_id, spans, layout, share, types), expected)
        return
    new_roots = analysis.span_tree(spans)
    old_roots = oracle.span_tree(spans)
    assert [root.span.span_id for root in new_roots] == [root.span.span_id for root in old_roots]
    assert list(forest_shape(new_roots)) == list(forest_shape(old_roots))


# --- random and hostile traces --------------------------------------------------------------------------

KINDS: list[Kind | None] = [None, "server", "client", "producer", "consumer", "internal"]
STATUSES: list[StatusInput] = ["success", "error", "ok", "failed"]


@st.composite
def hostile_traces(draw: st.DrawFn) -> list[Span]:
    """Small traces with every awkward feature: ties in start and end, duplicates, cycles, self-parents,
    orphans, several parentless spans, open spans, producer/consumer pairs, zero lengths, huge values."""
    n = draw(st.integers(1, 40))
    scale = draw(st.sampled_from([3, 50, 1000, 2**52]))  # small scales force ties
    ids = draw(st.sampled_from(["plain", "mixed"]))
    names = [f"s{i}" if ids == "plain" else f"{'x' * (i % 3)}{i * 7 % 11}-{i}" for i in range(n)]
    spans: list[Span] = []
    for i in range(n):
        link = draw(st.sampled_from(["tree", "tree", "tree", "tree", "tree", "none", "any", "self", "missing"]))
        if link == "tree":
            parent: str | None = names[draw(st.integers(0, i - 1))] if i else None
        elif link == "any":
            parent = names[draw(st.integers(0, n - 1))]
        elif link == "self":
            parent = names[i]
        elif link == "missing":
            parent = "gone"
        else:
            parent = None
        spans.append(
            Span(
                trace_id="t",
                span_id=names[i],
                parent_span_id=parent,
                service_name=draw(st.sampled_from(["api", "users", "db", "queue", "a:b"])),
                operation_name=draw(st.sampled_from(["get", "put"])),
                start_time_us=draw(st.integers(0, scale)),
                duration_us=draw(st.none() | st.integers(0, scale)),
                kind=draw(st.sampled_from(KINDS)),
                status=draw(st.sampled_from(STATUSES)),
            )
        )
    for i in draw(st.lists(st.integers(0, n - 1), max_size=4)):
        spans.append(
            msgspec.structs.replace(
                spans[i],
                duration_us=draw(st.none() | st.integers(0, scale)),
                parent_span_id=draw(st.sampled_from([spans[i].parent_span_id, None, names[0]])),
            )
        )
    if draw(st.booleans()):
        spans = draw(st.permutations(spans))
    return spans


@st.composite
def nested_traces(draw: st.DrawFn) -> list[Span]:
    """Well-formed trees whose children mostly lie inside their parent (the common shape), in any order."""
    n = draw(st.integers(1, 60))
    windows = [(0, draw(st.integers(1, 10**6)))]
    root = Span(
        trace_id="t",
        span_id="r",
        service_name="gw",
        operation_name="in",
        start_time_us=T0,
        duration_us=windows[0][1],
        kind="server",
    )
    spans = [root]
    for i in range(1, n):
        parent = draw(st.integers(0, i - 1))
        start, end = windows[parent]
        kid_start = draw(st.integers(start, end))
        kid_end = draw(st.integers(kid_start, end + draw(st.sampled_from([0, 0, 0, 10]))))
        windows.append((kid_start, kid_end))
        spans.append(
            Span(
                trace_id="t",
                span_id=f"k{i}",
                parent_span_id="r" if parent == 0 else f"k{parent}",
                service_name=draw(st.sampled_from(["gw", "users", "db", "cache"])),
                operation_name="op",
                start_time_us=T0 + kid_start,
                duration_us=kid_end - kid_start,
                kind=draw(st.sampled_from(KINDS)),
                status=draw(st.sampled_from(["success", "success", "error"])),
            )
        )
    return draw(st.permutations(spans)) if draw(st.booleans()) else spans


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


@functools.cache
def big_shapes() -> dict[str, list[Span]]:
    def span(span_id: str, parent: str | None, start: int, duration: int | None, **extra: Any) -> Span:
        return Span(
            trace_id="t",
            span_id=span_id,
            parent_span_id=parent,
            service_name=extra.pop("service", "svc"),
            operation_name="op",
            start_time_us=T0 + start,
            duration_us=duration,
            **extra,
        )

    rng = random.Random(7)
    n = 10_000
    return {
        "chain": [span(f"s{i}", f"s{i - 1}" if i else None, i, 2 * (n - i), service=f"svc{i % 5}") for i in range(n)],
        "deep chains": [span("root", None, 0, 10_000_000)]
        + [
            span(f"c{c}-{i}", "root" if i == 0 else f"c{c}-{i - 1}", c * 1_000_000 + i * 500, (1000 - i) * 1000)
            for c in range(10)
            for i in range(1000)
        ],
        "wide": [span("root", None, 0, 1_000_000)]
        + [span(f"k{i}", "root", (i * 37) % 1000 * 1000, (i * 101) % 50 * 1000, service=f"s{i % 7}") for i in range(n)],
        "cycle": [span(f"s{i}", f"s{(i + 1) % n}", i, 1000) for i in range(n)],
        "random": [
            span(
                f"r{i}",
                rng.choice([None, "gone", f"r{rng.randrange(n)}", f"r{rng.randrange(i + 1)}"]),
                rng.randrange(10**6),
                rng.choice([None, rng.randrange(10**5)]),
                kind=rng.choice(KINDS),
                service=rng.choice(["a", "b", "c"]),
            )
            for i in range(n)
        ],
        "demo concatenated": [s for i in range(700) for s in make_trace(rng, T0 + i * 10)],
    }


@pytest.mark.parametrize("core", list(CORES))
@pytest.mark.parametrize("shape", list(big_shapes()))
def test_big_shapes_match_the_oracle(core: str, shape: str) -> None:
    assert_same_as_oracle(big_shapes()[shape], core)
