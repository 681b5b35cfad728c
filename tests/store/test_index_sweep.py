"""A purge leaves the purged traces' ``op_index`` and ``tag_index`` rows to one sweep per hash slice at its
end (``shared.store.sql.writer.sweep_index``): in between, a search never returns a purged trace (it joins
``traces``), and the endpoint index, which a tail read walks alone, loses its rows with the trace."""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.settings import Settings
from shared.store import TraceQuery, TraceStore, open_store
from shared.store.sql import writer
from shared.store.sql.store import SqlStore
from tests.store.conftest import postgres_schema_url
from tests.store.test_contract import HOUR, NOW, T0, simple_trace, write


@contextlib.asynccontextmanager
async def sql_store(backend: str, tmp_path: Path) -> AsyncIterator[tuple[str, TraceStore]]:
    if backend == "postgres":
        async with postgres_schema_url() as url:
            store = await open_store(Settings.from_env({}, store_url=url), writer=True)
            try:
                yield url, store
            finally:
                await store.close()
        return
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    store = await open_store(Settings.from_env({}, store_url=url), writer=True)
    try:
        yield url, store
    finally:
        await store.close()


async def index_rows(url: str) -> dict[str, int]:
    """Rows of each search index table."""
    tables = ("op_index", "tag_index", "endpoint_traces")
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    conn = await asyncpg.connect(url)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}
    finally:
        await conn.close()


def test_the_slices_cover_the_hash_space_once() -> None:
    slices = writer.sweep_slices()
    assert slices[0][0] == -(1 << 63) and slices[-1][1] is None
    assert all(high == low for (_, high), (low, _) in itertools.pairwise(slices))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_purged_traces_are_never_found_and_their_rows_go_at_the_sweep(backend: str, tmp_path: Path) -> None:
    async with sql_store(backend, tmp_path) as (url, store):
        assert isinstance(store, SqlStore)
        tags = {"customer": "c-1"}
        await write(
            store, [*simple_trace("old", root_tags=tags), *simple_trace("new", start=T0 + HOUR, root_tags=tags)]
        )
        await store.finalize(["old", "new"], now_us=NOW)
        both = await index_rows(url)

        # the purge's own transaction alone: the rows stay, and no search sees the trace
        purged = await store._commit(lambda d: writer.purge(d, T0 + 1, 100))
        assert purged.ids == ["old"]
        left = await index_rows(url)
        assert (left["op_index"], left["tag_index"]) == (both["op_index"], both["tag_index"])
        assert left["endpoint_traces"] == both["endpoint_traces"] - 1
        for query in (TraceQuery(tags=(("customer", "c-1"),)), TraceQuery(service_name="db"), TraceQuery()):
            assert [t.trace_id for t in await store.find_traces(query)] == ["new"]

        # the sweep takes exactly the purged trace's rows
        for low, high in writer.sweep_slices():
            await store._commit(functools.partial(writer.sweep_index, before_us=T0 + 1, low=low, high=high))
        swept = await index_rows(url)
        assert swept["op_index"] == both["op_index"] // 2 and swept["tag_index"] == both["tag_index"] // 2
        assert [t.trace_id for t in await store.find_traces(TraceQuery(tags=(("customer", "c-1"),)))] == ["new"]

        # and the store's purge does both
        assert await store.purge(T0 + HOUR + 1) == 1
        assert await index_rows(url) == {"op_index": 0, "tag_index": 0, "endpoint_traces": 0}
