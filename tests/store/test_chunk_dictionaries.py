"""The SQL stores' trained zstd dictionaries (``zstd_dicts``, :mod:`shared.store.sql.dicts`): a writer
writes plain chunks until it has enough to train a dictionary, stores it, and compresses with it from then
on; chunks of either kind read back in another store (another process) that never trained, a writer that
opens a store holding dictionaries uses the newest, several writers may each train their own, and a
dictionary that could not be stored is never named by a chunk."""

from __future__ import annotations

import contextlib
import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.demo import make_trace
from shared.models import Span
from shared.settings import Settings
from shared.store import TraceStore, open_store
from shared.store.encoding import CHUNK_DICT, CHUNK_V1, dict_id
from shared.store.sql import dicts
from shared.store.sql.store import SqlStore
from tests.store.conftest import postgres_schema_url
from tests.store.test_contract import MS, NOW, SECOND, T0, by_id, stored, write

ENOUGH_TO_TRAIN = 150
"""Demo traces, one chunk each: more than the 1 MiB of chunks a writer trains its dictionary from."""


@pytest.fixture(params=["sqlite-file", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store that another store can open too: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'traces.db'}"
    else:
        async with postgres_schema_url() as schema_url:
            yield schema_url


@contextlib.asynccontextmanager
async def opened(url: str, *, writer: bool) -> AsyncIterator[TraceStore]:
    store = await open_store(Settings.from_env({}, store_url=url), writer=writer)
    try:
        yield store
    finally:
        await store.close()


class Traces:
    """Demo traces written through stores, and what each should read back."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.written: dict[str, list[Span]] = {}

    async def write(self, store: TraceStore, traces: int) -> None:
        made = [make_trace(self.rng, T0 + (len(self.written) + i) * MS) for i in range(traces)]
        await write(store, [s for t in made for s in t])
        self.written.update((t[0].trace_id, t) for t in made)

    async def check(self, store: TraceStore) -> None:
        for trace_id, spans in self.written.items():
            assert by_id((await stored(store, trace_id)).spans) == by_id(spans), trace_id


def sql(store: TraceStore) -> SqlStore:
    assert isinstance(store, SqlStore)
    return store


def dictionary(store: TraceStore) -> int | None:
    """The dictionary the store's writer compresses with."""
    return sql(store).dicts.current


async def chunk_kinds(store: TraceStore) -> Counter[int | tuple[int, int]]:
    """How many chunks are plain (:data:`CHUNK_V1`), and how many name each dictionary ``(CHUNK_DICT, id)``."""
    rows = await sql(store)._snapshot(lambda d: d.fetch("SELECT body FROM chunks", []))
    return Counter(b[0] if b[0] != CHUNK_DICT else (CHUNK_DICT, dict_id(b)[0]) for (b,) in rows)


async def test_a_store_that_never_trained_reads_chunks_of_both_kinds(url: str) -> None:
    traces = Traces(seed=1)
    async with opened(url, writer=True) as writer:
        await traces.write(writer, ENOUGH_TO_TRAIN)
        assert dictionary(writer) is None  # written plain, and sampled
        await traces.write(writer, 10)  # the dictionary trained and stored first, then these use it
        assert dictionary(writer) == 1
        assert await chunk_kinds(writer) == {CHUNK_V1: ENOUGH_TO_TRAIN, (CHUNK_DICT, 1): 10}
        await traces.check(writer)
        async with opened(url, writer=False) as reader:  # another process's store: no cache, no dictionary
            await traces.check(reader)
            analyses = await reader.finalize(list(traces.written), now_us=NOW + SECOND)  # as a finalizer process
            assert {a.trace_id: a.span_count for a in analyses} == {t: len(s) for t, s in traces.written.items()}
        async with opened(url, writer=True) as later:  # a worker started later uses the newest dictionary
            await traces.write(later, 5)
            assert dictionary(later) == 1
        assert await chunk_kinds(writer) == {CHUNK_V1: ENOUGH_TO_TRAIN, (CHUNK_DICT, 1): 15}


async def test_writers_that_train_at_once_each_store_their_own(url: str) -> None:
    traces = Traces(seed=2)
    async with opened(url, writer=True) as first, opened(url, writer=True) as second:
        await traces.write(first, ENOUGH_TO_TRAIN)
        await traces.write(second, ENOUGH_TO_TRAIN)  # its first write found no dictionary either
        await traces.write(first, 3)
        await traces.write(second, 3)
        assert (dictionary(first), dictionary(second)) == (1, 2)
        assert await chunk_kinds(first) == {CHUNK_V1: 2 * ENOUGH_TO_TRAIN, (CHUNK_DICT, 1): 3, (CHUNK_DICT, 2): 3}
        async with opened(url, writer=False) as reader:
            await traces.check(reader)


async def test_a_dictionary_that_could_not_be_stored_is_named_by_no_chunk(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    traces = Traces(seed=3)

    async def refused(*_: object) -> int:
        raise OSError("the store went away")

    async with opened(url, writer=True) as writer:
        await traces.write(writer, ENOUGH_TO_TRAIN)
        with monkeypatch.context() as failing:
            failing.setattr(dicts, "store", refused)
            with pytest.raises(OSError, match="went away"):
                await traces.write(writer, 3)  # the batch after the samples: not written either
        traces.written = dict(list(traces.written.items())[:ENOUGH_TO_TRAIN])
        await traces.write(writer, 3)  # collecting started over: plain
        assert dictionary(writer) is None
        assert await chunk_kinds(writer) == {CHUNK_V1: ENOUGH_TO_TRAIN + 3}
        await traces.check(writer)


async def drop_dictionaries(url: str) -> None:
    """The store as this layout was before ``zstd_dicts``."""
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            db.execute("DROP TABLE zstd_dicts")
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE zstd_dicts")
    finally:
        await conn.close()


async def test_a_store_written_before_dictionaries_gains_their_table_on_open(url: str) -> None:
    traces = Traces(seed=4)
    async with opened(url, writer=True) as writer:
        await traces.write(writer, 2)
    await drop_dictionaries(url)
    async with opened(url, writer=True) as writer:
        await traces.write(writer, ENOUGH_TO_TRAIN)
        await traces.write(writer, 2)
        assert dictionary(writer) == 1
        await traces.check(writer)
