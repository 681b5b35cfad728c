"""The families the worker and the API keep as plain numbers (``shared/prometheus.py``) make the page
prometheus-client's own ``Counter`` and ``Histogram`` make for the same calls: names, types, help,
labels (escaped), buckets and values; and a :class:`Page`, which keeps each label set's lines as the
client rendered them, is byte for byte the client's rendering of the same families, scrape after scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ingest.metrics import WorkerCounters, WorkerMetrics
from query_api.metrics import RequestMetrics
from shared.prometheus import LATENCY_BUCKETS_S, Histograms, LabelValues, Page, Series, Values, parse, registry, render

ROUTES = ["/a", '/b "quoted" \\ back\nslash', "/ü"]
SECONDS = [0.0, 0.0005, 0.001, 0.0010001, 0.0025, 0.3, 1.0, 10.0, 10.5, 1e9]  # on, below and above bounds


def families(text: str) -> dict[Series, float]:
    """A page's samples, without the ``*_created`` ones the client's own types add."""
    return {series: value for series, value in parse(text).items() if not series[0].endswith("_created")}


def test_counters_and_histograms_read_as_the_clients_own() -> None:
    theirs = CollectorRegistry(auto_describe=False)
    counter = Counter("x_requests_total", "Requests.", ("route", "status"), registry=theirs)
    histogram = Histogram("x_seconds", "Latency.", ("route",), buckets=LATENCY_BUCKETS_S, registry=theirs)
    counts: dict[LabelValues, float] = {}
    latency = Histograms("x_seconds", "Latency.", LATENCY_BUCKETS_S, ("route",))
    requests = Values(CounterMetricFamily, "x_requests_total", "Requests.", lambda: counts, ("route", "status"))
    for n, seconds in enumerate(SECONDS * 3):
        route, status = ROUTES[n % len(ROUTES)], str(200 + n % 2)
        counter.labels(route, status).inc()
        histogram.labels(route).observe(seconds)
        counts[route, status] = counts.get((route, status), 0) + 1
        latency.at((route,)).observe(seconds)

    ours = render(registry([requests, latency]))
    assert families(ours) == families(render(theirs))
    assert "# TYPE x_seconds histogram" in ours and "# TYPE x_requests_total counter" in ours


def test_an_unlabelled_histogram_is_on_the_page_at_zero_from_the_start() -> None:
    theirs = CollectorRegistry(auto_describe=False)
    Histogram("x_seconds", "Latency.", buckets=LATENCY_BUCKETS_S, registry=theirs)
    ours = render(registry([Histograms("x_seconds", "Latency.", LATENCY_BUCKETS_S)]))
    assert families(ours) == families(render(theirs))
    assert parse(ours)["x_seconds_count", ()] == 0


def test_a_page_is_the_clients_rendering_as_label_sets_come_and_values_change() -> None:
    gauges: dict[LabelValues, float] = {}
    latency = Histograms("x_seconds", 'Latency\\ "of"\nrequests.', LATENCY_BUCKETS_S, ("route", "method"))
    page = Page([latency, Values(GaugeMetricFamily, "x_lag", "Lag.", lambda: gauges, ("partition",))])
    assert page.render() == render(page.registry)
    for n, seconds in enumerate(SECONDS):
        latency.at((ROUTES[n % len(ROUTES)], "GET")).observe(seconds)
        gauges[f"p{n % 4}",] = [0, 1.5, 1e6, 123456789, float("inf"), -2.0][n % 6]
        assert page.render() == render(page.registry)
    gauges.clear()  # label sets can go too
    assert page.render() == render(page.registry)
    assert "x_lag{" not in page.render()


def test_the_worker_and_api_pages_are_the_clients_rendering() -> None:
    worker = WorkerMetrics(WorkerCounters(spans=10, finishes=2, dead_lettered=1))
    api = RequestMetrics()
    for n, seconds in enumerate(SECONDS):
        worker.consumed(("spans", "zipkin")[n % 2], 100 + n)
        worker.batch_seconds.observe(seconds)
        worker.spans.add([("svc", ROUTES[n % len(ROUTES)], "SPAN_KIND_SERVER", "STATUS_CODE_UNSET", 2, 3_000, {3: 2})])
        worker.readings.lag = {f"spans/{p}": p * n for p in range(n % 3)}
        api.observe("GET", ROUTES[n % len(ROUTES)], 200 + n % 2, seconds)
        assert worker.render() == render(worker.page.registry)
        assert api.render() == render(api.page.registry)
    assert parse(worker.render())["tracing_worker_spans_total", ()] == 12
