"""Typed application state (``web.AppKey``): what the cleanup contexts put on the app and views read."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from shared.settings import Settings
from shared.store.base import TraceStore

from .metrics import RequestMetrics
from .producer import Producer
from .services import (
    CriticalPathService,
    JaegerService,
    MonitorService,
    SamplingService,
    TraceService,
    WriteService,
)

SETTINGS: Final = web.AppKey("settings", Settings)
STORE: Final[web.AppKey[TraceStore]] = web.AppKey("store")
PRODUCER: Final = web.AppKey("producer", Producer)
TRACES: Final = web.AppKey("traces", TraceService)
WRITES: Final = web.AppKey("writes", WriteService)
MONITOR: Final = web.AppKey("monitor", MonitorService)
CRITICAL: Final = web.AppKey("critical", CriticalPathService)
JAEGER: Final = web.AppKey("jaeger", JaegerService)
SAMPLING: Final = web.AppKey("sampling", SamplingService)
METRICS: Final = web.AppKey("metrics", RequestMetrics)
OPENAPI: Final = web.AppKey("openapi", bytes)
"""The encoded OpenAPI document, built once."""
