"""The worker's own metrics (prometheus-client), served on ``TRACING_WORKER_METRICS_BIND`` when set."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shared.analysis import core
from shared.prometheus import CONTENT_TYPE, LATENCY_BUCKETS_S, Family, Histograms, LabelValues, Page, Values
from shared.store.buckets import BUCKET_BOUNDS_US
from shared.store.rollups import Contribution
from shared.store.sketch import fixed_bucket


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
SPAN_BOUNDS_MS: Final = tuple(bound / 1000 for bound in BUCKET_BOUNDS_US)
"""The bounds of the duration histogram: the rollups' (µs) in milliseconds."""


class SpanMetrics:
    """Span metrics named as the OpenTelemetry Collector's spanmetrics connector names them (Prometheus
    exporter without namespace: ``traces_span_metrics_*``), so Jaeger's Monitor tab and Grafana
    dashboards work on a Prometheus that scrapes the workers.

    Spans are counted when their trace is finalized for the first time (a counter cannot go
    back): spans of a later re-finalization (late spans) are not added, and traces sampled out still
    count. Each span counts its trace's adjusted count times (:mod:`shared.adjusted_counts`), so the
    metrics estimate the traffic under head sampling.

    Status is ``STATUS_CODE_ERROR`` for spans with an error, ``STATUS_CODE_UNSET`` otherwise (the
    native model keeps no explicit OK). Duration buckets are the rollups' (milliseconds).

    The spans arrive already bucketed (:func:`span_sums`, where the round ran): each label set's buckets
    are added to whole, and the calls are their count."""

    def __init__(self) -> None:
        self.duration = Histograms(
            "traces_span_metrics_duration_milliseconds",
            "Span durations (ms), counted when their trace is first finalized.",
            SPAN_BOUNDS_MS,
            SPAN_METRIC_LABELS,
        )
        self.calls = Values(
            CounterMetricFamily,
            "traces_span_metrics_calls_total",
            "Spans, counted when their trace is first finalized.",
            lambda: {key: sum(series.counts) for key, series in self.duration.series.items()},
            SPAN_METRIC_LABELS,
        )

    def observe(self, shares: Sequence[Contribution]) -> None:
        """Count the spans of these first finalizations."""
        self.add(span_sums(shares))

    def add(self, sums: Sequence[SpanSum]) -> None:
        """Count what :func:`span_sums` summed: one update per label set."""
        at = self.duration.at
        for service, operation, kind, status, _, total_us, counts in sums:
            series = at((service, operation, kind, status))
            buckets = series.counts
            for bucket, n in counts.items():
                buckets[fixed_bucket(bucket)] += n
            series.total += total_us / 1000


SpanSum = tuple[str, str, str, str, int, int, dict[int, int]]
"""The spans of one label set (service, span name, span kind, status code) of some first finalizations:
(the labels, count, total duration µs, histogram key → count; keys as a contribution's,
:func:`shared.store.sketch.fixed_bucket` gives the ``le`` bucket)."""


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


def _unlabelled(read: Callable[[], int]) -> Callable[[], dict[LabelValues, float]]:
    return lambda: {(): read()}


class WorkerReadings:
    """What the worker keeps itself, read when scraped: the totals of :class:`WorkerCounters` and the lag
    of each partition (set whole by each heartbeat)."""

    def __init__(self, counters: WorkerCounters) -> None:
        c = counters
        self.lag: dict[str, int] = {}  # partition (shard) -> messages behind the high watermark
        totals: list[tuple[str, str, Callable[[], int]]] = [
            ("tracing_worker_spans_total", "Span and finish events decoded.", lambda: c.spans + c.finishes),
            ("tracing_worker_spans_stored_total", "Span rows inserted or changed.", lambda: c.spans_changed),
            ("tracing_worker_late_spans_total", "Spans that arrived after finalization.", lambda: c.late_spans),
            ("tracing_worker_dead_lettered_total", "Messages sent to the dead-letter topic.", lambda: c.dead_lettered),
            ("tracing_worker_traces_finalized_total", "Traces finalized.", lambda: c.traces_finalized),
        ]
        self.families: list[Family] = [Values(CounterMetricFamily, n, h, _unlabelled(read)) for n, h, read in totals]
        self.families.append(
            Values(
                GaugeMetricFamily,
                "tracing_worker_consumer_lag",
                "Messages behind the high watermark.",
                lambda: {(partition,): behind for partition, behind in self.lag.items()},
                ("partition",),
            )
        )


class WorkerMetrics:
    """The worker's page: messages by topic, its readings, batch and finalize seconds, the span metrics."""

    def __init__(self, counters: WorkerCounters) -> None:
        self._messages: dict[str, int] = {}  # topic -> messages consumed
        self.readings = WorkerReadings(counters)
        batch = Histograms("tracing_worker_batch_seconds", "Decode + store + commit of a batch.", LATENCY_BUCKETS_S)
        finalize = Histograms("tracing_worker_finalize_seconds", "One finalize transaction.", LATENCY_BUCKETS_S)
        self.batch_seconds = batch.at(())
        self.finalize_seconds = finalize.at(())
        self.spans = SpanMetrics()
        messages = Values(
            CounterMetricFamily,
            "tracing_worker_messages_total",
            "Kafka messages consumed.",
            lambda: {(topic,): n for topic, n in self._messages.items()},
            ("topic",),
        )
        self.page = Page([messages, *self.readings.families, batch, finalize, self.spans.calls, self.spans.duration])

    def consumed(self, topic: str, messages: int) -> None:
        """Count a batch's messages of ``topic``."""
        counts = self._messages
        counts[topic] = counts.get(topic, 0) + messages

    def render(self) -> str:
        return self.page.render()


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
