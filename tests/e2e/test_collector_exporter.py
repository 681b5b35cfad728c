"""Every traces encoding of the OpenTelemetry Collector's Kafka exporter, on the real broker, through a worker:
``otlp_proto`` and ``otlp_json`` on the OTLP topic, ``zipkin_proto`` and ``zipkin_json`` on the Zipkin topic,
each as one unkeyed message for the whole batch (200 traces, the exporter's default) and as one message per
trace keyed by its id (``partition_traces_by_id: true``); ``jaeger_proto`` and ``jaeger_json`` on the Jaeger
topic, one message per span keyed by its trace id (``jaeger_marshaler.go``). The bytes, keys and (absent)
headers are what the exporter writes: see :mod:`tests.collector` for the Collector code read to build them (contrib
``exporter/kafkaexporter/kafka_exporter.go``, ``marshaler.go``, ``internal/marshaler/pdata_marshaler.go``,
``internal/kafkaclient/headers.go``; pdata ``ptrace/json_test.go``; ``pkg/translator/zipkin/zipkinv2/
from_translator.go``; zipkin-go ``model/span.go`` and ``proto/zipkin_proto3/encode_proto.go``).

The traces come from the real OpenTelemetry SDK (three services, scopes, every span kind the Collector
maps, errors, events with and without attributes, attribute values of every type, sub-microsecond times,
one 64-bit trace id). Every span must be stored, field by field as worked out here from the OTLP request
(not by the decoders' code), and the dead-letter topics must stay empty: nothing a standard producer
writes may be lost.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as OtlpStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from shared.kafka import SpanProducer
from shared.models import Kind, Log, Span, Tags, TagValue
from shared.settings import Settings
from tests.collector import Encoding, Message, as_string, export, json_duration_micros, round_to_micros
from tests.e2e.helpers import reader, running_worker, wait_for

pytestmark = pytest.mark.kafka

TRACES = 200
MS = 1_000_000  # ns
MAX_MESSAGE_BYTES = 1_000_000  # the exporter's default producer.max_message_bytes
KINDS: dict[int, Kind] = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


# -- the traces, from the real SDK -----------------------------------------------------------------------


def _sdk_traces(count: int, t0: int) -> ExportTraceServiceRequest:
    """``count`` traces of four spans over three services, as the Collector's OTLP receiver would hand
    them to the exporter (the SDK's own OTLP encoding); the last trace gets a 64-bit id (high half zero)."""
    memory = InMemorySpanExporter()
    providers = {
        name: TracerProvider(resource=Resource.create({"service.name": name, **extra}))
        for name, extra in (
            ("frontend", {"host.name": "web-1", "service.version": "2.3.0", "deployment.environment": "prod"}),
            ("cart", {"host.name": "cart-7", "k8s.pod.name": "cart-7f9c"}),
            ("payments", {}),
        )
    }
    for provider in providers.values():
        provider.add_span_processor(SimpleSpanProcessor(memory))
    web = providers["frontend"].get_tracer("shop.web", "1.4.2")
    cart = providers["cart"].get_tracer("shop.cart", "3.1")
    pay = providers["payments"].get_tracer("shop.payments")
    for i in range(count):
        start = t0 + i * 7 * MS + 123  # sub-microsecond parts: the Zipkin encodings round them
        root = web.start_span("GET /Checkout", kind=SpanKind.SERVER, start_time=start, attributes={
            "http.method": "GET", "http.status_code": 200, "retry": i % 2 == 0, "ratio": 0.25,
            "items": ["a", "b"], "order.id": f"o-{i}"})  # fmt: skip
        root.add_event("cache miss", {"key": f"cart:{i}", "attempt": 2}, timestamp=start + 1 * MS + 499)
        root.add_event("flushed", timestamp=start + 2 * MS + 500)
        ctx = trace.set_span_in_context(root)
        call = web.start_span("call cart", context=ctx, kind=SpanKind.CLIENT, start_time=start + 1 * MS + 777,
                              attributes={"peer.service": "cart"})  # fmt: skip
        served = cart.start_span("POST /cart", context=trace.set_span_in_context(call), kind=SpanKind.SERVER,
                                 start_time=start + 2 * MS)  # fmt: skip
        if i % 3 == 0:
            served.set_status(Status(StatusCode.ERROR, "out of stock"))
        elif i % 3 == 1:
            served.set_status(Status(StatusCode.OK))
        served.end(end_time=start + 4 * MS + 999)
        call.end(end_time=start + 5 * MS + 1)
        kind = SpanKind.PRODUCER if i % 2 else SpanKind.INTERNAL
        job = pay.start_span("enqueue receipt", context=ctx, kind=kind, start_time=start + 5 * MS + 500,
                             attributes={"queue": "receipts", "size": 3})  # fmt: skip
        job.end(end_time=start + 5 * MS + 500 + 800)  # 800 ns: below a microsecond
        root.end(end_time=start + 6 * MS)
    for provider in providers.values():
        provider.shutdown()
    spans: list[ReadableSpan] = list(memory.get_finished_spans())
    request: ExportTraceServiceRequest = encode_spans(spans)
    last = request.resource_spans[0].scope_spans[0].spans[-1].trace_id
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                if span.trace_id == last:
                    span.trace_id = bytes(8) + last[8:]
    return request


def _spans(request: ExportTraceServiceRequest) -> list[tuple[Any, Any, OtlpSpan]]:
    return [(rs, ss, span) for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def _plain(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_plain(v) for v in value.array_value.values]
    assert which is not None
    return getattr(value, which)


def _tag(value: AnyValue) -> TagValue:
    """An OTLP attribute as the native model keeps it: scalars as they are, arrays as compact JSON."""
    plain = _plain(value)
    return json.dumps(plain, separators=(",", ":")) if isinstance(plain, list) else plain


# -- what must be stored, worked out from the request -------------------------------------------------


def _expected_otlp(request: ExportTraceServiceRequest) -> list[Span]:
    out = []
    for rs, ss, span in _spans(request):
        resource: Tags = {kv.key: _tag(kv.value) for kv in rs.resource.attributes if kv.key != "service.name"}
        service = next(kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name")
        tags: Tags = {kv.key: _tag(kv.value) for kv in span.attributes}
        if span.status.message:
            tags["otel.status_description"] = span.status.message
        start_us = span.start_time_unix_nano // 1000
        out.append(Span(
            trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
            parent_span_id=span.parent_span_id.hex() or None, service_name=service, operation_name=span.name,
            start_time_us=start_us, duration_us=span.end_time_unix_nano // 1000 - start_us,
            status="error" if span.status.code == OtlpStatus.STATUS_CODE_ERROR else "success",
            kind=KINDS.get(span.kind), tags=tags,
            logs=tuple(Log(timestamp_us=e.time_unix_nano // 1000,
                           fields={kv.key: _tag(kv.value) for kv in e.attributes} | {"event": e.name})
                       for e in span.events),
            resource=resource, scope_name=ss.scope.name or None, scope_version=ss.scope.version or None,
        ))  # fmt: skip
    return out


def _expected_zipkin(request: ExportTraceServiceRequest, encoding: Encoding) -> list[Span]:
    """Through Zipkin, everything is a string; the resource comes back as the resource, the scope as the
    scope, the kind as the kind (internal included, producer too); the status travels as tags."""
    out = []
    for rs, ss, span in _spans(request):
        resource: Tags = {kv.key: as_string(kv.value) for kv in rs.resource.attributes if kv.key != "service.name"}
        service = next(kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name")
        tags: Tags = {kv.key: as_string(kv.value) for kv in span.attributes}
        if span.status.code == OtlpStatus.STATUS_CODE_ERROR:
            tags |= {"error": "true", "otel.status_code": "Error", "otel.status_description": span.status.message}
        elif span.status.code == OtlpStatus.STATUS_CODE_OK:
            tags["otel.status_code"] = "Ok"
        high = span.trace_id[:8]
        trace_id = span.trace_id.hex() if any(high) else span.trace_id[8:].hex()
        duration_ns = span.end_time_unix_nano - span.start_time_unix_nano
        json_encoding = encoding == "zipkin_json"
        logs = []
        for event in span.events:
            value = event.name
            if event.attributes:  # the translator's "name|{attributes as JSON}|dropped"
                attributes = {kv.key: _plain(kv.value) for kv in event.attributes}
                value += "|" + json.dumps(attributes, separators=(",", ":"), sort_keys=True) + "|0"
            ts = round_to_micros(event.time_unix_nano) if json_encoding else event.time_unix_nano // 1000
            logs.append(Log(timestamp_us=ts, fields={"event": value}))
        out.append(Span(
            trace_id=trace_id, span_id=span.span_id.hex(), parent_span_id=span.parent_span_id.hex() or None,
            service_name=service, operation_name=span.name.lower() if json_encoding else span.name,
            start_time_us=round_to_micros(span.start_time_unix_nano),
            duration_us=json_duration_micros(duration_ns) if json_encoding else duration_ns // 1000 or None,
            status="error" if span.status.code == OtlpStatus.STATUS_CODE_ERROR else "success",
            kind=KINDS.get(span.kind), tags=tags, logs=tuple(logs), resource=resource,
            scope_name=ss.scope.name or None, scope_version=ss.scope.version or None,
        ))  # fmt: skip
    return out


def _with_every_value_type(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """A copy whose resources also hold an int, a bool and a double attribute, and whose spans also hold a
    bytes attribute: with the SDK's own types, every Jaeger value type in the process's tags and the span's."""
    copy = ExportTraceServiceRequest()
    copy.CopyFrom(request)
    for rs in copy.resource_spans:
        for key, field, value in (("host.cpus", "int_value", 8), ("process.leader", "bool_value", True),
                                  ("host.load", "double_value", 0.75)):  # fmt: skip
            kv = rs.resource.attributes.add(key=key)
            setattr(kv.value, field, value)
    for _, _, span in _spans(copy):
        span.attributes.add(key="payload").value.bytes_value = b"\x00\x01\xfe" + span.span_id
    return copy


def _jaeger_tag(value: AnyValue) -> TagValue:
    """A Jaeger tag as the native model keeps it: scalars typed, binary values as base64 text."""
    return base64.b64encode(value.bytes_value).decode() if value.WhichOneof("value") == "bytes_value" else _tag(value)


def _expected_jaeger(request: ExportTraceServiceRequest) -> list[Span]:
    """Through Jaeger's model the types stay; the resource is the process's tags; the status travels as the
    tags ``otel.status_code`` (and ``error`` when failed), which are kept; times are cut to microseconds."""
    out = []
    for rs, ss, span in _spans(request):
        resource: Tags = {kv.key: _jaeger_tag(kv.value) for kv in rs.resource.attributes if kv.key != "service.name"}
        service = next(kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name")
        tags: Tags = {kv.key: _jaeger_tag(kv.value) for kv in span.attributes}
        if span.status.code == OtlpStatus.STATUS_CODE_ERROR:
            tags |= {"otel.status_code": "ERROR", "error": True}
        elif span.status.code == OtlpStatus.STATUS_CODE_OK:
            tags["otel.status_code"] = "OK"
        if span.status.message:
            tags["otel.status_description"] = span.status.message
        trace_id = span.trace_id.hex() if any(span.trace_id[:8]) else span.trace_id[8:].hex()
        out.append(Span(
            trace_id=trace_id, span_id=span.span_id.hex(), parent_span_id=span.parent_span_id.hex() or None,
            service_name=service, operation_name=span.name, start_time_us=span.start_time_unix_nano // 1000,
            duration_us=(span.end_time_unix_nano - span.start_time_unix_nano) // 1000,
            status="error" if span.status.code == OtlpStatus.STATUS_CODE_ERROR else "success",
            kind=KINDS.get(span.kind), tags=tags,
            logs=tuple(Log(timestamp_us=e.time_unix_nano // 1000,
                           fields={kv.key: _jaeger_tag(kv.value) for kv in e.attributes} | {"event": e.name})
                       for e in span.events),
            resource=resource, scope_name=ss.scope.name or None, scope_version=ss.scope.version or None,
        ))  # fmt: skip
    return out


# -- the test ----------------------------------------------------------------------------------------------


async def _dead_letters(settings: Settings) -> int:
    """Messages ever written to the dead-letter topics (their end offsets; the worker created them with
    ``settings.partitions`` partitions each)."""
    consumer = AIOKafkaConsumer(**settings.kafka_options(), group_id=None)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic + settings.dlq_suffix, p)
            for topic in (settings.topic, settings.otlp_topic, settings.zipkin_topic, settings.jaeger_topic)
            for p in range(settings.partitions)
        ]
        ends = await consumer.end_offsets(partitions)
        assert set(ends) == set(partitions)
        return sum(ends.values())
    finally:
        await consumer.stop()


def _key(span: Span) -> tuple[str, str]:
    return span.trace_id, span.span_id


@pytest.mark.parametrize("partition_traces_by_id", [False, True], ids=["one-message", "keyed-by-trace"])
@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json", "zipkin_proto", "zipkin_json"])
async def test_collector_kafka_exporter_encoding(
    settings: Settings, encoding: Encoding, partition_traces_by_id: bool
) -> None:
    t0 = time.time_ns() - 60_000 * MS
    request = _sdk_traces(TRACES, t0)
    messages = export(request, encoding, partition_traces_by_id=partition_traces_by_id)
    assert all(message.headers == [] for message in messages)  # never a content-type
    assert max(len(message.value) for message in messages) < MAX_MESSAGE_BYTES
    if partition_traces_by_id:
        assert len(messages) == TRACES and all(m.key is not None and len(m.key) == 32 for m in messages)
    else:
        assert len(messages) == 1 and messages[0].key is None
    if encoding.startswith("otlp"):
        topic, expected = settings.otlp_topic, _expected_otlp(request)
    else:
        topic, expected = settings.zipkin_topic, _expected_zipkin(request, encoding)
    trace_ids = sorted({span.trace_id for span in expected})
    assert min(len(t) for t in trace_ids) == (32 if topic == settings.otlp_topic else 16)
    await _deliver_and_compare(settings, topic, messages, expected)


@pytest.mark.parametrize("encoding", ["jaeger_proto", "jaeger_json"])
async def test_collector_kafka_exporter_jaeger_encoding(settings: Settings, encoding: Encoding) -> None:
    """One ``model.Span`` per message on the Jaeger topic, keyed by ``TraceID.String()``, detected from its
    bytes; trace ids of both lengths; tags, process tags and log fields of every Jaeger value type."""
    request = _with_every_value_type(_sdk_traces(TRACES, time.time_ns() - 60_000 * MS))
    messages = export(request, encoding)
    assert all(message.headers == [] for message in messages)  # never a content-type
    assert len(messages) == 4 * TRACES
    expected = _expected_jaeger(request)
    assert sorted(len(m.key or b"") for m in messages)[0] <= 16 < sorted(len(m.key or b"") for m in messages)[-1]
    assert {len(span.trace_id) for span in expected} == {16, 32}
    await _deliver_and_compare(settings, settings.jaeger_topic, messages, expected)


async def _deliver_and_compare(settings: Settings, topic: str, messages: list[Message], expected: list[Span]) -> None:
    """Publish ``messages`` to ``topic`` as they are; every trace of ``expected`` must be finalized with
    exactly its spans, field by field, and nothing dead-lettered."""
    assert len(expected) == 4 * TRACES
    trace_ids = sorted({span.trace_id for span in expected})
    assert len(trace_ids) == TRACES
    async with SpanProducer(settings, topic=topic) as producer, running_worker(settings) as worker:
        await wait_for(lambda: bool(worker.shards), timeout_s=30, what="partitions assigned")
        for message in messages:
            await producer.send_raw(message.value, key=message.key, headers=message.headers)
        await producer.flush()

        async def all_finalized() -> bool:
            async with reader(settings) as store:
                stored = await asyncio.gather(*(store.get_trace(t) for t in trace_ids))
            return all(s is not None and s.state == "finalized" and len(s.spans) == 4 for s in stored)

        await wait_for(all_finalized, timeout_s=90, what=f"{TRACES} traces finalized with 4 spans each")
        assert worker.counters.dead_lettered == 0

    async with reader(settings) as store:
        stored_spans = [span for t in trace_ids if (s := await store.get_trace(t)) is not None for span in s.spans]
    got, want = sorted(stored_spans, key=_key), sorted(expected, key=_key)
    assert [_key(s) for s in got] == [_key(s) for s in want]
    for stored, wanted in zip(got, want, strict=True):
        assert stored == wanted, f"span {stored.span_id} of trace {stored.trace_id}"
    assert await _dead_letters(settings) == 0


def test_the_source_traces_exercise_what_the_mapping_must_keep() -> None:
    """The SDK traces above hold what the field-by-field comparison is meant to cover."""
    request = _sdk_traces(3, 1_732_500_000_000_000_000)
    spans = [span for _, _, span in _spans(request)]
    assert {span.kind for span in spans} == {1, 2, 3, 4}
    assert {span.status.code for span in spans} == {0, 1, 2}
    assert any(e.attributes for s in spans for e in s.events) and any(not e.attributes for s in spans for e in s.events)
    assert any(span.start_time_unix_nano % 1000 for span in spans)  # sub-microsecond times
    assert any(0 < span.end_time_unix_nano - span.start_time_unix_nano < 1000 for span in spans)
    assert any(not any(span.trace_id[:8]) for span in spans)  # a 64-bit trace id
    assert {ss.scope.name for rs in request.resource_spans for ss in rs.scope_spans} == {
        "shop.web", "shop.cart", "shop.payments"}  # fmt: skip
