"""The application factory: settings in, a ready ``web.Application`` out.

Resources are opened by one cleanup context each, in order (store, Kafka producer, services with the
archive's object store when ``TRACING_ARCHIVE_URL`` is set) and closed in reverse. A store passed in is
used as is and left open (its owner closes it). The producer does not wait for the broker
(:mod:`query_api.producer`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from shared.archive.objects import open_object_store
from shared.archive.tiered import TieredReads
from shared.gc_tuning import trim_every
from shared.settings import Settings
from shared.store import open_store
from shared.store.base import TraceStore

from . import middleware
from .encoding import encode
from .keys import CRITICAL, JAEGER, METRICS, MONITOR, OPENAPI, PRODUCER, SAMPLING, SETTINGS, STORE, TRACES, WRITES
from .metrics import RequestMetrics
from .openapi import openapi_document
from .producer import Producer
from .routes import setup_routes
from .sampling_grpc import grpc_context
from .services import CriticalPathService, JaegerService, MonitorService, TraceService, WriteService
from .services.sampling import SamplingService

CleanupContext = Callable[[web.Application], AsyncIterator[None]]
T = TypeVar("T")


def _resource_context(
    key: web.AppKey[T],
    injected: T | None,
    open_: Callable[[Settings], Awaitable[T]],
    close: Callable[[T], Awaitable[None]],
) -> CleanupContext:
    """Put ``injected`` on the app under ``key`` (its owner closes it), or one opened from the settings and
    closed on cleanup."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if injected is not None:
            app[key] = injected
            yield
            return
        resource = await open_(app[SETTINGS])
        app[key] = resource
        try:
            yield
        finally:
            await close(resource)

    return context


async def _start_producer(settings: Settings) -> Producer:
    producer = Producer(settings)
    await producer.open()
    return producer


async def _close_store(store: TraceStore) -> None:
    await store.close()


async def _close_producer(producer: Producer) -> None:
    await producer.close()


async def _trim_context(app: web.Application) -> AsyncIterator[None]:
    """The C allocator's free pages back to the system every 30 s (:func:`shared.gc_tuning.trim_every`):
    the reads of large traces and of archive blocks free tens of MiB at once."""
    trimming = asyncio.get_running_loop().create_task(trim_every(), name="malloc-trim")
    try:
        yield
    finally:
        trimming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trimming


async def _services_context(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    location = app[SETTINGS].archive_location()
    reads = TieredReads(store, None if location is None else open_object_store(location))
    app[TRACES] = TraceService(reads)
    app[WRITES] = WriteService(app[PRODUCER], store)
    app[MONITOR] = MonitorService(store)
    app[CRITICAL] = CriticalPathService(store)
    app[JAEGER] = JaegerService(store, reads)
    app[SAMPLING] = SamplingService(store, app[SETTINGS])
    try:
        yield
    finally:
        await reads.close()


def create_app(settings: Settings, *, store: TraceStore | None = None) -> web.Application:
    """The query API. ``store``: use this one instead of opening one from ``settings``."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[middleware.metrics, middleware.errors, middleware.auth],
    )
    app[SETTINGS] = settings
    app[METRICS] = RequestMetrics()
    app[OPENAPI] = encode(openapi_document(settings))
    app.cleanup_ctx.extend(
        [
            _resource_context(STORE, store, open_store, _close_store),
            _resource_context(PRODUCER, None, _start_producer, _close_producer),
            _services_context,
            grpc_context,
            _trim_context,
        ]
    )
    setup_routes(app)
    return app
