"""Trace storage: the :class:`TraceStore` Protocol and its backends, chosen by :func:`open_store`."""

from __future__ import annotations

from shared.settings import Settings
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
    """The backend named by ``TRACING_STORE_URL`` (sqlite:///... or postgresql://...), opened."""
    url = settings.store_url
    if url.startswith("sqlite:"):
        from shared.store.sqlite import SqliteStore

        return await SqliteStore.open(url)
    from shared.store.postgres import PostgresStore

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
