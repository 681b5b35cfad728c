"""The worker's mover (:mod:`ingest.archiving`) on every backend of the ``store`` fixture, with a folder
archive: due traces move in blocks (several while more are due) equal to what the hot store answered,
the rollups keep counting them, the hot purge waits for the mover, an object store away fails a round
(logged once) and the next round moves everything, and archive retention deletes old blocks but those
holding a pinned trace."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.workload import realistic_traces
from ingest.archiving import Archiver, shard_number
from ingest.ownership import Ownership
from ingest.retention import Retention
from ingest.store_full import StoreFull
from shared.archive.block import decode_meta
from shared.archive.objects import FileObjectStore
from shared.archive.reader import BlockReader, spans_of
from shared.settings import Settings
from shared.store import StoredTrace, TraceStore

T0 = 1_732_500_000_000_000  # long past: every trace is due, and past any block retention below
SHARD = "spans/0"


def _cassandra_has_none(store: TraceStore) -> None:
    if type(store).__name__ == "CassandraStore":
        pytest.skip("the Cassandra store has no archive tier yet")


async def _stored(store: TraceStore, spans_wanted: int) -> list[StoredTrace]:
    traces = list(realistic_traces(spans_wanted, start_us=T0))
    ids = [trace[0].trace_id for trace in traces]
    spans = [span for trace in traces for span in trace]
    await store.write_batch(spans, [], shards=dict.fromkeys(ids, SHARD), now_us=T0, grace_us=0, idle_us=0)
    assert len(await store.finalize(ids, now_us=T0 + 1)) == len(ids)
    found = [await store.get_trace(trace_id) for trace_id in ids]
    assert all(t is not None for t in found)
    return [t for t in found if t is not None]


def _archiver(store: TraceStore, objects: FileObjectStore, *, retention_d: float = 100_000) -> Archiver:
    settings = Settings.from_env({}, archive_after_h=1.0, archive_retention_d=retention_d, archive_check_s=1.0)
    ownership = Ownership()
    ownership.shards.add(SHARD)
    return Archiver(settings, store, ownership, objects, block_traces=40)


async def _archived(store: TraceStore, objects: FileObjectStore) -> dict[str, StoredTrace]:
    """Every trace of the registered blocks, by id (a trace in two blocks fails)."""
    reader = BlockReader(objects)
    found: dict[str, StoredTrace] = {}
    for block in await store.archived_blocks():
        meta = decode_meta(block.meta)
        data = await objects.get(block.name)
        assert len(data) == meta.size
        for trace_id in {s.trace_id for s in spans_of(pq.read_table(io.BytesIO(data)))}:
            trace = await reader.get_trace(block.name, meta, trace_id)
            assert trace is not None and trace_id not in found
            found[trace_id] = trace
    return found


async def test_due_traces_move_in_blocks_equal_to_the_hot_answers(
    store: TraceStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _cassandra_has_none(store)
    hot = await _stored(store, 3000)
    stats = await store.stats()
    objects = FileObjectStore(tmp_path / "archive")
    archiver = _archiver(store, objects)
    with caplog.at_level(logging.INFO, logger="ingest.worker"):
        await archiver.round()
    assert archiver.caught_up()
    blocks = await store.archived_blocks()
    assert len(blocks) == -(-len(hot) // 40) and all(b.shard == SHARD for b in blocks)
    assert all(f"-{shard_number(SHARD):04}-" in b.name for b in blocks)
    assert sum("archive: moved" in r.getMessage() for r in caplog.records) == len(blocks)
    archived = await _archived(store, objects)
    assert set(archived) == {t.trace_id for t in hot}
    for trace in hot:
        assert await store.get_trace(trace.trace_id) is None
        got = archived[trace.trace_id]
        assert got.spans == sorted(trace.spans, key=lambda s: s.start_time_us)
        assert got.completeness == trace.completeness
    assert (await store.stats()).services == stats.services
    await archiver.round()  # nothing left: nothing more
    assert len(await store.archived_blocks()) == len(blocks)


async def test_an_object_store_away_fails_a_round_once_and_the_hot_purge_waits(
    store: TraceStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _cassandra_has_none(store)
    hot = await _stored(store, 400)
    away = tmp_path / "archive"
    away.write_bytes(b"")  # a file where the folder should be: every PUT fails
    objects = FileObjectStore(away)
    archiver = _archiver(store, objects)
    settings = Settings.from_env({}, retention_h=1.0, archive_after_h=1.0)
    retention = Retention(settings, store, Ownership(), StoreFull("sqlite:///x"), archiver)
    with caplog.at_level(logging.INFO, logger="ingest.worker"):
        await archiver.round()
        await archiver.round()
        assert not archiver.caught_up()
        assert await retention.purge_expired() == 0  # the traces wait for the mover
        assert all([await store.get_trace(t.trace_id) is not None for t in hot])
        away.unlink()
        await archiver.round()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("archive: a round failed" in m for m in messages) == 1
    assert sum("rounds succeed again" in m for m in messages) == 1
    assert archiver.caught_up()
    assert set(await _archived(store, objects)) == {t.trace_id for t in hot}


async def test_archive_retention_deletes_old_blocks_but_those_holding_a_pinned_trace(
    store: TraceStore, tmp_path: Path
) -> None:
    _cassandra_has_none(store)
    hot = await _stored(store, 1500)
    objects = FileObjectStore(tmp_path / "archive")
    await _archiver(store, objects).move_due()
    blocks = await store.archived_blocks()
    assert len(blocks) >= 2
    archived = await _archived(store, objects)
    pinned = next(iter(archived))
    await store.pin_trace(pinned)
    assert await _archiver(store, objects, retention_d=1.0).expire_blocks() == len(blocks) - 1
    (kept,) = await store.archived_blocks()
    assert pinned in await _archived(store, objects)
    assert [o.name for o in await objects.list("blocks")] == [kept.name]
    assert len(hot) > 1


class _CrashAfterPut(FileObjectStore):
    """A folder whose first PUT lands and then fails the round, as a worker dying right after it would."""

    crashed = False

    async def put(self, name: str, data: bytes) -> None:
        await super().put(name, data)
        if not self.crashed:
            self.crashed = True
            raise OSError("the worker died after its PUT")


async def test_a_round_cut_after_its_put_leaves_an_unregistered_object_and_loses_nothing(
    store: TraceStore, tmp_path: Path
) -> None:
    _cassandra_has_none(store)
    hot = await _stored(store, 1500)
    objects = _CrashAfterPut(tmp_path / "archive")
    archiver = _archiver(store, objects)
    await archiver.round()
    assert objects.crashed and not archiver.caught_up()
    assert await store.archived_blocks() == []
    assert all([await store.get_trace(t.trace_id) is not None for t in hot])  # still hot, read once
    await archiver.round()
    registered = {b.name for b in await store.archived_blocks()}
    assert set(await _archived(store, objects)) == {t.trace_id for t in hot}
    garbage = {o.name for o in await objects.list("blocks")} - registered
    assert len(garbage) == 1  # the first block: never registered, never read
