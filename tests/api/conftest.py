"""Fixtures for the query API tests: the real app on a real socket, a real store, real Kafka.

``settings`` (function, overrides the root one): parametrized over the store backends, so every API test
runs on SQLite, on PostgreSQL (a fresh schema per test) and on Cassandra (a fresh namespace per test; see
``tests/store/conftest.py``).
``store`` (function): the store named by ``settings``, opened and closed around the test.
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
from shared.store.base import TraceStore
from tests.conftest import cassandra_namespace_url
from tests.e2e.helpers import reader
from tests.store.conftest import postgres_schema_url

from .support import LiveApi, serve

ServeApi = Callable[..., AbstractAsyncContextManager[LiveApi]]


@pytest.fixture(params=["sqlite", "postgres", "cassandra"])
async def settings(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Settings]:
    if request.param == "sqlite":
        yield settings
        return
    if request.param == "cassandra":
        url = cassandra_namespace_url(request.getfixturevalue("cassandra_store_keyspace"))
        yield msgspec.structs.replace(settings, store_url=url)
        return
    async with postgres_schema_url() as url:
        yield msgspec.structs.replace(settings, store_url=url)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[TraceStore]:
    async with reader(settings) as opened:
        yield opened


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
