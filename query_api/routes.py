"""Every route of the API, registered in one function: the seed endpoints, both Jaeger-compatible APIs,
operations (health, OpenAPI, metrics) and the web UI's files."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from . import handlers, ui
from .jaeger import analytics, classic, sampling, v3

RESERVED_TRACE_PATHS: Final = ("query", "start", "span")
"""``/traces/<name>`` routes of their own: ``GET /traces/{traceId}`` never takes these as trace ids (so
``GET /traces/start`` is a 405, not a lookup of the trace "start")."""


def setup_routes(app: web.Application) -> None:
    """Register every route on ``app`` (GET routes answer HEAD too; other methods get a 405)."""
    reserved = "|".join(RESERVED_TRACE_PATHS)
    add_get, add_post = app.router.add_get, app.router.add_post
    add_post("/traces/start", handlers.start_trace)
    add_post("/traces/span", handlers.add_span)
    add_post("/traces/span/finish", handlers.finish_span)
    add_get("/traces/query", handlers.query_traces)
    add_get(f"/traces/{{traceId:(?!(?:{reserved})$)[^/]+}}", handlers.get_trace)
    add_get("/traces/{traceId}/visualize", handlers.visualize_trace)
    add_get("/traces/{traceId}/analyze", handlers.analyze_trace)
    add_get("/stats", handlers.stats)
    add_get("/stats/operations", handlers.operation_stats)
    add_get("/stats/timeseries", handlers.timeseries)
    add_get("/analyze/endpoints", handlers.endpoints)
    add_get("/analyze/operations", handlers.hot_operations)
    add_get("/analyze/endpoints/{service}/{operation:.+}/critical-path", handlers.endpoint_critical_path)
    add_get("/analyze/endpoints/{service}/{operation:.+}/changes", handlers.endpoint_changes)
    add_get("/healthz", handlers.healthz)
    add_get("/openapi.json", handlers.openapi)
    add_get("/metrics", handlers.metrics)
    add_get("/api/traces", classic.find_traces)
    add_get("/api/traces/{traceID}", classic.get_trace)
    add_post("/api/archive/{traceID}", classic.archive_trace)
    add_get("/api/services", classic.services)
    add_get("/api/services/{service}/operations", classic.service_operations)
    add_get("/api/operations", classic.operations)
    add_get("/api/dependencies", classic.dependencies)
    add_get("/api/metrics/latencies", classic.metrics_latencies)
    add_get("/api/metrics/calls", classic.metrics_calls)
    add_get("/api/metrics/errors", classic.metrics_errors)
    add_get("/api/metrics/minstep", classic.metrics_minstep)
    add_get("/api/v3/traces", v3.find_traces)
    add_get("/api/v3/traces/{trace_id}", v3.get_trace)
    add_get("/api/v3/services", v3.services)
    add_get("/api/v3/operations", v3.operations)
    add_get("/analytics/v1/dependencies", analytics.dependencies)
    add_get("/api/sampling", sampling.sampling_strategy)
    add_get("/sampling", sampling.sampling_strategy)
    add_get(ui.PREFIX, ui.serve_static)
    add_get(ui.PREFIX + "/{path:.*}", ui.serve_static)
