"""The worker's own metrics (prometheus-client), served on ``TRACING_WORKER_METRICS_BIND`` when set."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from shared.analysis import core
from shared.prometheus import CONTENT_TYPE, LATENCY_BUCKETS_S, render
from shared.store.buckets import BUCKET_BOUNDS_US
from shared.store.rollups import Contribution


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


SPAN_METRIC_LABELS: Final = ("service_name", "span_name", "span_kind", "status_code")
SPAN_KINDS: Final = {
    "": "SPAN_KIND_UNSPECIFIED",
    "internal": "SPAN_KIND_INTERNAL",
    "server": "SPAN_KIND_SERVER",
    "client": "SPAN_KIND_CLIENT",
    "producer": "SPAN_KIND_PRODUCER",
    "consumer": "SPAN_KIND_CONSUMER",
}
SPAN_BUCKETS_MS: Final = [repr(bound / 1000) for bound in BUCKET_BOUNDS_US] + ["+Inf"]
"""The ``le`` labels of the duration histogram: the rollups' bounds (µs) in milliseconds."""


class SpanMetrics(Collector):
    """Span metrics named as the OpenTelemetry Collector's spanmetrics connector names them (Prometheus
    exporter without namespace: ``traces_span_metrics_*``), so Jaeger's Monitor tab and Grafana
    dashboards work on a Prometheus that scrapes the workers.

    Spans are counted when their trace is finalized for the first time (a counter cannot go
    back): spans of a later re-finalization (late spans) are not added, and traces sampled out still
    count. Each span counts its trace's adjusted count times (:mod:`shared.adjusted_counts`), so the
    metrics estimate the traffic under head sampling.

    Status is ``STATUS_CODE_ERROR`` for spans with an error, ``STATUS_CODE_UNSET`` otherwise (the
    native model keeps no explicit OK). Duration buckets are the rollups' (milliseconds).

    A collector rather than a ``Histogram``: the spans arrive already bucketed (:func:`span_sums`, where
    the round ran), which a ``Histogram`` can only take one observation at a time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._series: dict[tuple[str, str, str, str], tuple[list[int], list[float]]] = {}  # -> (buckets, [sum ms])
        registry.register(self)

    def observe(self, shares: Sequence[Contribution]) -> None:
        """Count the spans of these first finalizations."""
        self.add(span_sums(shares))

    def add(self, sums: Sequence[SpanSum]) -> None:
        """Count what :func:`span_sums` summed: one update per label set."""
        for service, operation, kind, status, _, total_us, counts in sums:
            series = self._series.get((service, operation, kind, status))
            if series is None:
                series = self._series[service, operation, kind, status] = ([0] * len(SPAN_BUCKETS_MS), [0.0])
            buckets, total = series
            for bucket, n in counts.items():
                buckets[bucket] += n
            total[0] += total_us / 1000

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "traces_span_metrics_calls_total", "Spans, counted when their trace is first finalized.",
            labels=SPAN_METRIC_LABELS,
        )  # fmt: skip
        duration = HistogramMetricFamily(
            "traces_span_metrics_duration_milliseconds", "Span durations (ms), counted when their trace is first "
            "finalized.", labels=SPAN_METRIC_LABELS,
        )  # fmt: skip
        for labels, (buckets, total) in sorted(self._series.items()):
            cumulative = list(itertools.accumulate(buckets))
            calls.add_metric(labels, cumulative[-1])
            duration.add_metric(labels, list(zip(SPAN_BUCKETS_MS, cumulative, strict=True)), total[0])
        yield calls
        yield duration


SpanSum = tuple[str, str, str, str, int, int, dict[int, int]]
"""The spans of one label set (service, span name, span kind, status code) of some first finalizations:
(the labels, count, total duration µs, histogram bucket → count)."""


def span_sums(shares: Sequence[Contribution]) -> list[SpanSum]:
    """The spans of these first finalizations summed per label set (a round holds hundreds of traces of a
    few operations): what :meth:`SpanMetrics.add` counts, computed where the round ran (a loop of the
    compiled core, :func:`shared.analysis_core.span_sums`)."""
    return core.span_sums(
        [share.ops for share in shares],
        [share.weight for share in shares],
        SPAN_KINDS,
        "SPAN_KIND_UNSPECIFIED",
        "STATUS_CODE_UNSET",
        "STATUS_CODE_ERROR",
    )


class WorkerReadings(Collector):
    """What the worker keeps itself, read when scraped: the totals of :class:`WorkerCounters` and the lag
    of each partition (set whole by each heartbeat)."""

    def __init__(self, counters: WorkerCounters) -> None:
        self._counters = counters
        self.lag: dict[str, int] = {}  # partition (shard) -> messages behind the high watermark

    def collect(self) -> Iterator[Metric]:
        c = self._counters
        for name, help_text, value in (
            ("tracing_worker_spans_total", "Span and finish events decoded.", c.spans + c.finishes),
            ("tracing_worker_spans_stored_total", "Span rows inserted or changed.", c.spans_changed),
            ("tracing_worker_late_spans_total", "Spans that arrived after finalization.", c.late_spans),
            ("tracing_worker_dead_lettered_total", "Messages sent to the dead-letter topic.", c.dead_lettered),
            ("tracing_worker_traces_finalized_total", "Traces finalized.", c.traces_finalized),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        lag = GaugeMetricFamily(
            "tracing_worker_consumer_lag", "Messages behind the high watermark.", labels=("partition",)
        )
        for partition, behind in sorted(self.lag.items()):
            lag.add_metric((partition,), behind)
        yield lag


class WorkerMetrics:
    def __init__(self, counters: WorkerCounters) -> None:
        r = self.registry = CollectorRegistry(auto_describe=False)
        self.messages = Counter("tracing_worker_messages_total", "Kafka messages consumed.", ("topic",), registry=r)
        self.readings = WorkerReadings(counters)
        r.register(self.readings)
        self.batch_seconds = Histogram(
            "tracing_worker_batch_seconds", "Decode + store + commit of a batch.", buckets=LATENCY_BUCKETS_S, registry=r
        )
        self.finalize_seconds = Histogram(
            "tracing_worker_finalize_seconds", "One finalize transaction.", buckets=LATENCY_BUCKETS_S, registry=r
        )
        self.spans = SpanMetrics(r)
        self._consumed: dict[str, Counter] = {}  # each topic's series of `messages`, looked up once

    def consumed(self, topic: str, messages: int) -> None:
        """Count a batch's messages of ``topic``."""
        series = self._consumed.get(topic)
        if series is None:
            series = self._consumed[topic] = self.messages.labels(topic)
        series.inc(messages)

    def render(self) -> str:
        return render(self.registry)


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
