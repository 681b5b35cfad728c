"""Helpers for end-to-end tests: run a worker in-process, wait on conditions with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from aiokafka import AIOKafkaConsumer

from ingest.worker import Worker
from shared.analysis import analyze
from shared.demo import make_trace
from shared.models import Span
from shared.settings import Settings
from shared.store import TraceQuery, TraceStore, open_store
from shared.store.base import StoredTrace, StoreStats

T = TypeVar("T")
FlushFn = Callable[[], Awaitable[object]]


def gateway_trace(trace_id: str, start_us: int, *, error: bool = False) -> list[Span]:
    """A finished two-span trace: a gateway root (failed when ``error``) and its database call."""
    root = Span(
        trace_id=trace_id,
        span_id=f"{trace_id}-root",
        service_name="gateway",
        operation_name="GET /orders",
        start_time_us=start_us,
        duration_us=50_000,
        status="error" if error else "success",
    )
    db = Span(
        trace_id=trace_id,
        span_id=f"{trace_id}-db",
        parent_span_id=root.span_id,
        service_name="db",
        operation_name="SELECT",
        start_time_us=start_us + 1_000,
        duration_us=20_000,
    )
    return [root, db]


def process_alive(pid: int) -> bool:
    """Whether a process of that id exists (a zombie too: the tests' children are waited for)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], *, timeout_s: float, what: str, interval_s: float = 0.1
) -> None:
    """Poll ``condition`` (sync or async) until it holds; fail naming ``what`` when ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    """A worker consuming in this event loop, with its own store connection; stopped cleanly on exit."""
    store = await open_store(settings)
    worker = Worker(settings, store)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=30)
        finally:
            await store.close()
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@contextlib.asynccontextmanager
async def reader(settings: Settings) -> AsyncIterator[TraceStore]:
    """A second store connection, as the query API would have."""
    store = await open_store(settings)
    try:
        yield store
    finally:
        await store.close()


def demo_traces(rng: random.Random, total_spans: int, start_us: int) -> list[list[Span]]:
    """Demo traces starting at ``start_us``, as many as make ``total_spans`` spans or just more."""
    traces: list[list[Span]] = []
    n = 0
    while n < total_spans:
        spans = make_trace(rng, start_us)
        traces.append(spans)
        n += len(spans)
    return traces


async def send_paced(
    items: Sequence[T], seconds: float, every: int, send: Callable[[T], Awaitable[object]], flush: FlushFn
) -> None:
    """Send ``items`` in order spread over about ``seconds`` (a flush and a pause every ``every`` items),
    so that what a test does meanwhile lands mid-stream."""
    started = time.monotonic()
    for i, item in enumerate(items):
        await send(item)
        if i % every == 0:
            await flush()
            ahead = started + seconds * i / len(items) - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)


async def finalized_counts(store: TraceStore) -> tuple[int, int, int]:
    """(spans counted in the rollups, traces finalized, traces active)."""
    stats = await store.stats()
    return (
        sum(s.count for s in stats.services.values()),
        stats.completed_traces + stats.failed_traces,
        stats.active_traces,
    )


async def wait_progress(
    count: Callable[[], Awaitable[int]], by: int, done: asyncio.Event, what: str, interval_s: float = 0.1
) -> None:
    """Until ``count()`` grew by ``by`` (or ``done`` is set: nothing more is coming)."""
    start = await count()

    async def moved() -> bool:
        return await count() >= start + by or done.is_set()

    await wait_for(moved, timeout_s=120, what=f"{by} more {what}", interval_s=interval_s)


async def assert_stored_as_sent(store: TraceStore, traces: Sequence[Sequence[Span]]) -> StoreStats:
    """Nothing is active and the rollups count every span sent once, per service; the stats."""
    assert await store.find_traces(TraceQuery(status="active")) == []
    stats = await store.stats()
    per_service = Counter(s.service_name for t in traces for s in t)
    assert {k: v.count for k, v in stats.services.items()} == dict(per_service)
    return stats


async def assert_analyzed_as_offline(store: TraceStore, sample: Sequence[Sequence[Span]]) -> list[StoredTrace]:
    """Each trace of ``sample`` is stored with the analysis an offline run of its spans gives; the
    stored traces."""
    stored_traces: list[StoredTrace] = []
    for spans in sample:
        stored = await store.get_trace(spans[0].trace_id)
        assert stored is not None and stored.analysis is not None
        assert stored.analysis == analyze(spans[0].trace_id, spans)
        stored_traces.append(stored)
    return stored_traces


async def dead_letters(settings: Settings, topic: str, count: int) -> list[tuple[bytes, dict[str, bytes]]]:
    """(value, headers) of the messages on ``topic``'s dead-letter topic, until ``count`` came or 30 s
    passed."""
    consumer = AIOKafkaConsumer(
        topic + settings.dlq_suffix, **settings.kafka_options(), auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    got: list[tuple[bytes, dict[str, bytes]]] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                got.extend((m.value, dict(m.headers)) for m in messages)
    finally:
        await consumer.stop()
    return got
