"""Every field of every read endpoint, on traces written straight into the store (as a worker would)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.prometheus import parse

from .support import SEED, T0_US, LiveApi, heartbeat, seed_trace, span

pytestmark = pytest.mark.kafka

T0_MS = T0_US / 1000


SEED_COMPLETED = {
    "status": "completed",
    "complete": True,
    "orphanSpans": 0,
    "lateSpans": 0,
    "openSpans": 0,
    "finalizedAt": T0_MS + 1000,
    "refinalizations": 0,
}
"""The seed trace's status and completeness fields once finalized (at T0 + 1 s)."""


async def _seed_trace(api: LiveApi, *, finalize: bool = True) -> None:
    """The seed's trace: gateway (123 ms) → user-service (45 ms) → database (23 ms)."""
    spans = seed_trace({"event": "cache miss"})
    await api.ingest(spans, now_us=T0_US + 200_000)
    if finalize:
        await api.finalize(SEED, now_us=T0_US + 1_000_000)


def _span_view(
    span_id: str,
    parent: str | None,
    service: str,
    operation: str,
    start_ms: float,
    duration: float | None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "spanId": span_id,
        "parentSpanId": parent,
        "serviceName": service,
        "operationName": operation,
        "startTime": T0_MS + start_ms,
        "duration": duration,
        "status": extra.get("status", "success"),
        "kind": extra.get("kind"),
        "tags": extra.get("tags", {}),
        "logs": extra.get("logs", []),
    }


async def test_get_trace_has_every_field(api: LiveApi) -> None:
    await _seed_trace(api)
    reply = await api.get(f"/traces/{SEED}")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json == {
        "traceId": SEED,
        "rootSpan": _span_view("span-root-001", None, "api-gateway", "handleUserRequest", 0, 123.0, kind="server"),
        "spans": [
            _span_view(
                "span-child-002",
                "span-root-001",
                "user-service",
                "getUserById",
                10,
                45.0,
                kind="client",
                tags={"userId": "user-456", "cache": "miss"},
                logs=[{"timestamp": T0_MS + 20, "fields": {"event": "cache miss"}}],
            ),
            _span_view(
                "span-child-003",
                "span-child-002",
                "database",
                "query",
                20,
                23.0,
                tags={"db.type": "postgresql", "rows": 3, "cache.hit": True, "ratio": 0.5},
            ),
        ],
        "serviceCalls": 3,
        "duration": 123.0,
        "startTime": T0_MS,
        **SEED_COMPLETED,
        "tier": "hot",
    }


async def test_visualize_has_every_field(api: LiveApi) -> None:
    await _seed_trace(api)
    reply = await api.get(f"/traces/{SEED}/visualize")
    assert reply.status == 200
    assert reply.json == {
        "traceId": SEED,
        "duration": 123.0,
        "serviceCalls": 3,
        "tier": "hot",
        "tree": {
            "spanId": "span-root-001",
            "serviceName": "api-gateway",
            "operationName": "handleUserRequest",
            "duration": 123.0,
            "startOffset": 0.0,
            "status": "success",
            "children": [
                {
                    "spanId": "span-child-002",
                    "serviceName": "user-service",
                    "operationName": "getUserById",
                    "duration": 45.0,
                    "startOffset": 10.0,
                    "status": "success",
                    "children": [
                        {
                            "spanId": "span-child-003",
                            "serviceName": "database",
                            "operationName": "query",
                            "duration": 23.0,
                            "startOffset": 20.0,
                            "status": "success",
                            "children": [],
                        }
                    ],
                }
            ],
        },
        "orphans": [],
    }


async def test_analyze_has_every_field(api: LiveApi) -> None:
    await _seed_trace(api)
    reply = await api.get(f"/traces/{SEED}/analyze")
    assert reply.status == 200
    gateway, users, database = "api-gateway:handleUserRequest", "user-service:getUserById", "database:query"
    assert reply.json == {
        "traceId": SEED,
        "totalDuration": 123.0,
        "serviceCalls": 3,
        # self times: gateway 123 - 45 = 78, user-service 45 - 23 = 22, database 23 (all > 10% of 123)
        "bottlenecks": [
            {"span": gateway, "spanId": "span-root-001", "duration": 123.0, "selfTime": 78.0, "percentage": 63.41},
            {"span": database, "spanId": "span-child-003", "duration": 23.0, "selfTime": 23.0, "percentage": 18.7},
            {"span": users, "spanId": "span-child-002", "duration": 45.0, "selfTime": 22.0, "percentage": 17.89},
        ],
        "serviceBreakdown": {"api-gateway": 78.0, "database": 23.0, "user-service": 22.0},
        "criticalPath": [gateway, users, database, users, gateway],
        "criticalPathSegments": [
            {"spanId": "span-root-001", "span": gateway, "start": 0.0, "end": 10.0},
            {"spanId": "span-child-002", "span": users, "start": 10.0, "end": 20.0},
            {"spanId": "span-child-003", "span": database, "start": 20.0, "end": 43.0},
            {"spanId": "span-child-002", "span": users, "start": 43.0, "end": 55.0},
            {"spanId": "span-root-001", "span": gateway, "start": 55.0, "end": 123.0},
        ],
        "criticalPathDuration": 123.0,
        **SEED_COMPLETED,
        "dependencies": [
            {"parent": "api-gateway", "child": "user-service", "calls": 1, "errors": 0},
            {"parent": "user-service", "child": "database", "calls": 1, "errors": 0},
        ],
        "tier": "hot",
    }


async def test_an_active_trace_is_analyzed_on_the_fly(api: LiveApi) -> None:
    trace = "trace-active"
    await api.ingest(
        [
            span(trace, "root", None, "web", "GET /", 0, None),  # still open
            span(trace, "child", "root", "db", "select", 5, 10, status="failed"),
        ],
        now_us=T0_US,
    )
    reply = await api.get(f"/traces/{trace}")
    assert reply.status == 200
    body = reply.json
    assert body["status"] == "active"
    assert body["rootSpan"] == _span_view("root", None, "web", "GET /", 0, None)
    assert body["spans"] == [_span_view("child", "root", "db", "select", 5, 10.0, status="error")]
    assert body["duration"] == 15.0  # open root: from the first start to the last end
    assert (body["complete"], body["openSpans"], body["finalizedAt"], body["serviceCalls"]) == (False, 1, None, 2)

    analysis = (await api.get(f"/traces/{trace}/analyze")).json
    assert analysis["status"] == "active"
    assert (analysis["totalDuration"], analysis["serviceCalls"], analysis["openSpans"]) == (15.0, 2, 1)
    assert analysis["finalizedAt"] is None
    assert analysis["dependencies"] == [{"parent": "web", "child": "db", "calls": 1, "errors": 1}]

    tree = (await api.get(f"/traces/{trace}/visualize")).json["tree"]
    assert tree["duration"] is None
    assert [c["spanId"] for c in tree["children"]] == ["child"]


async def test_seed_tags_show_the_resource_and_scope_merged_in(api: LiveApi) -> None:
    """Spans keep OTLP resource attributes and the scope apart (``resource``, ``scope_*``); the seed API
    shows them among the tags as it did when the decoder folded them in: resource, then the scope as
    ``otel.scope.name``/``otel.scope.version``, then the span's own tags, which win on a shared key."""
    trace = "trace-otlp-resource"
    resource = {"host.name": "web-1", "region": "eu", "service.version": "1.2"}
    await api.ingest(
        [
            span(trace, "root", None, "web", "GET /", 0, 10, tags={"region": "us", "http.method": "GET"},
                 resource=resource, scope_name="shop.web", scope_version="0.9"),
            span(trace, "child", "root", "db", "select", 1, 5, tags={"db.system": "sqlite"}, scope_name="sql"),
        ],
        now_us=T0_US,
    )  # fmt: skip
    body = (await api.get(f"/traces/{trace}")).json
    assert body["rootSpan"]["tags"] == {
        "host.name": "web-1",
        "region": "us",
        "service.version": "1.2",
        "otel.scope.name": "shop.web",
        "otel.scope.version": "0.9",
        "http.method": "GET",
    }
    assert list(body["rootSpan"]["tags"]) == [
        "host.name", "region", "service.version", "otel.scope.name", "otel.scope.version", "http.method"]  # fmt: skip
    (child,) = body["spans"]
    assert child["tags"] == {"otel.scope.name": "sql", "db.system": "sqlite"}
    assert "resource" not in body["rootSpan"] and "scopeName" not in body["rootSpan"]


async def test_tag_search_finds_resource_attributes_and_the_scope(api: LiveApi) -> None:
    """``tag=host.name:web-1`` found OTLP spans when resource attributes were folded into tags; it must
    still find them now that they are kept as the resource (and the scope as ``otel.scope.name``)."""
    trace = "trace-otlp-search"
    await api.ingest(
        [span(trace, "root", None, "web", "GET /", 0, 10, tags={"http.method": "GET"},
              resource={"host.name": "web-1"}, scope_name="shop.web")],
        now_us=T0_US,
    )  # fmt: skip
    await api.finalize(trace, now_us=T0_US + 1_000_000)
    for tag in ("http.method:GET", "host.name:web-1", "otel.scope.name:shop.web"):
        found = (await api.get(f"/traces/query?tag={tag}&start=0")).json
        assert [t["traceId"] for t in found] == [trace], tag


async def test_orphans_are_extra_roots(api: LiveApi) -> None:
    trace = "trace-orphans"
    await api.ingest(
        [span(trace, "root", None, "web", "GET /", 0, 100), span(trace, "lost", "ghost", "worker", "job", 5, 10)],
        now_us=T0_US,
    )
    await api.finalize(trace, now_us=T0_US + 1_000_000)
    body = (await api.get(f"/traces/{trace}")).json
    assert body["rootSpan"]["spanId"] == "root"
    assert [s["spanId"] for s in body["spans"]] == ["lost"]
    assert body["spans"][0]["parentSpanId"] == "ghost"
    assert (body["orphanSpans"], body["complete"], body["status"]) == (1, True, "completed")

    visual = (await api.get(f"/traces/{trace}/visualize")).json
    assert visual["tree"]["spanId"] == "root"
    assert visual["tree"]["children"] == []
    assert [o["spanId"] for o in visual["orphans"]] == ["lost"]
    assert visual["orphans"][0]["startOffset"] == 5.0


async def test_a_rootless_trace_has_no_root_span_and_no_tree(api: LiveApi) -> None:
    trace = "trace-rootless"
    await api.ingest(
        [span(trace, "a", "p1", "svc", "op-a", 0, 10), span(trace, "b", "p2", "svc", "op-b", 5, 20)],
        now_us=T0_US,
    )
    await api.finalize(trace, now_us=T0_US + 1_000_000)
    body = (await api.get(f"/traces/{trace}")).json
    assert body["rootSpan"] is None
    assert [s["spanId"] for s in body["spans"]] == ["a", "b"]
    assert (body["duration"], body["complete"], body["orphanSpans"]) == (25.0, False, 2)
    visual = (await api.get(f"/traces/{trace}/visualize")).json
    assert visual["tree"] is None
    assert [o["spanId"] for o in visual["orphans"]] == ["a", "b"]
    analysis = (await api.get(f"/traces/{trace}/analyze")).json
    assert analysis["criticalPath"] == []


async def test_late_spans_and_refinalizations_are_reported(api: LiveApi) -> None:
    await _seed_trace(api)
    late = span(SEED, "span-late", "span-root-001", "audit", "record", 50, 5)
    await api.ingest([late], now_us=T0_US + 2_000_000)
    reopened = (await api.get(f"/traces/{SEED}")).json
    assert reopened["status"] == "active"
    assert reopened["finalizedAt"] == T0_MS + 1000  # the previous finalization is still known

    await api.finalize(SEED, now_us=T0_US + 3_000_000)
    body = (await api.get(f"/traces/{SEED}")).json
    assert (body["status"], body["serviceCalls"], body["lateSpans"], body["refinalizations"]) == (
        "completed",
        4,
        1,
        1,
    )
    assert body["finalizedAt"] == T0_MS + 3000
    analysis = (await api.get(f"/traces/{SEED}/analyze")).json
    assert (analysis["lateSpans"], analysis["refinalizations"], analysis["serviceCalls"]) == (1, 1, 4)


async def test_a_thousand_deep_trace_is_served(api: LiveApi) -> None:
    trace = "trace-deep"
    depth = 1000
    spans = [
        span(trace, f"s{i}", f"s{i - 1}" if i else None, f"svc-{i % 5}", f"op-{i}", i, 2 * (depth - i))
        for i in range(depth)
    ]
    await api.ingest(spans, now_us=T0_US)
    active = (await api.get(f"/traces/{trace}/analyze")).json  # analyzed on the fly (in a worker thread)
    assert (active["status"], active["totalDuration"], active["serviceCalls"]) == ("active", 2000.0, depth)
    await api.finalize(trace, now_us=T0_US + 1_000_000)

    reply = await api.get(f"/traces/{trace}/visualize")
    assert reply.status == 200
    node = reply.json["tree"]
    for i in range(depth):
        assert (node["spanId"], node["startOffset"], node["duration"]) == (f"s{i}", float(i), 2.0 * (depth - i))
        if i < depth - 1:
            assert len(node["children"]) == 1
            node = node["children"][0]
    assert node["children"] == []

    trace_body = (await api.get(f"/traces/{trace}")).json
    assert (trace_body["serviceCalls"], len(trace_body["spans"])) == (depth, depth - 1)
    analysis = (await api.get(f"/traces/{trace}/analyze")).json
    assert analysis["totalDuration"] == 2000.0
    assert len(analysis["criticalPathSegments"]) == 2 * depth - 1


def _service_stats(count: int, avg: float, errors: int, p50: Any, p95: Any, p99: Any) -> dict[str, Any]:
    """A ``serviceStats`` entry of ``/stats`` (spans without sampler information: estimated = received)."""
    return {
        "count": count,
        "avgDuration": avg,
        "errorCount": errors,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "estimatedCount": count,
        "estimatedErrorCount": errors,
    }


async def _record_heartbeats(api: LiveApi, now: int) -> None:
    """Two live workers and one silent for a minute (not reported)."""
    beats = [
        heartbeat(
            "worker-a",
            {"spans/0": 5, "spans/1": 2},
            spans_per_second=100.5,
            spans_total=1000,
            late_spans=2,
            dead_lettered=1,
            traces_finalized=40,
            updated_at_us=now - 1_000_000,
        ),
        heartbeat(
            "worker-b",
            {"spans/2": 3},
            spans_per_second=50.25,
            spans_total=500,
            late_spans=1,
            traces_finalized=20,
            updated_at_us=now,
        ),
        heartbeat(  # silent for a minute: not reported
            "worker-stale",
            {"spans/3": 99},
            spans_per_second=1.0,
            spans_total=1,
            late_spans=9,
            dead_lettered=9,
            traces_finalized=9,
            updated_at_us=now - 60_000_000,
        ),
    ]
    for beat in beats:
        await api.store.record_heartbeat(beat)


def _expected_pipeline(now: int) -> dict[str, Any]:
    """The ``pipeline`` of ``/stats`` after :func:`_record_heartbeats` at ``now``."""
    return {
        "workers": [
            {
                "workerId": "worker-a",
                "partitions": ["spans/0", "spans/1"],
                "lag": {"spans/0": 5, "spans/1": 2},
                "spansPerSecond": 100.5,
                "spansTotal": 1000,
                "lateSpans": 2,
                "deadLettered": 1,
                "tracesFinalized": 40,
                "updatedAt": (now - 1_000_000) / 1000,
            },
            {
                "workerId": "worker-b",
                "partitions": ["spans/2"],
                "lag": {"spans/2": 3},
                "spansPerSecond": 50.25,
                "spansTotal": 500,
                "lateSpans": 1,
                "deadLettered": 0,
                "tracesFinalized": 20,
                "updatedAt": now / 1000,
            },
        ],
        "totalLag": 10,
        "spansPerSecond": 150.75,
        "deadLettered": 1,
        "lateSpans": 3,
    }


async def test_stats_has_every_field(api: LiveApi) -> None:
    await _seed_trace(api)
    failed = "trace-failed"
    await api.ingest([span(failed, "r", None, "checkout", "pay", 1000, 200, status="error")], now_us=T0_US)
    await api.finalize(failed, now_us=T0_US + 1_000_000)
    await api.ingest([span("trace-open", "r", None, "cart", "add", 0, None)], now_us=T0_US)

    now = time.time_ns() // 1000
    await _record_heartbeats(api, now)

    reply = await api.get("/stats")
    assert reply.status == 200
    # One span per service: each percentile is its duration, within the latency sketch's 1%.
    assert reply.json == {
        "totalTraces": 3,
        "activeTraces": 1,
        "completedTraces": 1,
        "failedTraces": 1,
        "estimatedTotalTraces": 3,
        "estimatedCompletedTraces": 1,
        "estimatedFailedTraces": 1,
        "avgDuration": 161.5,
        "slowestTraces": [{"traceId": failed, "duration": 200.0}, {"traceId": SEED, "duration": 123.0}],
        "serviceStats": {
            "api-gateway": _service_stats(1, 123.0, 0, *[pytest.approx(123.0, rel=0.01)] * 3),
            "checkout": _service_stats(1, 200.0, 1, *[pytest.approx(200.0, rel=0.01)] * 3),
            "database": _service_stats(1, 23.0, 0, *[pytest.approx(23.0, rel=0.01)] * 3),
            "user-service": _service_stats(1, 45.0, 0, *[pytest.approx(45.0, rel=0.01)] * 3),
        },
        "pipeline": _expected_pipeline(now),
        "window": None,  # all time
    }


async def test_stats_of_an_empty_store(api: LiveApi) -> None:
    reply = await api.get("/stats")
    assert reply.json == {
        "totalTraces": 0,
        "activeTraces": 0,
        "completedTraces": 0,
        "failedTraces": 0,
        "estimatedTotalTraces": 0,
        "estimatedCompletedTraces": 0,
        "estimatedFailedTraces": 0,
        "avgDuration": 0.0,
        "slowestTraces": [],
        "serviceStats": {},
        "pipeline": {"workers": [], "totalLag": 0, "spansPerSecond": 0.0, "deadLettered": 0, "lateSpans": 0},
        "window": None,
    }


async def test_healthz_openapi_and_metrics(api: LiveApi) -> None:
    health = await api.get("/healthz")
    assert (health.status, health.json) == (200, {"status": "ok"})

    document = (await api.get("/openapi.json")).json
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/traces/start",
        "/traces/span",
        "/traces/span/finish",
        "/traces/query",
        "/traces/{traceId}",
        "/traces/{traceId}/visualize",
        "/traces/{traceId}/analyze",
        "/stats",
        "/stats/operations",
        "/stats/timeseries",
        "/analyze/endpoints",
        "/analyze/endpoints/{service}/{operation}/critical-path",
        "/analyze/endpoints/{service}/{operation}/changes",
        "/analyze/operations",
        "/healthz",
        "/openapi.json",
        "/metrics",
    }
    ingest = document["info"]["description"].split("\n\n")[1]  # the topics, their encodings, the detection
    for name in (api.settings.topic, api.settings.otlp_topic, api.settings.zipkin_topic, api.settings.jaeger_topic):
        assert f"`{name}`" in ingest
    for encoding in (
        "otlp_proto",
        "otlp_json",
        "zipkin_json",
        "zipkin_proto",
        "jaeger_proto",
        "jaeger_json",
        "content-type",
    ):
        assert encoding in ingest

    await api.get("/traces/unknown-trace")
    metrics = await api.get("/metrics")
    assert metrics.status == 200
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    page = parse(metrics.text)
    requests = "tracing_api_requests_total"
    assert page[requests, (("method", "GET"), ("route", "/healthz"), ("status", "200"))] == 1
    assert page[requests, (("method", "GET"), ("route", "/traces/{traceId}"), ("status", "404"))] == 1
    assert page["tracing_api_request_duration_seconds_count", (("route", "/openapi.json"),)] == 1
    assert page["tracing_api_request_duration_seconds_bucket", (("le", "+Inf"), ("route", "/healthz"))] == 1


async def test_healthz_answers_503_when_the_store_is_closed(api: LiveApi) -> None:
    await api.store.close()
    reply = await api.get("/healthz")
    assert reply.status == 503
    assert reply.json["error"].startswith("store: ")
