"""Typed application state (``web.AppKey``): what the cleanup contexts put on the app and views read."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from shared.kafka import SpanProducer
from shared.settings import Settings
from shared.store.base import TraceStore

from .critical import CriticalPathService
from .metrics import RequestMetrics
from .monitoring import MonitorService
from .service import QueryService
from .writes import WriteService

SETTINGS: Final = web.AppKey("settings", Settings)
STORE: Final[web.AppKey[TraceStore]] = web.AppKey("store")
PRODUCER: Final = web.AppKey("producer", SpanProducer)
QUERIES: Final = web.AppKey("queries", QueryService)
WRITES: Final = web.AppKey("writes", WriteService)
MONITOR: Final = web.AppKey("monitor", MonitorService)
CRITICAL: Final = web.AppKey("critical", CriticalPathService)
METRICS: Final = web.AppKey("metrics", RequestMetrics)
OPENAPI: Final = web.AppKey("openapi", bytes)
"""The encoded OpenAPI document, built once."""
