"""The spans every part measures, deterministic for a seed, and how they are published.

Three workloads, each generated while it is published (a run of millions of spans never holds them all):

- **batched** (:func:`demo_traces`): the demo traces of ``shared.demo`` (about 13 spans each), one message
  per trace: a native JSON array keyed by trace id (the producer batching the design recommends), or the
  same spans as a Zipkin v2 JSON list (no key, as Zipkin's Kafka reporters write it) or as one OTLP
  protobuf ``ExportTraceServiceRequest`` (no key, as the OpenTelemetry Collector's Kafka exporter writes it).
- **one span per message** (:func:`sized_traces` + :func:`in_finish_order`): demo traces of exactly
  :data:`TRACE_SIZE` spans, each span its own native JSON object keyed by trace id, published in the order
  the spans end across all traces in flight (children before their parents; the root last, but for the
  async spans that outlive it): the shape the seed's HTTP writes produce, where each span is posted when it
  finishes.
- **realistic** (:func:`realistic_trace`): the demo shapes carrying what production spans carry: ids in
  URLs, SQL with literal values, user and request ids, logs, stack traces (bench/soak.py).
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from shared.demo import SERVICES, make_trace
from shared.kafka import CONTENT_TYPE_HEADER, ensure_topics
from shared.models import SPAN_CONTENT_TYPE, Log, Span, TagValue
from shared.settings import Settings

WireFormat = Literal["native", "native-span", "zipkin", "otlp", "realistic"]
"""``native``: one native JSON array per trace (batched); ``native-span``: one native JSON object per span
(:data:`TRACE_SIZE`-span traces, in finish order); ``zipkin``: one Zipkin v2 JSON list per trace;
``otlp``: one OTLP protobuf ``ExportTraceServiceRequest`` per trace; ``realistic``: one native JSON array
per realistic trace (:func:`realistic_traces`)."""

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
    return _paced(make_trace, spans_wanted, seed, start_us)


def _paced(
    make: Callable[[random.Random, int], list[Span]], spans_wanted: int, seed: int, start_us: int | None
) -> Iterator[list[Span]]:
    """``make(rng, start)`` traces, one millisecond apart, until at least ``spans_wanted`` spans."""
    rng = random.Random(seed)
    start = time.time_ns() // 1000 if start_us is None else start_us
    spans = n = 0
    while spans < spans_wanted:
        trace = make(rng, start + n * 1000)
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


def traces_of(
    wire: WireFormat, spans_wanted: int, *, seed: int = SEED, start_us: int | None = None
) -> Iterator[list[Span]]:
    """The traces a workload's messages carry (see :data:`WireFormat`), in start order: the same ones
    for a seed, whatever ``start_us``."""
    if wire == "native-span":
        return sized_traces(spans_wanted, seed=seed, start_us=start_us)
    if wire == "realistic":
        return realistic_traces(spans_wanted, seed=seed, start_us=start_us)
    return demo_traces(spans_wanted, seed=seed, start_us=start_us)


def messages(spans_wanted: int, wire: WireFormat, *, seed: int = SEED) -> Iterator[Message]:
    """The messages of a workload until at least ``spans_wanted`` spans (see :data:`WireFormat`)."""
    if wire == "native-span":
        for span in in_finish_order(sized_traces(spans_wanted, seed=seed)):
            yield Message(encode_native(span), span.trace_id.encode(), NATIVE_HEADERS, 1, int(span.is_root))
        return
    for trace in traces_of(wire, spans_wanted, seed=seed):
        if wire in ("native", "realistic"):
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


# -- the realistic workload --------------------------------------------------------------------------------
#
# The demo traces' shapes (services calling each other, parallel and async calls, errors, slow queries)
# carrying what production spans carry: tag values of high cardinality (user and order ids, URLs and SQL
# statements with literal ids, request ids, pod names and addresses), logs on about a third of the spans
# (messages with ids in them, now and then an e-mail address for the redaction to catch) and a stack trace
# on every error. Most values are unique to their span, as in production, where the demo's are a few
# constants: what the store's chunks, tag index and the trace cache hold is sized by them.

USER_AGENTS: Final = (
    [
        f"Mozilla/5.0 ({os}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.{b}.{p} Safari/537.36"
        for os in ("Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10_15_7", "X11; Linux x86_64")
        for v, b, p in ((118, 5993, 88), (119, 6045, 105), (120, 6099, 71))
    ]
    + [f"okhttp/4.{m}.{p}" for m in (9, 10, 11, 12) for p in (0, 1, 2, 3)]
    + ["python-requests/2.31.0", "curl/8.4.0"]
)
ROUTES: Final = {
    "api-gateway": ["/api/v1/users/{id}", "/api/v1/orders/{id}", "/api/v1/catalog/items/{id}", "/api/v1/cart"],
    "user-service": ["/users/{id}", "/users/{id}/profile", "/users/{id}/addresses"],
    "order-service": ["/orders", "/orders/{id}", "/users/{id}/orders"],
    "inventory-service": ["/stock/{id}", "/reservations"],
    "payment-service": ["/charges", "/charges/{id}/refund"],
}
SQL: Final = [
    "SELECT id, email, display_name, created_at FROM users WHERE id = {user}",
    "SELECT o.id, o.total_cents, o.status FROM orders o WHERE o.user_id = {user} ORDER BY o.created_at DESC "
    "LIMIT {limit}",
    "INSERT INTO orders (user_id, total_cents, currency, status) VALUES ({user}, {cents}, 'EUR', 'pending') "
    "RETURNING id",
    "UPDATE inventory SET reserved = reserved + {qty} WHERE sku = 'SKU-{sku}' AND available >= {qty}",
    "SELECT sku, available, reserved FROM inventory WHERE sku IN ({skus})",
    "UPDATE orders SET status = 'paid', paid_at = now() WHERE id = {order}",
    "SELECT p.id, p.amount_cents FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.id = {order}",
    "DELETE FROM carts WHERE user_id = {user} AND updated_at < now() - interval '{days} days'",
]
LOG_LINES: Final = [
    "loaded {rows} rows for user {user} in {ms} ms",
    "cache miss for key user:{user}:profile",
    "retrying request to payments.internal:8443 (attempt {attempt} of 3)",
    "order {order} moved to state {state}",
    "sending receipt for order {order} to {email}",
    "slow response from upstream: {ms} ms (budget 250 ms)",
]
FIRST_NAMES: Final = ["anna", "ben", "chloe", "david", "emma", "felix", "grace", "hugo", "ines", "jonas"]
PODS: Final = 12
RESOURCES: Final[dict[str, list[dict[str, TagValue]]]] = {
    service: [
        {
            "host.name": f"{service}-7f9c6d{pod:02d}-{pod * 7919 % 100_000:05x}",
            "service.version": f"2.{pod % 3}.{pod % 5}",
            "k8s.namespace.name": "shop",
        }
        for pod in range(PODS)
    ]
    for service in SERVICES
}
"""Each service's pods (shared dicts: a decoded span's resource is read-only)."""
LOGS_PER_SPAN: Final = (0, 0, 0, 0, 1, 1, 2, 3)


def realistic_trace(rng: random.Random, start_us: int) -> list[Span]:
    """One demo-shaped trace (about 13 spans) with production-like tags, logs, resources and errors."""
    trace = make_trace(rng, start_us, error_rate=0.02)
    ids = {"user": _user_id(rng), "order": rng.getrandbits(30), "request": f"{rng.getrandbits(128):032x}"}
    for span in trace:
        span.resource = RESOURCES[span.service_name][rng.getrandbits(4) % PODS]
        span.tags.update(_tags(rng, span, ids))
        logs = [_log(rng, span, ids) for _ in range(LOGS_PER_SPAN[rng.getrandbits(3)])]
        if span.status == "error":
            logs.append(_exception(rng, span))
        span.logs = tuple(logs)
    return trace


def realistic_traces(spans_wanted: int, *, seed: int = SEED, start_us: int | None = None) -> Iterator[list[Span]]:
    """Realistic traces (:func:`realistic_trace`), one millisecond apart, until at least ``spans_wanted``
    spans (the same ones for a seed, whatever ``start_us``)."""
    return _paced(realistic_trace, spans_wanted, seed, start_us)


def _user_id(rng: random.Random) -> int:
    """A user id: one request in ten from a hundred heavy users, the rest from ten million."""
    return rng.getrandbits(7) if rng.getrandbits(4) < 2 else rng.getrandbits(24) % 10**7


def _tags(rng: random.Random, span: Span, ids: dict[str, Any]) -> dict[str, TagValue]:
    service = span.service_name
    r = rng.getrandbits(64)  # the random numbers of this span's values, a few bits each
    if service in ROUTES:
        routes = ROUTES[service]
        route = routes[r % len(routes)]
        path = route.replace("{id}", str((ids["user"], ids["order"], (r >> 8) % 10**6)[(r >> 28) % 3]))
        tags: dict[str, TagValue] = {
            "http.route": route, "http.url": f"https://shop.example.com{path}?page={(r >> 30) % 40 + 1}",
            "user.id": ids["user"], "net.peer.ip": f"10.{(r >> 36) & 255}.{(r >> 44) & 255}.{(r >> 52) % 254 + 1}",
        }  # fmt: skip
        if span.is_root:
            tags |= {"http.user_agent": USER_AGENTS[(r >> 60) % len(USER_AGENTS)], "http.request_id": ids["request"]}
        return tags
    if service == "database":
        template = SQL[r % len(SQL)]
        skus = (
            ", ".join(f"'SKU-{rng.getrandbits(17) % 10**5}'" for _ in range((r >> 4) % 12 + 1))
            if "{skus}" in template
            else ""
        )
        statement = template.format(
            user=ids["user"], order=ids["order"], limit=(10, 20, 50, 100)[(r >> 8) & 3], cents=(r >> 10) % 10**6,
            qty=(r >> 30) % 5 + 1, sku=(r >> 33) % 10**5, skus=skus, days=(r >> 50) % 90 + 1,
        )  # fmt: skip
        return {
            "db.system": "postgresql",
            "db.name": "shop",
            "db.statement": statement,
            "db.rows_affected": (r >> 57) % 100,
        }
    if service == "cache":
        return {"cache.key": f"user:{ids['user']}:{('profile', 'cart', 'prefs', 'session')[r & 3]}"}
    if service == "external-api":
        return {"http.url": f"https://rates.partner.example/v2/rates?base=EUR&at={span.start_time_us // 1_000_000}"}
    return {"messaging.system": "kafka", "messaging.destination": "notifications", "messaging.message_id": f"{r:016x}"}


def _log(rng: random.Random, span: Span, ids: dict[str, Any]) -> Log:
    r = rng.getrandbits(48)
    message = LOG_LINES[r % len(LOG_LINES)].format(
        rows=(r >> 3) % 500, user=ids["user"], ms=(r >> 12) % 900 + 1, attempt=(r >> 22) % 2 + 2, order=ids["order"],
        state=("reserved", "paid", "shipped", "cancelled")[(r >> 24) & 3],
        email=f"{FIRST_NAMES[(r >> 26) % len(FIRST_NAMES)]}.{ids['user']}@mail.example",
    )  # fmt: skip
    at = span.start_time_us + (r >> 30) % max(1, span.duration_us or 1)
    level = ("info", "info", "debug", "warn")[(r >> 46) & 3]
    return Log(timestamp_us=at, fields={"event": "log", "level": level, "message": message})


def _exception(rng: random.Random, span: Span) -> Log:
    """An OpenTelemetry exception event with a stack trace of a few frames (line numbers vary)."""
    frames = "\n".join(
        f'  File "/app/{span.service_name.replace("-", "_")}/{module}.py", line {rng.randrange(20, 900)}, in {func}'
        for module, func in rng.sample(
            [("handlers", "handle"), ("service", "run"), ("client", "call"), ("db", "execute"), ("retry", "wrapped")],
            rng.randint(2, 5),
        )
    )  # fmt: skip
    kind = rng.choice(("TimeoutError", "ConnectionResetError", "ValueError", "psycopg.errors.SerializationFailure"))
    text = f"{kind}: operation {span.operation_name} failed after {rng.randrange(1, 30_000)} ms"
    return Log(timestamp_us=span.start_time_us + (span.duration_us or 0), fields={
        "event": "exception", "exception.type": kind, "exception.message": text,
        "exception.stacktrace": f"Traceback (most recent call last):\n{frames}\n{text}",
    })  # fmt: skip
