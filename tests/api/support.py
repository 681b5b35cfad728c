"""Helpers of the query API tests: a live server, a client for it, span builders."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from shared.models import Event, Span, SpanFinish
from shared.settings import Settings
from shared.store.base import TraceStore

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
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        service_name=service,
        operation_name=operation,
        start_time_us=T0_US + round(start_ms * 1000),
        duration_us=None if duration_ms is None else round(duration_ms * 1000),
        **extra,
    )
