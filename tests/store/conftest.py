"""The ``store`` fixture: one empty, opened store per test, once for every backend.

Every test in this directory takes ``store`` and so runs against each backend in :data:`BACKENDS`; a test
never knows which one it has. Backends today:

* ``sqlite-file``: a SQLite file (WAL) in the test's temp dir, opened as a worker opens it (with the
  writer's trace cache, so finalization and de-duplication mostly use the cached copy);
* ``sqlite-memory``: ``sqlite:///:memory:``, the fast embedded variant, opened as a reader opens it (no
  cache: every write and finalization reads the stored chunks back);
* ``cassandra``: a fresh namespace per test (the ``namespace`` URL option) in one keyspace for the whole
  session (created by the first store, dropped at the end), on the node of ``cassandra_url`` (see
  ``tests/conftest.py``: ``TRACING_TEST_CASSANDRA_URL``, else a node started for the session; CI=true
  without either fails). A namespace costs nothing to create, where a keyspace per test would cost the
  tables' schema changes. Opened with the writer's cache.
* ``postgres``: a fresh schema per test (named by ``search_path`` in the URL, dropped afterwards) in the
  database at ``TRACING_TEST_POSTGRES_URL``; without that variable the tests skip, or fail when CI=true.
  A schema is created and dropped in milliseconds where a database per test would cost a copy of the
  template; the store never qualifies table names, so each test sees only its own tables. Opened with
  the writer's cache.

Adding a backend is one entry in :data:`BACKENDS` plus its branch in :func:`_store_url`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shared.settings import Settings
from shared.store import TraceStore, open_store
from tests.conftest import cassandra_namespace_url
from tests.prerequisites import missing

if TYPE_CHECKING:
    from shared.store.cassandra import CassandraStore

BACKENDS = [
    pytest.param("sqlite-file", id="sqlite-file"),
    pytest.param("sqlite-memory", id="sqlite-memory"),
    pytest.param("postgres", id="postgres"),
    pytest.param("cassandra", id="cassandra"),
]


def _required_url(variable: str) -> str:
    """The URL in ``variable``; without it, skip locally but fail in CI."""
    url = os.environ.get(variable)
    if url:
        return url
    missing(f"{variable} is not set")


@contextlib.asynccontextmanager
async def postgres_schema_url() -> AsyncIterator[str]:
    """A URL of the test database whose ``search_path`` is a new, empty schema; the schema is dropped after."""
    base = _required_url("TRACING_TEST_POSTGRES_URL")
    import asyncpg

    schema = f"test_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{base}{'&' if '?' in base else '?'}search_path={schema}"
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """For PostgreSQL-only tests: a URL whose ``search_path`` is a new, empty schema (see above)."""
    async with postgres_schema_url() as url:
        yield url


@contextlib.asynccontextmanager
async def _store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if backend == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'traces.db'}"
    elif backend == "sqlite-memory":
        yield "sqlite:///:memory:"
    elif backend == "postgres":
        async with postgres_schema_url() as url:
            yield url
    elif backend == "cassandra":
        yield cassandra_namespace_url(request.getfixturevalue("cassandra_store_keyspace"))
    else:
        raise AssertionError(f"unknown store backend {backend!r}")


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TraceStore]:
    """An empty store of the parametrized backend, opened through ``open_store`` and closed afterwards."""
    async with _store_url(request.param, tmp_path, request) as url:
        opened = await open_store(Settings.from_env({}, store_url=url), writer=request.param != "sqlite-memory")
        try:
            yield opened
        finally:
            await opened.close()


@pytest.fixture
async def cassandra(cassandra_store_keyspace: str) -> AsyncIterator[CassandraStore]:
    """An empty Cassandra store of the test's own (a namespace in the session's keyspace)."""
    from shared.store.cassandra import CassandraStore

    opened = await open_store(Settings.from_env({}, store_url=cassandra_namespace_url(cassandra_store_keyspace)))
    assert isinstance(opened, CassandraStore)
    try:
        yield opened
    finally:
        await opened.close()
