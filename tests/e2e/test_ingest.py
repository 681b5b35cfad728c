"""The ingest worker on the real broker: out-of-order, duplicated and late spans end up stored once each,
with the same analysis an offline computation gives; poison messages go to the dead-letter topic."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import msgspec
import pytest

from ingest.worker import Worker
from shared.analysis import analyze
from shared.demo import make_trace
from shared.kafka import SpanProducer
from shared.models import Span, SpanFinish
from shared.prometheus import parse
from shared.settings import Settings
from shared.store import TraceQuery, TraceStore, open_store
from tests.e2e.helpers import dead_letters, reader, running_worker, wait_for
from tests.spans import span_at

pytestmark = pytest.mark.kafka


def _now_us() -> int:
    return time.time_ns() // 1000


async def _all_finalized(settings: Settings, trace_ids: set[str], *, late: dict[str, int] | None = None) -> bool:
    async with reader(settings) as store:
        for trace_id in trace_ids:
            trace = await store.get_trace(trace_id)
            if trace is None or trace.state != "finalized":
                return False
            if late and trace.completeness.late_spans != late.get(trace_id, 0):
                return False
    return True


async def test_out_of_order_duplicate_and_late_spans(settings: Settings) -> None:
    rng = random.Random(7)
    traces = [make_trace(rng, _now_us() - 1_000_000) for _ in range(150)]
    by_trace = {t[0].trace_id: t for t in traces}
    # Hold back one non-root span of some traces, to arrive after finalization.
    held: list[Span] = []
    for spans in traces[:20]:
        if len(spans) > 2:
            held.append(spans[-1])
    held_ids = {s.span_id for s in held}
    stream = [s for spans in traces for s in spans if s.span_id not in held_ids]
    stream += rng.sample(stream, len(stream) // 10)  # duplicates
    rng.shuffle(stream)  # children before roots, traces interleaved

    async with SpanProducer(settings) as producer, running_worker(settings):
        # one event per message for half, batched arrays for the rest
        half = len(stream) // 2
        for span in stream[:half]:
            await producer.send([span])
        await producer.send(stream[half:])
        await producer.flush()
        await wait_for(lambda: _all_finalized(settings, set(by_trace)), timeout_s=60, what="all traces finalized")

        await producer.send(held)
        await producer.flush()
        late = {s.trace_id: 1 for s in held}
        await wait_for(
            lambda: _all_finalized(settings, set(by_trace), late=late),
            timeout_s=60,
            what="late spans refinalized",
        )

    async with reader(settings) as store:
        for trace_id, spans in by_trace.items():
            stored = await store.get_trace(trace_id)
            assert stored is not None and stored.analysis is not None
            assert sorted(stored.spans, key=lambda s: s.span_id) == sorted(spans, key=lambda s: s.span_id)
            assert stored.analysis == analyze(trace_id, spans)
            assert stored.completeness.refinalizations == late.get(trace_id, 0)
        stats = await store.stats()
        assert stats.completed_traces + stats.failed_traces == len(traces)
        assert stats.active_traces == 0
        failed = sum(1 for spans in traces if any(s.status == "error" for s in spans))
        assert stats.failed_traces == failed
        expected_spans: dict[str, int] = {}
        for spans in traces:
            for s in spans:
                expected_spans[s.service_name] = expected_spans.get(s.service_name, 0) + 1
        assert {k: v.count for k, v in stats.services.items()} == expected_spans
        found = await store.find_traces(TraceQuery(service_name="database", limit=1000))
        assert {t.trace_id for t in found} == {
            tid for tid, spans in by_trace.items() if any(s.service_name == "database" for s in spans)
        }


def _open_root_and_rootless(t0: int) -> tuple[Span, Span, SpanFinish, Span]:
    """An open root, its child, the finish event that closes the root (with a tag to redact), and an
    orphan of a trace that never gets a root."""
    trace = "trace-abc-123"
    root = span_at(trace, "span-root-001", None, "api-gateway", "handleUserRequest", t0, None)
    tags = {"userId": "user-456", "password": "hunter2"}
    child = span_at(
        trace, "span-child-002", "span-root-001", "user-service", "getUserById", t0 + 10_000, 45_000, tags=tags
    )
    finish = SpanFinish(
        trace_id=trace,
        span_id="span-root-001",
        end_time_us=t0 + 123_000,
        status="failed",
        tags={"contact": "alice@example.com"},
    )
    orphan = span_at("rootless-1", "a", "missing", "s", "o", t0, 5)
    return root, child, finish, orphan


async def test_open_spans_finish_events_and_rootless_idle_timeout(settings: Settings) -> None:
    root, child, finish, orphan = _open_root_and_rootless(_now_us() - 500_000)
    async with SpanProducer(settings) as producer, running_worker(settings):
        await producer.send([root, child, orphan])
        await producer.flush()
        async with reader(settings) as store:
            # The root is open: the trace stays active past the grace window.
            await wait_for(lambda: _exists(store, "trace-abc-123"), timeout_s=30, what="trace stored")
            trace = await store.get_trace("trace-abc-123")
            assert trace is not None and trace.state == "active"
        await producer.send([finish])
        await producer.flush()
        await wait_for(lambda: _all_finalized(settings, {"trace-abc-123"}), timeout_s=30, what="finalized")
        # The rootless trace finalizes on the idle timeout (3 s in tests), marked incomplete.
        await wait_for(lambda: _all_finalized(settings, {"rootless-1"}), timeout_s=30, what="idle finalize")
    await _assert_closed_redacted_and_idle(settings)


async def _assert_closed_redacted_and_idle(settings: Settings) -> None:
    """The root closed by its finish event (tags merged, redacted), the orphan's trace incomplete."""
    async with reader(settings) as store:
        trace = await store.get_trace("trace-abc-123")
        assert trace is not None and trace.analysis is not None
        stored_root = next(s for s in trace.spans if s.span_id == "span-root-001")
        assert stored_root.duration_us == 123_000
        assert stored_root.status == "error"
        assert stored_root.tags == {"contact": "[REDACTED]"}
        stored_child = next(s for s in trace.spans if s.span_id == "span-child-002")
        assert stored_child.tags == {"userId": "user-456", "password": "[REDACTED]"}
        assert trace.analysis.complete and trace.analysis.failed
        assert trace.analysis.duration_us == 123_000
        rootless = await store.get_trace("rootless-1")
        assert rootless is not None and rootless.analysis is not None
        assert not rootless.analysis.complete
        assert rootless.analysis.orphan_spans == 1


async def _exists(store: TraceStore, trace_id: str) -> bool:
    return await store.get_trace(trace_id) is not None


POISON: list[bytes] = [
    b"{not json",
    b'{"type": "span"}',
    b'{"type": "metric", "traceId": "t"}',
    msgspec.json.encode(
        {
            "type": "span",
            "traceId": "bad id!",
            "spanId": "s",
            "serviceName": "a",
            "operationName": "b",
            "startTimeUs": 1,
        }
    ),
    msgspec.json.encode(
        {
            "type": "span",
            "traceId": "t",
            "spanId": "s",
            "serviceName": "a",
            "operationName": "b",
            "startTimeUs": 1,
            "durationUs": -5,
        }
    ),
    b"",
]
"""Messages no decoder accepts: bad JSON, missing fields, an unknown type, a bad id, a negative
duration, an empty value."""


async def test_poison_messages_go_to_the_dead_letter_topic(settings: Settings) -> None:
    settings = msgspec.structs.replace(settings, worker_metrics_bind="127.0.0.1:0")
    rng = random.Random(3)
    traces = [make_trace(rng, _now_us() - 1_000_000) for _ in range(40)]
    poison = POISON
    async with SpanProducer(settings) as producer, running_worker(settings) as worker:
        for i, spans in enumerate(traces):
            await producer.send(spans)
            if i < len(poison):
                await producer.send_raw(poison[i], key=b"poison")
        await producer.flush()
        ids = {t[0].trace_id for t in traces}
        await wait_for(lambda: _all_finalized(settings, ids), timeout_s=60, what="good traces finalized")
        assert worker.counters.dead_lettered == len(poison)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{worker.metrics_port}/metrics") as r:
            assert r.status == 200
            text = await r.text()
        page = parse(text)
        assert page["tracing_worker_dead_lettered_total", ()] == len(poison)
        assert page["tracing_worker_traces_finalized_total", ()] == len(traces)
        assert page["tracing_worker_batch_seconds_count", ()] >= 1

    got = await dead_letters(settings, settings.topic, len(poison))
    assert sorted(v for v, _ in got) == sorted(poison)
    for value, headers in got:
        assert headers["error"], f"no reason for {value!r}"
        assert headers["source-topic"] == settings.topic.encode()
    reasons = {v: h["error"].decode() for v, h in got}
    assert "durationUs" in reasons[poison[4]]
    assert "traceId" in reasons[poison[3]]
    async with reader(settings) as store:
        for spans in traces:
            stored = await store.get_trace(spans[0].trace_id)
            assert stored is not None and len(stored.spans) == len(spans)


class FlakyStore:
    """A store whose first ``failures`` write_batch calls fail, as a database restart would."""

    def __init__(self, store: TraceStore, failures: int) -> None:
        self._store = store
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def write_batch(self, *args: object, **kwargs: object) -> object:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("database restarting")
        return await self._store.write_batch(*args, **kwargs)  # type: ignore[arg-type]


async def test_a_failed_batch_is_fetched_and_written_again(settings: Settings) -> None:
    rng = random.Random(5)
    traces = [make_trace(rng, _now_us() - 1_000_000) for _ in range(30)]
    async with SpanProducer(settings) as producer:
        for spans in traces:
            await producer.send(spans)
    store = await open_store(settings)
    flaky = FlakyStore(store, failures=3)
    worker = Worker(settings, flaky)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_for(
            lambda: _all_finalized(settings, {t[0].trace_id for t in traces}), timeout_s=60, what="traces finalized"
        )
        assert flaky.failures == 0
        assert not task.done()
    finally:
        stop.set()
        await task
        await store.close()
    async with reader(settings) as r:
        for spans in traces:
            stored = await r.get_trace(spans[0].trace_id)
            assert stored is not None and len(stored.spans) == len(spans)


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``name``'s samples in a Prometheus text exposition: labels (sorted pairs) -> value."""
    return {labels: value for (sample, labels), value in parse(text).items() if sample == name}


async def test_span_metrics_are_scraped_with_the_spanmetrics_names(settings: Settings) -> None:
    """``traces_span_metrics_calls_total`` and ``..._duration_milliseconds_bucket`` (labels service_name,
    span_name, span_kind, status_code), as the Collector's spanmetrics connector names them: every span
    counted once at its trace's first finalization; a late span's re-finalization adds nothing."""
    settings = msgspec.structs.replace(settings, worker_metrics_bind="127.0.0.1:0", grace_ms=100)
    rng = random.Random(21)
    traces = [make_trace(rng, _now_us() - 1_000_000, error_rate=0.2) for _ in range(30)]
    async with SpanProducer(settings) as producer, running_worker(settings) as worker:
        for spans in traces:
            await producer.send(spans)
        await producer.flush()
        ids = {t[0].trace_id for t in traces}
        await wait_for(lambda: _all_finalized(settings, ids), timeout_s=60, what="traces finalized")
        late = msgspec.structs.replace(traces[0][-1], span_id="late0000000000ff", duration_us=5)
        await producer.send([late])
        await producer.flush()
        await wait_for(
            lambda: _all_finalized(settings, {late.trace_id}, late={late.trace_id: 1}), timeout_s=60, what="late"
        )
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{worker.metrics_port}/metrics") as r:
            text = await r.text()

    kinds = {None: "SPAN_KIND_UNSPECIFIED"} | {k: f"SPAN_KIND_{k.upper()}" for k in ("server", "client", "producer")}
    kinds |= {k: f"SPAN_KIND_{k.upper()}" for k in ("consumer", "internal")}
    calls: dict[tuple[tuple[str, str], ...], float] = {}
    le_10ms: dict[tuple[tuple[str, str], ...], float] = {}
    for spans in traces:  # the late span is not counted: its trace was finalized before
        for s in spans:
            labels = (
                ("service_name", s.service_name),
                ("span_kind", kinds[s.kind]),
                ("span_name", s.operation_name),
                ("status_code", "STATUS_CODE_ERROR" if s.status == "error" else "STATUS_CODE_UNSET"),
            )
            calls[labels] = calls.get(labels, 0) + 1
            le_10ms[labels] = le_10ms.get(labels, 0) + ((s.duration_us or 0) <= 10_000)
    assert "# TYPE traces_span_metrics_calls_total counter" in text
    assert "# TYPE traces_span_metrics_duration_milliseconds histogram" in text
    assert _samples(text, "traces_span_metrics_calls_total") == calls
    buckets = _samples(text, "traces_span_metrics_duration_milliseconds_bucket")
    at_10ms = {tuple(p for p in k if p[0] != "le"): v for k, v in buckets.items() if ("le", "10.0") in k}
    assert at_10ms == le_10ms
    counts = _samples(text, "traces_span_metrics_duration_milliseconds_count")
    assert counts == calls
