"""Throughput of a pre-filled topic: (a) raw aiokafka consume-only, (b) decode-only in process, (c) one
worker end to end (decode → redact → store → finalize).

    python bench/drain.py --spans 200000 [--store sqlite:///... | postgresql://...]

Part of ``bench/run.py`` (rows a, b, c); standalone it prints those rows for one store. Needs a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from bench.common import Row, delete_topics, prefixed_settings, rate, render_table
from bench.workload import fill
from ingest.worker import Worker
from shared.codecs.native import decode_native
from shared.gc_tuning import tuned_gc
from shared.redact import Redactor
from shared.settings import Settings
from shared.store import open_store

STALL_S = 120.0
"""A drain that makes no progress for this long fails (instead of hanging the bench)."""


# -- (a) raw consume ----------------------------------------------------------------------------------


@dataclass
class RawResult:
    spans_per_s: float
    messages_per_s: float
    seconds: float
    passes: int


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    """Notes when the group gave this consumer its partitions: the clock of (a) starts there."""

    def __init__(self) -> None:
        self.at: float | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.at is None and assigned:
            self.at = time.perf_counter()


async def raw_consume(
    settings: Settings, topic: str, messages: int, spans: int, *, min_seconds: float = 3.0
) -> RawResult:
    """Read ``topic`` (``messages`` messages holding ``spans`` spans) with a fresh group and the worker's
    consumer options, doing nothing with the records: the ceiling for a Python (aiokafka) consumer.

    Timed from the partition assignment, as the worker in (c) is, so group join and start-up are left out
    of both. A small topic is read again from the beginning until ``min_seconds`` have passed (one fetch
    can hold tens of thousands of spans, so a single pass may be too short to time)."""
    consumer = AIOKafkaConsumer(
        **settings.kafka_options(),
        group_id=f"{settings.group}-raw",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=settings.fetch_max_bytes,
        max_partition_fetch_bytes=min(settings.fetch_max_bytes, 4 * 1024 * 1024),
    )
    assigned = _Assigned()
    consumer.subscribe([topic], listener=assigned)
    await consumer.start()
    try:
        seen = passes = 0
        last_progress = time.monotonic()
        while True:
            batch: dict[TopicPartition, list[object]] = await consumer.getmany(
                timeout_ms=1000, max_records=settings.batch_max
            )
            if batch:
                seen += sum(len(v) for v in batch.values())
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_S:
                raise TimeoutError(f"raw consume stalled at {seen - passes * messages}/{messages} messages")
            if seen >= (passes + 1) * messages:
                passes += 1
                assert assigned.at is not None
                if time.perf_counter() - assigned.at >= min_seconds:
                    break
                await consumer.seek_to_beginning()
        assert assigned.at is not None
        seconds = time.perf_counter() - assigned.at
        return RawResult(passes * spans / seconds, seen / seconds, seconds, passes)
    finally:
        await consumer.stop()


# -- (b) decode only --------------------------------------------------------------------------------------


@dataclass
class DecodeResult:
    spans_per_s: float
    messages_per_s: float
    redacted_spans_per_s: float  # decode + the worker's default tag redaction


def _timed_passes(
    values: Sequence[bytes], work: Callable[[bytes], Sequence[object]], min_seconds: float
) -> tuple[float, int, int]:
    """Run ``work`` over every value until ``min_seconds`` passed; (seconds, spans, messages)."""
    gc.collect()
    spans = messages = 0
    started = time.perf_counter()
    while True:
        for value in values:
            spans += len(work(value))
        messages += len(values)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return elapsed, spans, messages


def decode_rate(values: Sequence[bytes], *, min_seconds: float = 1.0) -> DecodeResult:
    """Decode native messages in process (what the worker does per message before the store)."""
    if not values:
        raise ValueError("no messages to decode")
    seconds, spans, messages = _timed_passes(values, decode_native, min_seconds)
    defaults = Settings()
    redactor = Redactor(defaults.redact_keys, defaults.redact_values)
    r_seconds, r_spans, _ = _timed_passes(values, lambda v: redactor.events(decode_native(v)), min_seconds)
    return DecodeResult(spans / seconds, messages / seconds, r_spans / r_seconds)


# -- (c) one worker ---------------------------------------------------------------------------------------


@dataclass
class DrainResult:
    stored_per_s: float  # spans/s until every span is stored
    finalized_per_s: float  # spans/s until every trace is finalized
    stored_s: float
    finalized_s: float
    batches: int
    late_spans: int  # spans that arrived after their trace was finalized (it was finalized again)


async def worker_drain(settings: Settings, spans: int, traces: int) -> DrainResult:
    """One in-process worker drains the topics of ``settings`` (``spans`` spans of ``traces`` traces) into
    its store. Progress comes from the worker's own counters: polling the database would compete with the
    worker. The clock starts when the worker got its partitions (as for (a)), seen by polling every 5 ms.

    A span that arrives after its trace was finalized (an async span ending after the root, in a topic of
    one span per message) finalizes the trace again, which the counter counts too; so once it reaches
    ``traces``, the store is asked whether any trace is still active, and the drain waits until none is.

    The garbage collector is tuned as ``python -m ingest`` tunes it (:func:`shared.gc_tuning.tuned_gc`)."""
    with tuned_gc():
        return await _worker_drain(settings, spans, traces)


async def _worker_drain(settings: Settings, spans: int, traces: int) -> DrainResult:
    store = await open_store(settings, writer=True)
    worker = Worker(settings, store, worker_id=f"bench-{uuid.uuid4().hex[:6]}")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    assigned_at: float | None = None
    stored_at: float | None = None
    c = worker.counters
    last, last_change = (-1, -1), time.monotonic()
    try:
        while c.traces_finalized < traces or c.spans_changed < spans or (await store.stats()).active_traces:
            await asyncio.sleep(0.005)
            if assigned_at is None and worker.shards:
                assigned_at = time.perf_counter()
            if task.done():
                task.result()
                raise RuntimeError("the worker stopped early")
            if stored_at is None and c.spans_changed >= spans:
                stored_at = time.perf_counter()
            progress = (c.spans_changed, c.traces_finalized)
            if progress != last:
                last, last_change = progress, time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                raise TimeoutError(f"worker stalled: {c.spans_changed}/{spans} spans, {c.traces_finalized}/{traces}")
        finalized_at = time.perf_counter()
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=60)
        finally:
            await store.close()
    assert stored_at is not None and assigned_at is not None
    stored_s = stored_at - assigned_at
    finalized_s = finalized_at - assigned_at
    return DrainResult(spans / stored_s, spans / finalized_s, stored_s, finalized_s, c.batches, c.late_spans)


def drain_rows(key: str, label: str, result: DrainResult, raw: RawResult | None, grace_ms: int) -> list[Row]:
    def ratio(value: float) -> str:
        return f"{value / raw.spans_per_s:.2f} × (a)" if raw else ""

    return [
        Row(
            f"{key}",
            f"one worker, {label}: every span stored",
            rate(result.stored_per_s),
            ratio(result.stored_per_s),
            f"{result.stored_s:.1f} s from the partition assignment; {result.batches} fetches",
        ),
        Row(
            f"{key}",
            f"one worker, {label}: every trace finalized",
            rate(result.finalized_per_s),
            ratio(result.finalized_per_s),
            f"{result.finalized_s:.1f} s, includes the {grace_ms} ms grace of the last traces"
            + (f"; {result.late_spans} late spans (their trace finalized again)" if result.late_spans else ""),
        ),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--bootstrap", default=os.environ.get("TRACING_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--store", default=None, help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--grace-ms", type=int, default=100)
    args = parser.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    tmp = tempfile.mkdtemp(prefix="tracing-bench-")
    settings = prefixed_settings(
        prefix,
        args.bootstrap,
        store_url=args.store or f"sqlite:///{tmp}/traces.db",
        grace_ms=args.grace_ms,
    )
    try:
        filled = await fill(settings, settings.topic, args.spans, "native", keep=5000)
        raw = await raw_consume(settings, settings.topic, filled.messages, filled.spans)
        decoded = decode_rate(filled.sample)
        drained = await worker_drain(settings, filled.spans, filled.messages)
    finally:
        await delete_topics(settings, prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        Row("a", "raw aiokafka consume", rate(raw.spans_per_s), "", rate(raw.messages_per_s, "msgs/s")),
        Row("b", "decode only", rate(decoded.spans_per_s), "", f"with redaction {rate(decoded.redacted_spans_per_s)}"),
        *drain_rows("c", settings.store_url.split(":", 1)[0], drained, raw, settings.grace_ms),
    ]
    print(render_table(rows))
    print(
        f"({filled.spans} spans in {filled.messages} traces, one message per trace, {settings.partitions} partitions)"
    )


if __name__ == "__main__":
    asyncio.run(main())
