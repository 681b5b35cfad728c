"""Crash test: a worker process SIGKILLed three times while 50,000 spans flow loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from pathlib import Path

import pytest

from shared.kafka import SpanProducer, ensure_topics
from shared.settings import Settings
from shared.store.sqlite import sqlite_path
from tests.e2e.helpers import (
    assert_analyzed_as_offline,
    assert_stored_as_sent,
    demo_traces,
    reader,
    send_paced,
    wait_for,
)
from tests.e2e.workers import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL_SPANS = 50_000


def _store_counts(settings: Settings) -> tuple[int, int, int]:
    """(chunks written, spans of the finalized traces, finalized traces), read from the file directly."""
    with contextlib.closing(sqlite3.connect(sqlite_path(settings.store_url), timeout=30)) as db:
        chunks = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        spans, finalized = db.execute(
            "SELECT coalesce(sum(span_count), 0), count(*) FROM traces WHERE state = 'finalized'"
        ).fetchone()
    return chunks, spans, finalized


async def test_sigkill_three_times_while_spans_flow(settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(11)
    traces = demo_traces(rng, TOTAL_SPANS, time.time_ns() // 1000 - 2_000_000)
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    async with reader(settings):
        pass  # creates the schema, so progress can be read before the worker's first write

    worker = WorkerProcess(settings, tmp_path / "worker-0.log")
    kills = 0

    async def produce() -> None:
        # a steady flow over ~12 s, so that every kill lands mid-stream
        async with SpanProducer(settings) as producer:
            await send_paced(traces, 12.0, 100, producer.send, producer.flush)

    producing = asyncio.create_task(produce())
    try:
        while kills < 3:
            # Kill only once the worker has stored something since its (re)start: a kill mid-stream.
            before = _store_counts(settings)[0]

            def progressed(before: int = before) -> bool:
                return _store_counts(settings)[0] > before or producing.done()

            await wait_for(progressed, timeout_s=60, what="worker progress")
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            worker.kill()
            kills += 1
            worker = WorkerProcess(settings, tmp_path / f"worker-{kills}.log")
        await producing
        expected_spans = sum(len(t) for t in traces)
        await wait_for(
            lambda: _store_counts(settings)[1:] == (expected_spans, len(traces)),
            timeout_s=180,
            what="every span stored and every trace finalized",
            interval_s=0.5,
        )
        assert worker.alive(), worker.output()
    finally:
        producing.cancel()
        code = worker.stop()
    assert code == 0, worker.output()
    assert kills == 3

    async with reader(settings) as store:
        stats = await assert_stored_as_sent(store, traces)
        assert stats.completed_traces + stats.failed_traces == len(traces)
        await assert_analyzed_as_offline(store, rng.sample(traces, 300))
