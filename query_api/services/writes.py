"""The write side: turns the write endpoints' bodies into native span events and publishes them to Kafka.

Every answer is sent only after the broker acknowledged the events (``acks=all``). The ingest workers
store them; the API never writes to the store.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from shared.models import STATUS_OF, Log, Span, SpanFinish
from shared.propagation import new_span_id, new_trace_id, parse_traceparent
from shared.store.base import TraceStore

from ..errors import NotFound
from ..producer import Producer
from ..shapes import (
    FinishRequest,
    FinishResponse,
    SpanRequest,
    SpanResponse,
    StartRequest,
    StartResponse,
)
from .clock import Clock, now_us

REMEMBERED_SPANS: Final = 100_000
"""How many span → trace ids of spans this process created are kept for ``/traces/span/finish``."""


def us(milliseconds: float) -> int:
    """Milliseconds (API) to whole microseconds (wire format)."""
    return round(milliseconds * 1000)


class SpanIndex:
    """A bounded LRU map span id → trace id of the spans this process published."""

    def __init__(self, capacity: int = REMEMBERED_SPANS) -> None:
        self._capacity = capacity
        self._traces: OrderedDict[str, str] = OrderedDict()

    def remember(self, span_id: str, trace_id: str) -> None:
        self._traces[span_id] = trace_id
        self._traces.move_to_end(span_id)
        if len(self._traces) > self._capacity:
            self._traces.popitem(last=False)

    def trace_of(self, span_id: str) -> str | None:
        trace_id = self._traces.get(span_id)
        if trace_id is not None:
            self._traces.move_to_end(span_id)
        return trace_id

    def __len__(self) -> int:
        return len(self._traces)


class WriteService:
    """Builds and publishes the events of ``/traces/start``, ``/traces/span`` and ``/traces/span/finish``."""

    def __init__(
        self,
        producer: Producer,
        store: TraceStore,
        *,
        clock: Clock = now_us,
        remembered_spans: int = REMEMBERED_SPANS,
    ) -> None:
        self._producer = producer
        self._store = store
        self._clock = clock
        self._spans = SpanIndex(remembered_spans)

    async def _publish(self, event: Span | SpanFinish) -> None:
        await self._producer.span_producer.publish([event])

    async def start(self, request: StartRequest, traceparent_header: str | None = None) -> StartResponse:
        """Publish an open span. The trace: ``traceId`` if given, else the body's ``traceparent``, else a
        valid ``traceparent`` header (an invalid header is ignored, as W3C asks), else a new trace."""
        trace_id, parent_id = request.trace_id, request.parent_span_id
        if trace_id is None:
            context = None
            if request.traceparent is not None:
                context = parse_traceparent(request.traceparent)
            elif traceparent_header is not None:
                context = parse_traceparent(traceparent_header)
            if context is not None:
                trace_id, context_parent, _ = context
                parent_id = parent_id or context_parent
            else:
                trace_id = new_trace_id()
        span = Span(
            trace_id=trace_id,
            span_id=new_span_id(),
            parent_span_id=parent_id,
            service_name=request.service_name,
            operation_name=request.operation_name,
            start_time_us=self._clock() if request.start_time is None else us(request.start_time),
            kind=request.kind,
            tags=request.tags,
        )
        await self._publish(span)
        self._spans.remember(span.span_id, trace_id)
        return StartResponse(trace_id=trace_id, span_id=span.span_id)

    async def span(self, request: SpanRequest) -> SpanResponse:
        """Publish a span: complete with ``duration`` (just finished unless ``startTime`` is given), else
        open."""
        now = self._clock()
        duration_us = None if request.duration is None else us(request.duration)
        if request.start_time is not None:
            start_us = us(request.start_time)
        elif duration_us is not None:
            start_us = max(0, now - duration_us)
        else:
            start_us = now
        span = Span(
            trace_id=request.trace_id,
            span_id=request.span_id or new_span_id(),
            parent_span_id=request.parent_span_id,
            service_name=request.service_name,
            operation_name=request.operation_name,
            start_time_us=start_us,
            duration_us=duration_us,
            status=request.status,
            kind=request.kind,
            tags=request.tags,
            logs=tuple(
                Log(timestamp_us=now if log.timestamp is None else us(log.timestamp), fields=log.fields)
                for log in request.logs
            ),
        )
        await self._publish(span)
        self._spans.remember(span.span_id, span.trace_id)
        return SpanResponse(span_id=span.span_id, trace_id=span.trace_id)

    async def finish(self, request: FinishRequest) -> FinishResponse:
        """Publish a finish event. The trace: ``traceId`` if given, else a span this process created, else
        the store; :class:`NotFound` if none knows the span."""
        span_id = request.span_id
        trace_id = request.trace_id or self._spans.trace_of(span_id) or await self._store.trace_of_span(span_id)
        if trace_id is None:
            raise NotFound(f"span {span_id} not found")
        finish = SpanFinish(
            trace_id=trace_id,
            span_id=span_id,
            end_time_us=self._clock() if request.end_time is None else us(request.end_time),
            status=request.status,
            tags=request.tags,
        )
        await self._publish(finish)
        return FinishResponse(
            span_id=span_id,
            trace_id=trace_id,
            status=None if request.status is None else STATUS_OF[request.status],
        )
