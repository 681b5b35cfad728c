"""Trace storage: the store contract by role (:mod:`.base`: :class:`TraceWriter`, :class:`TraceFinalizer`,
the readers, the capabilities a backend declares; :class:`TraceStore` is all of them) and its backends,
chosen by :func:`open_store`."""

from __future__ import annotations

from shared.settings import Settings, SettingsError
from shared.store.base import (
    AggregateReader,
    ArchivedBlock,
    ArchiveRegistry,
    Completeness,
    Component,
    Heartbeat,
    HeartbeatLog,
    QueryError,
    ServiceNames,
    ServiceStats,
    StoreCapabilities,
    StoredTrace,
    StoreStats,
    TraceFinalizer,
    TraceQuery,
    TraceReader,
    TraceStore,
    TraceSummary,
    TraceWriter,
    WriteResult,
)


async def open_store(settings: Settings, *, writer: bool = False, checkpoints: bool = True) -> TraceStore:
    """The backend named by ``TRACING_STORE_URL`` (sqlite:///..., postgresql://... or cassandra://...),
    opened.

    ``writer``: the store of an ingest worker, which keeps a copy of the traces it writes (up to
    ``TRACING_CACHE_MB``) so that it finalizes them without reading them back.

    ``checkpoints``: False for a SQLite connection whose file another connection of the same host
    checkpoints (a worker's finalizer process, beside the worker's own store): one checkpointer is enough.

    Raises :class:`SettingsError` (one line, naming the extra to install) for a PostgreSQL URL when
    asyncpg is not installed, or a Cassandra URL when acsylla is not."""
    url = settings.store_url
    cache_bytes = settings.cache_mb * 1024 * 1024 if writer else 0
    if url.startswith("sqlite:"):
        from shared.store.sqlite import CHECKPOINTS, PAGE_CACHE_KIB, WORKER_PAGE_CACHE_KIB, SqliteStore

        return await SqliteStore.open(
            url,
            cache_bytes=cache_bytes,
            checkpoints=CHECKPOINTS if checkpoints else None,
            page_cache_kib=WORKER_PAGE_CACHE_KIB if writer else PAGE_CACHE_KIB,
        )
    if url.startswith("cassandra:"):
        try:
            import acsylla  # noqa: F401 (the driver of the cassandra extra)
        except ModuleNotFoundError as exc:
            if exc.name != "acsylla":
                raise
            raise SettingsError(
                "TRACING_STORE_URL: a cassandra:// store needs acsylla: pip install 'kafka-tracing[cassandra]'"
            ) from None
        from shared.store.cassandra import CassandraStore

        # with an archive, the hot purge waits for traces to be TRACING_ARCHIVE_AFTER_H old too (and moved):
        # the rows' TTL, the purge's safety net, must not end them before
        hot_h = max(settings.retention_h, settings.archive_after_h) if settings.archive_url.strip() else None
        cassandra: TraceStore = await CassandraStore.open(
            url, cache_bytes=cache_bytes, retention_h=hot_h or settings.retention_h
        )
        return cassandra
    try:
        from shared.store.postgres import PostgresStore
    except ModuleNotFoundError as exc:
        if exc.name != "asyncpg":
            raise
        raise SettingsError(
            "TRACING_STORE_URL: a postgresql:// store needs asyncpg: pip install 'kafka-tracing[postgres]'"
        ) from None

    store: TraceStore = await PostgresStore.open(url, cache_bytes=cache_bytes)
    return store


__all__ = [
    "AggregateReader",
    "ArchiveRegistry",
    "ArchivedBlock",
    "Completeness",
    "Component",
    "Heartbeat",
    "HeartbeatLog",
    "QueryError",
    "ServiceNames",
    "ServiceStats",
    "StoreCapabilities",
    "StoreStats",
    "StoredTrace",
    "TraceFinalizer",
    "TraceQuery",
    "TraceReader",
    "TraceStore",
    "TraceSummary",
    "TraceWriter",
    "WriteResult",
    "open_store",
]
