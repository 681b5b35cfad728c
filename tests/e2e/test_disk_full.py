"""The SQLite store on a small filesystem that fills up mid-stream.

A tmpfs of :data:`FS_SIZE` is mounted in the test's temp dir and filled with a ballast file but for
:data:`HEADROOM` bytes, far less than the spans need. A worker (``python -m ingest``) writes there until
the disk is full; then it commits no offset past what it stored, says so in one line, retries, and the
API (``python -m query_api``) keeps serving reads. The ballast is deleted: the worker resumes by itself,
and every span ends up stored exactly once, every trace finalized, the file intact.

Mounting needs root (``mount -t tmpfs``): elsewhere the test skips, and under ``CI=true`` it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from shared.kafka import ensure_topics
from shared.models import Span
from shared.settings import Settings
from shared.store import TraceStore, open_store
from tests.conftest import mounted_tmpfs
from tests.e2e.faults import (
    Placed,
    assert_stored_exactly_once,
    committed_offsets,
    produce_steadily,
    running_api,
    wait_until_drained,
)
from tests.e2e.helpers import demo_traces, finalized_counts, wait_for
from tests.e2e.workers import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FS_SIZE = 32 << 20
HEADROOM = 2 << 20
"""Free bytes left beside the ballast: a quarter of what the spans take (about 8 MiB with the log)."""
TOTAL_SPANS = 6000
FULL_LINE = "store full: "
RESUMED_LINE = "ingest resumed"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "fs", FS_SIZE) as mount_point:
        yield mount_point


def _fill(fs: Path, leave: int) -> Path:
    """A ballast file taking all of ``fs``'s free space but ``leave`` bytes."""
    ballast = fs / "ballast"
    stat = os.statvfs(fs)
    size = stat.f_bavail * stat.f_frsize - leave
    with ballast.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
    return ballast


async def _committed_is_stored(
    settings: Settings, store: TraceStore, traces: list[list[Span]], placed: list[Placed]
) -> dict[int, int]:
    """The committed offsets, after checking that the last message under each is stored whole (a batch is
    one transaction, written before its offsets are committed: the messages before it are too)."""
    committed = await committed_offsets(settings)
    at = {(p.partition, p.offset): spans for p, spans in zip(placed, traces, strict=True)}
    for partition, offset in committed.items():
        spans = at.get((partition, offset - 1))
        if spans is None:
            continue  # an offset before this run's messages (none) or of a copy sent again
        stored = await store.get_trace(spans[0].trace_id)
        assert stored is not None, f"offset {offset} of partition {partition} committed, its trace not stored"
        assert len(stored.spans) == len(spans)
    return committed


def _integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        result: str = db.execute("PRAGMA integrity_check").fetchone()[0]
        return result


async def test_disk_fills_up_mid_stream_then_space_is_freed(settings: Settings, small_fs: Path, tmp_path: Path) -> None:
    db = small_fs / "traces.db"
    settings = msgspec.structs.replace(settings, store_url=f"sqlite:///{db}")
    traces = demo_traces(random.Random(32), TOTAL_SPANS, time.time_ns() // 1000 - 5_000_000)
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    store = await open_store(settings)  # creates the schema before the disk is filled
    ballast = _fill(small_fs, HEADROOM)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        async with running_api(settings, tmp_path / "api.log") as api:
            producing = asyncio.create_task(produce_steadily(settings, traces, seconds=8))
            await wait_for(
                lambda: FULL_LINE in worker.output(), timeout_s=60, what="the worker saying the store is full"
            )
            placed = await producing
            # Full: nothing committed past what is stored, and the API still answers reads.
            committed = await _committed_is_stored(settings, store, traces, placed)
            assert sum(committed.values()) < len(placed), "every message committed though the disk is full"
            spans_stored = (await finalized_counts(store))[0]
            assert spans_stored < TOTAL_SPANS
            for path in ("/stats", "/traces/query?limit=5", "/api/services", f"/traces/{traces[0][0].trace_id}"):
                status, body = await api.get(path)
                assert status == 200, (path, body)
            await _committed_is_stored(settings, store, traces, placed)  # still, with every message sent
            assert worker.alive(), worker.output()

            ballast.unlink()  # space freed: the worker resumes by itself
            await wait_until_drained(store, traces, timeout_s=120)
            status, stats = await api.get("/stats")
            assert status == 200 and stats["completedTraces"] + stats["failedTraces"] == len(traces)
    finally:
        code = worker.stop()
        await store.close()
    log = worker.output()
    assert code == 0, log[-3000:]
    assert log.count(FULL_LINE) == 1, log[-5000:]
    assert str(db) in log and "free space" in log
    assert log.count(RESUMED_LINE) == 1, log[-5000:]
    assert "Traceback" not in log, log[-5000:]
    assert _integrity(db) == "ok"
    store = await open_store(settings)
    try:
        await assert_stored_exactly_once(store, traces)
    finally:
        await store.close()
