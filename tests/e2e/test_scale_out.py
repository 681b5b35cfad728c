"""Scale-out on the real broker and a real PostgreSQL: workers join, leave, crash; the broker restarts.

Three worker processes share a 12-partition topic while 200,000 spans flow; a fourth joins, two leave
(SIGTERM), one is SIGKILLed twice, the broker restarts once. Afterwards every span is stored exactly once,
every trace is finalized, and each trace's analysis equals the offline computation.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from aiokafka.errors import KafkaError

from shared.analysis import analyze
from shared.demo import make_trace
from shared.kafka import SpanProducer, ensure_topics
from shared.models import Span
from shared.settings import Settings
from shared.store import TraceQuery, TraceStore, open_store
from tests.conftest import KafkaControl
from tests.e2e.helpers import wait_for
from tests.e2e.workers import WorkerProcess
from tests.store.conftest import postgres_schema_url

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL_SPANS = 200_000


@pytest.fixture
async def pg_settings(settings: Settings) -> AsyncIterator[Settings]:
    async with postgres_schema_url() as url:
        yield msgspec.structs.replace(settings, store_url=url, partitions=12, idle_timeout_s=5.0)


async def _counts(store: TraceStore) -> tuple[int, int, int]:
    stats = await store.stats()
    spans = sum(s.count for s in stats.services.values())
    return spans, stats.completed_traces + stats.failed_traces, stats.active_traces


async def test_workers_join_leave_crash_and_broker_restarts(
    pg_settings: Settings, kafka_control: KafkaControl, tmp_path: Path
) -> None:
    settings = pg_settings
    rng = random.Random(23)
    traces: list[list[Span]] = []
    n = 0
    while n < TOTAL_SPANS:
        spans = make_trace(rng, time.time_ns() // 1000 - 5_000_000)
        traces.append(spans)
        n += len(spans)
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    store = await open_store(settings)  # creates the schema before the workers race for it
    logs = iter(tmp_path / f"worker-{i}.log" for i in range(100))
    workers = [WorkerProcess(settings, next(logs)) for _ in range(3)]
    sent = asyncio.Event()

    async def produce() -> None:
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

    producing = asyncio.create_task(produce())

    async def progressed(by: int) -> None:
        start = (await _counts(store))[0]

        async def moved() -> bool:
            return (await _counts(store))[0] >= start + by or sent.is_set()

        await wait_for(moved, timeout_s=120, what=f"{by} more spans finalized")

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
            return await _counts(store) == (expected_spans, len(traces), 0)

        await wait_for(drained, timeout_s=300, what="every span stored and every trace finalized", interval_s=1)
    finally:
        producing.cancel()
        codes = [w.stop() for w in workers]
    assert codes == [0] * len(workers), "\n".join(w.output()[-3000:] for w in workers)

    try:
        assert await store.find_traces(TraceQuery(status="active")) == []
        stats = await store.stats()
        per_service = Counter(s.service_name for t in traces for s in t)
        assert {k: v.count for k, v in stats.services.items()} == dict(per_service)
        assert stats.failed_traces == sum(1 for t in traces if any(s.status == "error" for s in t))
        for spans in rng.sample(traces, 500):
            stored = await store.get_trace(spans[0].trace_id)
            assert stored is not None and stored.analysis is not None
            assert len(stored.spans) == len(spans)
            assert stored.analysis == analyze(spans[0].trace_id, spans)
    finally:
        await store.close()
