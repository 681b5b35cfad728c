"""The write endpoints publish exactly the native events the design specifies, on the real broker."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from shared.codecs.native import decode_native
from shared.models import SPAN_CONTENT_TYPE, Event, Span, SpanFinish
from shared.settings import Settings

from .support import T0_US, LiveApi, span

pytestmark = pytest.mark.kafka

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Message:
    key: bytes | None
    headers: dict[str, bytes]
    raw: Any
    """The value as plain JSON (to see exactly which fields were sent)."""
    events: list[Event]
    """The value decoded by the ingest workers' codec (validates it)."""


class TopicReader:
    """Reads the messages the API published to ``settings.topic``, in order per partition."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._buffer: list[Message] = []

    async def take(self, count: int, timeout_s: float = 15.0) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while len(self._buffer) < count and time.monotonic() < deadline:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self._buffer.append(
                        Message(
                            key=record.key,
                            headers=dict(record.headers),
                            raw=json.loads(record.value),
                            events=decode_native(record.value),
                        )
                    )
        assert len(self._buffer) >= count, f"only {len(self._buffer)} of {count} messages arrived"
        taken, self._buffer = self._buffer[:count], self._buffer[count:]
        return taken

    async def one(self) -> Message:
        (message,) = await self.take(1)
        assert message.headers["content-type"] == SPAN_CONTENT_TYPE.encode()
        assert len(message.events) == 1
        assert message.key == message.events[0].trace_id.encode()
        return message


@pytest.fixture
async def topic(api: LiveApi, settings: Settings) -> AsyncIterator[TopicReader]:
    """A reader of the API's topic (created by the app at startup), from the earliest offset."""
    consumer = AIOKafkaConsumer(
        settings.topic, **settings.kafka_options(), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        yield TopicReader(consumer)
    finally:
        await consumer.stop()


async def test_start_publishes_an_open_root_span(api: LiveApi, topic: TopicReader) -> None:
    before = now_us()
    reply = await api.post("/traces/start", {"serviceName": "api-gateway", "operationName": "handleUserRequest"})
    after = now_us()
    assert reply.status == 201
    ids = reply.json
    assert set(ids) == {"traceId", "spanId"}
    assert HEX32.fullmatch(ids["traceId"]) and HEX16.fullmatch(ids["spanId"])

    message = await topic.one()
    assert message.key == ids["traceId"].encode()
    start = message.raw["startTimeUs"]
    assert before <= start <= after
    assert message.raw == {  # no durationUs: the span is open; defaults are left out
        "type": "span",
        "traceId": ids["traceId"],
        "spanId": ids["spanId"],
        "serviceName": "api-gateway",
        "operationName": "handleUserRequest",
        "startTimeUs": start,
    }


async def test_start_with_every_field(api: LiveApi, topic: TopicReader) -> None:
    body = {
        "serviceName": "api-gateway",
        "operationName": "processOrder",
        "traceId": "trace-abc-123",
        "parentSpanId": "span-upstream",
        "tags": {"http.method": "GET", "http.status_code": 200, "cache.hit": True, "ratio": 0.25},
        "startTime": 1732500000000.5,
        "kind": "server",
    }
    reply = await api.post("/traces/start", body)
    assert reply.status == 201
    span_id = reply.json["spanId"]
    assert reply.json == {"traceId": "trace-abc-123", "spanId": span_id}
    assert (await topic.one()).events == [
        Span(
            trace_id="trace-abc-123",
            span_id=span_id,
            parent_span_id="span-upstream",
            service_name="api-gateway",
            operation_name="processOrder",
            start_time_us=1_732_500_000_000_500,
            kind="server",
            tags={"http.method": "GET", "http.status_code": 200, "cache.hit": True, "ratio": 0.25},
        )
    ]


async def test_start_continues_a_traceparent_header(api: LiveApi, topic: TopicReader) -> None:
    start = {"serviceName": "checkout", "operationName": "pay"}
    reply = await api.post("/traces/start", start, headers={"traceparent": TRACEPARENT})
    assert reply.status == 201
    assert reply.json["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    event = (await topic.one()).events[0]
    assert isinstance(event, Span)
    assert (event.trace_id, event.parent_span_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    # Senders must use lowercase; like shared.propagation, the API accepts uppercase and lowercases it.
    reply = await api.post("/traces/start", start, headers={"traceparent": f" {TRACEPARENT.upper()} "})
    assert reply.json["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    await topic.one()


async def test_start_prefers_the_body_over_the_header(api: LiveApi, topic: TopicReader) -> None:
    start = {"serviceName": "checkout", "operationName": "pay"}
    body_context = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    await api.post("/traces/start", {**start, "traceparent": body_context}, headers={"traceparent": TRACEPARENT})
    await api.post("/traces/start", {**start, "traceId": "explicit"}, headers={"traceparent": TRACEPARENT})
    first, second = [m.events[0] for m in await topic.take(2)]
    assert isinstance(first, Span) and isinstance(second, Span)
    assert (first.trace_id, first.parent_span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert (second.trace_id, second.parent_span_id) == ("explicit", None)


async def test_a_future_traceparent_version_is_read_and_an_invalid_header_ignored(
    api: LiveApi, topic: TopicReader
) -> None:
    start = {"serviceName": "checkout", "operationName": "pay"}
    future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
    assert (await api.post("/traces/start", start, headers={"traceparent": future})).status == 201
    for invalid in ("ff" + TRACEPARENT[2:], TRACEPARENT + "-extra", TRACEPARENT[:36] + "0" * 16 + "-01", "junk"):
        reply = await api.post("/traces/start", start, headers={"traceparent": invalid})
        assert reply.status == 201  # W3C: an invalid traceparent is ignored, a new trace starts
        assert reply.json["traceId"] != "4bf92f3577b34da6a3ce929d0e0e4736"
    events = [m.events[0] for m in await topic.take(5)]
    assert events[0].trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    for event in events[1:]:
        assert isinstance(event, Span)
        assert HEX32.fullmatch(event.trace_id) and event.parent_span_id is None


async def test_a_span_with_a_duration_is_taken_as_just_finished(api: LiveApi, topic: TopicReader) -> None:
    body = {
        "traceId": "trace-abc-123",
        "parentSpanId": "span-root-001",
        "serviceName": "user-service",
        "operationName": "getUserById",
        "tags": {"userId": "user-456", "cache": "miss"},
        "duration": 45,
        "status": "success",
    }
    before = now_us()
    reply = await api.post("/traces/span", body)
    after = now_us()
    assert reply.status == 201
    span_id = reply.json["spanId"]
    assert reply.json == {"spanId": span_id, "traceId": "trace-abc-123"}
    assert HEX16.fullmatch(span_id)
    message = await topic.one()
    start = message.raw["startTimeUs"]
    assert before - 45_000 <= start <= after - 45_000  # start = now - duration
    assert message.raw == {
        "type": "span",
        "traceId": "trace-abc-123",
        "spanId": span_id,
        "parentSpanId": "span-root-001",
        "serviceName": "user-service",
        "operationName": "getUserById",
        "startTimeUs": start,
        "durationUs": 45_000,
        "tags": {"userId": "user-456", "cache": "miss"},
    }


async def test_a_span_with_every_field(api: LiveApi, topic: TopicReader) -> None:
    body = {
        "traceId": "t-1",
        "spanId": "s-1",
        "parentSpanId": "p-1",
        "serviceName": "database",
        "operationName": "insertOrder",
        "tags": {"table": "orders"},
        "duration": 23.5,
        "startTime": 1732500000000,
        "status": "failed",
        "kind": "client",
        "logs": [{"timestamp": 1732500000010.25, "fields": {"event": "retry", "attempt": 2}}],
    }
    reply = await api.post("/traces/span", body)
    assert (reply.status, reply.json) == (201, {"spanId": "s-1", "traceId": "t-1"})
    assert (await topic.one()).raw == {
        "type": "span",
        "traceId": "t-1",
        "spanId": "s-1",
        "parentSpanId": "p-1",
        "serviceName": "database",
        "operationName": "insertOrder",
        "startTimeUs": 1_732_500_000_000_000,
        "durationUs": 23_500,
        "status": "error",  # "failed" is normalized
        "kind": "client",
        "tags": {"table": "orders"},
        "logs": [{"timestampUs": 1_732_500_000_010_250, "fields": {"event": "retry", "attempt": 2}}],
    }


async def test_a_span_without_a_duration_is_open(api: LiveApi, topic: TopicReader) -> None:
    before = now_us()
    reply = await api.post(
        "/traces/span", {"traceId": "t-2", "serviceName": "queue", "operationName": "consume", "logs": [{}]}
    )
    after = now_us()
    assert reply.status == 201
    raw = (await topic.one()).raw
    assert "durationUs" not in raw
    assert before <= raw["startTimeUs"] <= after
    assert raw["logs"] == [{"timestampUs": raw["startTimeUs"], "fields": {}}]  # log time defaults to now


async def test_finish_resolves_the_trace_of_a_span_this_process_started(api: LiveApi, topic: TopicReader) -> None:
    started = (await api.post("/traces/start", {"serviceName": "api-gateway", "operationName": "processOrder"})).json
    before = now_us()
    reply = await api.post("/traces/span/finish", {"spanId": started["spanId"], "status": "success"})
    after = now_us()
    assert reply.status == 201
    assert reply.json == {"spanId": started["spanId"], "traceId": started["traceId"], "status": "success"}
    _, finish = await topic.take(2)
    assert finish.key == started["traceId"].encode()
    end = finish.raw["endTimeUs"]
    assert before <= end <= after
    assert finish.raw == {
        "type": "finish",
        "traceId": started["traceId"],
        "spanId": started["spanId"],
        "endTimeUs": end,
        "status": "success",
    }


async def test_finish_resolves_the_trace_from_the_store(api: LiveApi, topic: TopicReader) -> None:
    await api.ingest([span("stored-trace", "stored-span", None, "batch", "run", 0, None)], now_us=T0_US)
    body = {"spanId": "stored-span", "status": "failure", "tags": {"rows": 12}, "endTime": T0_US / 1000 + 250}
    reply = await api.post("/traces/span/finish", body)
    assert reply.status == 201
    assert reply.json == {"spanId": "stored-span", "traceId": "stored-trace", "status": "error"}
    assert (await topic.one()).events == [
        SpanFinish(
            trace_id="stored-trace",
            span_id="stored-span",
            end_time_us=T0_US + 250_000,
            status="error",
            tags={"rows": 12},
        )
    ]


async def test_finish_with_a_trace_id_and_without_status(api: LiveApi, topic: TopicReader) -> None:
    reply = await api.post("/traces/span/finish", {"spanId": "s-9", "traceId": "t-9"})
    assert (reply.status, reply.json) == (201, {"spanId": "s-9", "traceId": "t-9", "status": None})
    raw = (await topic.one()).raw
    assert "status" not in raw  # the span keeps its own status
    assert (raw["traceId"], raw["spanId"]) == ("t-9", "s-9")


async def test_finish_of_an_unknown_span_is_404_and_publishes_nothing(api: LiveApi, topic: TopicReader) -> None:
    reply = await api.post("/traces/span/finish", {"spanId": "never-seen", "status": "success"})
    assert (reply.status, reply.json) == (404, {"error": "span never-seen not found"})
    marker = await api.post("/traces/span", {"traceId": "marker", "serviceName": "m", "operationName": "m"})
    assert marker.status == 201
    message = await topic.one()  # the next message on the topic is the marker: nothing came before it
    assert message.key == b"marker"


async def test_concurrent_writes_are_each_delivered(api: LiveApi, topic: TopicReader) -> None:
    async def post(i: int) -> str:
        body = {"traceId": f"trace-{i % 7}", "serviceName": "load", "operationName": f"op-{i}", "duration": i}
        reply = await api.post("/traces/span", body)
        assert reply.status == 201
        span_id: str = reply.json["spanId"]
        return span_id

    span_ids = await asyncio.gather(*(post(i) for i in range(60)))
    messages = await topic.take(60)
    assert sorted(m.events[0].span_id for m in messages) == sorted(span_ids)
