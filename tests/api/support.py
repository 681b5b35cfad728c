"""Helpers of the query API tests: a live server, a client for it, span builders."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from query_api.services.sampling import SETTLE_US, WINDOW_INTERVALS
from shared.clock import now_us
from shared.models import Event, Log, Span, SpanFinish, Tags, TagValue
from shared.settings import Settings
from shared.store.base import Heartbeat, TraceStore
from tests.spans import span_at, us

T0_US = 1_732_500_000_000_000
"""A fixed trace start (2024-11-25T02:00:00Z) in microseconds; ``T0_US / 1000`` in the API."""


def deep_loads(text: str) -> Any:
    """``json.loads`` with room for deeply nested documents (a 1000-deep span tree nests 2000 levels)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        return json.loads(text)
    finally:
        sys.setrecursionlimit(limit)


@dataclass
class Reply:
    status: int
    headers: Any
    text: str

    @property
    def json(self) -> Any:
        return deep_loads(self.text)


@dataclass
class LiveApi:
    """A running API: its base URL, a client session, the store behind it and its settings."""

    url: str
    http: aiohttp.ClientSession
    store: TraceStore
    settings: Settings

    async def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        async with self.http.request(method, self.url + path, **kwargs) as response:
            return Reply(response.status, response.headers, await response.text())

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        if body is not None:
            kwargs["data"] = body if isinstance(body, (bytes, str)) else json.dumps(body)
            kwargs.setdefault("headers", {})["Content-Type"] = "application/json"
        return await self.request("POST", path, **kwargs)

    async def ingest(self, spans: Sequence[Span], finishes: Sequence[SpanFinish] = (), *, now_us: int) -> None:
        """Write spans the way a worker does (one batch), without finalizing."""
        shard = f"{self.settings.topic}/0"
        events: list[Event] = [*spans, *finishes]
        shards = {event.trace_id: shard for event in events}
        await self.store.write_batch(spans, finishes, shards=shards, now_us=now_us, grace_us=1, idle_us=1)

    async def finalize(self, *trace_ids: str, now_us: int) -> None:
        await self.store.finalize(list(trace_ids), now_us=now_us)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


# a root span's sampler tags: the Go SDK's names (weight 20), Jaeger clients' (weight 4)
_SAMPLED_BUSY: dict[str, TagValue] = {"jaeger.sampler.type": "probabilistic", "jaeger.sampler.param": 0.05}
_SAMPLED_MID: dict[str, TagValue] = {"sampler.type": "probabilistic", "sampler.param": 0.25}


def _root(trace_id: str, service: str, operation: str, start_us: int, tags: dict[str, TagValue]) -> Span:
    return Span(trace_id=trace_id, span_id=f"{trace_id}-r", service_name=service, operation_name=operation,
                start_time_us=start_us, duration_us=1000, tags=tags, kind="server")  # fmt: skip


async def load_sampled_traffic(api: LiveApi, interval_s: int) -> None:
    """Traces of service ``shop`` for remote sampling, in the window of the current interval of ``interval_s``
    (:data:`~query_api.services.sampling.WINDOW_INTERVALS` intervals; 60 s for 20): 60 ``GET /busy`` traces
    sampled at 5%, 30 ``GET /mid`` at 25%, 3 ``GET /rare`` unsampled (with a target of 1 trace/s and a window
    of 60 s: probabilities 1/20, 1/2 and 1); a trace of another service calling ours, and one of ours from
    before the window (neither counts)."""
    now = now_us()
    interval_us = interval_s * 1_000_000
    at = now - now % interval_us - SETTLE_US - 5_000_000  # well inside this interval's window, and the next's
    spans = [_root(f"busy-{i}", "shop", "GET /busy", at - i * 1000, _SAMPLED_BUSY) for i in range(60)]
    spans += [_root(f"mid-{i}", "shop", "GET /mid", at - i * 1000, _SAMPLED_MID) for i in range(30)]
    spans += [_root(f"rare-{i}", "shop", "GET /rare", at - i * 1000, {}) for i in range(3)]
    spans.append(_root("old", "shop", "GET /old", at - (interval_s * WINDOW_INTERVALS + 30) * 1_000_000, {}))
    spans.append(_root("other", "front", "GET /", at, {}))
    inner = _root("other", "shop", "GET /inner", at, {})
    spans.append(msgspec.structs.replace(inner, span_id="c", parent_span_id="other-r"))
    await api.ingest(spans, now_us=now)
    await api.finalize(*{span.trace_id for span in spans}, now_us=now)


def strategy_rates(body: dict[str, Any]) -> dict[str, float]:
    """A ``SamplingStrategyResponse``'s (jsonpb JSON) probability per operation."""
    per_op = body["operationSampling"]
    assert isinstance(per_op, dict)
    return {s["operation"]: s["probabilisticSampling"]["samplingRate"] for s in per_op["perOperationStrategies"]}


def span(
    trace_id: str,
    span_id: str,
    parent: str | None,
    service: str,
    operation: str,
    start_ms: float,
    duration_ms: float | None,
    **extra: Any,
) -> Span:
    """A span ``start_ms`` after :data:`T0_US` lasting ``duration_ms`` (None: open)."""
    return span_at(
        trace_id, span_id, parent, service, operation, T0_US + round(start_ms * 1000), us(duration_ms), **extra
    )


def heartbeat(
    worker_id: str,
    lag: dict[str, int],
    *,
    spans_per_second: float,
    spans_total: int,
    updated_at_us: int,
    late_spans: int = 0,
    dead_lettered: int = 0,
    traces_finalized: int = 0,
) -> Heartbeat:
    """A worker's heartbeat for the partitions of ``lag`` (in its order)."""
    return Heartbeat(
        worker_id=worker_id,
        partitions=list(lag),
        lag=lag,
        spans_per_second=spans_per_second,
        spans_total=spans_total,
        late_spans=late_spans,
        dead_lettered=dead_lettered,
        traces_finalized=traces_finalized,
        updated_at_us=updated_at_us,
    )


SEED = "trace-abc-123"


def seed_trace(log_fields: Tags) -> list[Span]:
    """The seed's trace: gateway (123 ms) → user-service (45 ms, a log with ``log_fields``) → database
    (23 ms), starting at :data:`T0_US`."""
    return [
        span(SEED, "span-root-001", None, "api-gateway", "handleUserRequest", 0, 123, kind="server"),
        span(
            SEED,
            "span-child-002",
            "span-root-001",
            "user-service",
            "getUserById",
            10,
            45,
            kind="client",
            tags={"userId": "user-456", "cache": "miss"},
            logs=(Log(timestamp_us=T0_US + 20_000, fields=log_fields),),
        ),
        span(
            SEED,
            "span-child-003",
            "span-child-002",
            "database",
            "query",
            20,
            23,
            tags={"db.type": "postgresql", "rows": 3, "cache.hit": True, "ratio": 0.5},
        ),
    ]
