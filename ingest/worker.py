"""The consumer worker: a thin async shell around the store.

Per ``getmany`` batch: decode each message (poison → dead-letter topic), redact tags, write the spans of
each partition in one store transaction, then commit the offsets. A separate loop finalizes the traces
that are due in this worker's partitions. The store holds all state (spans, trace state, due times), so
a crash or rebalance loses nothing: the next owner of a partition re-reads uncommitted messages
(idempotent upserts) and finds its due traces in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.partitioner import murmur2

from ingest.finalizer import FinalizerError, FinalizerProcess, RoundDone, separate_finalizer
from ingest.metrics import WorkerCounters, WorkerMetrics, serve_metrics
from shared.codecs import DecodeError, decoder_for, format_of
from shared.codecs.native import decode_native_many
from shared.kafka import CONTENT_TYPE_HEADER, ensure_topics
from shared.models import SPAN_CONTENT_TYPE, Event, Span, SpanFinish
from shared.redact import Redactor
from shared.sampling import sampler_for
from shared.settings import Settings
from shared.store import Heartbeat, TraceStore
from shared.store.cache import PYTHON_BYTES_PER_ENCODED_BYTE, TraceCache

log = logging.getLogger("ingest.worker")


GC_THRESHOLDS: Final = (50_000, 20, 100)
"""The garbage collector's thresholds while a worker runs (CPython's default: 700, 10, 10). Decoding a
fetch allocates millions of containers (the decoded lists and tuples, aiokafka's records), and the
default thresholds run a young collection every 700 of them and a full one over every tracked object
every few hundred thousand (the cached spans are not tracked: msgspec ``gc=False`` Structs, dicts of
atoms): in a 200k-span drain on SQLite, 1.1-1.4 s of CPU (about an eighth of the drain) went to ~3,600
collections, 22 of them full; with these, 0.11-0.16 s in 14-16. The spans hold no reference cycles;
what cycles asyncio makes die young."""


@contextlib.contextmanager
def tuned_gc() -> Iterator[None]:
    """Run a worker with :data:`GC_THRESHOLDS`, the objects alive at its start frozen (never scanned
    again); on exit the previous thresholds are restored and every frozen object is thawed (a host that
    froze objects of its own before would see them thawed too). ``python -m ingest`` runs in it."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


ROUND_SPACING_S: Final = 0.02
"""The finalize loop's rounds start at least this far apart (see :meth:`Worker._next_round_in`)."""


def now_us() -> int:
    return time.time_ns() // 1000


def shard_of(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


def owner_shard(topic: str, partitions: int, trace_id: str) -> str:
    """The shard that owns a trace whose spans came unkeyed (or keyed by something else): the partition
    the trace id hashes to, as Kafka's default partitioner would place it keyed (murmur2). Every worker
    names the same owner for a trace whichever partitions its spans arrived on, so exactly one worker
    finalizes it; keyed by trace id, that is the partition the spans arrived on."""
    return f"{topic}/{(murmur2(trace_id.encode()) & 0x7FFFFFFF) % partitions}"


_SPAN_CONTENT_TYPE: Final = SPAN_CONTENT_TYPE.encode("latin-1")


def _content_type_header(message: object) -> bytes | None:
    """The value of the message's first content-type header, if it has one. A plain loop: it runs per
    message (a generator per message cost a fifth of the decoding of a one-span message)."""
    headers: Sequence[tuple[str, bytes]] = getattr(message, "headers", None) or ()
    for key, value in headers:
        if key == CONTENT_TYPE_HEADER:
            return value
    return None


def _all_native(messages: Sequence[object]) -> bool:
    """Whether no message's content type names anything but the native span type."""
    for message in messages:
        content_type = _content_type_header(message)
        if content_type is not None and content_type != _SPAN_CONTENT_TYPE:
            return False
    return True


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Every batch is written and committed before the next fetch, so there is no buffer to flush:
        # dropping the shards stops this worker finalizing traces it no longer owns. Then wait for a
        # finalize round in flight to end, so the next owner never finalizes alongside this worker (the
        # round never waits on the fetch loop, which is what is calling this).
        self._worker.shards.difference_update(shard_of(tp) for tp in revoked)
        async with self._worker.finalizing:
            pass
        log.info("partitions revoked: %s", sorted(shard_of(tp) for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # The due finalizations of these partitions are in the store; the finalizer finds them.
        self._worker.shards.update(shard_of(tp) for tp in assigned)
        log.info("partitions assigned: %s", sorted(shard_of(tp) for tp in assigned))


class Worker:
    """One member of the ingest consumer group."""

    def __init__(self, settings: Settings, store: TraceStore, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.shards: set[str] = set()
        self.finalizing = asyncio.Lock()
        """Held by a finalize round (see :meth:`finalize_due`) and by a retention purge."""
        self.counters = WorkerCounters()
        self.metrics = WorkerMetrics(self.counters)
        self.metrics_port: int | None = None
        self.formats = {
            settings.topic: "native",
            settings.otlp_topic: settings.otlp_format,
            settings.zipkin_topic: "zipkin_json",
        }
        self._redactor = Redactor(settings.redact_keys, settings.redact_values) if settings.redact else None
        self._sampler = sampler_for(settings)
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        cache = getattr(store, "cache", None)
        self._cache = cache if isinstance(cache, TraceCache) else None
        """The store's copy of the traces this worker wrote (finalized from it without a read-back)."""
        self.finalizer = FinalizerProcess(settings) if separate_finalizer(settings, store) else None
        """Where the finalize rounds run, when not in this process (see :mod:`ingest.finalizer`)."""
        self._max_records = settings.batch_max
        self._due_soon: list[int] = []
        """Min-heap of when traces this worker wrote become due (µs): a batch's write time plus the grace
        window, the latest due time ``TraceStore.write_batch`` gives a trace whose root finished. Only a
        hint for when to wake (see :meth:`_next_round_in`): the store's due scan decides what is due."""

    @property
    def topics(self) -> list[str]:
        return list(self.formats)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then finish the batch in hand, commit, and leave the group."""
        s = self.settings
        try:
            if self.finalizer is not None:
                try:
                    await self.finalizer.start()  # ready before the first round (a round would start it)
                except FinalizerError as exc:
                    log.warning("%s; finalize rounds will retry", exc)
            if not await self._connect(stop):
                return
            async with serve_metrics(self.metrics, s.worker_metrics_bind) as self.metrics_port:
                await self._run_loops(stop)
        finally:
            try:
                await self._stop_clients()
            finally:
                if self.finalizer is not None:
                    await self.finalizer.stop()
            log.info("worker %s stopped", self.worker_id)

    async def _start_clients(self) -> None:
        s = self.settings
        self._dlq = AIOKafkaProducer(**s.kafka_options(), acks="all", linger_ms=5)
        self._consumer = AIOKafkaConsumer(
            **s.kafka_options(),
            group_id=s.group,
            client_id=self.worker_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=s.fetch_max_bytes,
            max_partition_fetch_bytes=min(s.fetch_max_bytes, 4 * 1024 * 1024),
            max_poll_interval_ms=300_000,
        )
        self._consumer.subscribe(self.topics, listener=_Rebalance(self))
        await self._dlq.start()
        await self._consumer.start()

    async def _stop_clients(self) -> None:
        """Stop the consumer (leaving the group: its partitions move at once), then the dead-letter
        producer; either may be half started. A failure to stop one is logged and the other still stops."""
        for client in (self._consumer, self._dlq):
            if client is not None:
                try:
                    await client.stop()
                except Exception:
                    log.warning("stopping %s failed", type(client).__name__, exc_info=True)
        self._consumer = self._dlq = None

    async def _run_loops(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._finalize_loop(stop), name="finalize"),
            asyncio.create_task(self._heartbeat_loop(stop), name="heartbeat"),
            asyncio.create_task(self._retention_loop(stop), name="retention"),
        ]
        try:
            await self._consume_loop(stop)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._heartbeat()

    async def _connect(self, stop: asyncio.Event) -> bool:
        """Create the topics and start the dead-letter producer and the consumer, retrying the whole while
        the broker is unreachable (a worker may start before it, or during a broker restart, also between
        the topics and the clients). False when ``stop`` was set first."""
        s = self.settings
        delay = 0.5
        while not stop.is_set():
            try:
                await ensure_topics(s, [*self.topics, *(t + s.dlq_suffix for t in self.topics)])
                await self._start_clients()
                return True
            except KafkaError as exc:
                await self._stop_clients()
                log.warning("kafka not reachable at %s (%s); retrying in %.1fs", s.kafka_bootstrap, exc, delay)
            except BaseException:
                await self._stop_clients()
                raise
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                delay = min(delay * 2, 10.0)
        return False

    # -- consuming ------------------------------------------------------------------------------------

    async def _consume_loop(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        retry_delay = 0.5
        while not stop.is_set():
            await self._catch_up()
            fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=500, max_records=self._max_records))
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if fetch not in done:
                fetch.cancel()
                break
            batches = fetch.result()
            if not batches:
                continue
            try:
                await self.process(batches)
                self._size_next_fetch(batches)
                retry_delay = 0.5
            except Exception as exc:  # the store or the broker failed mid-batch: nothing was committed
                # Rewind to the batch's first offsets so it is fetched and written again (idempotently).
                log.warning("batch failed (%s: %s); retrying it in %.1fs", type(exc).__name__, exc, retry_delay)
                assigned = consumer.assignment()
                for tp, messages in batches.items():
                    if tp in assigned:
                        consumer.seek(tp, messages[0].offset)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=retry_delay)
                except TimeoutError:
                    retry_delay = min(retry_delay * 2, 10.0)

    async def _catch_up(self) -> None:
        """Keep what was written but not yet finalized within the cache, so that finalization reads no
        chunk back: with a backlog (a worker catching up after downtime, or a pre-filled topic), the
        fetches would otherwise run ahead of the finalizer and evict the traces it is about to finalize.
        So a fetch takes at most a quarter of the cache's budget (estimated from the last batch's message
        sizes), and the traces due are finalized before the next fetch (one indexed scan when none is).
        A finalizer process reads its traces back, so the fetches need not wait for it."""
        if self._cache is not None and self.finalizer is None and self.shards:
            await self._finalize_or_log()

    def _size_next_fetch(self, batches: dict[TopicPartition, Sequence[object]]) -> None:
        cache = self._cache
        if cache is None:
            return
        sample = [m for ms in batches.values() for m in ms[:16]]  # a sample: summing every size costs ~1%
        value_bytes = sum(len(getattr(m, "value", None) or b"") for m in sample)
        per_message = max(1.0, PYTHON_BYTES_PER_ENCODED_BYTE * value_bytes / max(1, len(sample)))
        self._max_records = max(100, min(self.settings.batch_max, int(cache.max_bytes / 4 / per_message)))

    async def process(self, batches: dict[TopicPartition, Sequence[object]]) -> None:
        """Decode, dead-letter, write and commit one fetched batch."""
        assert self._consumer is not None
        started = time.perf_counter()
        offsets: dict[TopicPartition, int] = {}
        dead: list[Coroutine[Any, Any, asyncio.Future[object]]] = []
        changed = late = 0
        spans: list[Span] = []
        finishes: list[SpanFinish] = []
        shards: dict[str, str] = {}
        for tp, messages in batches.items():
            shard = shard_of(tp)
            partitions = len(self._consumer.partitions_for_topic(tp.topic) or ()) or 1
            keys = {getattr(m, "key", None) for m in messages}
            for event in self._decoded(tp, messages, dead):
                (spans if isinstance(event, Span) else finishes).append(event)  # type: ignore[arg-type]
                trace_id = event.trace_id
                if trace_id not in shards:
                    # keyed by its id: owned by the partition its spans arrive on; else the one it hashes to
                    keyed = trace_id.encode() in keys
                    shards[trace_id] = shard if keyed else owner_shard(tp.topic, partitions, trace_id)
            offsets[tp] = messages[-1].offset + 1  # type: ignore[attr-defined]
        sent = [await send for send in dead]  # queued to the dead-letter producer
        if self._redactor is not None:
            spans = self._redactor.events(spans)
            finishes = self._redactor.events(finishes)
        if spans or finishes:
            # One transaction for the whole fetch: spans upserted and their traces touched together.
            written_us = now_us()
            result = await self.store.write_batch(
                spans,
                finishes,
                shards=shards,
                now_us=written_us,
                grace_us=self.settings.grace_us,
                idle_us=self.settings.idle_timeout_us,
            )
            changed, late = result.spans_changed, result.late_spans
            if changed:  # a root finished in it is due one grace window after the write, at the latest
                heapq.heappush(self._due_soon, written_us + self.settings.grace_us)
        spans_n, finishes_n = len(spans), len(finishes)
        if sent:
            await asyncio.gather(*sent)  # dead letters are durable before their offsets are committed
        # A rebalance may have taken partitions away while the batch was being written: their new owner
        # re-reads those messages, and the idempotent upserts make that harmless. Commit the rest.
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        try:
            if offsets:
                await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit failed after a rebalance, messages will be re-read: %s", exc)
        except KafkaError as exc:  # e.g. the coordinator moved during a broker restart
            log.warning("commit failed (%s); the next batch's commit covers these offsets", exc)
        m = self.metrics
        for tp, messages in batches.items():
            m.messages.inc(len(messages), tp.topic)
        m.batch_seconds.observe(time.perf_counter() - started)
        c = self.counters
        c.batches += 1
        c.spans += spans_n
        c.finishes += finishes_n
        c.spans_changed += changed
        c.late_spans += late
        log.debug(
            "batch partitions=%d spans=%d finishes=%d changed=%d late=%d dead=%d ms=%.1f",
            len(batches),
            spans_n,
            finishes_n,
            changed,
            late,
            len(sent),
            (time.perf_counter() - started) * 1000,
        )

    def _decoded(
        self, tp: TopicPartition, messages: Sequence[object], dead: list[Coroutine[Any, Any, asyncio.Future[object]]]
    ) -> list[Event]:
        """The events of every good message of one partition's fetch, in order; a poison message is queued
        for the dead-letter topic instead. Native messages are decoded together in one msgspec call when
        every one of them is good (the common case), else one by one."""
        fmt = self.formats[tp.topic]
        if fmt == "native" and len(messages) > 1:
            values = [getattr(m, "value", None) or b"" for m in messages]
            if _all_native(messages):
                together = decode_native_many(values)
                if together is not None:
                    return together
        events: list[Event] = []
        for message in messages:
            value: bytes | None = getattr(message, "value", None)
            try:
                if value is None:
                    raise DecodeError("empty message")
                events.extend(decoder_for(format_of(self._content_type(message), fmt, value))(value))
            except DecodeError as exc:
                dead.append(self._dead_letter(tp, message, str(exc)))
        return events

    @staticmethod
    def _content_type(message: object) -> str | None:
        content_type = _content_type_header(message)
        return None if content_type is None else content_type.decode("latin-1")

    async def _dead_letter(self, tp: TopicPartition, message: object, reason: str) -> asyncio.Future[object]:
        assert self._dlq is not None
        self.counters.dead_lettered += 1
        headers = list(getattr(message, "headers", ()) or ())
        offset = getattr(message, "offset", -1)
        headers += [
            ("error", reason.encode()[:4096]),
            ("source-topic", tp.topic.encode()),
            ("source-partition", str(tp.partition).encode()),
            ("source-offset", str(offset).encode()),
        ]
        log.warning("dead-lettered %s offset %s: %s", shard_of(tp), offset, reason)
        future: asyncio.Future[object] = await self._dlq.send(
            tp.topic + self.settings.dlq_suffix,
            getattr(message, "value", None) or b"",
            key=getattr(message, "key", None),
            headers=headers,
        )
        return future

    # -- finalizing -----------------------------------------------------------------------------------

    async def finalize_due(self) -> int:
        """Finalize every trace of this worker's partitions that is due now, in rounds of up to
        ``finalize_batch`` (in the finalizer process when there is one); returns how many. Each round's
        traces are counted as it ends, so those of rounds before a failed one count too."""
        before = self.counters.traces_finalized
        async with self.finalizing:
            if self.finalizer is not None:
                await self._finalize_in_child(self.finalizer)
            else:
                await self._finalize_here()
        return self.counters.traces_finalized - before

    async def _finalize_in_child(self, finalizer: FinalizerProcess) -> None:
        if not self.shards:
            return
        errors: list[str] = []

        def counted(done: RoundDone, seconds: float) -> None:
            self.metrics.spans.add(done.span_sums)
            self.counters.traces_finalized += done.finalized
            if done.due:
                self.metrics.finalize_seconds.observe(seconds)
            if done.error is not None:
                errors.append(done.error)

        await finalizer.rounds(lambda: sorted(self.shards), self.settings.finalize_batch, counted)
        if errors:  # after counting what the rounds did finalize
            raise FinalizerError(errors[0])

    async def _finalize_here(self) -> None:
        limit = self.settings.finalize_batch
        while self.shards:
            started = time.perf_counter()
            due_ids = await self.store.due_traces(set(self.shards), now_us(), limit)
            analyses = await self.store.finalize(
                due_ids, now_us=now_us(), sampler=self._sampler, on_first=self.metrics.spans.observe
            )
            self.counters.traces_finalized += len(analyses)
            if due_ids:
                self.metrics.finalize_seconds.observe(time.perf_counter() - started)
            if len(due_ids) < limit:
                return

    async def _finalize_or_log(self) -> None:
        try:
            await self.finalize_due()
        except Exception:  # the store may be briefly unavailable; the work stays due in the store
            log.exception("finalize failed; will retry")

    async def _finalize_loop(self, stop: asyncio.Event) -> None:
        interval = min(0.25, max(0.02, self.settings.grace_ms / 4000))
        while not stop.is_set():
            started_us = now_us()
            await self._finalize_or_log()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._next_round_in(started_us, interval))
            except TimeoutError:
                pass

    def _next_round_in(self, covered_us: int, interval: float) -> float:
        """Seconds until the next finalize round: when the next trace this worker wrote becomes due (so a
        trace is finalized as its grace window ends, not up to a tick later), at most ``interval`` (traces
        due by idle timeout, or written by other workers), and not before :data:`ROUND_SPACING_S` after
        the last round started. ``covered_us``: when the last round started; it finalized everything due
        by then."""
        due = self._due_soon
        while due and due[0] <= covered_us:
            heapq.heappop(due)
        if not due:
            return interval
        now = now_us()
        # rounds at most every ROUND_SPACING_S: at 10k spans/s a batch is written every few ms, and a round
        # per batch would spend the worker on round trips and commits
        soonest = (covered_us - now) / 1e6 + ROUND_SPACING_S
        return min(interval, max(0.0, soonest, (due[0] - now) / 1e6 + 0.001))

    async def purge_expired(self) -> int:
        """Delete traces older than the retention window (rollups corrected by the store). Runs under
        :attr:`finalizing`, like a finalize round: a store whose rollup rows have one writer per shard
        corrects them in the purge too, so a revoked worker must not be purging while the next owner
        starts."""
        before = now_us() - int(self.settings.retention_h * 3_600_000_000)
        async with self.finalizing:
            purged = await self.store.purge(before, shards=set(self.shards))
        if purged:
            log.info("retention: purged %d traces that started before %d", purged, before)
        return purged

    async def _retention_loop(self, stop: asyncio.Event) -> None:
        # every worker purges (idempotent; cheap when there is nothing to do), staggered by a random start
        delay = random.uniform(1.0, self.settings.retention_check_s)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                return
            except TimeoutError:
                pass
            try:
                await self.purge_expired()
            except Exception:
                log.exception("retention purge failed; will retry")
            delay = self.settings.retention_check_s

    # -- health ---------------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        consumer = self._consumer
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
        self.metrics.lag.values.clear()
        for shard, behind in lag.items():
            self.metrics.lag.set(behind, shard)
        c = self.counters
        await self.store.record_heartbeat(
            Heartbeat(
                worker_id=self.worker_id,
                partitions=sorted(self.shards),
                lag=lag,
                spans_per_second=round(c.spans_per_second(), 1),
                spans_total=c.spans + c.finishes,
                late_spans=c.late_spans,
                dead_lettered=c.dead_lettered,
                traces_finalized=c.traces_finalized,
                updated_at_us=now_us(),
            )
        )

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._heartbeat()
            except Exception:
                log.exception("heartbeat failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.heartbeat_s)
            except TimeoutError:
                pass
