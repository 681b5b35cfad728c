"""A store of layout v1 (one row per span) or v2 (uncompressed chunks, stored analyses), written by the
release of that layout and dumped in ``fixtures/``, is migrated in place on first open, and then answers
as it answered; a layout newer than this build is refused with one line saying what to do.
``fixtures/make_fixtures.py`` says how the fixtures were made."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from shared.analysis import analyze
from shared.settings import Settings
from shared.store import TraceQuery, TraceStore, open_store, sketch
from shared.store.base import RollupRow, Window
from shared.store.chunks import TraceState
from shared.store.encoding import CHUNK_V1
from shared.store.finalizing import derived_share
from shared.store.rollups import HOUR_US, MINUTE_US, TEN_MINUTES_US, decode_contribution, encode_contribution
from shared.store.sqlite.schema import CHUNK_BITS, SCHEMA_VERSION
from shared.store.tags import tag_hash
from tests.store.conftest import postgres_schema_url
from tests.store.fixtures.make_fixtures import SEARCHES, T0, trace_ids
from tests.store.test_contract import NOW, SECOND, span, write
from tests.store.test_weighted_rollups import sampled_trace

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ANSWERS: dict[str, Any] = json.loads((FIXTURES / "v1_answers.json").read_text())
LATER_ANSWERS: dict[str, dict[str, Any]] = {
    layout: json.loads((FIXTURES / f"{layout}_answers.json").read_text()) for layout in ("v2", "v3", "v4", "v5")
}
_enc = msgspec.json.Encoder()


def _json(value: object) -> Any:
    return json.loads(_enc.encode(value))


@contextlib.asynccontextmanager
async def fixture_url(layout: str, backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The store URL of the ``layout`` fixture of that backend, loaded (the store not opened yet)."""
    if backend == "sqlite":
        path = tmp_path / f"{layout}.db"
        script = (FIXTURES / f"{layout}_sqlite.sql").read_text()
        with sqlite3.connect(path) as db:
            db.executescript(f"BEGIN;\n{script}COMMIT;")  # one transaction: one sync, not one per row
        yield f"sqlite:///{path}"
        return
    async with postgres_schema_url() as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute((FIXTURES / f"{layout}_postgres.sql").read_text())
        finally:
            await conn.close()
        yield url


@contextlib.asynccontextmanager
async def fixture_store(layout: str, backend: str, tmp_path: Path) -> AsyncIterator[tuple[str, TraceStore]]:
    """(backend, a store opened on the ``layout`` fixture of that backend)."""
    async with fixture_url(layout, backend, tmp_path) as url:
        store = await open_store(Settings.from_env({}, store_url=url), writer=True)
        try:
            yield backend, store
        finally:
            await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def v1_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, TraceStore]]:
    """(backend, a store opened on the v1 fixture of that backend)."""
    async with fixture_store("v1", request.param, tmp_path) as opened:
        yield opened


@pytest.fixture(params=[(layout, backend) for layout in ("v2", "v3", "v4", "v5") for backend in ("sqlite", "postgres")])
async def later_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str, TraceStore]]:
    """(layout, backend, a store opened on the v2 to v5 fixture of that backend)."""
    layout, backend = request.param
    async with fixture_store(layout, backend, tmp_path) as (_, store):
        yield layout, backend, store


async def test_v1_store_is_migrated_and_answers_as_before(v1_store: tuple[str, TraceStore]) -> None:
    backend, store = v1_store
    before = ANSWERS[backend]
    for trace_id, expected in before["traces"].items():
        got = await store.get_trace(trace_id)
        assert (got is None) == (expected is None), trace_id
        if got is None:
            continue
        assert got.state == expected["state"]
        assert sorted(_json(got.spans), key=lambda s: s["spanId"]) == sorted(
            expected["spans"], key=lambda s: s["spanId"]
        )
        assert _json(got.completeness) == expected["completeness"]
        assert _json(got.analysis) == expected["analysis"]
    for name, filters in SEARCHES.items():
        assert [t.trace_id for t in await store.find_traces(TraceQuery(**filters))] == before["searches"][name], name
    assert await store.services() == before["services"]
    assert {s: await store.operations(s) for s in await store.services()} == before["operations"]
    assert _json(await store.dependencies()) == before["dependencies"]

    stats = _json(await store.stats())
    v1 = before["stats"]
    for field in ("active_traces", "completed_traces", "failed_traces", "total_duration_us", "slowest"):
        assert stats[field] == v1[field], field
    # r1 was re-opened by a late span (queue) that v1 had not finalized yet: the migration counts it
    # with the trace's recomputed share; every other service is exactly as v1 counted it
    queue = v1["services"].pop("queue")
    got_queue = stats["services"].pop("queue")
    assert got_queue["count"] == queue["count"] + 1
    # v1 kept fixed buckets; the migration's latency sketch counts the same spans
    assert {name: sum(s.pop("bins").values()) for name, s in stats["services"].items()} == {
        name: sum(s.pop("histogram")) for name, s in v1["services"].items()
    }
    assert stats["services"] == v1["services"]
    assert stats["window"] is None


async def test_later_store_is_migrated_and_answers_as_before(later_store: tuple[str, str, TraceStore]) -> None:
    """A v2, v3, v4 or v5 store: every trace reads back equal (spans, state, completeness, the analysis derived
    on read since v3), and every search (the tag index re-keyed by hash since v4), list and rollup (the
    sketches packed since v5) answers as the old layout did."""
    layout, backend, store = later_store
    before = LATER_ANSWERS[layout][backend]
    assert len(before["traces"]) == len(trace_ids(layout))
    for trace_id, expected in before["traces"].items():
        got = await store.get_trace(trace_id)
        assert (None if got is None else _json(got)) == expected, trace_id
    for name, filters in SEARCHES.items():
        assert [t.trace_id for t in await store.find_traces(TraceQuery(**filters))] == before["searches"][name], name
    assert await store.services() == before["services"]
    assert {s: await store.operations(s) for s in await store.services()} == before["operations"]
    assert _json(await store.dependencies()) == before["dependencies"]
    stats, old = _json(await store.stats()), before["stats"]
    for field in ("active_traces", "completed_traces", "failed_traces", "total_duration_us", "slowest", "window"):
        assert stats[field] == old[field], field
    # latencies are sketch bins now (converted from v2's fixed buckets by the sketch's own migration)
    assert {name: (s["count"], s["error_count"], s["total_duration_us"]) for name, s in stats["services"].items()} == {
        name: (s["count"], s["error_count"], s["total_duration_us"]) for name, s in old["services"].items()
    }
    if layout != "v2":  # the same sketch (packed since v5): every service's stats as v3 and v4 answered them
        assert stats["services"] == old["services"]


async def test_v2_store_is_rewritten_compact(tmp_path: Path) -> None:
    """After the migration no chunk or contribution is left in the v2 encoding, and no analysis is stored;
    the tables v2 gained after the fixture was written (the sketch's, ``rollup_unseen``) are there."""
    with sqlite3.connect(":memory:") as empty:
        empty.executescript((FIXTURES / "v2_sqlite.sql").read_text())
        assert _tables(empty).isdisjoint(ADDED)  # the fixture predates them
    async with fixture_store("v2", "sqlite", tmp_path) as _:
        pass
    with sqlite3.connect(tmp_path / "v2.db") as db:
        assert _tables(db) >= ADDED
        bodies = [b for (b,) in db.execute("SELECT body FROM chunks")]
        shares = [b for (b,) in db.execute("SELECT contribution FROM traces WHERE contribution IS NOT NULL")]
        assert db.execute("SELECT count(*) FROM traces WHERE analysis IS NOT NULL").fetchone() == (0,)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert bodies and shares
    assert all(b[0] == CHUNK_V1 for b in [*bodies, *shares])


ADDED = {"rollup_services_sketch", "rollup_unseen"}


async def test_v3_indexes_are_rekeyed_row_for_row(tmp_path: Path) -> None:
    """v3 to v4: every ``trace_ops`` and ``trace_tags`` row becomes the ``op_index`` or ``tag_index`` row
    of its pair's hash, and the text tables are gone."""
    with sqlite3.connect(":memory:") as old:
        old.executescript((FIXTURES / "v3_sqlite.sql").read_text())
        tags = {(tag_hash(k, v), s, t) for k, v, s, t in old.execute("SELECT * FROM trace_tags")}
        ops = {(tag_hash(s, o), *rest) for s, o, *rest in old.execute("SELECT * FROM trace_ops")}
    assert len(tags) > 100 and len(ops) > 20
    async with fixture_store("v3", "sqlite", tmp_path) as _:
        pass
    with sqlite3.connect(tmp_path / "v3.db") as db:
        assert _tables(db).isdisjoint({"trace_tags", "trace_ops"})
        assert set(db.execute("SELECT tag, start_us, tid FROM tag_index")) == tags
        assert set(db.execute("SELECT op, start_us, tid, min_us, max_us FROM op_index")) == ops
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def _tables(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_v5_windows_read_from_ten_minute_rows_answer_as_before(backend: str, tmp_path: Path) -> None:
    """v5 to v6: the ten-minute rows derived from the minute rows (counters by the database, sketches
    summed) make every one-hour window, whichever minute of the hour it starts at, answer as layout v5
    answered it from minute and hour rows; and they are the sums of their minutes."""
    before = LATER_ANSWERS["v5"][backend]["windows"]
    async with fixture_store("v5", backend, tmp_path) as (_, store):
        for minute, old in before.items():
            start = T0 + int(minute) * MINUTE_US
            stats = _json(await store.stats(window=Window(start_us=start, end_us=start + HOUR_US)))
            assert stats == old, minute
        for window in [
            Window(start_us=T0 + k * TEN_MINUTES_US, end_us=T0 + (k + 1) * TEN_MINUTES_US) for k in range(9)
        ]:
            tens = await store.rollups("operations", window=window)
            minutes = await store.rollups("operations", window=window, step_us=MINUTE_US)
            assert _by_key(tens) == _by_key(minutes), window


def _by_key(rows: Sequence[RollupRow]) -> dict[tuple[str, ...], tuple[int, int, int, dict[int, int]]]:
    """Rollup rows summed per key over their steps, with their sketches."""
    out: dict[tuple[str, ...], tuple[int, int, int, dict[int, int]]] = {}
    for r in rows:
        n, errors, duration, bins = out.get(r.key, (0, 0, 0, {}))
        out[r.key] = (
            n + r.count,
            errors + r.errors,
            duration + r.duration_us,
            sketch.add_to(dict(bins), r.bins.items()),
        )
    return out


@pytest.mark.parametrize("layout", ["v1", "v2", "v3", "v4", "v5"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migrated_store_keeps_working(layout: str, backend: str, tmp_path: Path) -> None:
    """Re-finalizing the re-opened trace, late finishes of open spans and new traces all work on the
    migrated data, and the open span of the old layout is still found by its id."""
    async with fixture_store(layout, backend, tmp_path) as (_, store):
        await _keeps_working(store)


async def _keeps_working(store: TraceStore) -> None:
    assert await store.trace_of_span("open") == "a1"
    analyses = await store.finalize(["r1"], now_us=NOW + 10 * SECOND)
    assert [a.trace_id for a in analyses] == ["r1"]
    r1 = await store.get_trace("r1")
    assert r1 is not None and r1.analysis == analyze("r1", r1.spans)
    assert r1.completeness.refinalizations == 1 and r1.completeness.late_spans == 1
    await write(store, [span("new", "root", service="fresh")])
    await store.finalize(["new"], now_us=NOW + 11 * SECOND)
    assert "fresh" in await store.services()
    # the span of the finish-only trace arrives: the finish v1 kept merges into it
    await write(store, [span("ghost", "g", duration=None)], now=NOW + 12 * SECOND)
    ghost = await store.get_trace("ghost")
    assert ghost is not None and ghost.spans[0].duration_us is not None
    # a head-sampled trace (its root's tracestate says 1/4) counts 4 times, 3 of them in rollup_unseen
    before = await store.stats()
    heavy = sampled_trace("heavy", NOW, 4, tracestate=True)
    await write(store, heavy, now=NOW + 13 * SECOND)
    await store.finalize(["heavy"], now_us=NOW + 14 * SECOND)
    after = await store.stats()
    assert after.completed_traces - before.completed_traces == 1
    assert after.estimated_completed_traces - before.estimated_completed_traces == 4
    assert after.unseen["api"].traces - (before.unseen["api"].traces if "api" in before.unseen else 0) == 3
    read = await store.get_trace("heavy")
    assert read is not None and {s.span_id: s for s in read.spans} == {s.span_id: s for s in heavy}


async def test_a_newer_layout_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError) as refused:
        await open_store(Settings.from_env({}, store_url=f"sqlite:///{path}"))
    message = str(refused.value)
    assert "\n" not in message and "v99" in message and "upgrade" in message
    async with postgres_schema_url() as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE tracing_meta (key text PRIMARY KEY, value text NOT NULL)")
            await conn.execute("INSERT INTO tracing_meta VALUES ('schema_version', '99')")
        finally:
            await conn.close()
        with pytest.raises(RuntimeError) as refused:
            await open_store(Settings.from_env({}, store_url=url))
        assert "\n" not in str(refused.value) and "v99" in str(refused.value)


def _before_the_sketch(path: Path) -> None:
    """Make a file look as one of layout v4 written before the latency sketch: no sketch (neither its
    tables nor the packed column of layout v5), and every finalized trace's contribution stored (as then),
    keyed by fixed bucket alone."""
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE rollup_ops DROP COLUMN bins")
        db.execute("ALTER TABLE rollup_endpoints DROP COLUMN bins")
        db.execute("DROP TABLE rollup_services_sketch")
        db.execute("PRAGMA user_version = 4")
        for trace_id, tid, blob, final_chunks in db.execute(
            "SELECT trace_id, tid, contribution, final_chunks FROM traces WHERE final_chunks IS NOT NULL"
        ).fetchall():
            share = (
                decode_contribution(blob)
                if blob is not None
                else derived_share(trace_id, _state(db, tid, final_chunks))
            )
            ops = [(*op[:8], _fixed(op[8]), op[9], _fixed(op[10])) for op in share.ops]
            old = msgspec.structs.replace(share, ops=ops, sketched=False)
            db.execute(
                "UPDATE traces SET contribution = ?, final_chunks = NULL WHERE tid = ?", (encode_contribution(old), tid)
            )


def _state(db: sqlite3.Connection, tid: int, chunks: int) -> TraceState:
    """A trace's state as its first ``chunks`` chunks in a SQLite file."""
    rows = db.execute(
        "SELECT late, body FROM chunks WHERE id BETWEEN ? AND ? ORDER BY id LIMIT ?",
        (tid << CHUNK_BITS, ((tid + 1) << CHUNK_BITS) - 1, chunks),
    ).fetchall()
    return TraceState.from_chunks((bool(late), body) for late, body in rows)


def _fixed(histogram: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for key, n in histogram.items():
        out[sketch.fixed_bucket(key)] = out.get(sketch.fixed_bucket(key), 0) + n
    return out


async def test_rollups_kept_before_the_sketch_are_converted_and_stay_exact(tmp_path: Path) -> None:
    path = tmp_path / "before.db"
    settings = Settings.from_env({}, store_url=f"sqlite:///{path}")
    store = await open_store(settings, writer=True)
    traces = [f"t{i}" for i in range(10)]
    await write(store, [span(t, "root", service="gw", duration=40_000) for t in traces])
    await store.finalize(traces, now_us=NOW)
    await store.close()
    _before_the_sketch(path)

    store = await open_store(settings, writer=True)
    try:
        gw = (await store.stats()).services["gw"]  # the fixed bucket (25 ms, 50 ms] at its midpoint
        assert gw.bins == {sketch.bin_of(37_500): 10}
        # a late span re-finalizes a trace: its old share comes out of the midpoint bin, its new one goes in
        await write(store, [span("t0", "late", parent="root", service="gw", duration=40_000)], now=NOW + SECOND)
        await store.finalize(["t0"], now_us=NOW + 2 * SECOND)
        gw = (await store.stats()).services["gw"]
        assert gw.bins == {sketch.bin_of(37_500): 9, sketch.bin_of(40_000): 2}
        [endpoint] = await store.rollups("endpoints", None, service="gw")
        assert endpoint.bins == {sketch.bin_of(37_500): 9, sketch.bin_of(40_000): 1}
        await store.purge(NOW + HOUR_US)
        assert await store.rollups("endpoints", None) == []
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        for table in ("rollup_ops", "rollup_endpoints", "rollup_services_sketch"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


async def test_cassandra_rollups_kept_before_the_sketch_are_converted(cassandra_keyspace_url: str) -> None:
    from shared.store.cassandra.config import CassandraConfig
    from shared.store.cassandra.session import CassandraSession

    settings = Settings.from_env({}, store_url=cassandra_keyspace_url)
    store = await open_store(settings, writer=True)
    traces = [f"t{i}" for i in range(10)]
    try:
        await write(store, [span(t, "root", service="gw", duration=40_000) for t in traces])
        await store.finalize(traces, now_us=NOW)
    finally:
        await store.close()
    session = await CassandraSession.connect(CassandraConfig.from_url(cassandra_keyspace_url))
    try:  # a keyspace written before the sketch: no sketch tables
        await session.execute("DROP TABLE rollup_ops_bins")
        await session.execute("DROP TABLE rollup_endpoints_bins")
    finally:
        await session.close()

    store = await open_store(settings)
    try:  # the fixed bucket (25 ms, 50 ms] at its midpoint, every grain
        assert (await store.stats()).services["gw"].bins == {sketch.bin_of(37_500): 10}
        [endpoint] = await store.rollups("endpoints", Window(start_us=NOW - HOUR_US, end_us=NOW + HOUR_US))
        assert endpoint.bins == {sketch.bin_of(37_500): 10}
    finally:
        await store.close()
