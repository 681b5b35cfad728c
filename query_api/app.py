"""The application factory: settings in, a ready ``web.Application`` out.

Resources are opened by one cleanup context each, in order (store, Kafka producer, services) and closed in
reverse. A store or producer passed in is used as is and left open (its owner closes it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Final

from aiohttp import web

from shared.kafka import SpanProducer, ensure_topics
from shared.settings import Settings
from shared.store import open_store
from shared.store.base import TraceStore

from . import handlers, middleware
from .critical import CriticalPathService
from .encoding import encode
from .jaeger import add_jaeger_routes
from .keys import CRITICAL, METRICS, MONITOR, OPENAPI, PRODUCER, QUERIES, SETTINGS, STORE, WRITES
from .metrics import RequestMetrics
from .monitoring import MonitorService
from .openapi import openapi_document
from .service import QueryService
from .ui import add_ui_routes
from .writes import WriteService

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


RESERVED_TRACE_PATHS: Final = ("query", "start", "span")
"""``/traces/<name>`` routes of their own: ``GET /traces/{traceId}`` never takes these as trace ids (so
``GET /traces/start`` is a 405, not a lookup of the trace "start")."""


def setup_routes(app: web.Application) -> None:
    """Every route of the API."""
    reserved = "|".join(RESERVED_TRACE_PATHS)
    router = app.router
    router.add_post("/traces/start", handlers.start_trace)
    router.add_post("/traces/span", handlers.add_span)
    router.add_post("/traces/span/finish", handlers.finish_span)
    router.add_get("/traces/query", handlers.query_traces)
    router.add_get(f"/traces/{{traceId:(?!(?:{reserved})$)[^/]+}}", handlers.get_trace)
    router.add_get("/traces/{traceId}/visualize", handlers.visualize_trace)
    router.add_get("/traces/{traceId}/analyze", handlers.analyze_trace)
    router.add_get("/stats", handlers.stats)
    router.add_get("/stats/operations", handlers.operation_stats)
    router.add_get("/stats/timeseries", handlers.timeseries)
    router.add_get("/analyze/endpoints", handlers.endpoints)
    router.add_get("/analyze/operations", handlers.hot_operations)
    router.add_get("/analyze/endpoints/{service}/{operation:.+}/critical-path", handlers.endpoint_critical_path)
    router.add_get("/analyze/endpoints/{service}/{operation:.+}/changes", handlers.endpoint_changes)
    router.add_get("/healthz", handlers.healthz)
    router.add_get("/openapi.json", handlers.openapi)
    router.add_get("/metrics", handlers.metrics)
    add_jaeger_routes(app)
    add_ui_routes(app)


def _store_context(injected: TraceStore | None) -> CleanupContext:
    async def store_context(app: web.Application) -> AsyncIterator[None]:
        if injected is not None:
            app[STORE] = injected
            yield
            return
        store = await open_store(app[SETTINGS])
        app[STORE] = store
        try:
            yield
        finally:
            await store.close()

    return store_context


def _producer_context(injected: SpanProducer | None) -> CleanupContext:
    async def producer_context(app: web.Application) -> AsyncIterator[None]:
        if injected is not None:
            app[PRODUCER] = injected
            yield
            return
        settings = app[SETTINGS]
        await ensure_topics(settings, [settings.topic])
        producer = SpanProducer(settings)
        await producer.start()
        app[PRODUCER] = producer
        try:
            yield
        finally:
            await producer.close()

    return producer_context


async def _services_context(app: web.Application) -> AsyncIterator[None]:
    app[QUERIES] = QueryService(app[STORE])
    app[WRITES] = WriteService(app[PRODUCER], app[STORE])
    app[MONITOR] = MonitorService(app[STORE])
    app[CRITICAL] = CriticalPathService(app[STORE])
    yield


def create_app(
    settings: Settings, *, store: TraceStore | None = None, producer: SpanProducer | None = None
) -> web.Application:
    """The query API. ``store``/``producer``: use these instead of opening ones from ``settings``."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[middleware.metrics, middleware.errors, middleware.auth],
    )
    app[SETTINGS] = settings
    app[METRICS] = RequestMetrics()
    app[OPENAPI] = encode(openapi_document(settings))
    app.cleanup_ctx.extend([_store_context(store), _producer_context(producer), _services_context])
    setup_routes(app)
    return app
