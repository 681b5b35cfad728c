"""The traces the UI tests look at, written into the store the way an ingest worker writes them.

Times are relative to "now": most traces start ten minutes before the seed (inside every time
window the UI offers), a few checkouts earlier, so the windows separate them (:func:`trace_starts_ms`).

* ``checkout-1``: an eight-span checkout across seven services, tags and logs on ``pay-1``; completed.
* ``checkout-2``: the same shape, faster; completed.
* ``checkout-40m`` (40 minutes ago), ``checkout-3h-a`` and ``checkout-3h-b`` (3 hours ago) and
  ``checkout-2d`` (2 days ago): the same shape, faster still (all under 300 ms), the older three with a
  faster fraud check (30 instead of 115 ms before scaling), so the endpoint's critical path changed.
* ``orders-failed``: gateway → order-service → postgres, the last two with status error; failed.
* ``health-1..3``: single-span traces of 8, 11 and 14 ms; completed.
* ``upload-active``: an open root span with a finished child; never finalized (active).
* ``search-orphan``: a root plus a span whose parent never arrived; completed, one orphan.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Final

from shared.models import Log, Span
from shared.settings import Settings
from shared.store.base import TraceStore
from tests.spans import span_at, us


@functools.cache
def base_us() -> int:
    """Where the recent traces start: ten minutes before the first call (the seed, when the UI tests
    start; not the collection, which may be many minutes earlier in a full run)."""
    return (time.time_ns() // 1000) - 600_000_000


MINUTE_MS: Final = 60_000
HOUR_MS: Final = 60 * MINUTE_MS
OLD_CHECKOUTS: Final = {
    # trace id: (offset from base_us() in ms, scale, fraud check ms before scaling)
    "checkout-40m": (-30 * MINUTE_MS, 0.7, 115),
    "checkout-3h-a": (-3 * HOUR_MS + 10 * MINUTE_MS, 0.6, 30),
    "checkout-3h-b": (-3 * HOUR_MS + 13 * MINUTE_MS, 0.55, 30),
    "checkout-2d": (-48 * HOUR_MS + 10 * MINUTE_MS, 0.5, 30),
}

SHOP_SERVICES: Final = (
    "api-gateway",
    "auth-service",
    "order-service",
    "inventory-service",
    "payment-service",
    "postgres",
    "redis",
    "fraud-service",
)


def _span(
    trace: str,
    span_id: str,
    parent: str | None,
    service: str,
    operation: str,
    start_ms: float,
    duration_ms: float | None,
    *,
    trace_offset_ms: float = 0,
    **extra: Any,
) -> Span:
    start_us = base_us() + round((trace_offset_ms + start_ms) * 1000)
    return span_at(trace, span_id, parent, service, operation, start_us, us(duration_ms), **extra)


def _checkout(trace: str, scale: float, offset_ms: float, *, fraud_ms: float = 115) -> list[Span]:
    suffix = trace.removeprefix("checkout-")

    def at(span_id: str, parent: str | None, service: str, op: str, start: float, dur: float, **kw: Any) -> Span:
        span_id, parent = f"{span_id}-{suffix}", None if parent is None else f"{parent}-{suffix}"
        return _span(trace, span_id, parent, service, op, start * scale, dur * scale, trace_offset_ms=offset_ms, **kw)

    pay_start_us = base_us() + round((offset_ms + 180 * scale) * 1000)
    return [
        at("gw", None, "api-gateway", "POST /checkout", 0, 420, kind="server", tags={"http.status": 200}),
        at("auth", "gw", "auth-service", "verifyToken", 12, 40, kind="server"),
        at("ord", "gw", "order-service", "createOrder", 60, 340, kind="server"),
        at(
            "inv",
            "ord",
            "inventory-service",
            "reserveItems",
            70,
            100,
            tags={"items": 3, "warehouse": "eu-west"},
        ),
        at(
            "pay",
            "ord",
            "payment-service",
            "chargeCard",
            180,
            210,
            kind="client",
            tags={"http.method": "POST", "amount": 42.5, "card.present": False},
            logs=(
                Log(timestamp_us=pay_start_us + 5_000, fields={"event": "card tokenized"}),
                Log(timestamp_us=pay_start_us + 150_000, fields={"event": "charge accepted", "attempt": 1}),
            ),
        ),
        at(
            "db",
            "pay",
            "postgres",
            "INSERT payments",
            200,
            60,
            kind="client",
            tags={"db.statement": "INSERT INTO payments VALUES ($1, $2)"},
        ),
        at("cache", "pay", "redis", "GET card-token", 190, 40, kind="client"),
        at("fraud", "pay", "fraud-service", "score", 265, fraud_ms),
    ]


def traces() -> dict[str, list[Span]]:
    """Every trace of the data set by id (the active one included)."""
    out: dict[str, list[Span]] = {
        "checkout-1": _checkout("checkout-1", 1.0, 0),
        "checkout-2": _checkout("checkout-2", 0.6, 60_000),
        **{
            trace: _checkout(trace, scale, offset, fraud_ms=fraud)
            for trace, (offset, scale, fraud) in OLD_CHECKOUTS.items()
        },
        "orders-failed": [
            _span("orders-failed", "gw-f", None, "api-gateway", "GET /orders", 0, 180, trace_offset_ms=120_000),
            _span(
                "orders-failed",
                "ord-f",
                "gw-f",
                "order-service",
                "listOrders",
                10,
                160,
                trace_offset_ms=120_000,
                status="error",
                tags={"error": True},
            ),
            _span(
                "orders-failed",
                "db-f",
                "ord-f",
                "postgres",
                "SELECT orders",
                20,
                140,
                trace_offset_ms=120_000,
                status="error",
                tags={"error": True, "db.statement": "SELECT * FROM orders"},
                logs=(Log(timestamp_us=base_us() + 120_160_000, fields={"event": "error", "message": "timeout"}),),
            ),
        ],
        "upload-active": [
            _span("upload-active", "up-root", None, "api-gateway", "POST /upload", 0, None, trace_offset_ms=240_000),
            _span(
                "upload-active", "up-put", "up-root", "storage-service", "putObject", 10, 80, trace_offset_ms=240_000
            ),
        ],
        "search-orphan": [
            _span("search-orphan", "s-root", None, "api-gateway", "GET /search", 0, 100, trace_offset_ms=300_000),
            _span("search-orphan", "s-q", "s-lost", "search-service", "query", 10, 50, trace_offset_ms=300_000),
        ],
    }
    for i, duration in enumerate((8, 11, 14), start=1):
        trace = f"health-{i}"
        out[trace] = [
            _span(trace, f"h-{i}", None, "api-gateway", "GET /health", 0, duration, trace_offset_ms=180_000 + i)
        ]
    return out


ACTIVE: Final = frozenset({"upload-active"})


def trace_starts_ms() -> dict[str, float]:
    """When each trace started (its earliest span), in ms since the epoch: what time windows count by."""
    return {trace: min(span.start_time_us for span in spans) / 1000 for trace, spans in traces().items()}


async def seed(store: TraceStore, settings: Settings) -> None:
    """Write every trace (one batch, as a worker would) and finalize all but the active one."""
    spans = [span for trace in traces().values() for span in trace]
    shard = f"{settings.topic}/0"
    now = time.time_ns() // 1000
    await store.write_batch(
        spans, [], shards={s.trace_id: shard for s in spans}, now_us=now, grace_us=1_000_000, idle_us=3_600_000_000
    )
    await store.finalize([trace for trace in traces() if trace not in ACTIVE], now_us=now)
