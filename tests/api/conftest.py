"""Fixtures for the query API tests: the real app on a real socket, a real SQLite store, real Kafka.

``store`` (function): the SQLite store named by the ``settings`` fixture, opened and closed around the test.
``serve_api`` (function): an async context manager factory; ``serve_api(**overrides)`` runs
``create_app(settings with overrides, store=store)`` with ``web.AppRunner`` + ``web.TCPSite`` on a free port
and yields a :class:`~tests.api.support.LiveApi` (base URL, ``aiohttp.ClientSession``, store, settings).
The app starts its own Kafka producer on ``settings.topic`` (which it creates).
``api`` (function): ``serve_api()`` with the test's settings unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import pytest

from query_api import create_app
from shared.settings import Settings
from shared.store import open_store
from shared.store.base import TraceStore

from .support import LiveApi, serve

ServeApi = Callable[..., AbstractAsyncContextManager[LiveApi]]


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[TraceStore]:
    opened = await open_store(settings)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def serve_api(settings: Settings, store: TraceStore) -> ServeApi:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[LiveApi]:
        app_settings = msgspec.structs.replace(settings, **overrides)
        async with serve(create_app(app_settings, store=store)) as url, aiohttp.ClientSession() as http:
            yield LiveApi(url=url, http=http, store=store, settings=app_settings)

    return start


@pytest.fixture
async def api(serve_api: ServeApi) -> AsyncIterator[LiveApi]:
    async with serve_api() as live:
        yield live
