"""Adjusted counts: the sampling probability read from tracestate and sampler attributes, and the integer
adjusted count's exact expectation."""

from __future__ import annotations

import math
from fractions import Fraction

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.adjusted_counts import (
    ONE,
    adjusted_count,
    rounding_hash,
    sampler_probability,
    threshold_probability,
    trace_adjusted_count,
    trace_probability,
)
from shared.models import Span, TagValue
from shared.store.rollups import Contribution, RollupDelta, decode_contribution
from shared.store.sketch import bin_of, key_of

T0 = 1_700_000_000_000_000


def span(
    span_id: str, parent: str | None = None, start: int = T0, trace_state: str | None = None, **fields: object
) -> Span:
    if trace_state is not None:
        fields["traceState"] = trace_state
    return msgspec.convert(
        {
            "traceId": "t1",
            "spanId": span_id,
            "parentSpanId": parent,
            "serviceName": "svc",
            "operationName": "op",
            "startTimeUs": start,
            "durationUs": 10,
            **fields,
        },
        Span,
    )


@given(st.integers(0, (1 << 56) - 1))
def test_a_threshold_of_14_digits_is_the_probability_one_minus_t_over_2_56(t: int) -> None:
    digits = format(t, "014x")
    assert threshold_probability(f"ot=th:{digits}") == Fraction((1 << 56) - t, 1 << 56)
    # trailing zeros may be left out, other sub-keys and vendors' entries are skipped
    short = digits.rstrip("0") or "0"
    assert threshold_probability(f"vendor=x, ot=rv:abcdef01234567;th:{short};p:8 ,other=y") == Fraction(
        (1 << 56) - t, 1 << 56
    )


def test_well_known_thresholds() -> None:
    assert threshold_probability("ot=th:0") == 1
    assert threshold_probability("ot=th:8") == Fraction(1, 2)
    assert threshold_probability("ot=th:c") == Fraction(1, 4)
    assert threshold_probability("ot=th:fd70a4") == Fraction((1 << 56) - (0xFD70A4 << 32), 1 << 56)  # about 1%


@given(st.text(max_size=40))
def test_a_malformed_or_missing_threshold_says_nothing(junk: str) -> None:
    for value in (junk, f"ot=th:{junk}g", "ot=th:", "ot=th:0123456789abcde", "ot=th:ABC", "ot=rv:00", "ot"):
        p = threshold_probability(value)
        assert p is None or 0 < p <= 1


@given(st.one_of(st.floats(min_value=1e-9, max_value=1.0), st.fractions(min_value=Fraction(1, 10**6), max_value=1)))
def test_a_probabilistic_sampler_states_its_param(p: float | Fraction) -> None:
    for keys in (("jaeger.sampler.type", "jaeger.sampler.param"), ("sampler.type", "sampler.param")):
        value: float | str = float(p)
        assert sampler_probability({keys[0]: "probabilistic", keys[1]: value}) == Fraction(value)
        assert sampler_probability({keys[0]: "probabilistic", keys[1]: str(value)}) == Fraction(str(value))


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.booleans(), st.integers()))
def test_other_types_and_unreadable_params_count_once(param: float | str | bool | int) -> None:
    p = sampler_probability({"sampler.type": "probabilistic", "sampler.param": param})
    assert p is not None and 0 < p <= 1
    for kind in ("const", "ratelimiting", "lowerbound", "something"):
        assert sampler_probability({"jaeger.sampler.type": kind, "jaeger.sampler.param": 0.001}) == ONE
    assert sampler_probability({"sampler.param": 0.5}) is None


def test_the_root_span_decides_then_the_earliest_span_that_says() -> None:
    root = span("r", tags={"sampler.type": "probabilistic", "sampler.param": 0.25})
    child = span("c", "r", start=T0 - 5, trace_state="ot=th:8")
    assert trace_probability([child, root]) == Fraction(1, 4)
    assert trace_probability([child, span("r")]) == 1  # the root says nothing: it decides all the same
    assert trace_probability([child]) == Fraction(1, 2)  # rootless: the earliest span that says
    orphans = [span("b", "x", start=T0 + 1, trace_state="ot=th:c"), span("a", "x", start=T0 + 2, trace_state="ot=th:8")]
    assert trace_probability(orphans) == Fraction(1, 4)
    assert trace_probability([span("r")]) == 1
    # tracestate first, then jaeger.sampler.*, then sampler.*
    both = span("r", trace_state="ot=th:8", tags={"jaeger.sampler.type": "probabilistic", "jaeger.sampler.param": 0.1})
    assert trace_probability([both]) == Fraction(1, 2)
    jaeger_first = span(
        "r", tags={"jaeger.sampler.type": "probabilistic", "jaeger.sampler.param": 0.5, "sampler.type": "const"}
    )
    assert trace_probability([jaeger_first]) == Fraction(1, 2)


@given(st.fractions(min_value=Fraction(1, 1000), max_value=1), st.integers(0, 1 << 30))
def test_the_integer_count_is_the_floor_or_the_ceiling_of_one_over_p(p: Fraction, seed: int) -> None:
    count = adjusted_count(f"trace-{seed}", p)
    assert count in (math.floor(1 / p), math.ceil(1 / p))


@settings(deadline=None, max_examples=30)
@given(st.fractions(min_value=Fraction(1, 50), max_value=1).filter(lambda p: (1 / p).denominator != 1))
def test_the_integer_count_is_unbiased(p: Fraction) -> None:
    """Over the whole hash range the count is ceil(1/p) exactly on a frac(1/p) share of it: its expectation
    over trace ids (uniform hashes) is 1/p. Checked on hash quantiles: the share of hashes below the
    rounding cut is frac(1/p) to within one step of 2^-64."""
    inverse = 1 / p
    whole = int(inverse)
    frac = inverse - whole
    ids = [f"id-{i}" for i in range(4000)]
    counts = [adjusted_count(i, p) for i in ids]
    up = sum(c == whole + 1 for c in counts)
    # the cut is exactly frac * 2^64: a hash rounds up iff it falls below it
    assert all((c == whole + 1) == (rounding_hash(i) < frac * (1 << 64)) for i, c in zip(ids, counts, strict=True))
    assert abs(up / len(ids) - float(frac)) < 0.05  # 4000 uniform hashes: within ~3 standard deviations


def test_the_sum_of_adjusted_counts_estimates_the_traffic() -> None:
    p = Fraction(3, 10)  # 1/p = 3.333...
    total = sum(adjusted_count(f"trace-{i}", p) for i in range(30_000))
    assert abs(total / 30_000 - float(1 / p)) < 0.02


def test_a_trace_without_sampler_information_counts_once() -> None:
    assert trace_adjusted_count("t1", [span("r"), span("c", "r", tags={"http.method": "GET"})]) == 1
    assert trace_adjusted_count("t1", [span("r", trace_state="ot=th:c")]) == 4
    assert trace_adjusted_count("t1", [span("r", trace_state="ot=th:0")]) == 1


def test_contributions_stored_before_the_sketch_or_the_weights_decode_with_the_defaults() -> None:
    before_both = decode_contribution(msgspec.msgpack.encode([T0, False, 5, ["s", "o"], [], [], [], []]))
    assert (before_both.sketched, before_both.weight) == (False, 1)
    before_weights = decode_contribution(msgspec.msgpack.encode([T0, False, 5, ["s", "o"], [], [], [], [], True]))
    assert (before_weights.sketched, before_weights.weight) == (True, 1)
    now = msgspec.structs.replace(before_weights, weight=7)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(now))[-2:] == [True, 7]  # weight last
    assert decode_contribution(msgspec.msgpack.encode(now)) == now


def test_the_delta_counts_the_weight_and_keeps_the_excess_as_unseen() -> None:
    share = Contribution(
        start_us=T0,
        failed=True,
        duration_us=100,
        endpoint=("a", "root"),
        ops=[
            ("a", "root", "", 1, 1, 100, 100, 100, {key_of(100): 1}, 100, {key_of(100): 1}),
            ("b", "x", "", 2, 0, 50, 20, 30, {key_of(20): 1, key_of(30): 1}, 0, {}),
        ],
        deps=[("a", "b", 2, 0)],
        tags=[],
        contexts=[(7, 60)],
        sketched=True,
        weight=4,
    )
    delta = RollupDelta()
    delta.add(share, +1)
    minute = T0 // 60_000_000
    assert delta.failed == 1  # received
    assert delta.endpoints[(minute, ("a", "root"))][:3] == [4, 4, 400]
    assert delta.ops[(minute, ("b", "x", ""))][:3] == [8, 0, 200]
    assert delta.deps[(minute, ("a", "b"))] == [8, 0]
    assert delta.contexts[(minute, ("a", "root", 7))] == [240, 4]
    assert delta.unseen == {(minute, ("a",)): [3, 3, 3, 3], (minute, ("b",)): [0, 0, 6, 0]}
    assert delta.endpoint_bins == {(minute, ("a", "root", bin_of(100))): [4]}
    assert delta.op_bins[(minute, ("b", "x", "", bin_of(20)))] == [4]  # one span of 20 µs, 4 times
    assert sum(n for (_, key), [n] in delta.op_bins.items() if key[:2] == ("a", "root")) == 4
    delta.add(share, -1)
    assert not any(any(v) for v in delta.unseen.values())
    assert not any(delta.unseen_rows())
    assert not delta.endpoint_bin_rows() and not delta.op_bin_rows()  # subtracted exactly


@pytest.mark.parametrize(
    ("tags", "weight"),
    [
        ({"jaeger.sampler.type": "probabilistic", "jaeger.sampler.param": 0.01}, 100.0),  # the Go SDK's
        ({"sampler.type": "probabilistic", "sampler.param": 0.25}, 4.0),  # Jaeger's clients'
        ({"sampler.type": "probabilistic", "sampler.param": "0.5"}, 2.0),
        ({"jaeger.sampler.type": "ratelimiting", "jaeger.sampler.param": 0.0166}, 1.0),  # a lower bound's pick
        ({"jaeger.sampler.type": "probabilistic", "jaeger.sampler.param": 0.0}, 1.0),  # out of range
        ({"jaeger.sampler.type": "probabilistic", "jaeger.sampler.param": 2.0}, 1.0),
        ({"jaeger.sampler.type": "probabilistic", "jaeger.sampler.param": True}, 1.0),
        ({"jaeger.sampler.type": "probabilistic", "jaeger.sampler.param": "half"}, 1.0),
        ({}, 1.0),  # no sampler: counted as itself
    ],
)
def test_a_root_span_sampled_by_a_jaeger_sampler_weighs_one_over_its_probability(
    tags: dict[str, TagValue], weight: float
) -> None:
    """What remote sampling's traffic estimate weighs a stored trace with (the Go SDK's and Jaeger's tags)."""
    assert float(1 / trace_probability([span("r", tags=tags)])) == pytest.approx(weight)
