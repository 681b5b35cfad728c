"""Request metrics of the API: counts and latency by route and status, kept as plain numbers and handed to
prometheus-client when scraped (``shared.prometheus``).

Routes are the registered templates (``/traces/{traceId}``), never raw paths, so the number of series
stays bounded; requests that match no route count under ``unmatched``.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily

from shared.prometheus import CONTENT_TYPE, LATENCY_BUCKETS_S, Buckets, Histograms, LabelValues, Page, Values

__all__ = ["CONTENT_TYPE", "RequestMetrics"]


class _Answered:
    """The requests of one (method, route, status) and the latency series of their route."""

    __slots__ = ("count", "latency")

    def __init__(self, latency: Buckets) -> None:
        self.count = 0
        self.latency = latency


class RequestMetrics:
    """Counters and latency histograms of the HTTP requests this process answered."""

    def __init__(self) -> None:
        self._answered: dict[tuple[str, str, int], _Answered] = {}
        self._latency = Histograms(
            "tracing_api_request_duration_seconds", "HTTP request latency, by route.", LATENCY_BUCKETS_S, ("route",)
        )
        requests = Values(
            CounterMetricFamily,
            "tracing_api_requests_total",
            "HTTP requests answered, by method, route and status.",
            self._counts,
            ("method", "route", "status"),
        )
        self.page = Page([requests, self._latency])

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        answered = self._answered.get((method, route, status))
        if answered is None:
            answered = self._answered[method, route, status] = _Answered(self._latency.at((route,)))
        answered.count += 1
        answered.latency.observe(seconds)

    def _counts(self) -> dict[LabelValues, float]:
        return {(method, route, str(status)): a.count for (method, route, status), a in self._answered.items()}

    def render(self) -> str:
        return self.page.render()
