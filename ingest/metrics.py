"""The worker's own metrics (Prometheus text), served on ``TRACING_WORKER_METRICS_BIND`` when set."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from shared.prometheus import CONTENT_TYPE, Counter, Gauge, Histogram, Registry


class WorkerMetrics:
    def __init__(self) -> None:
        r = self.registry = Registry()
        self.messages = r.add(Counter("tracing_worker_messages_total", "Kafka messages consumed.", ("topic",)))
        self.spans = r.add(Counter("tracing_worker_spans_total", "Span and finish events decoded."))
        self.stored = r.add(Counter("tracing_worker_spans_stored_total", "Span rows inserted or changed."))
        self.late = r.add(Counter("tracing_worker_late_spans_total", "Spans that arrived after finalization."))
        self.dead = r.add(Counter("tracing_worker_dead_lettered_total", "Messages sent to the dead-letter topic."))
        self.finalized = r.add(Counter("tracing_worker_traces_finalized_total", "Traces finalized."))
        self.lag = r.add(Gauge("tracing_worker_consumer_lag", "Messages behind the high watermark.", ("partition",)))
        self.batch_seconds = r.add(Histogram("tracing_worker_batch_seconds", "Decode + store + commit of a batch."))
        self.finalize_seconds = r.add(Histogram("tracing_worker_finalize_seconds", "One finalize transaction."))

    def render(self) -> str:
        return self.registry.render()


@contextlib.asynccontextmanager
async def serve_metrics(metrics: WorkerMetrics, bind: str) -> AsyncIterator[int | None]:
    """Serve ``GET /metrics`` on ``bind`` (``host:port``; port 0 picks one) while inside; yields the port,
    or ``None`` when ``bind`` is empty (metrics off)."""
    if not bind:
        yield None
        return

    async def handler(_: web.Request) -> web.Response:
        response = web.Response(text=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = bind.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
