"""Kafka plumbing both sides use: topic creation and the span producer client."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.codecs.native import encode_native
from shared.kafka_access import check_access, raise_topic_errors
from shared.models import SPAN_CONTENT_TYPE, Event
from shared.settings import Settings

CONTENT_TYPE_HEADER = "content-type"


async def ensure_topics(settings: Settings, topics: Iterable[str], *, partitions: int | None = None) -> None:
    """Create the missing ``topics`` with ``TRACING_PARTITIONS`` partitions (existing ones are left alone)
    and return once every partition's leader takes requests.

    Never left to broker auto-creation, which would make one partition (so one useful worker). A broker
    that refuses this client (authentication, certificates, ACLs) is a
    :class:`~shared.kafka_access.KafkaAccessError`.
    """
    await check_access(settings)
    wanted = list(dict.fromkeys(topics))
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await admin.start()
    try:
        await _create_missing(admin, settings, wanted, partitions or settings.partitions)
        described = await admin.describe_topics(wanted)
    finally:
        await admin.close()
    await _wait_for_leaders(
        settings,
        [TopicPartition(t["topic"], p["partition"]) for t in described if not t["error_code"] for p in t["partitions"]],
    )


async def _create_missing(admin: AIOKafkaAdminClient, settings: Settings, topics: list[str], partitions: int) -> None:
    existing = set(await admin.list_topics())
    missing = [t for t in topics if t not in existing]
    if not missing:
        return
    new = [NewTopic(t, num_partitions=partitions, replication_factor=settings.replication_factor) for t in missing]
    try:
        response = await admin.create_topics(new)
    except TopicAlreadyExistsError:
        pass  # another worker created it first
    else:
        raise_topic_errors(settings, response.topic_errors)
    # Metadata propagates asynchronously; wait until every new topic is listed.
    for _ in range(100):
        if set(missing) <= set(await admin.list_topics()):
            return
        await asyncio.sleep(0.05)


async def _wait_for_leaders(settings: Settings, partitions: list[TopicPartition]) -> None:
    """Return once the leader of each partition answers for it. The broker lists a new topic's leaders a
    moment before they take requests: a producer sending at once had each partition refused
    (``NotLeaderForPartitionError``), retried and logged as a warning (two or three on a ``make run``).
    An offsets request is what waits here: aiokafka retries it quietly until every leader answers."""
    if not partitions:
        return
    consumer = AIOKafkaConsumer(**settings.kafka_options(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


class SpanProducer:
    """Publishes native events, keyed by trace id so every span of a trace lands on one partition.

    ``send`` groups the events of each trace into one message (a JSON array), the cheapest way to go fast.
    Call ``flush`` to wait for delivery and ``close`` when done (or use ``async with``).
    """

    def __init__(self, settings: Settings, *, topic: str | None = None, linger_ms: int = 5) -> None:
        self._topic = topic or settings.topic
        self._producer = AIOKafkaProducer(
            **settings.kafka_options(),
            linger_ms=linger_ms,
            max_batch_size=1024 * 1024,
            max_request_size=8 * 1024 * 1024,
            acks="all",
        )
        self._pending: list[asyncio.Future[object]] = []
        self._headers = [(CONTENT_TYPE_HEADER, SPAN_CONTENT_TYPE.encode())]

    @property
    def topic(self) -> str:
        return self._topic

    async def start(self) -> None:
        """Connect; a failed start leaves nothing open (the client is stopped again before it raises)."""
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()
            raise

    async def __aenter__(self) -> SpanProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, events: Sequence[Event]) -> list[asyncio.Future[object]]:
        """Queue ``events``: one message per trace id. Returns once queued, with the delivery futures of
        exactly these messages (await them, or :meth:`publish`, to know they are acknowledged)."""
        by_trace: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_trace[event.trace_id].append(event)
        futures = []
        for trace_id, batch in by_trace.items():
            value = encode_native(batch[0] if len(batch) == 1 else batch)
            futures.append(await self.send_raw(value, key=trace_id.encode()))
        return futures

    async def publish(self, events: Sequence[Event]) -> None:
        """Send ``events`` and wait until the broker acknowledged these messages (not anyone else's)."""
        futures = await self.send(events)
        if futures:
            await asyncio.gather(*futures)

    async def send_raw(
        self, value: bytes, *, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> asyncio.Future[object]:
        """Queue one message exactly as given (other formats, poison messages in tests); returns its
        delivery future."""
        future: asyncio.Future[object] = await self._producer.send(
            self._topic, value, key=key, headers=self._headers if headers is None else headers
        )
        self._pending.append(future)
        if len(self._pending) >= 10_000:
            await self.flush()
        return future

    async def flush(self) -> None:
        """Wait until every queued message is acknowledged by the broker; raises if one failed."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            await self._producer.stop()
