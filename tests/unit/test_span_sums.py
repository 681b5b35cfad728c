"""``span_sums`` (``ingest/metrics.py``, a loop of the analysis core) equals its frozen oracle
(``metrics_oracle.py``) exactly, on the loaded core and on its pure-Python source: labels, counts,
duration sums and histograms, in the same order."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import metrics
from shared import analysis
from shared.compiled import load_source, source_path
from shared.demo import make_trace
from shared.models import Span
from shared.store.rollups import Contribution, contribution
from tests.unit import metrics_oracle as oracle
from tests.unit.exact import assert_exactly_equal
from tests.unit.span_strategies import T0, hostile_traces

SOURCE_CORE = load_source("shared.analysis_core", source_path(analysis.core))
CORES = ["loaded", "source"]


def sums(core: str, shares: list[Contribution]) -> list[metrics.SpanSum]:
    if core == "loaded":
        return metrics.span_sums(shares)
    return SOURCE_CORE.span_sums(  # type: ignore[no-any-return]
        [share.ops for share in shares],
        [share.weight for share in shares],
        metrics.SPAN_KINDS,
        "SPAN_KIND_UNSPECIFIED",
        "STATUS_CODE_UNSET",
        "STATUS_CODE_ERROR",
    )


def shares_of(traces: list[list[Span]], weights: list[int] | None = None) -> list[Contribution]:
    shares = [contribution(analysis.analyze("t", spans), spans) for spans in traces if spans]
    if weights is None:
        return shares
    return [msgspec.structs.replace(share, weight=w) for share, w in zip(shares, weights, strict=False)]


@st.composite
def with_errors(draw: st.DrawFn, spans: list[Span]) -> list[Span]:
    """Some spans failed, some have a kind the metrics do not name."""
    return [
        msgspec.structs.replace(
            span,
            status=draw(st.sampled_from(["success", "error"])),
            kind=draw(st.sampled_from([None, "server", "client", "internal", "producer", "consumer"])),
        )
        for span in spans
    ]


@pytest.mark.parametrize("core", CORES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_hostile_traces_sum_as_the_oracle(core: str, data: st.DataObject) -> None:
    traces = [data.draw(with_errors(data.draw(hostile_traces()))) for _ in range(data.draw(st.integers(1, 4)))]
    shares = shares_of(traces, data.draw(st.lists(st.integers(1, 1000), min_size=len(traces), max_size=len(traces))))
    assert_exactly_equal(sums(core, shares), oracle.span_sums(shares))


@pytest.mark.parametrize("core", CORES)
def test_demo_traces_sum_as_the_oracle(core: str) -> None:
    rng = random.Random(5)
    shares = shares_of([make_trace(rng, T0 + i * 1000, error_rate=0.2) for i in range(300)])
    expected = oracle.span_sums(shares)
    assert sum(row[4] for row in expected) == sum(op[3] for share in shares for op in share.ops)  # every span, once
    assert any(row[3] == "STATUS_CODE_ERROR" for row in expected)
    assert_exactly_equal(sums(core, shares), expected)


@pytest.mark.parametrize("core", CORES)
def test_each_span_counts_its_traces_adjusted_count_times(core: str) -> None:
    rng = random.Random(7)
    traces = [make_trace(rng, T0 + i * 1000, error_rate=0.2) for i in range(20)]
    once = sums(core, shares_of(traces))
    weighted = sums(core, shares_of(traces, [3] * len(traces)))
    assert [row[:4] for row in weighted] == [row[:4] for row in once]
    assert [(row[4], row[5]) for row in weighted] == [(3 * row[4], 3 * row[5]) for row in once]
    assert [row[6] for row in weighted] == [{b: 3 * n for b, n in row[6].items()} for row in once]
