"""An OpenTelemetry SDK span exporter that publishes finished spans to the native topic.

Needs the ``otel`` extra (``pip install 'kafka-tracing[otel]'``)::

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from shared.otel import KafkaSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(BatchSpanProcessor(KafkaSpanExporter(Settings.from_env())))

Spans are mapped exactly as the OTLP decoder maps OTLP spans (:func:`shared.codecs.otlp.build_span`), and
sent as native JSON, one message per trace per export batch, keyed by trace id.

The SDK calls ``export`` synchronously, from the batch processor's thread (or from the thread that ended
the span, with a simple processor). The exporter owns an asyncio loop in a background thread, where its
:class:`~shared.kafka.SpanProducer` lives; ``export`` hands each batch to that loop and waits until the
broker acknowledged it (or the timeout passed), so its result means delivered or not.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from shared.codecs.errors import DecodeError
from shared.codecs.otlp import (
    NO_SCOPE,
    SPAN_ID_BYTES,
    TRACE_ID_BYTES,
    ResourceInfo,
    build_span,
    id_from_int,
    resource_info,
    scope_info,
)
from shared.kafka import SpanProducer
from shared.models import Span
from shared.settings import Settings

log = logging.getLogger("shared.otel.exporter")

OTLP_KIND: Final[dict[SpanKind, int]] = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
"""The SDK's span kinds as OTLP ``Span.SpanKind`` numbers (the SDK numbers them from 0)."""


def span_from_sdk(span: ReadableSpan, resource: ResourceInfo | None = None) -> Span:
    """The native span for one SDK span; ``resource``, if given, is its resource's :func:`resource_info`.

    Raises :class:`DecodeError` for a span without a valid context or start time.
    """
    context = span.context
    if context is None:
        raise DecodeError("span has no span context")
    parent = span.parent.span_id if span.parent is not None else 0
    scope = span.instrumentation_scope
    return build_span(
        trace_id=id_from_int(context.trace_id, TRACE_ID_BYTES, "traceId"),
        span_id=id_from_int(context.span_id, SPAN_ID_BYTES, "spanId"),
        parent_span_id=id_from_int(parent, SPAN_ID_BYTES, "parentSpanId") if parent else None,
        name=span.name,
        kind=OTLP_KIND.get(span.kind, 0),
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        status_code=span.status.status_code.value,
        status_message=span.status.description or "",
        attributes=(span.attributes or {}).items(),
        events=[(event.timestamp, event.name, (event.attributes or {}).items()) for event in span.events],
        resource=resource or resource_info(span.resource.attributes.items()),
        scope=scope_info(scope.name, scope.version) if scope is not None else NO_SCOPE,
        trace_state=context.trace_state.to_header() if context.trace_state else "",
    )


def spans_from_sdk(spans: Sequence[ReadableSpan]) -> list[Span]:
    """The native spans for a batch of SDK spans; a span that cannot be mapped is logged and skipped."""
    resources: dict[int, ResourceInfo] = {}  # spans of one provider share one Resource object
    result: list[Span] = []
    for span in spans:
        resource = resources.get(id(span.resource))
        if resource is None:
            resource = resources[id(span.resource)] = resource_info(span.resource.attributes.items())
        try:
            result.append(span_from_sdk(span, resource))
        except DecodeError as exc:
            log.warning("span %r not exported: %s", span.name, exc)
    return result


class KafkaSpanExporter(SpanExporter):
    """Publishes finished SDK spans to the native topic (``settings.topic``, or ``topic``).

    ``timeout_s`` bounds each export, flush and shutdown. The producer connects on the first export, so
    creating the exporter never blocks; a failed connection fails that export and is retried by the next.
    """

    def __init__(self, settings: Settings | None = None, *, topic: str | None = None, timeout_s: float = 30.0) -> None:
        self._settings = settings if settings is not None else Settings.from_env()
        self._topic = topic or self._settings.topic
        self._timeout_s = timeout_s
        self._producer: SpanProducer | None = None
        self._send_lock = asyncio.Lock()  # used on the exporter's loop only: one export in flight at a time
        self._closed = False
        self._closing = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kafka-span-exporter", daemon=True)
        self._thread.start()

    @property
    def topic(self) -> str:
        return self._topic

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            log.warning("export after shutdown: %d spans dropped", len(spans))
            return SpanExportResult.FAILURE
        events = spans_from_sdk(spans)
        if not events:
            return SpanExportResult.SUCCESS
        if self._run(self._publish(events), "export"):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self._closed:
            return True
        return self._run(self._flush(), "flush", timeout_s=min(self._timeout_s, timeout_millis / 1000))

    def shutdown(self) -> None:
        """Deliver what is queued, close the producer and stop the background loop. Idempotent."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
        try:
            self._run(self._close(), "shutdown")
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self._timeout_s)
            if not self._thread.is_alive():
                self._loop.close()

    # -- on the exporter's loop -----------------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, None], what: str, *, timeout_s: float | None = None) -> bool:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            future.result(timeout=self._timeout_s if timeout_s is None else timeout_s)
        except Exception:  # a broker error or a timeout: the SDK only wants to know it failed
            future.cancel()
            log.exception("kafka span exporter: %s to topic %s failed", what, self._topic)
            return False
        return True

    async def _started(self) -> SpanProducer:
        if self._producer is None:
            producer = SpanProducer(self._settings, topic=self._topic)
            await producer.start()
            self._producer = producer
        return self._producer

    async def _publish(self, events: list[Span]) -> None:
        async with self._send_lock:
            if self._closed and self._producer is None:
                raise RuntimeError("exporter is shut down")
            producer = await self._started()
            await producer.send(events)  # one message per trace, keyed by trace id
            await producer.flush()

    async def _flush(self) -> None:
        async with self._send_lock:
            if self._producer is not None:
                await self._producer.flush()

    async def _close(self) -> None:
        async with self._send_lock:
            producer, self._producer = self._producer, None
            if producer is not None:
                await producer.close()
