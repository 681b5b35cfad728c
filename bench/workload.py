"""The spans every part measures, deterministic for a seed, and how they are published.

Two workloads, each generated while it is published (a run of millions of spans never holds them all):

- **batched** (:func:`demo_traces`): the demo traces of ``shared.demo`` (about 13 spans each), one message
  per trace: a native JSON array keyed by trace id (the producer batching the design recommends), or the
  same spans as a Zipkin v2 JSON list (no key, as Zipkin's Kafka reporters write it) or as one OTLP
  protobuf ``ExportTraceServiceRequest`` (no key, as the OpenTelemetry Collector's Kafka exporter writes it).
- **one span per message** (:func:`sized_traces` + :func:`in_finish_order`): demo traces of exactly
  :data:`TRACE_SIZE` spans, each span its own native JSON object keyed by trace id, published in the order
  the spans end across all traces in flight (children before their parents; the root last, but for the
  async spans that outlive it): the shape the seed's HTTP writes produce, where each span is posted when it
  finishes.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from shared.codecs.native import encode_native
from shared.demo import make_trace
from shared.kafka import CONTENT_TYPE_HEADER, ensure_topics
from shared.models import SPAN_CONTENT_TYPE, Span, TagValue
from shared.settings import Settings

WireFormat = Literal["native", "native-span", "zipkin", "otlp"]
"""``native``: one native JSON array per trace (batched); ``native-span``: one native JSON object per span
(:data:`TRACE_SIZE`-span traces, in finish order); ``zipkin``: one Zipkin v2 JSON list per trace;
``otlp``: one OTLP protobuf ``ExportTraceServiceRequest`` per trace."""

NATIVE_HEADERS: Final = [(CONTENT_TYPE_HEADER, SPAN_CONTENT_TYPE.encode())]
ZIPKIN_KINDS: Final = {"server": "SERVER", "client": "CLIENT", "producer": "PRODUCER", "consumer": "CONSUMER"}
OTLP_KINDS: Final = {
    "internal": OtlpSpan.SPAN_KIND_INTERNAL,
    "server": OtlpSpan.SPAN_KIND_SERVER,
    "client": OtlpSpan.SPAN_KIND_CLIENT,
    "producer": OtlpSpan.SPAN_KIND_PRODUCER,
    "consumer": OtlpSpan.SPAN_KIND_CONSUMER,
}
OTLP_SCOPE: Final = InstrumentationScope(name="shared.demo")
SEED: Final = 5
TRACE_SIZE: Final = 10
"""Spans per trace of the one-span-per-message workload."""


def demo_traces(spans_wanted: int, *, seed: int = SEED, start_us: int | None = None) -> Iterator[list[Span]]:
    """Demo traces, one millisecond apart, until at least ``spans_wanted`` spans (the same ones for a seed,
    whatever ``start_us``)."""
    rng = random.Random(seed)
    start = time.time_ns() // 1000 if start_us is None else start_us
    spans = n = 0
    while spans < spans_wanted:
        trace = make_trace(rng, start + n * 1000)
        n += 1
        spans += len(trace)
        yield trace


def sized_traces(
    spans_wanted: int, *, size: int = TRACE_SIZE, seed: int = SEED, start_us: int | None = None
) -> Iterator[list[Span]]:
    """Demo traces of exactly ``size`` spans each (``size`` >= 3), one millisecond apart, until at least
    ``spans_wanted`` spans: ``make_trace`` capped at ``size`` spans, the smaller traces it makes skipped
    (more than half at 10: the demo's calls come in client and server pairs). The same traces for a seed,
    whatever ``start_us``."""
    if size < 3:
        raise ValueError(f"size must be >= 3 (the smallest demo trace), not {size}")
    rng = random.Random(seed)
    start = time.time_ns() // 1000 if start_us is None else start_us
    spans = n = 0
    while spans < spans_wanted:
        trace = make_trace(rng, start + n * 1000, max_spans=size)
        if len(trace) != size:
            continue
        n += 1
        spans += size
        yield trace


def in_finish_order(traces: Iterable[Sequence[Span]]) -> Iterator[Span]:
    """The spans of ``traces`` (given in start order, every span complete) in the order they end, across
    traces: what a producer posting each span when it finishes sends. Ties go to the earlier trace, and
    within a trace to the later span of its list, so a child that ends with its parent comes first and a
    trace's root (first in its list, ending last) comes last.

    Streams: a span is yielded once no later trace can end a span before it (a trace's spans end no
    earlier than it starts), so only the traces in flight are held."""
    heap: list[tuple[int, int, int, Span]] = []
    for n, trace in enumerate(traces):
        start = min(s.start_time_us for s in trace)
        while heap and heap[0][0] < start:
            yield heapq.heappop(heap)[3]
        for i, span in enumerate(trace):
            if span.duration_us is None:
                raise ValueError(f"span {span.span_id} is open: only complete spans have an end")
            heapq.heappush(heap, (span.start_time_us + span.duration_us, n, -i, span))
    while heap:
        yield heapq.heappop(heap)[3]


# -- wire formats ------------------------------------------------------------------------------------------


def native_message(trace: Sequence[Span]) -> bytes:
    return encode_native(trace)


def zipkin_span(span: Span) -> dict[str, Any]:
    """One span as Zipkin v2 JSON (tags are strings in Zipkin; an error span carries the ``error`` tag)."""
    out: dict[str, Any] = {
        "traceId": span.trace_id,
        "id": span.span_id,
        "name": span.operation_name,
        "timestamp": span.start_time_us,
        "localEndpoint": {"serviceName": span.service_name},
    }
    if span.parent_span_id is not None:
        out["parentId"] = span.parent_span_id
    if span.duration_us:
        out["duration"] = span.duration_us
    if span.kind in ZIPKIN_KINDS:
        out["kind"] = ZIPKIN_KINDS[span.kind]
    tags = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in span.tags.items()}
    if span.status == "error":
        tags["error"] = "true"
    if tags:
        out["tags"] = tags
    return out


def zipkin_message(trace: Sequence[Span]) -> bytes:
    return msgspec.json.encode([zipkin_span(s) for s in trace])


def _otlp_value(value: TagValue) -> AnyValue:
    if isinstance(value, bool):  # before int: bool is an int in Python
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def _otlp_attributes(tags: Iterable[tuple[str, TagValue]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_otlp_value(v)) for k, v in tags]


def otlp_span(span: Span) -> OtlpSpan:
    """One complete span as an OTLP span: hex ids as bytes (the demo's ids are W3C-sized hex), times in
    nanoseconds, tags as typed attributes, logs as events (field ``event`` as the name), status ERROR for
    an error span and UNSET otherwise (the SDK's default)."""
    end_us = span.start_time_us + (span.duration_us or 0)
    return OtlpSpan(
        trace_id=bytes.fromhex(span.trace_id),
        span_id=bytes.fromhex(span.span_id),
        parent_span_id=bytes.fromhex(span.parent_span_id) if span.parent_span_id else b"",
        name=span.operation_name,
        kind=OTLP_KINDS.get(span.kind or "", OtlpSpan.SPAN_KIND_UNSPECIFIED),
        start_time_unix_nano=span.start_time_us * 1000,
        end_time_unix_nano=end_us * 1000,
        attributes=_otlp_attributes(span.tags.items()),
        events=[
            OtlpSpan.Event(
                time_unix_nano=log.timestamp_us * 1000,
                name=str(log.fields.get("event", "log")),
                attributes=_otlp_attributes((k, v) for k, v in log.fields.items() if k != "event"),
            )
            for log in span.logs
        ],
        status=Status(code=Status.STATUS_CODE_ERROR if span.status == "error" else Status.STATUS_CODE_UNSET),
    )


def otlp_message(trace: Sequence[Span]) -> bytes:
    """One trace as an OTLP protobuf ``ExportTraceServiceRequest``: one ``ResourceSpans`` per service
    (resource attribute ``service.name``, in order of first appearance), each with one scope."""
    by_service: dict[str, list[OtlpSpan]] = {}
    for span in trace:
        by_service.setdefault(span.service_name, []).append(otlp_span(span))
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=_otlp_attributes([("service.name", service)])),
                scope_spans=[ScopeSpans(scope=OTLP_SCOPE, spans=spans)],
            )
            for service, spans in by_service.items()
        ]
    )
    return request.SerializeToString()


class Message(NamedTuple):
    """One Kafka message of a workload."""

    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]
    spans: int
    traces: int  # traces this message completes (its root span is in it): 1 per batched message


def messages(spans_wanted: int, wire: WireFormat, *, seed: int = SEED) -> Iterator[Message]:
    """The messages of a workload until at least ``spans_wanted`` spans (see :data:`WireFormat`)."""
    if wire == "native-span":
        for span in in_finish_order(sized_traces(spans_wanted, seed=seed)):
            yield Message(encode_native(span), span.trace_id.encode(), NATIVE_HEADERS, 1, int(span.is_root))
        return
    for trace in demo_traces(spans_wanted, seed=seed):
        if wire == "native":
            yield Message(native_message(trace), trace[0].trace_id.encode(), NATIVE_HEADERS, len(trace), 1)
        elif wire == "zipkin":
            yield Message(zipkin_message(trace), None, [], len(trace), 1)
        else:
            yield Message(otlp_message(trace), None, [], len(trace), 1)


@dataclass
class Filled:
    spans: int = 0
    messages: int = 0
    traces: int = 0
    value_bytes: int = 0  # of the message values
    seconds: float = 0.0
    sample: list[bytes] = field(default_factory=list)  # the first message values, for in-process work


def _append(batch: BatchBuilder, message: Message) -> bool:
    """Whether ``message`` fit into ``batch`` (it is full otherwise)."""
    return batch.append(timestamp=None, key=message.key, value=message.value, headers=message.headers) is not None


async def fill(
    settings: Settings,
    topic: str,
    spans_wanted: int,
    wire: WireFormat,
    *,
    seed: int = SEED,
    keep: int = 0,
) -> Filled:
    """Publish a workload to ``topic`` (created with ``settings.partitions`` partitions) and wait for every
    acknowledgement. ``keep``: how many message values to return as a sample.

    A bulk load, not a producer under test: the messages go into record batches built here (up to 1 MiB
    per partition, acks from all replicas), which is several times faster than one ``send`` per message
    for a topic of 200k single spans. A keyed message goes to the partition Kafka's default partitioner
    gives its key (murmur2, as :class:`~shared.kafka.SpanProducer`'s client does), so the topic is the one
    a producer would have written; an unkeyed one goes round-robin."""
    await ensure_topics(settings, [topic])
    result = Filled()
    started = time.perf_counter()
    producer = AIOKafkaProducer(
        **settings.kafka_options(), acks="all", max_batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        batches: dict[int, BatchBuilder] = {}
        sent: list[asyncio.Future[object]] = []
        for message in messages(spans_wanted, wire, seed=seed):
            if message.key is None:
                partition = partitions[result.messages % len(partitions)]
            else:
                partition = DefaultPartitioner()(message.key, partitions, partitions)
            batch = batches.get(partition)
            if batch is None or not _append(batch, message):
                if batch is not None:
                    sent.append(await producer.send_batch(batch, topic, partition=partition))
                batches[partition] = batch = producer.create_batch()
                if not _append(batch, message):
                    raise ValueError(f"a message of {len(message.value):,} bytes does not fit a record batch")
            result.spans += message.spans
            result.traces += message.traces
            result.messages += 1
            result.value_bytes += len(message.value)
            if len(result.sample) < keep:
                result.sample.append(message.value)
        for partition, batch in batches.items():
            sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    result.seconds = time.perf_counter() - started
    return result
