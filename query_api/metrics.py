"""Request metrics of the API (prometheus-client): counts and latency by route and status.

Routes are the registered templates (``/traces/{traceId}``), never raw paths, so the number of series
stays bounded; requests that match no route count under ``unmatched``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.prometheus import CONTENT_TYPE, LATENCY_BUCKETS_S, render

__all__ = ["CONTENT_TYPE", "RequestMetrics"]


class RequestMetrics:
    """Counters and latency histograms of the HTTP requests this process answered."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "tracing_api_requests_total",
            "HTTP requests answered, by method, route and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "tracing_api_request_duration_seconds",
            "HTTP request latency, by route.",
            ("route",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

        # each label set's counter and histogram, looked up once (labels() validates its values each call)
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[method, route, status] = (
                self._requests.labels(method, route, str(status)),
                self._latency.labels(route),
            )
        series[0].inc()
        series[1].observe(seconds)

    def render(self) -> str:
        return render(self.registry)
