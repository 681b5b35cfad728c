"""The consumer worker: a short consume loop over the parts of this package.

Per ``getmany`` batch: decode each message (poison → dead-letter topic: :mod:`ingest.decoding`), redact
tags, name each trace's owner shard (:mod:`ingest.ownership`), write the whole batch in one store
transaction, then commit the offsets (docs/adr/0001-chunk-per-batch-exactly-once.md). Beside the loop run
the finalize rounds (:mod:`ingest.scheduling`), the heartbeats (:mod:`ingest.heartbeat`), retention
(:mod:`ingest.retention`) and, with an archive, the mover (:mod:`ingest.archiving`). The store holds all
state (spans, trace state, due times), so a crash or rebalance loses nothing: the next owner of a partition
re-reads uncommitted messages (idempotent upserts) and finds its due traces in the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from ingest.archiving import Archiver
from ingest.clients import KafkaClients
from ingest.decoding import DeadLetter, DeadLetters, Decoder
from ingest.finalizer.client import FinalizerProcess, separate_finalizer
from ingest.heartbeat import Heartbeats
from ingest.metrics import WorkerCounters, WorkerMetrics, serve_metrics
from ingest.ownership import Ownership, RebalanceListener, assign_owners
from ingest.retention import Retention
from ingest.scheduling import FinalizeScheduler
from ingest.store_full import StoreFull
from shared.archive.objects import open_object_store
from shared.clock import now_us
from shared.lifecycle import Backoff, sleep_unless_stopped
from shared.models import Span, SpanFinish
from shared.redact import Redactor
from shared.settings import Settings
from shared.store import TraceStore
from shared.store.cache import PYTHON_BYTES_PER_ENCODED_BYTE

log = logging.getLogger("ingest.worker")

Batches = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]
"""One ``getmany`` fetch: each partition's messages, in offset order (none empty)."""


class Worker:
    """One member of the ingest consumer group."""

    def __init__(self, settings: Settings, store: TraceStore, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.ownership = Ownership()
        self.counters = WorkerCounters()
        self.metrics = WorkerMetrics(self.counters)
        self.metrics_port: int | None = None
        self.formats = {
            settings.topic: "native",
            settings.otlp_topic: settings.otlp_format,
            settings.zipkin_topic: "zipkin_json",
            settings.jaeger_topic: "jaeger_proto",
        }
        self._clients = KafkaClients(settings, self.worker_id, self.topics, RebalanceListener(self.ownership))
        self._decoder = Decoder(self.formats, DeadLetters(self._clients, settings.dlq_suffix, self.counters))
        self._redactor = Redactor(settings.redact_keys, settings.redact_values) if settings.redact else None
        self.finalizer = FinalizerProcess(settings) if separate_finalizer(settings, store) else None
        """Where the finalize rounds run, when not in this process (see :mod:`ingest.finalizer`)."""
        self.store_full = StoreFull(settings.store_url)
        self.scheduler = FinalizeScheduler(
            settings, store, self.ownership, self.counters, self.metrics, self.finalizer, store_full=self.store_full
        )
        location = settings.archive_location()
        self.archiver = (
            None if location is None else Archiver(settings, store, self.ownership, open_object_store(location))
        )
        """The mover into the archive, when one is configured (see :mod:`ingest.archiving`)."""
        self.retention = Retention(settings, store, self.ownership, self.store_full, self.archiver)
        self._heartbeats = Heartbeats(
            store, self.worker_id, settings.heartbeat_s, self.ownership, self.counters, self.metrics, self.store_full
        )
        self._max_records = settings.batch_max

    @property
    def topics(self) -> list[str]:
        """The topics this worker consumes: native spans, OTLP and Zipkin."""
        return list(self.formats)

    @property
    def shards(self) -> set[str]:
        """The shards (``"<topic>/<partition>"``) assigned to this worker now."""
        return self.ownership.shards

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then finish the batch in hand, commit, and leave the group."""
        try:
            await self.scheduler.start()
            if not await self._clients.connect(stop):
                return
            async with serve_metrics(self.metrics, self.settings.worker_metrics_bind) as self.metrics_port:
                await self._run_loops(stop)
        finally:
            try:
                await self._clients.stop()
            finally:
                await self.scheduler.stop()
                if self.archiver is not None:
                    await self.archiver.close()
            log.info("worker %s stopped", self.worker_id)

    async def _run_loops(self, stop: asyncio.Event) -> None:
        consumer = self._clients.consumer
        assert consumer is not None
        tasks = [
            asyncio.create_task(self.scheduler.run(stop), name="finalize"),
            asyncio.create_task(self._heartbeats.run(stop, consumer), name="heartbeat"),
            asyncio.create_task(self.retention.run(stop), name="retention"),
        ]
        if self.archiver is not None:
            tasks.append(asyncio.create_task(self.archiver.run(stop), name="archive"))
        try:
            await self._consume_loop(consumer, stop)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._heartbeats.beat(consumer)

    # -- consuming ------------------------------------------------------------------------------------

    async def _consume_loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            await self.scheduler.catch_up()
            batches = await self._fetch(consumer, stop)
            if batches is None:
                break
            if not batches:
                continue
            try:
                await self.process(batches)
                self.store_full.succeeded("batch")
                self._size_next_fetch(batches)
                backoff.reset()
            except Exception as exc:  # the store or the broker failed mid-batch: nothing was committed
                delay = backoff.next()
                if not self.store_full.failed("batch", exc):  # a full store is said once, not per retry
                    log.warning("batch failed (%s: %s); retrying it in %.1fs", type(exc).__name__, exc, delay)
                # Rewind to the batch's first offsets so it is fetched and written again (idempotently).
                assigned = consumer.assignment()
                for tp, messages in batches.items():
                    if tp in assigned:
                        consumer.seek(tp, messages[0].offset)
                await sleep_unless_stopped(stop, delay)

    async def _fetch(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> Batches | None:
        """The next fetch (empty when nothing came within half a second), or ``None`` when ``stop`` was
        set first."""
        fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=500, max_records=self._max_records))
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if fetch not in done:
            fetch.cancel()
            return None
        batches: Batches = fetch.result()
        return batches

    def _size_next_fetch(self, batches: Batches) -> None:
        """With a trace cache, the next fetch takes at most a quarter of its budget, estimated from this
        fetch's message sizes (docs/adr/0004-trace-cache.md); at most ``batch_max`` messages always."""
        cache = self.store.cache
        if cache is None:
            return
        sample = [m for ms in batches.values() for m in ms[:16]]  # a sample: the estimate needs no more
        value_bytes = sum(len(m.value or b"") for m in sample)
        per_message = max(1.0, PYTHON_BYTES_PER_ENCODED_BYTE * value_bytes / max(1, len(sample)))
        self._max_records = max(100, min(self.settings.batch_max, int(cache.max_bytes / 4 / per_message)))

    async def process(self, batches: Batches) -> None:
        """Decode, dead-letter, write and commit one fetched batch. Raises what the store or the broker
        raised (nothing committed then: the batch is to be fetched again)."""
        consumer = self._clients.consumer
        assert consumer is not None
        started = time.perf_counter()
        dead: list[DeadLetter] = []
        spans, finishes, owners = self._decode(consumer, batches, dead)
        sent = [await send for send in dead]  # queued to the dead-letter producer
        if self._redactor is not None:
            spans = self._redactor.events(spans)
            finishes = self._redactor.events(finishes)
        changed, late = await self._write(spans, finishes, owners) if spans or finishes else (0, 0)
        if sent:
            await asyncio.gather(*sent)  # dead letters are durable before their offsets are committed
        await self._commit(consumer, {tp: messages[-1].offset + 1 for tp, messages in batches.items()})
        m = self.metrics
        for tp, messages in batches.items():
            m.consumed(tp.topic, len(messages))
        m.batch_seconds.observe(time.perf_counter() - started)
        c = self.counters
        c.batches += 1
        c.spans += len(spans)
        c.finishes += len(finishes)
        c.spans_changed += changed
        c.late_spans += late
        log.debug(
            "batch partitions=%d spans=%d finishes=%d changed=%d late=%d dead=%d ms=%.1f",
            len(batches),
            len(spans),
            len(finishes),
            changed,
            late,
            len(sent),
            (time.perf_counter() - started) * 1000,
        )

    def _decode(
        self, consumer: AIOKafkaConsumer, batches: Batches, dead: list[DeadLetter]
    ) -> tuple[list[Span], list[SpanFinish], dict[str, str]]:
        """The spans and finishes of every good message, and the owner shard of each of their traces."""
        spans: list[Span] = []
        finishes: list[SpanFinish] = []
        owners: dict[str, str] = {}
        for tp, messages in batches.items():
            events = self._decoder.decode(tp, messages, dead)
            for event in events:
                (spans if isinstance(event, Span) else finishes).append(event)  # type: ignore[arg-type]
            partitions = len(consumer.partitions_for_topic(tp.topic) or ()) or 1
            assign_owners(tp, partitions, messages, events, owners)
        return spans, finishes, owners

    async def _write(self, spans: list[Span], finishes: list[SpanFinish], owners: dict[str, str]) -> tuple[int, int]:
        """Write the batch in one transaction; returns (spans changed, late spans)."""
        written_us = now_us()
        result = await self.store.write_batch(
            spans,
            finishes,
            shards=owners,
            now_us=written_us,
            grace_us=self.settings.grace_us,
            idle_us=self.settings.idle_timeout_us,
        )
        if result.spans_changed:
            self.scheduler.written(written_us)
        return result.spans_changed, result.late_spans

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next offset to read, per partition) of the partitions still assigned.
        A rebalance may have taken partitions away while the batch was being written: their new owner
        re-reads those messages, and the idempotent upserts make that harmless. A failed commit is logged:
        the next batch's commit covers these offsets, or the messages are read again."""
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        try:
            if offsets:
                await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit failed after a rebalance, messages will be re-read: %s", exc)
        except KafkaError as exc:  # e.g. the coordinator moved during a broker restart
            log.warning("commit failed (%s); the next batch's commit covers these offsets", exc)
