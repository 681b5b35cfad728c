"""Request metrics of the API in the Prometheus text format: counts and latency by route and status.

Routes are the registered templates (``/traces/{traceId}``), never raw paths, so the number of series
stays bounded; requests that match no route count under ``unmatched``.
"""

from __future__ import annotations

from shared.prometheus import CONTENT_TYPE, Counter, Histogram, Registry

__all__ = ["CONTENT_TYPE", "RequestMetrics"]


class RequestMetrics:
    """Counters and latency histograms of the HTTP requests this process answered."""

    def __init__(self) -> None:
        self.registry = Registry()
        self._requests = self.registry.add(
            Counter(
                "tracing_api_requests_total",
                "HTTP requests answered, by method, route and status.",
                ("method", "route", "status"),
            )
        )
        self._latency = self.registry.add(
            Histogram("tracing_api_request_duration_seconds", "HTTP request latency, by route.", ("route",))
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.inc(1, method, route, str(status))
        self._latency.observe(seconds, route)

    def render(self) -> str:
        return self.registry.render()
