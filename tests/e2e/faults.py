"""Helpers of the fault tests: spans flowing steadily, the API as a process, and the end checks (every span
stored exactly once, every trace finalized, each analysis the offline one)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.kafka import SpanProducer
from shared.models import Span
from shared.settings import Settings
from shared.store import TraceStore
from tests.conftest import free_port
from tests.e2e.helpers import assert_analyzed_as_offline, assert_stored_as_sent, finalized_counts, wait_for
from tests.e2e.workers import WorkerProcess

SEND_DEADLINE_S = 120.0
"""How long a chunk of traces may take to be acknowledged, the broker restarting meanwhile."""


@dataclass(frozen=True)
class Placed:
    """Where the message of one trace landed."""

    partition: int
    offset: int


async def produce_steadily(settings: Settings, traces: list[list[Span]], *, seconds: float) -> list[Placed]:
    """Send each trace as one message keyed by its id, in chunks spread evenly over ``seconds``; a chunk
    the broker did not acknowledge (it was restarting) is sent again until it is, within
    :data:`SEND_DEADLINE_S` (a span sent twice is upserted once). Returns where each trace's message
    landed, in the order of ``traces`` (its last acknowledged copy)."""
    placed: list[Placed] = []
    chunks = max(1, int(seconds * 10))
    size = -(-len(traces) // chunks)
    started = time.monotonic()
    async with SpanProducer(settings) as producer:
        for i in range(0, len(traces), size):
            deadline = time.monotonic() + SEND_DEADLINE_S
            while True:
                try:
                    futures = await producer.send([s for t in traces[i : i + size] for s in t])
                    metadata: list[Any] = await asyncio.gather(*futures)
                    break
                except KafkaError:
                    with contextlib.suppress(KafkaError):
                        await producer.flush()  # forgets this try's deliveries: closing would raise their errors
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            placed += [Placed(m.partition, m.offset) for m in metadata]
            ahead = started + seconds * (i + size) / len(traces) - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    return placed


async def committed_offsets(settings: Settings) -> dict[int, int]:
    """The consumer group's committed offset of each partition of the span topic that has one."""
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == settings.topic}


async def wait_until_drained(store: TraceStore, traces: list[list[Span]], *, timeout_s: float) -> None:
    expected = (sum(map(len, traces)), len(traces), 0)

    async def drained() -> bool:
        return await finalized_counts(store) == expected

    await wait_for(drained, timeout_s=timeout_s, what="every span stored and every trace finalized", interval_s=0.5)


async def assert_stored_exactly_once(store: TraceStore, traces: list[list[Span]], *, sample: int = 200) -> None:
    """No trace left active, every trace finalized, the rollups count each span once, and a sample of
    traces holds exactly its spans with the offline analysis."""
    stats = await assert_stored_as_sent(store, traces)
    assert stats.completed_traces + stats.failed_traces == len(traces)
    picked = random.Random(5).sample(traces, min(sample, len(traces)))
    for stored, spans in zip(await assert_analyzed_as_offline(store, picked), picked, strict=True):
        assert sorted(s.span_id for s in stored.spans) == sorted(s.span_id for s in spans)


@dataclass
class Api:
    """The query API running as ``python -m query_api``, and a client session for it."""

    base: str
    http: aiohttp.ClientSession
    process: WorkerProcess

    async def get(self, path: str) -> tuple[int, Any]:
        """Status and decoded JSON body (``None`` when the body is not JSON)."""
        async with self.http.get(self.base + path) as response:
            text = await response.text()
            try:
                return response.status, msgspec.json.decode(text)
            except msgspec.DecodeError:
                return response.status, None


@contextlib.asynccontextmanager
async def running_api(settings: Settings, log: Path) -> AsyncIterator[Api]:
    """The API on a free port of 127.0.0.1, once it answered ``/healthz``; stopped after (exit code 0)."""
    port = free_port()
    settings = msgspec.structs.replace(settings, api_bind=f"127.0.0.1:{port}")
    process = WorkerProcess(settings, log, module="query_api")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            api = Api(f"http://127.0.0.1:{port}", http, process)

            async def healthy() -> bool:
                assert process.alive(), process.output()
                try:
                    return (await api.get("/healthz"))[0] == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, timeout_s=60, what="the API answering /healthz")
            yield api
    finally:
        code = process.stop()
    assert code == 0, process.output()[-3000:]


async def consuming(workers: list[WorkerProcess], topic: str) -> None:
    """Wait until every worker was assigned partitions of ``topic`` (so spans sent now flow at once)."""

    def assigned() -> bool:
        for worker in workers:
            assert worker.alive(), worker.output()[-3000:]
        return all(f"'{topic}/" in worker.output().rpartition("partitions assigned")[2] for worker in workers)

    await wait_for(assigned, timeout_s=90, what=f"every worker assigned partitions of {topic}")
