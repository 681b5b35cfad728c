"""The worker's own metrics (Prometheus text), served on ``TRACING_WORKER_METRICS_BIND`` when set."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from shared.prometheus import CONTENT_TYPE, Counter, Gauge, Histogram, Registry


@dataclass
class WorkerCounters:
    """Totals since start: the one record of them, read by the heartbeat and by :class:`WorkerMetrics`."""

    spans: int = 0
    finishes: int = 0
    spans_changed: int = 0
    late_spans: int = 0
    dead_lettered: int = 0
    traces_finalized: int = 0
    batches: int = 0
    rate_window: list[tuple[float, int]] = field(default_factory=list)

    def spans_per_second(self) -> float:
        now = time.monotonic()
        self.rate_window = [(t, n) for t, n in self.rate_window if now - t <= 10.0]
        self.rate_window.append((now, self.spans + self.finishes))
        (t0, n0), (t1, n1) = self.rate_window[0], self.rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class WorkerMetrics:
    def __init__(self, counters: WorkerCounters) -> None:
        r = self.registry = Registry()
        c = counters

        def total(read: Callable[[], int]) -> Callable[[], dict[tuple[str, ...], float]]:
            return lambda: {(): read()}

        self.messages = r.add(Counter("tracing_worker_messages_total", "Kafka messages consumed.", ("topic",)))
        for name, help_text, read in (
            ("tracing_worker_spans_total", "Span and finish events decoded.", lambda: c.spans + c.finishes),
            ("tracing_worker_spans_stored_total", "Span rows inserted or changed.", lambda: c.spans_changed),
            ("tracing_worker_late_spans_total", "Spans that arrived after finalization.", lambda: c.late_spans),
            ("tracing_worker_dead_lettered_total", "Messages sent to the dead-letter topic.", lambda: c.dead_lettered),
            ("tracing_worker_traces_finalized_total", "Traces finalized.", lambda: c.traces_finalized),
        ):
            r.add(Counter(name, help_text, read=total(read)))
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
