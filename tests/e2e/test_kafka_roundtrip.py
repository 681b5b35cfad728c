"""The producer client and a consumer group on the real broker: 10,000 events, commits survive restarts."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer

from shared.codecs.native import decode_native
from shared.kafka import SpanProducer, ensure_topics
from shared.models import Event, Span
from shared.settings import Settings

pytestmark = pytest.mark.kafka


def _events(n: int, traces: int) -> list[Event]:
    return [
        Span(
            trace_id=f"trace-{i % traces:05d}",
            span_id=f"span-{i:06d}",
            parent_span_id=None if i < traces else f"span-{i % traces:06d}",
            service_name=f"svc-{i % 7}",
            operation_name="op",
            start_time_us=1_700_000_000_000_000 + i,
            duration_us=i,
        )
        for i in range(n)
    ]


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        settings.topic,
        **settings.kafka_options(),
        group_id=settings.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def _drain(consumer: AIOKafkaConsumer, want: int, seen: dict[str, Event], deadline_s: float) -> int:
    """Read until ``want`` events arrived (or the deadline), committing after each batch; returns count."""
    count = 0
    deadline = time.monotonic() + deadline_s
    while count < want and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=500, max_records=1000)
        for messages in batches.values():
            for message in messages:
                assert message.key is not None
                for event in decode_native(message.value):
                    assert event.trace_id == message.key.decode(), "key must be the trace id"
                    seen[event.span_id] = event
                    count += 1
        if batches:
            await consumer.commit()
    return count


async def test_ten_thousand_events_through_a_group_with_commits_surviving_restart(settings: Settings) -> None:
    await ensure_topics(settings, [settings.topic])
    sent = _events(10_000, traces=500)
    first, second = sent[:6000], sent[6000:]
    async with SpanProducer(settings) as producer:
        await producer.send(first)
        await producer.flush()

    seen: dict[str, Event] = {}
    consumer = _consumer(settings)
    await consumer.start()
    try:
        assert await _drain(consumer, len(first), seen, deadline_s=60) == len(first)
    finally:
        await consumer.stop()

    async with SpanProducer(settings) as producer:
        await producer.send(second)

    # A new consumer in the same group resumes from the committed offsets: it sees only the new events.
    consumer = _consumer(settings)
    await consumer.start()
    try:
        got = await _drain(consumer, len(second), seen, deadline_s=60)
        assert got == len(second)
        # Nothing more arrives: the first 6,000 were not re-delivered.
        extra = await consumer.getmany(timeout_ms=1000)
        assert sum(len(m) for m in extra.values()) == 0
    finally:
        await consumer.stop()
    assert seen == {e.span_id: e for e in sent}


async def test_topics_are_created_with_the_configured_partition_count(settings: Settings) -> None:
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    await ensure_topics(settings, [settings.topic])  # idempotent
    consumer = AIOKafkaConsumer(**settings.kafka_options())
    await consumer.start()
    try:
        for topic in (settings.topic, settings.dlq_topic):
            for _ in range(50):
                partitions = consumer.partitions_for_topic(topic)
                if partitions:
                    break
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
            assert partitions == set(range(settings.partitions))
    finally:
        await consumer.stop()
