"""The worker moves old traces into a folder archive, a worker SIGKILLed mid-move included: traces produced
with start times hours in the past through the real broker, finalized into SQLite by a worker without an
archive (their hot answers read), then moved by a worker with one (``TRACING_ARCHIVE_AFTER_H`` 0.01,
``TRACING_ARCHIVE_CHECK_S`` 1) that is killed as soon as its first block is registered and started again.
In the end the hot store holds none of them, every trace is in exactly one registered block, read back
equal to the hot store's answer, and no span is lost or doubled."""

from __future__ import annotations

import contextlib
import io
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest

from shared.archive.block import decode_meta, id_key
from shared.archive.objects import FileObjectStore, ObjectStore
from shared.archive.reader import BlockReader
from shared.kafka import SpanProducer, ensure_topics
from shared.settings import Settings
from shared.store import ArchivedBlock, StoredTrace
from shared.store.sqlite import sqlite_path
from tests.e2e.helpers import demo_traces, reader, wait_for
from tests.e2e.workers import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SPANS = 30_000  # ~3,000 traces: two blocks, so the kill lands while the second one moves
HOURS_AGO_US = 3 * 3_600_000_000


def hot_counts(settings: Settings) -> tuple[int, int, int]:
    """(finalized traces in the hot store, traces in the hot store, registered blocks), read directly."""
    with contextlib.closing(sqlite3.connect(sqlite_path(settings.store_url), timeout=30)) as db:
        finalized, total = db.execute(
            "SELECT count(*) FILTER (WHERE state = 'finalized'), count(*) FROM traces"
        ).fetchone()
        has_blocks = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'archive_blocks'").fetchone()
        blocks = db.execute("SELECT count(*) FROM archive_blocks").fetchone()[0] if has_blocks else 0
    return finalized, total, blocks


async def block_spans(settings: Settings, objects: ObjectStore) -> dict[str, tuple[str, int]]:
    """Per registered block, its trace ids' span counts: trace id -> (block, spans), failing on a trace in
    two blocks."""
    found: dict[str, tuple[str, int]] = {}
    async with reader(settings) as store:
        for block in await store.archived_blocks():
            table = pq.read_table(io.BytesIO(await objects.get(block.name)), columns=["trace_id", "trace_id_text"])
            ids = Counter(
                text if text is not None else raw.hex()
                for raw, text in zip(table["trace_id"].to_pylist(), table["trace_id_text"].to_pylist(), strict=True)
            )
            for trace_id, spans in ids.items():
                assert trace_id not in found, f"{trace_id} in {found[trace_id][0]} and {block.name}"
                found[trace_id] = (block.name, spans)
    return found


async def test_old_traces_move_to_the_archive_once_across_a_sigkill(settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(30)
    traces = demo_traces(rng, SPANS, time.time_ns() // 1000 - HOURS_AGO_US)
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    async with reader(settings):
        pass  # creates the schema, so progress can be read before the worker's first write
    worker = WorkerProcess(settings, tmp_path / "worker-hot.log")
    try:
        async with SpanProducer(settings) as producer:
            for trace in traces:
                await producer.send(trace)
            await producer.flush()
        await wait_for(lambda: hot_counts(settings)[0] == len(traces), timeout_s=180, what="every trace finalized")
    finally:
        assert worker.stop() == 0, worker.output()
    async with reader(settings) as store:
        hot: dict[str, StoredTrace] = {}
        for trace in traces:
            found = await store.get_trace(trace[0].trace_id)
            assert found is not None and found.state == "finalized"
            hot[found.trace_id] = found
        stats = await store.stats()

    folder = tmp_path / "archive"
    archiving = msgspec.structs.replace(
        settings, archive_url=folder.as_uri(), archive_after_h=0.01, archive_check_s=1.0
    )
    worker = WorkerProcess(archiving, tmp_path / "worker-0.log")
    try:
        await wait_for(lambda: hot_counts(settings)[2] >= 1, timeout_s=120, what="a first block registered")
        worker.kill()  # the second block is being read, written or PUT
        assert hot_counts(settings)[0] > 0, "the kill came after the last block: it proves nothing"
        worker = WorkerProcess(archiving, tmp_path / "worker-1.log")
        await wait_for(lambda: hot_counts(settings)[1] == 0, timeout_s=180, what="the hot store emptied")
    finally:
        code = worker.stop()
    assert code == 0, worker.output()
    assert "archive: moved" in worker.output()

    objects = FileObjectStore(folder)
    archived = await block_spans(archiving, objects)
    assert archived.keys() == hot.keys()
    assert {trace_id: spans for trace_id, (_, spans) in archived.items()} == {
        trace_id: len(trace.spans) for trace_id, trace in hot.items()
    }
    blocks = {b.name: decode_meta(b.meta) for b in await _registered(archiving)}
    read = BlockReader(objects)
    for trace_id in rng.sample(sorted(hot), 300):
        name, _ = archived[trace_id]
        got = await read.get_trace(name, blocks[name], trace_id)
        assert got is not None, trace_id
        assert got.spans == sorted(hot[trace_id].spans, key=lambda s: s.start_time_us)
        assert got.completeness == hot[trace_id].completeness
        assert any(g.first_trace <= id_key(trace_id)[0] <= g.last_trace for g in blocks[name].row_groups)
    async with reader(archiving) as store:
        assert (await store.stats()).services == stats.services  # moved, still counted


async def _registered(settings: Settings) -> list[ArchivedBlock]:
    async with reader(settings) as store:
        return await store.archived_blocks()
