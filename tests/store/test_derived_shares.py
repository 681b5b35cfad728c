"""The SQL stores keep no rollup contribution for a kept trace: re-finalization and purge derive the
previous one from the chunks the trace's last finalization merged (``traces.final_chunks``). Checked on
the tables themselves (SQLite with and without the writer's cache, PostgreSQL): after late spans,
re-finalizations and purges, every rollup and search index table holds what a fresh store holds that was
given only what is still counted; rows that carry a stored contribution (a sampled-out trace's, rows
written before ``final_chunks`` existed, or migrated from an older layout) are taken at their word."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.analysis import analyze
from shared.models import Span
from shared.sampling import Sampler
from shared.settings import Settings
from shared.store import TraceStore, open_store
from shared.store.rollups import contribution, encode_contribution
from shared.store.sql import writer
from shared.store.sql.store import SqlStore
from tests.store.conftest import postgres_schema_url
from tests.store.test_contract import HOUR, NOW, SECOND, T0, simple_trace, span, write
from tests.store.test_migration import fixture_url
from tests.store.test_weighted_rollups import sampled_trace

TABLES = (
    "rollup_ops",
    "rollup_endpoints",
    "rollup_contexts",
    "rollup_deps",
    "rollup_unseen",
    "rollup_services_sketch",
    "op_index",
    "tag_index",
    "endpoint_traces",
)
"""Every table a trace's contribution adds to (``call_paths`` names contexts for good: not compared)."""
SAMPLER = Sampler(rate=0.0, slow_us=10**12)
"""Keeps failed traces only."""
BACKENDS = ["sqlite", "sqlite-uncached", "postgres"]

Dump = dict[str, list[tuple[Any, ...]]]


@contextlib.asynccontextmanager
async def empty_url(backend: str, tmp_path: Path, name: str) -> AsyncIterator[str]:
    if backend == "postgres":
        async with postgres_schema_url() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / f'{name}.db'}"


async def opened(backend: str, url: str) -> TraceStore:
    return await open_store(Settings.from_env({}, store_url=url), writer=backend != "sqlite-uncached")


async def dump(url: str) -> Dump:
    """The rows of :data:`TABLES`, sorted, each ``tid`` replaced by its trace id (tids differ by store)."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            names = dict(db.execute("SELECT tid, trace_id FROM traces").fetchall())
            tables = {}
            for table in TABLES:
                cursor = db.execute(f"SELECT * FROM {table}")
                tables[table] = _named([d[0] for d in cursor.description], cursor.fetchall(), names)
            return tables
    conn = await asyncpg.connect(url)
    try:
        names = dict(await conn.fetch("SELECT tid, trace_id FROM traces"))
        tables = {}
        for table in TABLES:
            rows = await conn.fetch(f"SELECT * FROM {table}")
            tables[table] = _named(list(rows[0].keys()) if rows else [], [tuple(r) for r in rows], names)
        return tables
    finally:
        await conn.close()


def _named(columns: list[str], rows: Sequence[Sequence[Any]], names: Mapping[int, str]) -> list[tuple[Any, ...]]:
    at = columns.index("tid") if "tid" in columns else None
    out = [tuple(names.get(v, v) if i == at else v for i, v in enumerate(row)) for row in rows]
    return sorted(out, key=repr)


async def fresh_dump(backend: str, tmp_path: Path, traces: Mapping[str, list[Span]]) -> Dump:
    """The tables of a new store into which ``traces`` were written and finalized once (the sampler's)."""
    async with empty_url(backend, tmp_path, "fresh") as url:
        store = await opened(backend, url)
        try:
            if traces:
                await write(store, [s for spans in traces.values() for s in spans])
                await store.finalize(list(traces), now_us=NOW, sampler=SAMPLER)
        finally:
            await store.close()
        return await dump(url)


def failed_trace(trace_id: str, start: int, weight: int = 1) -> list[Span]:
    return sampled_trace(trace_id, start, weight, error=True)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_refinalized_and_purged_traces_leave_the_tables_of_a_fresh_store(backend: str, tmp_path: Path) -> None:
    old = T0 - HOUR
    traces = {
        "twice": failed_trace("twice", old, weight=4),  # re-finalized twice, then purged
        "reopened": failed_trace("reopened", old),  # re-opened by a late span, purged before its re-finalization
        "dropped": simple_trace("dropped", start=old),  # sampled out: its contribution stays stored
        "stays": failed_trace("stays", T0, weight=2),
    }
    late = [
        span("twice", "late", parent="root", service="late-svc", start=old, tags={"late": "1"}),
        span("twice", "later", parent="root", service="db", operation="other", start=old + SECOND, status="error"),
    ]
    async with empty_url(backend, tmp_path, "store") as url:
        store = await opened(backend, url)
        try:
            await write(store, [s for spans in traces.values() for s in spans])
            await store.finalize(list(traces), now_us=NOW, sampler=SAMPLER)
            for i, extra in enumerate(late):
                await write(store, [extra], now=NOW + 10 * i + 1)
                assert len(await store.finalize(["twice"], now_us=NOW + 10 * i + 2, sampler=SAMPLER)) == 1
            await write(store, [span("reopened", "late", parent="root", service="late-svc", start=old)], now=NOW + 30)
            counted = {**traces, "twice": [*traces["twice"], *late]}
            assert await dump(url) == await fresh_dump(backend, tmp_path / "before", counted)
            assert await store.purge(T0) == 3
        finally:
            await store.close()
        assert await dump(url) == await fresh_dump(backend, tmp_path / "after", {"stays": traces["stays"]})


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_only_sampled_out_traces_store_their_contribution(backend: str, tmp_path: Path) -> None:
    async with empty_url(backend, tmp_path, "store") as url:
        store = await opened(backend, url)
        try:
            await write(store, [*failed_trace("kept", T0), *simple_trace("dropped")])
            await write(store, [span("kept", "more", parent="root", start=T0 + SECOND)], now=NOW + 1)
            await store.finalize(["kept", "dropped"], now_us=NOW + 2, sampler=SAMPLER)
        finally:
            await store.close()
        query = "SELECT trace_id, state, contribution IS NULL, final_chunks FROM traces ORDER BY trace_id"
        if backend == "sqlite":
            with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
                rows = [tuple(r) for r in db.execute(query).fetchall()]
        else:
            conn = await asyncpg.connect(url)
            try:
                rows = [tuple(r) for r in await conn.fetch(query)]
            finally:
                await conn.close()
    assert [(t, s, bool(n), c) for t, s, n, c in rows] == [
        ("dropped", "dropped", False, 1),
        ("kept", "finalized", True, 2),
    ]


@pytest.mark.parametrize("layout", ["v1", "v2"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_rows_of_an_older_layout_are_refinalized_and_purged_with_their_stored_contribution(
    layout: str, backend: str, tmp_path: Path
) -> None:
    """A migrated store's rows carry their contribution: the re-opened trace is re-finalized (its stored
    share out, its new one in, no stored share any more), then every finalized trace is purged, and
    nothing is left in the rollups or the search indexes."""
    async with fixture_url(layout, backend, tmp_path) as url:
        store = await opened(backend, url)
        try:
            assert [a.trace_id for a in await store.finalize(["r1"], now_us=NOW + 10 * SECOND)] == ["r1"]
            await write(store, [span("r1", "late2", parent="root", service="queue")], now=NOW + 11 * SECOND)
            assert [a.trace_id for a in await store.finalize(["r1"], now_us=NOW + 12 * SECOND)] == ["r1"]
            assert await store.purge(2**62) > 0
            assert await store.get_trace("r1") is None
        finally:
            await store.close()
        assert await dump(url) == {table: [] for table in TABLES}


async def _as_written_before_final_chunks(url: str, shares: Mapping[str, bytes]) -> None:
    """Make a store look as the layout wrote it before ``final_chunks``: every finalized trace's
    contribution stored, no ``final_chunks`` column."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
            db.executemany("UPDATE traces SET contribution = ? WHERE trace_id = ?", [(b, t) for t, b in shares.items()])
            db.execute("ALTER TABLE traces DROP COLUMN final_chunks")
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            "UPDATE traces SET contribution = $1 WHERE trace_id = $2", [(b, t) for t, b in shares.items()]
        )
        await conn.execute("ALTER TABLE traces DROP COLUMN final_chunks")
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_store_written_before_final_chunks_gains_it_and_stays_exact(backend: str, tmp_path: Path) -> None:
    traces = {
        "a": failed_trace("a", T0 - HOUR, weight=4),
        "b": failed_trace("b", T0 - HOUR),
        "c": failed_trace("c", T0),
    }
    async with empty_url(backend, tmp_path, "store") as url:
        store = await opened(backend, url)
        try:
            await write(store, [s for spans in traces.values() for s in spans])
            await store.finalize(list(traces), now_us=NOW)
        finally:
            await store.close()
        shares = {}
        for trace_id, spans in traces.items():
            ordered = sorted(spans, key=lambda s: s.span_id)
            shares[trace_id] = encode_contribution(contribution(analyze(trace_id, ordered), ordered))
        await _as_written_before_final_chunks(url, shares)
        store = await opened(backend, url)
        try:
            late = span("a", "late", parent="root", service="late-svc", start=T0 - HOUR, tags={"late": "1"})
            await write(store, [late], now=NOW + 1)
            assert len(await store.finalize(["a"], now_us=NOW + 2)) == 1
            await write(store, [span("b", "late", parent="root", start=T0 - HOUR)], now=NOW + 3)  # re-opened
            assert await dump(url) == await fresh_dump(
                backend, tmp_path / "fresh", {**traces, "a": [*traces["a"], late]}
            )
            assert await store.purge(2**62) == 3
        finally:
            await store.close()
        assert await dump(url) == {table: [] for table in TABLES}


@pytest.mark.parametrize("apart", [False, True], ids=["thread", "planner-process"])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_trace_refinalized_between_the_purge_plan_and_its_commit_goes_with_its_new_share(
    backend: str, apart: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge derives the shares before its write transaction (on a thread, or for a large round in the
    store's planner process); a trace re-finalized meanwhile (a late span) is left for the next round while
    the unchanged ones go, or, when no planned one is left, its new share is derived inside the
    transaction: the stale share is never taken out."""
    if apart:
        monkeypatch.setattr(writer, "PLAN_APART_MIN", 1)
    old = T0 - HOUR
    traces = {
        "changes": failed_trace("changes", old, weight=3),
        "same": failed_trace("same", old),
        "stays": failed_trace("stays", T0, weight=2),
    }
    async with empty_url(backend, tmp_path, "store") as url:
        store = await opened(backend, url)
        assert isinstance(store, SqlStore)
        try:
            await write(store, [s for spans in traces.values() for s in spans])
            await store.finalize(list(traces), now_us=NOW, sampler=SAMPLER)
            for i, candidates in enumerate(({"changes", "same"}, {"changes"})):
                planned = await store._purge_planned(T0, 100)
                assert planned is not None and {row[0] for row in planned.rows} == candidates
                extra = span("changes", f"late{i}", parent="root", service="late-svc", start=old, status="error")
                await write(store, [extra], now=NOW + 10 * i + 1)
                assert len(await store.finalize(["changes"], now_us=NOW + 10 * i + 2, sampler=SAMPLER)) == 1
                purged = await store._commit(functools.partial(writer.purge, before_us=T0, limit=100, planned=planned))
                # first "same" alone (the changed one next round), then "changes" with its share derived here
                assert (purged.ids, purged.more) == ((["same"], True) if i == 0 else (["changes"], False))
            assert await store.purge(T0) == 0
            assert (store._planner is not None) == apart
            for low, high in writer.sweep_slices():  # what the store's purge does after its rounds
                await store._commit(functools.partial(writer.sweep_index, before_us=T0, low=low, high=high))
        finally:
            await store.close()
        assert await dump(url) == await fresh_dump(backend, tmp_path / "after", {"stays": traces["stays"]})


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_workers_purging_at_once_beside_late_spans_leave_the_tables_of_a_fresh_store(
    backend: str, tmp_path: Path
) -> None:
    """Two stores on one database (two workers) purge in small rounds at once while late spans re-finalize
    some of the traces being purged: every trace is taken out exactly once, with the share it had."""
    old = T0 - HOUR
    traces = {f"old{i:02d}": failed_trace(f"old{i:02d}", old + i * SECOND, weight=1 + i % 3) for i in range(12)}
    stays = {"stays": failed_trace("stays", T0, weight=2)}
    async with empty_url(backend, tmp_path, "store") as url:
        first, second = await opened(backend, url), await opened(backend, url)
        assert isinstance(first, SqlStore) and isinstance(second, SqlStore)
        first.purge_chunk = second.purge_chunk = 3
        try:
            await write(first, [s for spans in {**traces, **stays}.values() for s in spans])
            await first.finalize([*traces, *stays], now_us=NOW, sampler=SAMPLER)

            async def late(i: int) -> None:
                trace_id = f"old{i:02d}"
                extra = span(trace_id, "late", parent="root", service="late-svc", start=old, status="error")
                await write(second, [extra], now=NOW + i)
                await second.finalize([trace_id], now_us=NOW + i + 1, sampler=SAMPLER)

            await asyncio.gather(first.purge(T0), second.purge(T0), *(late(i) for i in (1, 5, 9)))
            await first.purge(T0)  # a trace a late span brought back after its purge goes now
        finally:
            await second.close()
            await first.close()
        assert await dump(url) == await fresh_dump(backend, tmp_path / "after", stays)
