"""Every wire format on the real broker, through a worker: an app instrumented with the OpenTelemetry SDK
exporting with KafkaSpanExporter, OTLP protobuf and OTLP/JSON as the Collector's Kafka exporter writes
them, Zipkin v2 JSON as Zipkin's Kafka reporters do, and Jaeger spans with poison among them. Each is read
back from the store as a tree with its timings, tags and status; malformed messages land on ``<topic>.dlq``
with a reason."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from google.protobuf.json_format import MessageToDict, MessageToJson
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ingest.worker import Worker
from shared.codecs.native import decode_native
from shared.kafka import CONTENT_TYPE_HEADER, SpanProducer
from shared.models import SPAN_CONTENT_TYPE, Span
from shared.otel import KafkaSpanExporter, spans_from_sdk
from shared.propagation import parse_traceparent
from shared.settings import Settings
from shared.store import StoredTrace
from tests.collector import JaegerKeyValue, JaegerSpan, jaeger_json_span, jaeger_proto_span
from tests.e2e.helpers import dead_letters, reader, running_worker, wait_for

pytestmark = pytest.mark.kafka

MS = 1_000_000  # ns


def _now_ns() -> int:
    return time.time_ns()


async def _finalized(settings: Settings, trace_id: str) -> StoredTrace | None:
    async with reader(settings) as store:
        stored = await store.get_trace(trace_id)
    return stored if stored is not None and stored.state == "finalized" else None


async def _wait_finalized(settings: Settings, trace_id: str, spans: int) -> StoredTrace:
    async def done() -> bool:
        stored = await _finalized(settings, trace_id)
        return stored is not None and len(stored.spans) == spans

    await wait_for(done, timeout_s=60, what=f"trace {trace_id} finalized with {spans} spans")
    stored = await _finalized(settings, trace_id)
    assert stored is not None
    return stored


async def _messages(settings: Settings, topic: str, *, until_spans: int) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    """(key, value, headers) of the native messages on ``topic``, read until they hold ``until_spans`` spans."""
    consumer = AIOKafkaConsumer(topic, **settings.kafka_options(), auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    got: list[tuple[bytes, bytes, dict[str, bytes]]] = []
    try:
        deadline = time.monotonic() + 30
        while sum(len(decode_native(v)) for _, v, _ in got) < until_spans and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                got.extend((m.key, m.value, dict(m.headers)) for m in batch)
    finally:
        await consumer.stop()
    return got


async def _dead_letters(settings: Settings, topic: str, count: int) -> list[tuple[bytes, dict[str, bytes]]]:
    got = await dead_letters(settings, topic, count)
    assert len(got) == count, f"expected {count} dead letters on {topic}.dlq, got {got}"
    return got


async def _assigned(worker: Worker) -> None:
    """Wait until the worker has created its topics and holds partitions, so producing finds the topics."""
    await wait_for(lambda: bool(worker.shards), timeout_s=30, what="partitions assigned")


def _tree(spans: Sequence[Span]) -> set[tuple[str, str | None]]:
    """(service/operation, parent's service/operation) for every span: the shape of the trace."""
    by_id = {s.span_id: s for s in spans}
    return {
        (
            f"{s.service_name}/{s.operation_name}",
            None
            if s.parent_span_id is None
            else f"{by_id[s.parent_span_id].service_name}/{by_id[s.parent_span_id].operation_name}",
        )
        for s in spans
    }


def _sorted(spans: Sequence[Span]) -> list[Span]:
    return sorted(spans, key=lambda s: s.span_id)


# -- the OpenTelemetry SDK, through KafkaSpanExporter ------------------------------------------------------


class _Service:
    """One service of the app: its own TracerProvider (its own service.name), exporting to Kafka."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.memory = InMemorySpanExporter()  # what the SDK produced, to compare with what was stored
        self.exporter = KafkaSpanExporter(settings, timeout_s=30)
        self.provider = TracerProvider(resource=Resource.create({"service.name": name, "service.version": "1.0"}))
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter, schedule_delay_millis=100))
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer(f"shop.{name}", "0.1")


def _run_app(gateway: _Service, orders: _Service, payments: _Service, t0: int) -> dict[str, str]:
    """gateway → orders → payments, each hop a client span and a W3C traceparent header; payments fails."""
    propagator = TraceContextTextMapPropagator()
    headers: dict[str, dict[str, str]] = {}

    def call(tracer: trace.Tracer, target: str, start: int, end: int) -> None:
        span = tracer.start_span(f"call {target}", kind=SpanKind.CLIENT, start_time=start)
        carrier: dict[str, str] = {}
        propagator.inject(carrier, context=trace.set_span_in_context(span))
        headers[target] = carrier
        handlers[target](propagator.extract(carrier), start + 1 * MS)
        span.end(end_time=end)

    def handle_orders(context: Any, start: int) -> None:
        span = orders.tracer.start_span(
            "POST /orders", context=context, kind=SpanKind.SERVER, start_time=start, attributes={"order.items": 3}
        )
        span.add_event("validated", {"rules": 12}, timestamp=start + 2 * MS)
        call_context = trace.set_span_in_context(span)
        db = orders.tracer.start_span("INSERT orders", context=call_context, start_time=start + 3 * MS)
        db.set_attribute("db.system", "sqlite")
        db.end(end_time=start + 8 * MS)
        with trace.use_span(span, end_on_exit=False):
            call(orders.tracer, "payments", start + 10 * MS, start + 40 * MS)
        span.set_status(Status(StatusCode.ERROR, "payment failed"))
        span.end(end_time=start + 45 * MS)

    def handle_payments(context: Any, start: int) -> None:
        span = payments.tracer.start_span(
            "charge", context=context, kind=SpanKind.SERVER, start_time=start, attributes={"amount": 12.5}
        )
        span.add_event("exception", {"exception.type": "CardDeclined"}, timestamp=start + 20 * MS)
        span.set_status(Status(StatusCode.ERROR, "card declined"))
        span.end(end_time=start + 25 * MS)

    handlers = {"orders": handle_orders, "payments": handle_payments}
    root = gateway.tracer.start_span(
        "GET /checkout", kind=SpanKind.SERVER, start_time=t0, attributes={"http.method": "GET", "retry": False}
    )
    with trace.use_span(root, end_on_exit=False):
        call(gateway.tracer, "orders", t0 + 1 * MS, t0 + 50 * MS)
    root.end(end_time=t0 + 55 * MS)
    return {target: carrier["traceparent"] for target, carrier in headers.items()}


async def test_sdk_app_exports_through_kafka_span_exporter(settings: Settings) -> None:
    services = [_Service(name, settings) for name in ("gateway", "orders", "payments")]
    gateway, orders, payments = services
    t0 = _now_ns() - 1000 * MS
    async with running_worker(settings) as worker:
        await _assigned(worker)
        traceparents = await asyncio.to_thread(_run_app, gateway, orders, payments, t0)
        for service in services:
            assert await asyncio.to_thread(service.provider.force_flush, 30_000)
        sdk_spans: list[ReadableSpan] = [s for service in services for s in service.memory.get_finished_spans()]
        trace_id = f"{sdk_spans[0].context.trace_id:032x}"
        stored = await _wait_finalized(settings, trace_id, len(sdk_spans))
        for service in services:
            await asyncio.to_thread(service.provider.shutdown)

    assert len(sdk_spans) == 6 and len({s.context.trace_id for s in sdk_spans}) == 1  # one trace, 3 services
    parsed = parse_traceparent(traceparents["payments"])
    assert parsed is not None and parsed[0] == trace_id
    assert _sorted(stored.spans) == _sorted(spans_from_sdk(sdk_spans))
    assert _tree(stored.spans) == {
        ("gateway/GET /checkout", None),
        ("gateway/call orders", "gateway/GET /checkout"),
        ("orders/POST /orders", "gateway/call orders"),
        ("orders/INSERT orders", "orders/POST /orders"),
        ("orders/call payments", "orders/POST /orders"),
        ("payments/charge", "orders/call payments"),
    }
    by_name = {s.operation_name: s for s in stored.spans}
    root, charge = by_name["GET /checkout"], by_name["charge"]
    assert (root.start_time_us, root.duration_us, root.kind, root.status) == (t0 // 1000, 55_000, "server", "success")
    assert root.tags["http.method"] == "GET" and root.tags["retry"] is False
    assert (root.scope_name, root.scope_version, root.resource["service.version"]) == ("shop.gateway", "0.1", "1.0")
    assert "service.name" not in root.resource and "service.version" not in root.tags
    # gateway calls orders at +1 ms, orders starts at +2 ms, calls payments at +12 ms; charge starts at +13 ms
    assert charge.start_time_us == t0 // 1000 + 13_000 and charge.duration_us == 25_000
    assert (charge.status, charge.tags["amount"]) == ("error", 12.5)
    assert charge.tags["otel.status_description"] == "card declined"
    assert [(log.timestamp_us, log.fields) for log in charge.logs] == [
        (t0 // 1000 + 33_000, {"exception.type": "CardDeclined", "event": "exception"})
    ]
    assert by_name["INSERT orders"].kind == "internal" and by_name["call payments"].kind == "client"
    assert stored.analysis is not None
    assert stored.analysis.failed and stored.analysis.complete and stored.analysis.error_count == 2
    assert sorted(stored.analysis.services) == ["gateway", "orders", "payments"]
    # on the wire: native JSON keyed by trace id, one message per trace per export batch
    messages = await _messages(settings, settings.topic, until_spans=len(sdk_spans))
    assert {key for key, _, _ in messages} == {trace_id.encode()}
    assert {headers[CONTENT_TYPE_HEADER] for _, _, headers in messages} == {SPAN_CONTENT_TYPE.encode()}
    assert len(messages) <= len(sdk_spans)
    # after shutdown the exporter refuses politely instead of hanging
    assert services[0].exporter.export(sdk_spans[:1]).name == "FAILURE"


# -- OTLP on the otlp topic, as the Collector's Kafka exporter writes it ---------------------------------


def _otlp_trace(service: str, t0: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("collector.test")
    root = tracer.start_span("GET /items", kind=SpanKind.SERVER, start_time=t0, attributes={"http.status_code": 200})
    child = tracer.start_span(
        "SELECT items", context=trace.set_span_in_context(root), kind=SpanKind.CLIENT, start_time=t0 + 2 * MS
    )
    child.set_attribute("db.rows", [1, 2])
    child.add_event("slow query", timestamp=t0 + 5 * MS)
    child.set_status(Status(StatusCode.ERROR, "timeout"))
    child.end(end_time=t0 + 9 * MS)
    root.end(end_time=t0 + 10 * MS)
    provider.shutdown()
    return list(memory.get_finished_spans())


def _hex_ids(node: Any) -> Any:
    """protobuf's JSON rendering with its base64 ids turned into hex, as the Collector writes OTLP/JSON."""
    if isinstance(node, dict):
        return {
            k: base64.b64decode(v).hex() if k in {"traceId", "spanId", "parentSpanId"} else _hex_ids(v)
            for k, v in node.items()
        }
    return [_hex_ids(v) for v in node] if isinstance(node, list) else node


async def test_otlp_protobuf_and_json_on_the_otlp_topic(settings: Settings) -> None:
    t0 = _now_ns() - 1000 * MS
    proto_spans, json_spans = _otlp_trace("inventory", t0), _otlp_trace("catalog", t0 + 100 * MS)
    proto_request, json_request = encode_spans(proto_spans), encode_spans(json_spans)
    otlp_json = json.dumps(_hex_ids(MessageToDict(json_request, use_integers_for_enums=True))).encode()
    as_json = [(CONTENT_TYPE_HEADER, b"application/json")]
    poison = [
        (b"\x0a\x05abc", []),  # truncated protobuf
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc"}]}]}]}', as_json),
        (MessageToJson(json_request, use_integers_for_enums=True).encode(), as_json),  # base64 ids
    ]
    async with (
        SpanProducer(settings, topic=settings.otlp_topic) as producer,
        running_worker(settings) as worker,
    ):
        await _assigned(worker)
        await producer.send_raw(proto_request.SerializeToString(), headers=[])  # no key, no header: otlp_proto
        await producer.send_raw(otlp_json, headers=as_json)
        for value, value_headers in poison:
            await producer.send_raw(value, headers=value_headers)
        await producer.flush()
        proto_trace = await _wait_finalized(settings, f"{proto_spans[0].context.trace_id:032x}", 2)
        json_trace = await _wait_finalized(settings, f"{json_spans[0].context.trace_id:032x}", 2)
        await wait_for(lambda: worker.counters.dead_lettered == len(poison), timeout_s=30, what="dead letters")

    for stored, sdk_spans, service in ((proto_trace, proto_spans, "inventory"), (json_trace, json_spans, "catalog")):
        assert _sorted(stored.spans) == _sorted(spans_from_sdk(sdk_spans))
        assert _tree(stored.spans) == {
            (f"{service}/GET /items", None),
            (f"{service}/SELECT items", f"{service}/GET /items"),
        }
        child = next(s for s in stored.spans if s.parent_span_id is not None)
        assert (child.status, child.kind, child.duration_us) == ("error", "client", 7000)
        assert child.tags["db.rows"] == "[1,2]" and child.tags["otel.status_description"] == "timeout"
        assert [log.fields for log in child.logs] == [{"event": "slow query"}]
        assert stored.analysis is not None and stored.analysis.failed and stored.analysis.duration_us == 10_000

    letters = await _dead_letters(settings, settings.otlp_topic, len(poison))
    reasons = {value: headers["error"].decode() for value, headers in letters}
    assert sorted(reasons) == sorted(value for value, _ in poison)
    assert "protobuf" in reasons[poison[0][0]]
    assert "traceId must be 32 hex" in reasons[poison[1][0]]
    assert "looks like base64" in reasons[poison[2][0]]
    for _, headers in letters:
        assert headers["source-topic"] == settings.otlp_topic.encode()


async def test_otlp_topic_configured_for_json(settings: Settings) -> None:
    """``TRACING_OTLP_FORMAT=otlp_json``: OTLP/JSON without a content-type header."""
    settings = Settings.from_env({}, **{**_fields(settings), "otlp_format": "otlp_json"})
    t0 = _now_ns() - 1000 * MS
    spans = _otlp_trace("search", t0)
    body = json.dumps(_hex_ids(MessageToDict(encode_spans(spans), use_integers_for_enums=True))).encode()
    async with SpanProducer(settings, topic=settings.otlp_topic) as producer, running_worker(settings) as worker:
        await _assigned(worker)
        await producer.send_raw(body, headers=[])
        await producer.flush()
        stored = await _wait_finalized(settings, f"{spans[0].context.trace_id:032x}", 2)
    assert _sorted(stored.spans) == _sorted(spans_from_sdk(spans))


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__struct_fields__}


# -- Zipkin v2 JSON on the zipkin topic ----------------------------------------------------------------------


async def test_zipkin_json_on_the_zipkin_topic(settings: Settings) -> None:
    t0 = _now_ns() // 1000 - 1_000_000  # µs
    trace_id = "463ac35c9f6413ad48485a3953bb6124"
    frontend = {"serviceName": "frontend", "ipv4": "10.0.0.1"}
    backend = {"serviceName": "backend", "ipv4": "10.0.0.2", "port": 8080}
    spans = [
        {"traceId": trace_id, "id": "a2fb4a1d1a96d312", "name": "get /", "kind": "SERVER", "timestamp": t0,
         "duration": 20_000, "localEndpoint": frontend, "tags": {"http.path": "/"}},
        {"traceId": trace_id, "parentId": "a2fb4a1d1a96d312", "id": "b7ad6b7169203331", "name": "get /api",
         "kind": "CLIENT", "timestamp": t0 + 1000, "duration": 15_000, "localEndpoint": frontend,
         "remoteEndpoint": {"serviceName": "backend"},
         "annotations": [{"timestamp": t0 + 1100, "value": "ws"}, {"timestamp": t0 + 15_900, "value": "wr"}]},
        # B3 single-host span: the server half reuses the client's id
        {"traceId": trace_id, "parentId": "a2fb4a1d1a96d312", "id": "b7ad6b7169203331", "name": "get /api",
         "kind": "SERVER", "shared": True, "timestamp": t0 + 2000, "duration": 13_000, "localEndpoint": backend},
        {"traceId": trace_id, "parentId": "b7ad6b7169203331", "id": "c1d2e3f4a5b6c7d8", "name": "select",
         "kind": "CLIENT", "timestamp": t0 + 3000, "duration": 9000, "localEndpoint": backend,
         "remoteEndpoint": {"serviceName": "postgres"}, "tags": {"error": "deadlock", "db.type": "sql"}},
    ]  # fmt: skip
    poison = [
        json.dumps([{"traceId": trace_id, "id": "d1", "name": "no timestamp"}]).encode(),
        b"not json",
    ]
    async with (
        SpanProducer(settings, topic=settings.zipkin_topic) as producer,
        running_worker(settings) as worker,
    ):
        await _assigned(worker)
        # as Zipkin's Kafka reporters send: lists of spans, no key; one batch says application/json
        await producer.send_raw(json.dumps(spans[:2]).encode(), headers=[])
        await producer.send_raw(json.dumps(spans[2:]).encode(), headers=[(CONTENT_TYPE_HEADER, b"application/json")])
        for value in poison:
            await producer.send_raw(value, headers=[])
        await producer.flush()
        stored = await _wait_finalized(settings, trace_id, len(spans))
        await wait_for(lambda: worker.counters.dead_lettered == len(poison), timeout_s=30, what="dead letters")

    assert _tree(stored.spans) == {
        ("frontend/get /", None),
        ("frontend/get /api", "frontend/get /"),
        ("backend/get /api", "frontend/get /api"),
        ("backend/select", "frontend/get /api"),
    }
    by_id = {s.span_id: s for s in stored.spans}
    client, server, select = by_id["b7ad6b7169203331"], by_id["b7ad6b7169203331:shared"], by_id["c1d2e3f4a5b6c7d8"]
    assert (client.start_time_us, client.duration_us, client.kind) == (t0 + 1000, 15_000, "client")
    assert client.tags == {"peer.service": "backend"}
    assert [(log.timestamp_us, log.fields["event"]) for log in client.logs] == [(t0 + 1100, "ws"), (t0 + 15_900, "wr")]
    assert (server.kind, server.tags, server.duration_us) == ("server", {"shared": True}, 13_000)
    assert (select.status, select.tags["peer.service"], select.tags["error"]) == ("error", "postgres", "deadlock")
    assert by_id["a2fb4a1d1a96d312"].status == "success"
    assert stored.analysis is not None and stored.analysis.failed and stored.analysis.duration_us == 20_000
    assert sorted(stored.analysis.services) == ["backend", "frontend"]

    letters = await _dead_letters(settings, settings.zipkin_topic, len(poison))
    reasons = {value: headers["error"].decode() for value, headers in letters}
    assert "timestamp is missing" in reasons[poison[0]]
    assert "Zipkin" in reasons[poison[1]]


# -- Jaeger model.Span on the jaeger topic ------------------------------------------------------------------


async def test_jaeger_poison_goes_to_the_dead_letter_topic_and_the_rest_is_kept(settings: Settings) -> None:
    """Each bad message of the Jaeger topic is dead-lettered with its reason; the good spans around it
    (one per message, as the Collector's exporter writes them) are stored."""
    t0_ns = _now_ns() - 1_000 * MS
    root = JaegerSpan(0, 0x48485A3953BB6124, 0xA2FB4A1D1A96D312, "GET /", [], t0_ns, 20 * MS,
                      [JaegerKeyValue("span.kind", 0, "server")], [], "frontend", [])  # fmt: skip
    child = JaegerSpan(0, 0x48485A3953BB6124, 0xB7AD6B7169203331, "select", [(0, root.trace_low, root.span_id, 0)],
                       t0_ns + MS, 5 * MS, [], [], "frontend", [JaegerKeyValue("host.name", 0, "web-1")])  # fmt: skip
    body = json.loads(jaeger_json_span(child))
    del body["startTime"]
    poison = [json.dumps(body).encode(), b"\x0a\x10" + bytes(16) + b"\x12\x08" + bytes(8), b"not a span"]
    async with (
        SpanProducer(settings, topic=settings.jaeger_topic) as producer,
        running_worker(settings) as worker,
    ):
        await _assigned(worker)
        await producer.send_raw(jaeger_proto_span(root), key=root.key, headers=[])
        for value in poison:
            await producer.send_raw(value, key=root.key, headers=[])
        await producer.send_raw(jaeger_json_span(child), key=child.key, headers=[])
        await producer.flush()
        stored = await _wait_finalized(settings, "48485a3953bb6124", 2)
        await wait_for(lambda: worker.counters.dead_lettered == len(poison), timeout_s=30, what="dead letters")
    assert _tree(stored.spans) == {("frontend/GET /", None), ("frontend/select", "frontend/GET /")}
    by_id = {s.span_id: s for s in stored.spans}
    assert by_id["b7ad6b7169203331"].resource == {"host.name": "web-1"}
    letters = await _dead_letters(settings, settings.jaeger_topic, len(poison))
    reasons = {value: headers["error"].decode() for value, headers in letters}
    assert "startTime is missing" in reasons[poison[0]]
    assert "traceId is all zeros" in reasons[poison[1]]
    assert "not a protobuf Jaeger span" in reasons[poison[2]]


async def test_exporter_reports_failure_when_the_broker_is_unreachable(
    settings: Settings, unused_tcp_port: int
) -> None:
    """An unreachable broker fails the export (the SDK counts it) without hanging, and shutdown still ends."""
    nowhere = Settings.from_env({}, **{**_fields(settings), "kafka_bootstrap": f"127.0.0.1:{unused_tcp_port}"})
    exporter = KafkaSpanExporter(nowhere, timeout_s=20)
    spans = _otlp_trace("offline", _now_ns())
    started = time.monotonic()
    result = await asyncio.to_thread(exporter.export, spans)
    assert result.name == "FAILURE" and time.monotonic() - started < 20
    assert await asyncio.to_thread(exporter.force_flush)  # nothing queued: nothing to fail
    await asyncio.to_thread(exporter.shutdown)
    await asyncio.to_thread(exporter.shutdown)  # idempotent
    assert (await asyncio.to_thread(exporter.export, spans)).name == "FAILURE"
