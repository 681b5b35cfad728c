"""Realistic synthetic traces: the demo traffic of ``make run``, the load generator and the tests.

A gateway root fans out to services, which call databases, caches and each other; some calls fail,
some are async (producer → consumer). Deterministic for a given ``random.Random``.
"""

from __future__ import annotations

import random
from typing import Final

from shared.models import Kind, Span, Status, TagValue

SERVICES: Final = {
    "api-gateway": ["handleUserRequest", "processOrder", "getCatalog"],
    "user-service": ["getUserById", "validateUser", "updateProfile"],
    "order-service": ["createOrder", "listOrders"],
    "inventory-service": ["reserveItems", "checkStock"],
    "payment-service": ["charge", "refund"],
    "database": ["query", "insertOrder", "complexQuery"],
    "cache": ["get", "set"],
    "external-api": ["fetchData"],
    "notification-worker": ["sendEmail"],
}
CALLS: Final = {
    "api-gateway": ["user-service", "order-service", "inventory-service", "cache"],
    "user-service": ["database", "cache"],
    "order-service": ["database", "payment-service", "inventory-service"],
    "inventory-service": ["database", "external-api"],
    "payment-service": ["external-api", "database"],
}


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(n * 4):0{n}x}"


def make_trace(
    rng: random.Random,
    start_us: int,
    *,
    error_rate: float = 0.01,
    max_depth: int = 4,
    max_spans: int = 60,
    fan_out: int = 4,
) -> list[Span]:
    """One trace as complete spans (root first). Children lie inside their parent's window.

    With the defaults a trace has about 13 spans on average (3 to about 40), across 3 to 8 services.
    """
    trace_id = _hex(rng, 32)
    spans: list[Span] = []

    def add(service: str, parent: str | None, start: int, budget: int, depth: int, kind: Kind) -> int:
        span_id = _hex(rng, 16)
        operation = rng.choice(SERVICES[service])
        # children first, so the parent's duration covers them
        cursor = start + rng.randint(100, 2_000)
        end = cursor
        index = len(spans)
        spans.append(Span(trace_id="", span_id="", service_name=service, operation_name=operation, start_time_us=0))
        callees = CALLS.get(service, [])
        if depth < max_depth and callees:
            for _ in range(rng.randint(2, fan_out) if depth < 2 else rng.randint(0, fan_out - 1)):
                if len(spans) >= max_spans:
                    break
                callee = rng.choice(callees)
                parallel = rng.random() < 0.3
                child_start = start + rng.randint(50, 500) if parallel else cursor
                child_end = add(callee, span_id, child_start, budget // 2, depth + 1, "client")
                end = max(end, child_end)
                if not parallel:
                    cursor = child_end + rng.randint(10, 300)
        if service == "api-gateway" and rng.random() < 0.2 and len(spans) < max_spans:
            add("notification-worker", span_id, cursor, budget // 4, depth + 1, "producer")
        own = int(rng.expovariate(1 / max(1, budget // 10)))
        if service == "database" and rng.random() < 0.1:
            own += rng.randint(100_000, 400_000)  # the occasional slow query
        end = max(end, cursor) + own
        status: Status = "error" if rng.random() < error_rate else "success"
        tags: dict[str, TagValue] = {"span.kind": kind}
        if service in ("api-gateway", "user-service", "order-service"):
            tags.update(
                {
                    "http.method": rng.choice(["GET", "POST"]),
                    "http.status_code": 500 if status == "error" else 200,
                }
            )
        if service == "database":
            tags.update({"db.type": "postgresql", "db.statement": "SELECT * FROM users WHERE id = $1"})
        if service == "cache":
            tags["cache.hit"] = rng.random() < 0.7
        spans[index] = Span(
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent,
            service_name=service,
            operation_name=operation,
            start_time_us=start,
            duration_us=end - start,
            status=status,
            kind=kind,
            tags=tags,
        )
        return end

    add("api-gateway", None, start_us, rng.randint(20_000, 300_000), 0, "server")
    return spans
