"""Adjusted counts: how many traces of the real traffic one received trace stands for.

A producer that samples at the head (its SDK keeps a trace with probability p) sends us one trace for
every 1/p it serves; counting each received trace 1/p times makes the rollups estimate the traffic, not
the sample (Horvitz-Thompson: the sum of 1/p over the received traces is an unbiased estimate of the
traces served). p is read from what the producer wrote on the trace's root span (or, without a root, on
the earliest span that says), first match wins:

1. the W3C ``tracestate`` entry ``ot=th:<hex>`` of OpenTelemetry's probability sampling (specification
   "TraceState: Probability Sampling"): the rejection threshold T of 1 to 14 hex digits (trailing zeros
   left out), scaled to 56 bits; the span was kept with p = 1 - T / 2^56;
2. the attributes ``jaeger.sampler.type`` / ``jaeger.sampler.param`` (what the OpenTelemetry Go sampler
   ``go.opentelemetry.io/contrib/samplers/jaegerremote`` writes);
3. the tags ``sampler.type`` / ``sampler.param`` (the Jaeger clients').

Of the Jaeger sampler types, only ``probabilistic`` states a probability (its param, a number or a
numeric string, in (0, 1]). Jaeger's own adaptive sampler counts only those traces as throughput
(internal/sampling/samplingstrategy/adaptive/aggregator.go: lower-bound traces are recorded with count
0) because the others' probability is unknown: a ``ratelimiting`` or ``lowerbound`` trace was kept by a
rate limiter (the jaegerremote Go sampler writes ``ratelimiting`` for its per-operation lower bound as
well), and ``const`` keeps everything. Here such a trace counts once, as received: weighting it 0 as
Jaeger does would be unbiased only when a probabilistic sampler runs beside the limiter, and would make
a service sampled by a rate limiter alone vanish from the rollups; counting it once over-estimates by at
most the limiter's rate (Jaeger's default lower bound is one trace per operation per minute). A trace
that says nothing, or says it unreadably, counts once too: rows written before adjusted counts existed
keep their meaning.

Counts stay integers everywhere (the rollups are integer columns and Cassandra-safe sums): a trace's
adjusted count is floor(1/p), plus one with probability frac(1/p), decided by a hash of its trace id.
Its expectation is exactly 1/p, so sums stay unbiased, and every worker and every re-finalization of the
trace decides the same way. The hash is keyed apart from the tail sampler's, so the rounding does not
depend on which traces a sampler keeps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from fractions import Fraction
from typing import Final

from shared.models import Span, Tags, TagValue

ONE: Final = Fraction(1)
TH_BITS: Final = 56
"""OpenTelemetry's sampling thresholds and randomness are 56-bit numbers."""
TH_DIGITS: Final = TH_BITS // 4
SAMPLER_KEYS: Final = (("jaeger.sampler.type", "jaeger.sampler.param"), ("sampler.type", "sampler.param"))
PROBABILISTIC: Final = "probabilistic"
_HEX: Final = frozenset("0123456789abcdef")
_ROUNDING_KEY: Final = b"adjusted-count"


def threshold_probability(trace_state: str) -> Fraction | None:
    """The sampling probability of a W3C ``tracestate`` value's ``ot=th:<hex>``, exactly; ``None`` when it
    has no such entry or the threshold is malformed (not 1..14 lowercase hex digits)."""
    for member in trace_state.split(","):
        key, equals, value = member.strip().partition("=")
        if key != "ot" or not equals:
            continue
        for field in value.split(";"):
            name, colon, digits = field.partition(":")
            if name == "th" and colon:
                if not 1 <= len(digits) <= TH_DIGITS or not _HEX.issuperset(digits):
                    return None
                threshold = int(digits.ljust(TH_DIGITS, "0"), 16)
                return Fraction((1 << TH_BITS) - threshold, 1 << TH_BITS)
        return None  # one ``ot`` entry at most
    return None


def _param(value: TagValue | None) -> Fraction | None:
    """A ``probabilistic`` sampler's param as a probability in (0, 1], else ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        p = Fraction(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError, ZeroDivisionError):  # "abc", inf, nan
        return None
    return p if 0 < p <= 1 else None


def sampler_probability(tags: Tags) -> Fraction | None:
    """The probability the Jaeger sampler attributes in ``tags`` state: the param of a ``probabilistic``
    sampler, 1 for any other sampler type (see the module docstring), ``None`` when no type is there."""
    for type_key, param_key in SAMPLER_KEYS:
        kind = tags.get(type_key)
        if kind is None:
            continue
        if kind == PROBABILISTIC:
            return _param(tags.get(param_key)) or ONE
        return ONE
    return None


def span_probability(span: Span) -> Fraction | None:
    """What ``span`` says of its trace's sampling probability; ``None`` when it says nothing."""
    if span.trace_state is not None:
        p = threshold_probability(span.trace_state)
        if p is not None:
            return p
    tags = span.tags
    if SAMPLER_KEYS[0][0] in tags or SAMPLER_KEYS[1][0] in tags:
        return sampler_probability(tags)
    return None


def trace_probability(spans: Sequence[Span]) -> Fraction:
    """The trace's head-sampling probability: what its main root (the earliest root span) says; without a
    root, what the earliest span that says anything says (start time, then span id); else 1."""
    root: tuple[int, str, Span] | None = None
    told: tuple[int, str, Fraction] | None = None
    for span in spans:
        if span.parent_span_id is None:
            rank = (span.start_time_us, span.span_id)
            if root is None or rank < root[:2]:
                root = (*rank, span)
        elif root is None and (span.trace_state is not None or span.tags):
            p = span_probability(span)
            if p is not None:
                rank = (span.start_time_us, span.span_id)
                if told is None or rank < told[:2]:
                    told = (*rank, p)
    if root is not None:
        return span_probability(root[2]) or ONE
    return told[2] if told is not None else ONE


def rounding_hash(trace_id: str) -> int:
    """A 64-bit hash of the trace id for the rounding of its adjusted count."""
    digest = hashlib.blake2b(trace_id.encode(), digest_size=8, key=_ROUNDING_KEY).digest()
    return int.from_bytes(digest, "big")


def adjusted_count(trace_id: str, probability: Fraction) -> int:
    """The integer adjusted count of a trace sampled with ``probability`` (in (0, 1]): floor(1/p), plus
    one when the trace id's hash falls below frac(1/p) of the hash range (exact integer arithmetic)."""
    inverse = 1 / probability
    whole, rest = divmod(inverse.numerator, inverse.denominator)
    if rest and rounding_hash(trace_id) * inverse.denominator < rest << 64:
        whole += 1
    return whole


def trace_adjusted_count(trace_id: str, spans: Sequence[Span]) -> int:
    """The adjusted count of the trace of these spans (see the module docstring)."""
    p = trace_probability(spans)
    return 1 if p == ONE else adjusted_count(trace_id, p)
