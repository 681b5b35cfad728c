"""A worker's SQLite connection keeps a smaller page cache than a reader's: the worker's trace cache holds
the states it would read back, and SQLite's own cache of 32 MiB was a tenth of the worker's peak RSS with
100k active traces (bench row f)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings
from shared.store import open_store
from shared.store.sqlite import PAGE_CACHE_KIB, WORKER_PAGE_CACHE_KIB, SqliteStore


async def _page_cache_kib(store: SqliteStore) -> int:
    def read() -> int:
        assert store._conn is not None
        (value,) = store._conn.execute("PRAGMA cache_size").fetchone()
        return -int(value)  # negative: KiB

    return await store._run(read)


@pytest.mark.parametrize(("writer", "expected"), [(True, WORKER_PAGE_CACHE_KIB), (False, PAGE_CACHE_KIB)])
async def test_the_page_cache_of_a_connection_follows_its_role(tmp_path: Path, writer: bool, expected: int) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'traces.db'}")
    store = await open_store(settings, writer=writer)
    try:
        assert isinstance(store, SqliteStore)
        assert await _page_cache_kib(store) == expected
    finally:
        await store.close()
