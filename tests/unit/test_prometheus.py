"""The families the worker and the API keep as plain numbers (``shared/prometheus.py``) make the page
prometheus-client's own ``Counter`` and ``Histogram`` make for the same calls: names, types, help,
labels (escaped), buckets and values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily

from shared.prometheus import LATENCY_BUCKETS_S, Histograms, LabelValues, Series, Values, parse, registry, render

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
