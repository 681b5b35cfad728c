"""The remote sampling strategy: its JSON against Jaeger's proto and encoder, and the adaptive probabilities.

Read for these tests: jaeger-idl ``proto/api_v2/sampling.proto`` (messages, field names and numbers, the
``SamplingStrategyType`` enum); Jaeger v1.75.0 ``internal/uimodel/converter/v1/json/sampling.go``
(``SamplingStrategyResponseToJSON``: jsonpb with ``EmitDefaults``, then the null strategies removed, so
``"strategyType":"PROBABILISTIC"`` is always there and zero numbers are written), and
``internal/sampling/http/handler_test.go`` (the handler's answer parses back into the same response with
``SamplingStrategyResponseFromJSON``, i.e. jsonpb); Jaeger v1.75.0
``internal/sampling/samplingstrategy/adaptive/options.go`` (the defaults: initial probability 0.001, minimum
1e-5, at least one sample a minute) and ``post_aggregator.go`` (``calculateProbability``: bounded to
[min, 1]); OpenTelemetry Go contrib ``samplers/jaegerremote/sampler.go`` (the ``jaeger.sampler.type`` /
``jaeger.sampler.param`` attributes of a sampled span).
"""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from query_api.sampling_grpc import StrategyResponse
from shared.remote_sampling import (
    INITIAL_PROBABILITY,
    LOWER_BOUND_TPS,
    MIN_PROBABILITY,
    RESPONSE_DECODER,
    encode_response,
    probability,
    strategy,
)


def test_the_json_is_what_jaegers_encoder_writes_for_a_per_operation_strategy() -> None:
    body = encode_response(strategy({"GET /busy": 400.0, "GET /rare": 0.5, "GET /idle": 0.0}, 2.0))
    # jsonpb with EmitDefaults: fields in proto order, camelCase names, the enum by name, zeros written
    assert json.loads(body) == {
        "strategyType": "PROBABILISTIC",
        "probabilisticSampling": {"samplingRate": INITIAL_PROBABILITY},
        "operationSampling": {
            "defaultSamplingProbability": INITIAL_PROBABILITY,
            "defaultLowerBoundTracesPerSecond": LOWER_BOUND_TPS,
            "perOperationStrategies": [
                {"operation": "GET /busy", "probabilisticSampling": {"samplingRate": 0.005}},
                {"operation": "GET /rare", "probabilisticSampling": {"samplingRate": 1.0}},
            ],
            "defaultUpperBoundTracesPerSecond": 0.0,
        },
    }
    assert list(json.loads(body)) == ["strategyType", "probabilisticSampling", "operationSampling"]
    assert b"null" not in body and b"rateLimitingSampling" not in body


def test_the_json_parses_into_the_proto_messages_field_for_field() -> None:
    response = strategy({"a": 10.0, "b": 3.0}, 1.0)
    parsed = json_format.Parse(encode_response(response), StrategyResponse())  # unknown fields would raise
    assert parsed.strategyType == 0  # type: ignore[attr-defined]
    per_op = parsed.operationSampling  # type: ignore[attr-defined]
    assert per_op.defaultSamplingProbability == INITIAL_PROBABILITY
    assert per_op.defaultLowerBoundTracesPerSecond == LOWER_BOUND_TPS
    assert [(s.operation, s.probabilisticSampling.samplingRate) for s in per_op.perOperationStrategies] == [
        ("a", 0.1),
        ("b", 1 / 3),
    ]
    # and what protobuf writes back is read by our own decoder (the Python sampler's) as the same response
    assert RESPONSE_DECODER.decode(json_format.MessageToJson(parsed)).operation_sampling == response.operation_sampling


def test_the_decoder_reads_jaegers_other_answers() -> None:
    """A plain probabilistic strategy (the file-based provider's) and the rate-limiting one of
    ``handler_test.go``."""
    plain = RESPONSE_DECODER.decode(b'{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.5}}')
    assert plain.probabilistic_sampling is not None and plain.probabilistic_sampling.sampling_rate == 0.5
    assert plain.operation_sampling is None
    limited = RESPONSE_DECODER.decode(
        b'{"strategyType":"RATE_LIMITING","rateLimitingSampling":{"maxTracesPerSecond":42}}'
    )
    assert limited.strategy_type == "RATE_LIMITING"
    assert limited.rate_limiting_sampling is not None and limited.rate_limiting_sampling.max_traces_per_second == 42


@pytest.mark.parametrize(
    ("rate", "target", "expected"),
    [
        (300.0, 1.0, 1 / 300),
        (1.0, 1.0, 1.0),  # at the target: everything
        (0.2, 1.0, 1.0),  # below it: everything, never above 1
        (1e9, 1.0, MIN_PROBABILITY),  # never below Jaeger's minimum
        (30.0, 5.0, 1 / 6),
    ],
)
def test_the_probability_keeps_the_target_within_jaegers_bounds(rate: float, target: float, expected: float) -> None:
    assert probability(rate, target) == pytest.approx(expected)


def test_an_operation_without_traffic_gets_the_default_probability() -> None:
    per_op = strategy({"quiet": 0.0}, 1.0).operation_sampling
    assert per_op is not None and per_op.per_operation_strategies == []
    assert per_op.default_sampling_probability == INITIAL_PROBABILITY
