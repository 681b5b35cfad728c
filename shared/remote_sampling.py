"""Remote sampling: the strategy a producer's sampler polls for, and the adaptive probabilities in it.

The wire model is Jaeger's ``SamplingStrategyResponse`` (jaeger-idl ``proto/api_v2/sampling.proto``) as
Jaeger's query and collector serve it over HTTP: jsonpb JSON with camelCase field names and string enums
(Jaeger ``internal/uimodel/converter/v1/json/sampling.go``, ``SamplingStrategyResponseToJSON``: defaults
emitted, null strategies left out). The OpenTelemetry Go sampler (contrib ``samplers/jaegerremote``) parses
it with gogo's jsonpb, the Python sampler in :mod:`shared.otel` with :data:`RESPONSE_DECODER`.

The probabilities are per (service, root operation), from each endpoint's estimated true traffic (traces
per second, each stored trace counted 1 / the probability it was sampled with, as
:mod:`shared.adjusted_counts` reads it): ``p = target / rate`` bounded by Jaeger's
adaptive sampler's defaults (``internal/sampling/samplingstrategy/adaptive/options.go``): at least
:data:`MIN_PROBABILITY`, at most 1. An operation without traffic in the window gets the default
probability, Jaeger's initial one (:data:`INITIAL_PROBABILITY`), and every operation the lower bound of
:data:`LOWER_BOUND_TPS` traces per second, which the samplers guarantee with a rate limiter.

Jaeger's post-aggregator (``adaptive/post_aggregator.go``, ``calculateProbability``) counts *sampled* spans
per second, so its new probability is ``previous x target / sampled rate``: it needs the previous probability
from its own memory, keeps it while within 30% of the target, and caps an increase at 50% a round
(``calculationstrategy/percentage_increase_capped_calculator.go``) because a low sampled count is a noisy
guess of the traffic. Here the estimate is of the true rate (each trace counts ``1 / the probability it was
sampled with``), so ``target / rate`` is the same fixed point reached in one round, and it is a function of
the stored traces alone: every API replica answers the same without a leader or a stored probability table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

import msgspec

MIN_PROBABILITY: Final = 1e-5
"""Jaeger's ``defaultMinSamplingProbability``: one in 100k requests."""
INITIAL_PROBABILITY: Final = 0.001
"""Jaeger's ``defaultInitialSamplingProbability``: the default probability, for operations not seen yet."""
LOWER_BOUND_TPS: Final = 1.0 / 60
"""Jaeger's ``defaultMinSamplesPerSecond``: every operation keeps at least one trace a minute."""


class ProbabilisticSampling(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    sampling_rate: float


class RateLimitingSampling(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    max_traces_per_second: int


class OperationStrategy(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    operation: str
    probabilistic_sampling: ProbabilisticSampling


class OperationSampling(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    default_sampling_probability: float
    default_lower_bound_traces_per_second: float
    per_operation_strategies: list[OperationStrategy] = []
    default_upper_bound_traces_per_second: float = 0.0
    """0: no upper bound (the field jsonpb emits as a default)."""


class SamplingStrategyResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What ``GET /api/sampling?service=S`` answers (see :func:`encode_response`)."""

    strategy_type: Literal["PROBABILISTIC", "RATE_LIMITING"] = "PROBABILISTIC"
    probabilistic_sampling: ProbabilisticSampling | None = None
    rate_limiting_sampling: RateLimitingSampling | None = None
    operation_sampling: OperationSampling | None = None


RESPONSE_ENCODER: Final = msgspec.json.Encoder()
RESPONSE_DECODER: Final = msgspec.json.Decoder(SamplingStrategyResponse)


def encode_response(response: SamplingStrategyResponse) -> bytes:
    """The jsonpb JSON of ``response`` as Jaeger writes it: every field, defaults included (so
    ``"strategyType":"PROBABILISTIC"``, the enum's zero), except the strategies that are null."""
    body = msgspec.to_builtins(response)
    return RESPONSE_ENCODER.encode({key: value for key, value in body.items() if value is not None})


def probability(rate_tps: float, target_tps: float) -> float:
    """The probability that keeps ``target_tps`` of ``rate_tps`` traces per second, within the bounds."""
    if rate_tps <= target_tps:
        return 1.0
    return max(MIN_PROBABILITY, target_tps / rate_tps)


def strategy(rates: Mapping[str, float], target_tps: float) -> SamplingStrategyResponse:
    """The per-operation strategy for one service's endpoints' estimated rates (traces/s), operations sorted."""
    return SamplingStrategyResponse(
        probabilistic_sampling=ProbabilisticSampling(sampling_rate=INITIAL_PROBABILITY),
        operation_sampling=OperationSampling(
            default_sampling_probability=INITIAL_PROBABILITY,
            default_lower_bound_traces_per_second=LOWER_BOUND_TPS,
            per_operation_strategies=[
                OperationStrategy(
                    operation=operation,
                    probabilistic_sampling=ProbabilisticSampling(sampling_rate=probability(rate, target_tps)),
                )
                for operation, rate in sorted(rates.items())
                if rate > 0
            ],
        ),
    )
