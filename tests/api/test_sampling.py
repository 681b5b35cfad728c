"""Remote sampling over HTTP (``/api/sampling``, ``/sampling``) and gRPC (``SamplingManager``), on every
store backend: the strategy from stored traces weighed by the probability their roots were sampled with.

Read: Jaeger v1.75.0 ``internal/sampling/http/handler.go`` (``serviceFromRequest``: exactly one
``service`` parameter, else 400 "'service' parameter must be provided once"; ``encodeProto``: the jsonpb
JSON, ``application/json``) and its ``handler_test.go`` (no service and a repeated one are both 400s);
jaeger-idl ``proto/api_v2/sampling.proto`` (``SamplingManager.GetSamplingStrategy(SamplingStrategyParameters
{serviceName})``); OpenTelemetry Go contrib ``samplers/jaegerremote/sampler_remote.go`` (the client's request:
``GET <url>?service=<name>``; a status of 400 or more is an error).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import msgspec
import pytest
from google.protobuf import json_format

from query_api.sampling_grpc import PATH, StrategyParameters, StrategyResponse
from query_api.services.sampling import SamplingService
from shared.clock import now_us
from shared.otel import RemoteSampler
from shared.remote_sampling import INITIAL_PROBABILITY, LOWER_BOUND_TPS
from tests.conftest import free_port

from .conftest import ServeApi
from .support import LiveApi, load_sampled_traffic, strategy_rates

pytestmark = pytest.mark.kafka

INTERVAL_S = 20


async def test_the_strategy_is_per_operation_from_the_estimated_traffic(serve_api: ServeApi) -> None:
    async with serve_api(remote_sampling_interval_s=INTERVAL_S, remote_sampling_target_tps=1.0) as api:
        await load_sampled_traffic(api, INTERVAL_S)
        reply = await api.get("/api/sampling?service=shop")
        assert reply.status == 200, reply.text
        assert reply.headers["Content-Type"] == "application/json"
        body = reply.json
        assert body["strategyType"] == "PROBABILISTIC"
        assert body["operationSampling"]["defaultSamplingProbability"] == INITIAL_PROBABILITY
        assert strategy_rates(body) == pytest.approx({"GET /busy": 1 / 20, "GET /mid": 1 / 2, "GET /rare": 1.0})
        # the Go sampler's default path answers the same; an unknown service gets the defaults only
        assert (await api.get("/sampling?service=shop")).json == body
        unknown = (await api.get("/api/sampling?service=nobody")).json
        assert unknown["operationSampling"]["perOperationStrategies"] == []


@pytest.mark.parametrize("query", ["", "?service=a&service=a", "?services=a"])
async def test_without_exactly_one_service_the_answer_is_a_400(api: LiveApi, query: str) -> None:
    for path in ("/api/sampling", "/sampling"):
        reply = await api.get(path + query)
        assert reply.status == 400, reply.text
        assert reply.json == {"error": "service: 'service' parameter must be provided once"}


async def test_grpc_answers_what_http_answers(serve_api: ServeApi) -> None:
    bind = f"127.0.0.1:{free_port()}"
    async with serve_api(remote_sampling_interval_s=INTERVAL_S, remote_sampling_grpc_bind=bind) as api:
        await load_sampled_traffic(api, INTERVAL_S)
        http_body = (await api.get("/api/sampling?service=shop")).text
        answer = await _grpc_strategy(bind, "shop")
        assert answer == json_format.Parse(http_body, StrategyResponse())
        assert json.loads(json_format.MessageToJson(answer))["operationSampling"]["perOperationStrategies"]


async def _grpc_strategy(bind: str, service: str, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    async with grpc.aio.insecure_channel(bind) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(
            PATH,
            request_serializer=lambda request: request.SerializeToString(),
            response_deserializer=StrategyResponse.FromString,
        )
        return await call(StrategyParameters(serviceName=service), timeout=30, metadata=metadata)  # type: ignore[call-arg]


async def test_grpc_asks_for_the_read_tokens_as_http_does(serve_api: ServeApi) -> None:
    bind = f"127.0.0.1:{free_port()}"
    async with serve_api(remote_sampling_grpc_bind=bind, read_tokens=("reader",)):
        wrong = (("authorization", "Bearer nope"),)
        for metadata, code in (((), grpc.StatusCode.UNAUTHENTICATED), (wrong, grpc.StatusCode.PERMISSION_DENIED)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _grpc_strategy(bind, "shop", metadata)
            assert refused.value.code() == code
        answer = await _grpc_strategy(bind, "shop", (("authorization", "Bearer reader"),))
        assert answer.operationSampling.defaultSamplingProbability == INITIAL_PROBABILITY


async def test_replicas_answer_the_same_and_recompute_each_interval(api: LiveApi) -> None:
    """Two services over one store (two API replicas) at the same instant compute the same strategy, once per
    interval: traces stored later change the answer only from the next interval on."""
    settings = msgspec.structs.replace(api.settings, remote_sampling_interval_s=INTERVAL_S)
    clock = [now_us()]
    replicas = [SamplingService(api.store, settings, clock=lambda: clock[0]) for _ in range(2)]
    first = await asyncio.gather(*(replica.strategy("shop") for replica in replicas for _ in range(3)))
    assert all(answer == first[0] for answer in first)
    assert first[0].operation_sampling is not None and first[0].operation_sampling.per_operation_strategies == []
    await load_sampled_traffic(api, INTERVAL_S)
    assert await replicas[0].strategy("shop") is first[0]  # the same interval: computed once
    clock[0] += INTERVAL_S * 1_000_000
    later = [await replica.strategy("shop") for replica in replicas]
    assert later[0] == later[1] and later[0] != first[0]


async def test_the_python_sampler_sends_its_token_where_reads_need_one(serve_api: ServeApi) -> None:
    async with serve_api(read_tokens=("reader",)) as api:
        assert (await api.get("/api/sampling?service=shop")).status == 401
        with_token = RemoteSampler("shop", f"{api.url}/api/sampling", token="reader", timeout_s=10)
        without = RemoteSampler("shop", f"{api.url}/api/sampling", timeout_s=10)
        try:
            assert await asyncio.to_thread(with_token.update)
            assert with_token.strategy.lower_bound == LOWER_BOUND_TPS  # the API's strategy, not the initial one
            assert not await asyncio.to_thread(without.update)
        finally:
            await asyncio.to_thread(with_token.close)
            await asyncio.to_thread(without.close)
