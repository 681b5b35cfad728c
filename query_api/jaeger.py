"""Jaeger-compatible read APIs, so the Jaeger UI, Grafana's Jaeger data source and Jaeger API clients work
against this store unchanged.

* :mod:`query_api.jaeger_classic`: the classic ``/api/`` API (Jaeger's UI model in a
  ``{data, total, limit, offset, errors}`` envelope);
* :mod:`query_api.jaeger_v3`: the current ``/api/v3/`` API (OTLP JSON);
* :mod:`query_api.jaeger_common`: Jaeger's parameter syntaxes (Go durations, RFC 3339 times) and the
  search and trace loading both share.

Read tokens apply to these routes as to every other GET. Where the answers differ from Jaeger's (ids,
search semantics, span kinds of operations), the module docstrings say so.
"""

from __future__ import annotations

from aiohttp import web

from . import jaeger_classic, jaeger_v3


def add_jaeger_routes(app: web.Application) -> None:
    """Register both Jaeger-compatible APIs on ``app``."""
    router = app.router
    router.add_get("/api/traces", jaeger_classic.find_traces)
    router.add_get("/api/traces/{traceID}", jaeger_classic.get_trace)
    router.add_get("/api/services", jaeger_classic.services)
    router.add_get("/api/services/{service}/operations", jaeger_classic.service_operations)
    router.add_get("/api/operations", jaeger_classic.operations)
    router.add_get("/api/dependencies", jaeger_classic.dependencies)
    router.add_get("/api/v3/traces", jaeger_v3.find_traces)
    router.add_get("/api/v3/traces/{trace_id}", jaeger_v3.get_trace)
    router.add_get("/api/v3/services", jaeger_v3.services)
    router.add_get("/api/v3/operations", jaeger_v3.operations)


__all__ = ["add_jaeger_routes"]
