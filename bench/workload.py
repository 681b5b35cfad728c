"""The spans every part measures: the demo traces (``shared.demo``, about 13 spans each), deterministic
for a seed, published as native messages (one JSON array per trace, keyed by trace id) or as Zipkin v2
JSON lists (one per trace, no key, as Zipkin's Kafka reporters write them).

Traces are generated while they are published, so a run of millions of spans never holds them all.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from shared.codecs.native import encode_native
from shared.demo import make_trace
from shared.kafka import CONTENT_TYPE_HEADER, SpanProducer, ensure_topics
from shared.models import SPAN_CONTENT_TYPE, Span
from shared.settings import Settings

WireFormat = Literal["native", "zipkin"]
NATIVE_HEADERS = [(CONTENT_TYPE_HEADER, SPAN_CONTENT_TYPE.encode())]
ZIPKIN_KINDS = {"server": "SERVER", "client": "CLIENT", "producer": "PRODUCER", "consumer": "CONSUMER"}
SEED = 5


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


def native_message(trace: Sequence[Span]) -> bytes:
    return encode_native(trace)


@dataclass
class Filled:
    spans: int = 0
    messages: int = 0
    seconds: float = 0.0
    sample: list[bytes] = field(default_factory=list)  # the first message values, for in-process work


async def fill(
    settings: Settings,
    topic: str,
    spans_wanted: int,
    wire: WireFormat,
    *,
    seed: int = SEED,
    keep: int = 0,
) -> Filled:
    """Publish demo traces to ``topic`` (created with ``settings.partitions`` partitions), one message per
    trace, and wait for every acknowledgement. ``keep``: how many message values to return as a sample."""
    await ensure_topics(settings, [topic])
    result = Filled()
    started = time.perf_counter()
    async with SpanProducer(settings, topic=topic) as producer:
        for trace in demo_traces(spans_wanted, seed=seed):
            if wire == "native":
                value, key, headers = native_message(trace), trace[0].trace_id.encode(), NATIVE_HEADERS
            else:
                value, key, headers = zipkin_message(trace), None, []
            await producer.send_raw(value, key=key, headers=headers)
            result.spans += len(trace)
            result.messages += 1
            if len(result.sample) < keep:
                result.sample.append(value)
    result.seconds = time.perf_counter() - started
    return result
