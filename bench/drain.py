"""Benchmark: one worker draining a pre-filled topic, end to end (decode → store → finalize), compared
with a raw aiokafka consume-only pass over the same topic.

    python bench/drain.py --spans 100000 [--bootstrap 127.0.0.1:9092] [--store sqlite:///...]

Prints a table. Needs a running broker (``make kafka-up``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer

from ingest.worker import Worker
from shared.demo import make_trace
from shared.kafka import SpanProducer, ensure_topics
from shared.settings import Settings
from shared.store import open_store


async def fill(settings: Settings, spans_wanted: int) -> tuple[int, int]:
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    rng = random.Random(5)
    spans = traces = 0
    async with SpanProducer(settings) as producer:
        while spans < spans_wanted:
            trace = make_trace(rng, time.time_ns() // 1000)
            await producer.send(trace)
            spans += len(trace)
            traces += 1
    return spans, traces


async def raw_consume(settings: Settings, spans: int, messages: int) -> float:
    consumer = AIOKafkaConsumer(
        settings.topic,
        **settings.kafka_options(),
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=settings.fetch_max_bytes,
    )
    await consumer.start()
    try:
        seen = 0
        started = None
        while seen < messages:
            batch = await consumer.getmany(timeout_ms=1000, max_records=settings.batch_max)
            if started is None and batch:
                started = time.perf_counter()
            seen += sum(len(v) for v in batch.values())
        assert started is not None
        return spans / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def drain(settings: Settings, spans: int, traces: int) -> tuple[float, float]:
    store = await open_store(settings)
    worker = Worker(settings, store)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(worker.run(stop))
    stored_at = None
    try:
        # Progress from the worker's own counters: polling the database would compete with the worker.
        while worker.counters.traces_finalized < traces:
            await asyncio.sleep(0.02)
            if task.done():
                task.result()
            if stored_at is None and worker.counters.spans_changed >= spans:
                stored_at = time.perf_counter()
    finally:
        stop.set()
        await task
        await store.close()
    assert stored_at is not None
    return spans / (stored_at - started), spans / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--bootstrap", default=os.environ.get("TRACING_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--store", default=None)
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="bench-")
    settings = Settings.from_env(
        {},
        kafka_bootstrap=args.bootstrap,
        topic=f"bench-{suffix}",
        group=f"bench-{suffix}",
        store_url=args.store or f"sqlite:///{tmp}/traces.db",
        grace_ms=100,
        redact=True,
    )
    spans, traces = await fill(settings, args.spans)
    raw = await raw_consume(settings, spans, traces)
    stored, finalized = await drain(settings, spans, traces)
    print(f"{'measure':<42} {'spans/s':>10} {'ratio to raw':>13}")
    print(f"{'raw aiokafka consume (getmany only)':<42} {raw:>10,.0f} {1.0:>13.2f}")
    print(f"{'worker: all spans stored':<42} {stored:>10,.0f} {stored / raw:>13.2f}")
    print(f"{'worker: all spans stored + traces final':<42} {finalized:>10,.0f} {finalized / raw:>13.2f}")
    print(f"({spans} spans in {traces} traces, one message per trace, {settings.partitions} partitions)")


if __name__ == "__main__":
    asyncio.run(main())
