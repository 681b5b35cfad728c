"""Trace storage: the :class:`TraceStore` Protocol and its backends, chosen by :func:`open_store`."""

from __future__ import annotations

from shared.settings import Settings, SettingsError
from shared.store.base import (
    Completeness,
    Heartbeat,
    QueryError,
    ServiceStats,
    StoredTrace,
    StoreStats,
    TraceQuery,
    TraceStore,
    TraceSummary,
    WriteResult,
)


async def open_store(settings: Settings) -> TraceStore:
    """The backend named by ``TRACING_STORE_URL`` (sqlite:///... or postgresql://...), opened.

    Raises :class:`SettingsError` (one line, naming the extra to install) for a PostgreSQL URL when
    asyncpg is not installed."""
    url = settings.store_url
    if url.startswith("sqlite:"):
        from shared.store.sqlite import SqliteStore

        return await SqliteStore.open(url)
    try:
        from shared.store.postgres import PostgresStore
    except ModuleNotFoundError as exc:
        if exc.name != "asyncpg":
            raise
        raise SettingsError(
            "TRACING_STORE_URL: a postgresql:// store needs asyncpg: pip install 'kafka-tracing[postgres]'"
        ) from None

    store: TraceStore = await PostgresStore.open(url)
    return store


__all__ = [
    "Completeness",
    "Heartbeat",
    "QueryError",
    "ServiceStats",
    "StoreStats",
    "StoredTrace",
    "TraceQuery",
    "TraceStore",
    "TraceSummary",
    "WriteResult",
    "open_store",
]
