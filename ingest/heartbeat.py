"""The worker's heartbeat: its shards, consumer lag and counters, recorded in the store (what ``/stats``
shows) every ``TRACING_HEARTBEAT_S``; the lag is also the ``tracing_worker_consumer_lag`` gauge."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from ingest.metrics import WorkerCounters, WorkerMetrics
from ingest.ownership import Ownership, shard_of
from ingest.store_full import StoreFull, log_failure
from shared.clock import now_us
from shared.lifecycle import sleep_unless_stopped
from shared.store import Heartbeat, TraceStore

log = logging.getLogger("ingest.worker")


@dataclass(frozen=True)
class Heartbeats:
    """Records the heartbeats of worker ``worker_id``, every ``interval_s`` seconds while it runs."""

    store: TraceStore
    worker_id: str
    interval_s: float
    ownership: Ownership
    counters: WorkerCounters
    metrics: WorkerMetrics
    store_full: StoreFull

    async def _lag(self, consumer: AIOKafkaConsumer | None) -> dict[str, int]:
        """Messages behind the high watermark per assigned shard (a partition the consumer cannot tell
        about yet is left out)."""
        lag: dict[str, int] = {}
        if consumer is not None:
            for tp in consumer.assignment():
                try:
                    high = consumer.highwater(tp)
                    position = await consumer.position(tp)
                except (KafkaError, AssertionError, RuntimeError):
                    continue
                if high is not None:
                    lag[shard_of(tp)] = max(0, high - position)
        return lag

    async def beat(self, consumer: AIOKafkaConsumer | None) -> None:
        """Record one heartbeat now (``consumer``: the worker's, for the lag; ``None`` before it runs)."""
        lag = await self._lag(consumer)
        self.metrics.readings.lag = lag
        c = self.counters
        await self.store.record_heartbeat(
            Heartbeat(
                worker_id=self.worker_id,
                partitions=sorted(self.ownership.shards),
                lag=lag,
                spans_per_second=round(c.spans_per_second(), 1),
                spans_total=c.spans + c.finishes,
                late_spans=c.late_spans,
                dead_lettered=c.dead_lettered,
                traces_finalized=c.traces_finalized,
                updated_at_us=now_us(),
            )
        )

    async def run(self, stop: asyncio.Event, consumer: AIOKafkaConsumer | None) -> None:
        """A heartbeat every ``interval_s`` until ``stop`` is set; a failed one is logged (a full store
        once, see :mod:`ingest.store_full`)."""
        while not stop.is_set():
            try:
                await self.beat(consumer)
                self.store_full.succeeded("heartbeat")
            except Exception as exc:
                log_failure("heartbeat", exc, self.store_full)
            await sleep_unless_stopped(stop, self.interval_s)
