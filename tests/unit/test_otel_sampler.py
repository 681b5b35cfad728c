"""The Python remote sampler (:class:`shared.otel.RemoteSampler`) in the real OpenTelemetry SDK, polling a
real HTTP server that answers as ``/api/sampling`` does.

Its behaviour is OpenTelemetry Go contrib ``samplers/jaegerremote``'s, read in ``sampler.go``
(``perOperationSampler``: an operation's sampler, the default probability for operations not listed, at
most ``maxOperations``; ``guaranteedThroughputProbabilisticSampler``: the probability, else a lower-bound
rate limiter, whose balance starts full (``internal/ratelimiter/rate_limiter.go``); the attributes
``jaeger.sampler.type``/``jaeger.sampler.param`` of the sampler that decided) and ``sampler_remote.go``
(``GET <url>?service=<name>``, polled every refresh interval).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.otel import RemoteSampler
from shared.remote_sampling import encode_response, strategy
from tests.e2e.helpers import wait_for

STRATEGY = strategy({"always": 0.5, "seldom": 1000.0}, 1.0)  # p = 1 and p = 0.001


class _Answers(BaseHTTPRequestHandler):
    body = encode_response(STRATEGY)
    paths: ClassVar[list[str]] = []  # every request's path, in order

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/sampling"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sampled(endpoint: str) -> Iterator[tuple[RemoteSampler, InMemorySpanExporter, trace.Tracer]]:
    sampler = RemoteSampler("shop", endpoint, interval_s=0.2)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield sampler, exporter, provider.get_tracer("test")
    finally:
        sampler.close()
        provider.shutdown()


async def test_it_polls_with_the_service_and_applies_each_operations_probability(
    sampled: tuple[RemoteSampler, InMemorySpanExporter, trace.Tracer],
) -> None:
    sampler, exporter, tracer = sampled
    await wait_for(lambda: "seldom" in sampler.strategy.operations, timeout_s=10, what="the strategy polled")
    assert _Answers.paths[0] == "/api/sampling?service=shop"
    await wait_for(lambda: len(_Answers.paths) >= 3, timeout_s=10, what="polled again")
    for _ in range(200):
        with tracer.start_as_current_span("always"):
            pass
        with tracer.start_as_current_span("seldom"):
            pass
    kept = exporter.get_finished_spans()
    always = [span for span in kept if span.name == "always"]
    seldom = [span for span in kept if span.name == "seldom"]
    assert len(always) == 200
    assert dict(always[0].attributes or {}) == {"jaeger.sampler.type": "probabilistic", "jaeger.sampler.param": 1.0}
    # 0.001 of 200 is most likely none: what is kept is the lower bound's first credit, said so
    assert 1 <= len(seldom) <= 3
    assert {"jaeger.sampler.type": "ratelimiting", "jaeger.sampler.param": 1 / 60} in [
        dict(span.attributes or {}) for span in seldom
    ]


async def test_children_follow_their_parent_and_unknown_operations_get_the_default(
    sampled: tuple[RemoteSampler, InMemorySpanExporter, trace.Tracer],
) -> None:
    sampler, exporter, tracer = sampled
    await wait_for(lambda: "always" in sampler.strategy.operations, timeout_s=10, what="the strategy polled")
    with tracer.start_as_current_span("always"), tracer.start_as_current_span("seldom"):
        pass  # the child is kept with its parent, whatever its own operation's probability
    assert [span.name for span in exporter.get_finished_spans()] == ["seldom", "always"]
    assert "jaeger.sampler.type" not in (exporter.get_finished_spans()[0].attributes or {})
    exporter.clear()
    for _ in range(100):
        with tracer.start_as_current_span("new"):
            pass
    assert sampler.strategy.operations["new"].probability == STRATEGY.operation_sampling.default_sampling_probability  # type: ignore[union-attr]
    assert len(exporter.get_finished_spans()) <= 3  # the lower bound's first credit, rarely more


def test_only_http_urls_are_polled() -> None:
    with pytest.raises(ValueError, match="http"):
        RemoteSampler("shop", "file:///etc/passwd")


def test_an_unreachable_endpoint_keeps_the_initial_probability() -> None:
    sampler = RemoteSampler("shop", "http://127.0.0.1:9/api/sampling", interval_s=60, timeout_s=0.5)
    try:
        assert not sampler.update()
        assert sampler.strategy.sampler_for("any").probability == 0.001
        assert sampler.strategy.lower_bound == 0.0
    finally:
        sampler.close()
