"""(f) Worker peak memory with many active traces.

Demo traces whose root span never finishes (open: no duration) are produced while one worker process
(``python -m ingest``, idle timeout of a day so nothing finalizes) drains them into SQLite. When the
worker's heartbeat reports every span consumed and no lag, its peak RSS is read from
``/proc/<pid>/status`` (VmHWM), and added to it the peak of the finalizer process the worker started
(``ingest/finalizer.py``). The store must then hold every trace as active.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from bench.common import Child, Processes, settings_env, tree_peak_rss
from shared.demo import make_trace
from shared.kafka import SpanProducer, ensure_topics
from shared.settings import Settings
from shared.store import TraceStore, open_store


@dataclass
class MemoryResult:
    traces: int
    spans: int
    baseline_rss: int  # VmHWM once the worker had joined its group, before any message (with its finalizer)
    peak_rss: int  # VmHWM after draining everything: the worker's plus its finalizer process's
    finalizer_rss: int  # the finalizer process's share of peak_rss
    active_traces: int  # as the store reports them afterwards
    drain_seconds: float  # first produce to every span consumed


async def _heartbeat_until(store: TraceStore, worker: Child, *, spans: int | None, timeout_s: float, what: str) -> None:
    """Until the worker's heartbeat shows partitions (``spans`` None) or ``spans`` consumed and no lag."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker exited ({worker.process.returncode}):\n{worker.tail()}")
        for beat in await store.heartbeats():
            if spans is None and beat.partitions:
                return
            if spans is not None and beat.spans_total >= spans and not any(beat.lag.values()):
                return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{what} not seen within {timeout_s:.0f} s:\n{worker.tail()}")


async def peak_memory(
    settings: Settings, processes: Processes, workdir: Path, *, traces: int, timeout_s: float = 900.0
) -> MemoryResult:
    s = msgspec.structs.replace(
        settings,
        store_url=f"sqlite:///{workdir / 'memory.db'}",
        idle_timeout_s=86_400.0,
        heartbeat_s=0.5,
        log_level="WARNING",
    )
    await ensure_topics(s, [s.topic])
    worker = processes.start("worker-memory", [sys.executable, "-m", "ingest"], settings_env(s))
    store: TraceStore | None = None
    try:
        # The worker creates the schema; opening the same file here only reads heartbeats and stats.
        store = await open_store(s)
        await _heartbeat_until(store, worker, spans=None, timeout_s=90, what="partition assignment")
        baseline = sum(tree_peak_rss(worker.pid))
        rng = random.Random(13)
        spans = 0
        started = time.monotonic()
        async with SpanProducer(s) as producer:
            for _ in range(traces):
                trace = make_trace(rng, time.time_ns() // 1000)
                trace[0] = msgspec.structs.replace(trace[0], duration_us=None)  # the root never finishes
                await producer.send(trace)
                spans += len(trace)
        await _heartbeat_until(store, worker, spans=spans, timeout_s=timeout_s, what=f"{spans} spans consumed")
        drained = time.monotonic() - started
        own, finalizer = tree_peak_rss(worker.pid)
        stats = await store.stats(slowest=1)
        return MemoryResult(traces, spans, baseline, own + finalizer, finalizer, stats.active_traces, drained)
    finally:
        if store is not None:
            await store.close()
        processes.stop(worker)
