"""The worker's mover (:mod:`ingest.archiving`) on every backend of the ``store`` fixture, with a folder
archive: due traces move in blocks (several while more are due) equal to what the hot store answered,
the rollups keep counting them, the hot purge waits for the mover, an object store away fails a round
(logged once) and the next round moves everything, and archive retention deletes old blocks but those
holding a pinned trace; unregistered objects are deleted as garbage once older than the grace, never a
registered block's, another shard's or one younger than the grace (a move on its way to registering it);
a move past its deadline leaves its block unregistered."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.workload import realistic_traces
from ingest.archiving import Archiver, shard_number
from ingest.ownership import Ownership
from ingest.retention import Retention
from ingest.store_full import StoreFull
from shared.archive.block import block_name, decode_meta
from shared.archive.objects import FileObjectStore
from shared.archive.reader import BlockReader, spans_of
from shared.settings import Settings
from shared.store import StoredTrace, TraceStore

T0 = 1_732_500_000_000_000  # long past: every trace is due, and past any block retention below
SHARD = "spans/0"


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


def _age(objects: FileObjectStore, name: str, seconds: float) -> None:
    """Make the object ``seconds`` older (its modification time, what its listing reports)."""
    path = objects.root / name
    then = path.stat().st_mtime - seconds
    os.utime(path, (then, then))


async def test_garbage_older_than_the_grace_is_deleted_and_nothing_registered_or_in_flight(
    store: TraceStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hot = await _stored(store, 1500)
    objects = _CrashAfterPut(tmp_path / "archive")
    archiver = _archiver(store, objects)
    await archiver.round()  # its PUT landed, its registration never came: garbage
    await archiver.round()
    registered = {b.name for b in await store.archived_blocks()}
    (crashed,) = {o.name for o in await objects.list("blocks")} - registered
    start = decode_meta((await store.archived_blocks())[0].meta).start_us
    in_flight = block_name(shard_number(SHARD), start, "in-flight")  # a PUT whose registration is on its way
    other_shard = block_name(shard_number(SHARD) + 1, start, "other")  # a shard this worker does not own
    for name in (in_flight, other_shard, "blocks/notes.txt"):
        await objects.put(name, b"x")
    grace_s = 3600.0
    for info in await objects.list(""):
        if info.name != in_flight:
            _age(objects, info.name, 2 * grace_s)
    _age(objects, in_flight, grace_s / 2)

    settings = Settings.from_env({}, archive_after_h=1.0, archive_check_s=1.0)
    ownership = Ownership()
    ownership.shards.add(SHARD)
    collector = Archiver(settings, store, ownership, objects, garbage_grace_s=grace_s, move_deadline_s=grace_s / 6)
    with caplog.at_level(logging.INFO, logger="ingest.worker"):
        assert await collector.collect_garbage() == 1
    assert any("no registered block names" in r.getMessage() for r in caplog.records)
    left = {o.name for o in await objects.list("")}
    assert crashed not in left
    assert left == registered | {in_flight, other_shard, "blocks/notes.txt"}
    assert set(await _archived(store, objects)) == {t.trace_id for t in hot}  # every registered block read
    assert await collector.collect_garbage() == 0
    with pytest.raises(ValueError, match="longer than a move's deadline"):
        Archiver(settings, store, ownership, objects, garbage_grace_s=60, move_deadline_s=60)


class _SlowPut(FileObjectStore):
    """A folder whose PUTs take longer than the mover's deadline allows."""

    async def put(self, name: str, data: bytes) -> None:
        await super().put(name, data)
        await asyncio.sleep(0.3)


async def test_a_move_past_its_deadline_leaves_its_block_unregistered(store: TraceStore, tmp_path: Path) -> None:
    hot = await _stored(store, 300)
    settings = Settings.from_env({}, archive_after_h=1.0, archive_check_s=1.0)
    ownership = Ownership()
    ownership.shards.add(SHARD)
    objects = _SlowPut(tmp_path / "archive")
    archiver = Archiver(settings, store, ownership, objects, block_traces=40, garbage_grace_s=60, move_deadline_s=0.1)
    await archiver.round()
    assert not archiver.caught_up()
    assert await store.archived_blocks() == []
    assert len(await objects.list("blocks")) == 1  # garbage, collected once older than the grace
    assert all([await store.get_trace(t.trace_id) is not None for t in hot])
