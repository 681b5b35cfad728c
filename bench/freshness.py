"""(d) Freshness: how long after a trace is produced it is queryable through the HTTP API as finalized.

One worker (``python -m ingest``) and the API (``python -m query_api``) run as their own processes on one
SQLite store. Demo traces are produced at a fixed offered rate (spans/s, one message per trace); the bench
polls ``GET /traces/query?start=<oldest pending trace>`` (finalized traces only, newest first, paged) and
notes for each trace the first poll that lists it. Latency = that response's arrival minus the moment just
before the trace was handed to the producer. It includes the configured grace window (finalization waits
that long after the root span arrives), the finalizer's tick and the poll interval.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec

from bench.common import Child, Processes, free_port, get_json, settings_env, wait_http
from shared.demo import make_trace
from shared.kafka import SpanProducer, ensure_topics
from shared.settings import Settings

PAGE = 1000


@dataclass
class FreshnessResult:
    traces: int
    spans: int
    offered_spans_per_s: float
    achieved_spans_per_s: float
    grace_ms: int
    poll_ms: float
    latencies_ms: list[float] = field(default_factory=list)
    missing: int = 0


async def wait_worker_assigned(base: str, worker: Child, timeout_s: float = 90.0) -> None:
    """Until ``/stats`` shows a worker heartbeat with partitions assigned."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited ({worker.process.returncode}):\n{worker.tail()}")
            stats = await get_json(session, f"{base}/stats")
            if any(w.get("partitions") for w in stats.get("pipeline", {}).get("workers", [])):
                return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"no worker got partitions within {timeout_s:.0f} s:\n{worker.tail()}")


async def freshness(
    settings: Settings,
    processes: Processes,
    workdir: Path,
    *,
    spans_per_s: float,
    seconds: float,
    poll_s: float = 0.05,
    drain_timeout_s: float = 60.0,
) -> FreshnessResult:
    port = free_port()
    s = msgspec.structs.replace(
        settings,
        store_url=f"sqlite:///{workdir / 'freshness.db'}",
        api_bind=f"127.0.0.1:{port}",
        heartbeat_s=0.5,
        log_level="WARNING",
    )
    await ensure_topics(s, [s.topic])
    env = settings_env(s)
    worker = processes.start("worker-freshness", [sys.executable, "-m", "ingest"], env)
    api = processes.start("api-freshness", [sys.executable, "-m", "query_api"], env)
    base = f"http://127.0.0.1:{port}"
    result = FreshnessResult(0, 0, spans_per_s, 0.0, s.grace_ms, poll_s * 1000)
    pending: dict[str, tuple[float, int]] = {}  # trace id -> (monotonic time handed to the producer, start µs)
    producing = True

    async def poll() -> None:
        async with aiohttp.ClientSession() as session:
            while producing or pending:
                if pending:
                    since_ms = min(start for _, start in pending.values()) // 1000
                    offset = 0
                    while True:
                        page = await get_json(
                            session, f"{base}/traces/query?start={since_ms}&limit={PAGE}&offset={offset}"
                        )
                        seen = time.monotonic()
                        for item in page:
                            entry = pending.pop(item["traceId"], None)
                            if entry is not None:
                                result.latencies_ms.append((seen - entry[0]) * 1000)
                        if len(page) < PAGE:
                            break
                        offset += PAGE
                await asyncio.sleep(poll_s)

    try:
        await wait_http(f"{base}/healthz", 60, api)
        await wait_worker_assigned(base, worker)
        poller = asyncio.create_task(poll())
        try:
            rng = random.Random(11)
            async with SpanProducer(s) as producer:
                started = time.monotonic()
                while time.monotonic() - started < seconds:
                    ahead = started + result.spans / spans_per_s - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                    trace = make_trace(rng, time.time_ns() // 1000)
                    pending[trace[0].trace_id] = (time.monotonic(), trace[0].start_time_us)
                    await producer.send(trace)
                    result.traces += 1
                    result.spans += len(trace)
                await producer.flush()
                result.achieved_spans_per_s = result.spans / (time.monotonic() - started)
            producing = False
            try:
                await asyncio.wait_for(asyncio.shield(poller), timeout=drain_timeout_s + s.grace_ms / 1000)
            except TimeoutError:
                pass
        finally:
            producing = False
            poller.cancel()
            try:
                await poller
            except asyncio.CancelledError:
                pass
        for child in (worker, api):
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited ({child.process.returncode}):\n{child.tail()}")
        result.missing = len(pending)
    finally:
        processes.stop(api)
        processes.stop(worker)
    return result
