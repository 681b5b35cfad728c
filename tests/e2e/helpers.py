"""Helpers for end-to-end tests: run a worker in-process, wait on conditions with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from ingest.worker import Worker
from shared.models import Span
from shared.settings import Settings
from shared.store import TraceStore, open_store


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
