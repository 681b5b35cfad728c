"""Fuzzing the worker through the real broker: hypothesis-generated payloads for every format (native,
OTLP protobuf and JSON, Zipkin) mixed with good traces never stop the worker and never lose a good span.
Every payload a decoder rejects offline (chosen by the payload's encoding, as the worker chooses it) lands in
that topic's dead-letter topic; everything else is stored.
"""

from __future__ import annotations

import random
import time
import uuid

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.codecs import DecodeError, decoder_for, format_of
from shared.demo import make_trace
from shared.kafka import CONTENT_TYPE_HEADER, SpanProducer, ensure_topics
from shared.settings import Settings
from tests.e2e.helpers import reader, running_worker, wait_for

pytestmark = pytest.mark.kafka

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
GOOD = {
    "type": "span", "traceId": "t", "spanId": "s", "serviceName": "svc", "operationName": "op",
    "startTimeUs": 1_700_000_000_000_000, "durationUs": 5,
}  # fmt: skip
native_mutations = st.builds(
    lambda key, value: msgspec.json.encode(GOOD | {key: value}),
    st.sampled_from(sorted(GOOD)),
    json_values,
)
payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(msgspec.json.encode),
    native_mutations,
    st.lists(native_mutations, max_size=3).map(lambda parts: b"[" + b",".join(parts) + b"]"),
)


def _rejected(value: bytes, topic_format: str) -> bool:
    """Whether the worker dead-letters ``value`` on a topic of ``topic_format``: it picks the decoder as the
    worker does, by the payload (no content-type header here), then by the topic's format."""
    try:
        decoder_for(format_of(None, topic_format, value))(value)
    except DecodeError:
        return True
    return False


@settings(
    max_examples=2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
async def test_fuzzed_payloads_never_stop_the_worker_nor_lose_good_spans(
    base_settings: Settings, data: st.DataObject
) -> None:
    suffix = uuid.uuid4().hex[:8]
    s = msgspec.structs.replace(
        base_settings, topic=f"fz-{suffix}", otlp_topic=f"fzo-{suffix}", zipkin_topic=f"fzz-{suffix}",
        jaeger_topic=f"fzj-{suffix}",
        group=f"fz-{suffix}", store_url=base_settings.store_url.replace(".db", f"-{suffix}.db"),
    )  # fmt: skip
    formats = {s.topic: "native", s.otlp_topic: "otlp_proto", s.zipkin_topic: "zipkin_json"}
    fuzz = {topic: data.draw(st.lists(payloads, min_size=20, max_size=60), label=topic) for topic in formats}
    rng = random.Random(len(fuzz[s.topic]))
    traces = [make_trace(rng, time.time_ns() // 1000 - 1_000_000) for _ in range(30)]
    await ensure_topics(s, [*formats, *(t + s.dlq_suffix for t in formats)])
    async with running_worker(s) as worker:
        for topic, values in fuzz.items():
            async with SpanProducer(s, topic=topic) as producer:
                for value in values:
                    await producer.send_raw(value, headers=[])
        async with SpanProducer(s) as producer:
            for i, spans in enumerate(traces):
                await producer.send(spans)
                native = [(CONTENT_TYPE_HEADER, b"application/vnd.tracing.span+json")]
                await producer.send_raw(fuzz[s.topic][i % len(fuzz[s.topic])], key=b"fuzz", headers=native)
        expected_dead = {topic: [v for v in values if _rejected(v, formats[topic])] for topic, values in fuzz.items()}
        expected_dead[s.topic] += [
            fuzz[s.topic][i % len(fuzz[s.topic])] for i in range(len(traces))
            if _rejected(fuzz[s.topic][i % len(fuzz[s.topic])], "native")
        ]  # fmt: skip

        async def good_spans_stored() -> bool:
            async with reader(s) as store:
                for spans in traces:
                    stored = await store.get_trace(spans[0].trace_id)
                    if stored is None or {x.span_id for x in stored.spans} < {x.span_id for x in spans}:
                        return False
            return True

        total_dead = sum(len(v) for v in expected_dead.values())
        await wait_for(good_spans_stored, timeout_s=60, what="every good span stored")
        await wait_for(lambda: worker.counters.dead_lettered >= total_dead, timeout_s=60, what="dead letters")
        assert worker.counters.dead_lettered == total_dead

    for topic, dead in expected_dead.items():
        consumer = AIOKafkaConsumer(
            topic + s.dlq_suffix, **s.kafka_options(), auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(got) < len(dead) and time.monotonic() < deadline:
                for messages in (await consumer.getmany(timeout_ms=300)).values():
                    got.extend(m.value for m in messages)
        finally:
            await consumer.stop()
        assert sorted(got) == sorted(dead), topic


@pytest.fixture
def base_settings(settings: Settings) -> Settings:
    return settings
