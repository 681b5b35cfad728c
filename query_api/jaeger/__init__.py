"""Jaeger-compatible read APIs, so the Jaeger UI, Grafana's Jaeger data source and Jaeger API clients work
against this store unchanged.

* :mod:`query_api.jaeger.classic`: the classic ``/api/`` API (Jaeger's UI model in a
  ``{data, total, limit, offset, errors}`` envelope);
* :mod:`query_api.jaeger.v3`: the current ``/api/v3/`` API (OTLP JSON);
* :mod:`query_api.jaeger.common`: Jaeger's parameter syntaxes (Go durations, RFC 3339 times) and the
  search and trace loading both share.

Read tokens apply to these routes as to every other GET. Where the answers differ from Jaeger's (ids,
search semantics, span kinds of operations), the module docstrings say so.
"""

from __future__ import annotations

from aiohttp import web

from . import classic, v3


def add_jaeger_routes(app: web.Application) -> None:
    """Register both Jaeger-compatible APIs on ``app``."""
    router = app.router
    router.add_get("/api/traces", classic.find_traces)
    router.add_get("/api/traces/{traceID}", classic.get_trace)
    router.add_get("/api/services", classic.services)
    router.add_get("/api/services/{service}/operations", classic.service_operations)
    router.add_get("/api/operations", classic.operations)
    router.add_get("/api/dependencies", classic.dependencies)
    router.add_get("/api/metrics/latencies", classic.metrics_latencies)
    router.add_get("/api/metrics/calls", classic.metrics_calls)
    router.add_get("/api/metrics/errors", classic.metrics_errors)
    router.add_get("/api/metrics/minstep", classic.metrics_minstep)
    router.add_get("/api/v3/traces", v3.find_traces)
    router.add_get("/api/v3/traces/{trace_id}", v3.get_trace)
    router.add_get("/api/v3/services", v3.services)
    router.add_get("/api/v3/operations", v3.operations)


__all__ = ["add_jaeger_routes"]
