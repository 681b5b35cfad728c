"""Request metrics in the Prometheus text format (version 0.0.4): counts and latency by route and status.

Routes are the registered templates (``/traces/{traceId}``), never raw paths, so the number of series
stays bounded; requests that match no route count under ``unmatched``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from typing import Final

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class RequestMetrics:
    """Counters and latency histograms of the HTTP requests this process answered."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = {}
        self._sum_s: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests[method, route, status] += 1
        buckets = self._buckets.get(route)
        if buckets is None:
            buckets = self._buckets[route] = [0] * (len(LATENCY_BUCKETS_S) + 1)
        buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self._sum_s[route] += seconds
        self._count[route] += 1

    def render(self) -> str:
        lines = [
            "# HELP tracing_api_requests_total HTTP requests answered, by method, route and status.",
            "# TYPE tracing_api_requests_total counter",
        ]
        for (method, route, status), n in sorted(self._requests.items()):
            lines.append(
                f'tracing_api_requests_total{{method="{_label(method)}",route="{_label(route)}",status="{status}"}} {n}'
            )
        lines += [
            "# HELP tracing_api_request_duration_seconds HTTP request latency, by route.",
            "# TYPE tracing_api_request_duration_seconds histogram",
        ]
        for route in sorted(self._buckets):
            label = _label(route)
            cumulative = 0
            for bound, n in zip((*LATENCY_BUCKETS_S, None), self._buckets[route], strict=True):
                cumulative += n
                le = "+Inf" if bound is None else _number(bound)
                lines.append(f'tracing_api_request_duration_seconds_bucket{{route="{label}",le="{le}"}} {cumulative}')
            lines.append(f'tracing_api_request_duration_seconds_sum{{route="{label}"}} {_number(self._sum_s[route])}')
            lines.append(f'tracing_api_request_duration_seconds_count{{route="{label}"}} {self._count[route]}')
        return "\n".join(lines) + "\n"
