"""Scale-out on the real broker and a real PostgreSQL: workers join, leave, crash; the broker restarts.

Three worker processes share a 12-partition topic while 200,000 spans flow; a fourth joins, two leave
(SIGTERM), one is SIGKILLed twice, the broker restarts once. Afterwards every span is stored exactly once,
every trace is finalized, and each trace's analysis equals the offline computation.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from aiokafka.errors import KafkaError

from shared.kafka import SpanProducer, ensure_topics
from shared.models import Span
from shared.settings import Settings
from shared.store import open_store
from tests.conftest import KafkaControl
from tests.e2e.helpers import (
    assert_analyzed_as_offline,
    assert_stored_as_sent,
    demo_traces,
    finalized_counts,
    wait_for,
    wait_progress,
)
from tests.e2e.workers import WorkerProcess, stop_all
from tests.store.conftest import postgres_schema_url

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL_SPANS = 200_000


async def _produce_through_restarts(settings: Settings, traces: list[list[Span]], sent: asyncio.Event) -> None:
    """The traces, 250 per message, sent again while the broker restarts; ``sent`` set at the end."""
    chunk = 250
    async with SpanProducer(settings) as producer:
        for i in range(0, len(traces), chunk):
            batch = [s for t in traces[i : i + chunk] for s in t]
            for attempt in range(20):
                try:
                    await producer.send(batch)
                    await producer.flush()
                    break
                except KafkaError:  # the broker restarting: send again (upserts are idempotent)
                    await asyncio.sleep(1.0 + attempt)
            else:
                raise AssertionError("could not produce after the broker restart")
            await asyncio.sleep(0.02)
    sent.set()


@pytest.fixture
async def pg_settings(settings: Settings) -> AsyncIterator[Settings]:
    async with postgres_schema_url() as url:
        yield msgspec.structs.replace(settings, store_url=url, partitions=12, idle_timeout_s=5.0)


async def test_workers_join_leave_crash_and_broker_restarts(
    pg_settings: Settings, kafka_control: KafkaControl, tmp_path: Path
) -> None:
    settings = pg_settings
    rng = random.Random(23)
    traces = demo_traces(rng, TOTAL_SPANS, time.time_ns() // 1000 - 5_000_000)
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    store = await open_store(settings)  # creates the schema before the workers race for it
    logs = iter(tmp_path / f"worker-{i}.log" for i in range(100))
    workers = [WorkerProcess(settings, next(logs)) for _ in range(3)]
    sent = asyncio.Event()

    producing = asyncio.create_task(_produce_through_restarts(settings, traces, sent))

    async def progressed(by: int) -> None:
        async def spans() -> int:
            return (await finalized_counts(store))[0]

        await wait_progress(spans, by, sent, "spans finalized")

    try:
        await progressed(10_000)
        workers.append(WorkerProcess(settings, next(logs)))  # a fourth joins
        await progressed(10_000)
        for w in workers[:2]:  # two leave cleanly
            assert w.stop() == 0, w.output()
        workers = workers[2:]
        await progressed(10_000)
        for _ in range(2):  # one is SIGKILLed twice, restarted each time
            workers[0].kill()
            workers[0] = WorkerProcess(settings, next(logs))
            await progressed(5_000)
        await asyncio.to_thread(kafka_control.restart)  # the broker restarts once, mid-stream
        await progressed(10_000)
        await producing
        expected_spans = sum(len(t) for t in traces)

        async def drained() -> bool:
            return await finalized_counts(store) == (expected_spans, len(traces), 0)

        await wait_for(drained, timeout_s=300, what="every span stored and every trace finalized", interval_s=1)
    finally:
        producing.cancel()
        codes = stop_all(workers)
    assert codes == [0] * len(workers), "\n".join(w.output()[-3000:] for w in workers)

    try:
        stats = await assert_stored_as_sent(store, traces)
        assert stats.failed_traces == sum(1 for t in traces if any(s.status == "error" for s in t))
        sample = rng.sample(traces, 500)
        stored = await assert_analyzed_as_offline(store, sample)
        assert [len(t.spans) for t in stored] == [len(spans) for spans in sample]
    finally:
        await store.close()
