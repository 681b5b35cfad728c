"""``contribution`` and ``trace_contexts`` equal their frozen oracles (``finalizing_oracle.py``) exactly.

Both run their loops in the analysis core; as in ``test_analysis_equivalence.py``, the loaded core and
its pure-Python source are both checked. Exactly: types, float bits, list and dict order.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import analysis, critical_paths
from shared.compiled import load_source, source_path
from shared.demo import make_trace
from shared.models import Log, Span, flat_tags
from shared.store import rollups, sketch
from shared.store.buckets import BUCKET_BOUNDS_US
from tests.unit import finalizing_oracle as oracle
from tests.unit.exact import assert_exactly_equal
from tests.unit.span_strategies import T0, big_shapes, hostile_traces, nested_traces

SOURCE_CORE = load_source("shared.analysis_core", source_path(analysis.core))

TAG_VALUES = (
    st.text(max_size=4)
    | st.booleans()
    | st.integers(-3, 3)
    | st.integers()
    | st.sampled_from([0.0, -0.0, 1.0, 1.5, math.nan, math.inf, -math.inf, 1e300])
    | st.floats()
)
TAGS = st.dictionaries(st.sampled_from(["a", "b", "http.status_code", "cache.hit", "x.y"]), TAG_VALUES, max_size=4)


@st.composite
def tagged(draw: st.DrawFn, spans: list[Span]) -> list[Span]:
    """The spans with tags, and some with a resource, a scope or logs (the tag index reads them all)."""
    out = []
    for span in spans:
        extra: dict[str, Any] = {"tags": draw(TAGS)}
        if draw(st.integers(0, 3)) == 0:
            extra["resource"] = draw(TAGS)
        if draw(st.integers(0, 4)) == 0:
            extra["scope_name"] = draw(st.sampled_from(["lib", "a"]))
        if draw(st.integers(0, 4)) == 0:
            extra["scope_version"] = draw(st.sampled_from(["1.0", "b"]))
        if draw(st.integers(0, 3)) == 0:
            extra["logs"] = tuple(Log(timestamp_us=T0, fields=draw(TAGS)) for _ in range(draw(st.integers(1, 2))))
        out.append(msgspec.structs.replace(span, **extra))
    return out


def assert_contribution_matches(spans: list[Span], core: str) -> None:
    result = analysis.analyze("t", spans)
    expected_paths: dict[int, Any] = {}
    expected = oracle.contribution(result, spans, expected_paths)
    expected_contexts = oracle.trace_contexts(result, spans)
    if core == "loaded":
        paths: dict[int, Any] = {}
        got = rollups.contribution(result, spans, paths)
        assert got.sketched
        assert_exactly_equal(msgspec.structs.replace(got, ops=fixed_view(got.ops), sketched=False), expected)
        assert_exactly_equal(paths, expected_paths)
        assert_exactly_equal(critical_paths.trace_contexts(result, spans), expected_contexts)
        assert_exactly_equal(rollups.contribution(result, spans, tags=False), msgspec.structs.replace(got, tags=[]))
        ops = got.ops
    else:
        bounds = list(BUCKET_BOUNDS_US)
        ops, tags = SOURCE_CORE.span_shares(spans, analysis.SPAN_LAYOUT, bounds, flat_tags)
        assert_exactly_equal(fixed_view(ops), expected.ops)
        assert_exactly_equal(tags, expected.tags)
        assert_exactly_equal(SOURCE_CORE.span_shares(spans, analysis.SPAN_LAYOUT, bounds, flat_tags, False), (ops, []))
        segments = [(s.span_id, s.start, s.end) for s in result.critical_path_segments]
        contexts = SOURCE_CORE.critical_contexts(
            spans, analysis.SPAN_LAYOUT, segments, critical_paths.MAX_CONTEXT_DEPTH, critical_paths.ELIDED
        )
        assert_exactly_equal(contexts, expected_contexts)
    assert_bins_match(ops, spans)
    assert_op_loops_match(ops, analysis.core if core == "loaded" else SOURCE_CORE)


def _by_bucket(histogram: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for key, n in histogram.items():
        bucket = sketch.fixed_bucket(key)
        out[bucket] = out.get(bucket, 0) + n
    return out


def fixed_view(ops: list[rollups.OpShare]) -> list[rollups.OpShare]:
    """The op rows with their histograms by fixed bucket alone: what the oracle (written before the latency
    sketch) keeps."""
    return [(*op[:8], _by_bucket(op[8]), op[9], _by_bucket(op[10])) for op in ops]


def assert_bins_match(ops: list[rollups.OpShare], spans: list[Span]) -> None:
    """The op rows' histogram keys carry the sketch bin of each of their spans (error spans too)."""
    got: dict[tuple[Any, ...], Counter[int]] = defaultdict(Counter)
    for op in ops:
        for histogram, errors in ((op[8], False), (op[10], True)):
            for key, n in histogram.items():
                got[(*op[:3], errors)][sketch.split_key(key)[1]] += n
    expected: dict[tuple[Any, ...], Counter[int]] = defaultdict(Counter)
    for s in spans:
        index = sketch.bin_of(s.duration_us or 0)
        expected[s.service_name, s.operation_name, s.kind or "", False][index] += 1
        if s.status == "error":
            expected[s.service_name, s.operation_name, s.kind or "", True][index] += 1
    assert got == expected


def assert_op_loops_match(ops: list[rollups.OpShare], core: Any) -> None:
    """The index rows and the rollup rows of the op rows, as ``Contribution.index_ops`` and
    ``RollupDelta.add`` compute them in the core, equal the oracle's; the sketch rows of each key hold as
    many spans as its row."""
    assert_exactly_equal(core.op_index(ops), oracle.index_ops(fixed_view(ops)))
    rows: dict[Any, list[int]] = {}
    bins: dict[Any, list[int]] = {}
    expected: dict[Any, list[int]] = {}
    for minute, sign in ((7, 1), (7, 1), (8, -1), (7, -1)):  # a row added to, a new one, one taken from
        core.add_op_shares(rows, bins, minute, ops, sign, rollups.COUNTERS, sketch.LEGACY_BINS)
        oracle.add_op_shares(expected, minute, fixed_view(ops), sign, rollups.COUNTERS)
    assert_exactly_equal(rows, expected)
    for (minute, key), row in rows.items():
        assert sum(n for (m, (*k, _)), (n,) in bins.items() if m == minute and tuple(k) == key) == row[0]


CORES = ["loaded", "source"]


@pytest.mark.parametrize("core", CORES)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_hostile_traces_match_the_oracle(core: str, data: st.DataObject) -> None:
    assert_contribution_matches(data.draw(tagged(data.draw(hostile_traces()))), core)


@pytest.mark.parametrize("core", CORES)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_nested_traces_match_the_oracle(core: str, data: st.DataObject) -> None:
    assert_contribution_matches(data.draw(tagged(data.draw(nested_traces()))), core)


@pytest.mark.parametrize("core", CORES)
def test_demo_traces_match_the_oracle(core: str) -> None:
    rng = random.Random(3)
    for i in range(200):
        assert_contribution_matches(make_trace(rng, T0 + i * 1000, error_rate=0.1), core)


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("shape", ["deep chains", "wide", "cycle", "random", "demo concatenated"])
def test_big_shapes_match_the_oracle(core: str, shape: str) -> None:
    # the oracle walks each critical span's whole chain: 1000-deep is its practical limit
    assert_contribution_matches(big_shapes()[shape], core)  # "deep chains": contexts cut to MAX_CONTEXT_DEPTH


def test_a_ten_thousand_deep_chain_has_its_contexts_in_linear_time() -> None:
    spans = big_shapes()["chain"]
    result = analysis.analyze("t", spans)
    started = time.perf_counter()
    contexts = critical_paths.trace_contexts(result, spans)
    assert time.perf_counter() - started < 2.0  # the walk per span up its chain took ~50 s in Python
    assert sum(contexts.values()) == result.duration_us
    assert max(map(len, contexts)) == critical_paths.MAX_CONTEXT_DEPTH
    cut = [path for path in contexts if critical_paths.ELIDED in path]
    # spans deeper than the limit share the head of the chain: one context per last label (5 services)
    assert sorted(path[-1] for path in cut) == [f"svc{i}:op" for i in range(5)]
    assert all(path[-2] == critical_paths.ELIDED and len(path) == critical_paths.MAX_CONTEXT_DEPTH for path in cut)
