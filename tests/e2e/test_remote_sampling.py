"""Remote sampling with real clients, on the real broker, a worker and the query API: three operations
offered at 1, 30 and 300 traces/s, sampled by a client that polls ``/sampling`` (Go) or ``/api/sampling``
(Python); every sampled span goes through Kafka into the store, from which the API computes the next
probabilities. Within a few intervals each operation is kept at the target rate (30%), the rare one whole.

* Go: OpenTelemetry Go's ``go.opentelemetry.io/contrib/samplers/jaegerremote`` (read: ``sampler.go``,
  ``sampler_remote.go``, ``sampler_remote_options.go``), parent-based, in ``jaegerremote_client/main.go``,
  built from the Go module proxy into ``~/.cache/tracing/go`` (never in the repository); it prints its
  sampled spans as native JSON lines, which the test publishes to the spans topic.
* Python: :class:`shared.otel.RemoteSampler` in the OpenTelemetry SDK, exporting with
  :class:`shared.otel.KafkaSpanExporter`.

Short intervals (``TRACING_REMOTE_SAMPLING_INTERVAL_S=2``, clients polling every second) and a target of 10
traces/s, so the counts measured over :data:`MEASURE_S` (25 s, after a warm-up of :data:`WARMUP_S`) are large
enough to judge: 250 kept traces per busy operation. An estimate of an operation's traffic from its kept
traces (each weighed 1 / the probability it was sampled with, Horvitz-Thompson) has a relative standard
error of sqrt((1 - p) / kept): 6.2% for the busiest (p = 1/30), 5.2% for the middle one (p = 1/3), so the
25% asserted on the estimates is four standard errors. (More kept traces a second would judge sooner, but
every kept trace goes through the worker and the store, which the API must read within 2 s of the trace
for its estimate: on 2 busy cores twice as many fell behind that and were sampled over the target.)

The estimates asserted:

* the API's own (:func:`query_api.services.sampling.endpoint_rates`, every kept trace weighed, over the
  measured window);
* the adjusted counts of the kept traces (what the rollups add up) over the measured window;
* ``/stats`` and ``/stats/operations``: exactly those adjusted counts, minute by minute (the rollups' finest
  grain) over every minute the traffic touched. With the previous point this is ``/stats``' estimate of the
  traffic, without waiting for whole minutes of steady traffic after the warm-up (the traces kept in the
  warm-up, at a probability of 0.001, weigh 1000 each: far too noisy to judge against what was offered, but
  exactly what ``/stats`` must add up).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from query_api import create_app
from query_api.services.sampling import endpoint_rates
from shared.adjusted_counts import sampler_probability, trace_adjusted_count
from shared.kafka import SpanProducer
from shared.models import Span
from shared.otel import KafkaSpanExporter, RemoteSampler
from shared.otel.exporter import span_from_sdk
from shared.settings import Settings
from shared.store.base import TraceStore
from tests.api.support import serve
from tests.e2e.helpers import reader, running_worker, wait_for
from tests.prerequisites import missing

pytestmark = pytest.mark.kafka

OFFERED = {"GET /rare": 1.0, "GET /mid": 30.0, "GET /busy": 300.0}
TARGET_TPS = 10.0
INTERVAL_S = 2.0
WARMUP_S = 16.0
"""Until every strategy in force is computed from traces sampled at the operations' own probabilities: the
first ones come from the few traces kept at 0.001 in the first seconds, and a strategy's window (3 intervals,
ending 2 s before the interval) holds none of those from about 14 s on."""
MEASURE_S = 25.0
ESTIMATE_REL = 0.25
"""Four standard errors of the busiest operation's estimate from 250 kept traces (see the module)."""
MINUTE_US = 60_000_000
CLIENT = Path(__file__).parent / "jaegerremote_client"
GO_CACHE = Path.home() / ".cache" / "tracing" / "go"


@pytest.fixture(scope="session")
def go_client() -> Path:
    """The Go client, built once per source version (``go.mod``, ``go.sum``, ``main.go``) with the module
    and build caches in :data:`GO_CACHE`."""
    go = shutil.which("go")
    if go is None:
        missing("no Go toolchain (go) on PATH")
    digest = hashlib.sha256(b"".join((CLIENT / name).read_bytes() for name in ("go.mod", "go.sum", "main.go")))
    binary = GO_CACHE / "bin" / f"jaegerremote-client-{digest.hexdigest()[:16]}"
    if not binary.exists():
        env = {**os.environ, "GOPATH": str(GO_CACHE), "GOMODCACHE": str(GO_CACHE / "mod"),
               "GOCACHE": str(GO_CACHE / "build"), "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"}  # fmt: skip
        result = subprocess.run(
            [go, "build", "-o", str(binary), "."], cwd=CLIENT, env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, f"go build failed:\n{result.stderr[-3000:]}"
    return binary


@pytest.fixture
def sampling_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings, remote_sampling_interval_s=INTERVAL_S, remote_sampling_target_tps=TARGET_TPS
    )


@contextlib.asynccontextmanager
async def _pipeline(settings: Settings) -> AsyncIterator[tuple[str, TraceStore]]:
    """A worker and the API (its base URL and store), the worker's partitions assigned."""
    async with running_worker(settings) as worker, reader(settings) as store:
        await wait_for(lambda: bool(worker.shards), timeout_s=30, what="partitions assigned")
        async with serve(create_app(settings, store=store)) as base:
            yield base, store


def _measured(kept: dict[str, list[Span]], start_us: int) -> dict[str, list[Span]]:
    """The kept root spans of the measured window (:data:`MEASURE_S` from ``start_us``), per operation."""
    end_us = start_us + int(MEASURE_S * 1e6)
    return {op: [s for s in spans if start_us <= s.start_time_us < end_us] for op, spans in kept.items()}


def _assert_kept_at_target(kept: dict[str, list[Span]], start_us: int) -> None:
    """Kept root spans per operation over the measured window: the busy ones within 30% of the target, the
    rare one whole (all it offered, give or take the window's edges)."""
    counts = {op: len(spans) for op, spans in _measured(kept, start_us).items()}
    for operation, offered in OFFERED.items():
        expected = min(offered, TARGET_TPS) * MEASURE_S
        tolerance = 1.5 if offered <= TARGET_TPS else 0.3 * expected
        assert abs(counts.get(operation, 0) - expected) <= tolerance, (operation, counts, expected)


def _run_s() -> float:
    """How long the traffic runs: past the measured window, with 2 s to spare."""
    return WARMUP_S + MEASURE_S + 2


def _assert_adjusted_estimate(kept: dict[str, list[Span]], start_us: int) -> None:
    """The kept traces of the measured window, each weighed by its adjusted count (what the rollups add up:
    1 / the probability its root span states, rounded up or down by its trace id, unbiased), estimate what
    each operation offered within :data:`ESTIMATE_REL`. Every kept root states its probability: below 1
    for the busy operations, 1 for the rare one, sampled whole."""
    for operation, spans in _measured(kept, start_us).items():
        offered = OFFERED[operation]
        probabilities = [sampler_probability(s.tags) for s in spans]
        assert None not in probabilities, (operation, [s.tags for s in spans[:3]])
        assert (offered > TARGET_TPS) == any(p != 1 for p in probabilities), (operation, probabilities[:10])
        estimated = sum(trace_adjusted_count(s.trace_id, [s]) for s in spans)
        assert estimated / MEASURE_S == pytest.approx(offered, rel=ESTIMATE_REL), (operation, len(spans))


async def _assert_stats_exact(base: str, service: str, kept: dict[str, list[Span]]) -> None:
    """``/stats`` and ``/stats/operations`` of each minute the kept traces started in, once every kept trace
    of it is counted as received: the service's estimated traces (one span each) and each operation's
    count are exactly the sums of the kept traces' adjusted counts."""
    minutes: dict[int, list[Span]] = {}
    for spans in kept.values():
        for span in spans:
            minutes.setdefault(span.start_time_us // MINUTE_US, []).append(span)
    assert minutes, "nothing kept"
    async with aiohttp.ClientSession() as http:
        for minute, spans in sorted(minutes.items()):
            query = f"start={minute * MINUTE_US // 1000}&end={(minute + 1) * MINUTE_US // 1000}"

            async def counted(query: str = query, received: int = len(spans)) -> bool:
                async with http.get(f"{base}/stats?{query}") as response:
                    stats = await response.json()
                return bool(stats["serviceStats"].get(service, {}).get("count") == received)

            await wait_for(counted, timeout_s=60, what=f"the kept traces of minute {minute} in the rollups")
            adjusted = {op: 0 for op in OFFERED}
            for span in spans:
                adjusted[span.operation_name] += trace_adjusted_count(span.trace_id, [span])
            async with http.get(f"{base}/stats?{query}") as response:
                estimated = (await response.json())["serviceStats"][service]["estimatedCount"]
            async with http.get(f"{base}/stats/operations?serviceName={service}&{query}") as response:
                operations = {o["operation"]: o["count"] for o in (await response.json())["operations"]}
            assert estimated == sum(adjusted.values()), (minute, estimated, adjusted)
            assert operations == {op: n for op, n in adjusted.items() if n}, (minute, operations, adjusted)


async def _assert_estimate(store: TraceStore, service: str, start_us: int) -> None:
    """The API's own estimate of each operation's traffic over the window, every kept trace weighed by the
    probability it was sampled with: within :data:`ESTIMATE_REL` of what was offered."""
    window_us = int(MEASURE_S * 1e6)
    rates = await endpoint_rates(store, service, start_us + window_us, window_us, weigh=1000)
    for operation, offered in OFFERED.items():
        assert rates.get(operation, 0) == pytest.approx(offered, rel=ESTIMATE_REL), (operation, rates)


@pytest.mark.timeout(900)  # the first build fetches the modules and compiles on 2 shared cores (2-3 min)
async def test_the_go_jaegerremote_sampler_keeps_each_operation_at_the_target(
    sampling_settings: Settings, go_client: Path
) -> None:
    settings = sampling_settings
    kept: dict[str, list[Span]] = {op: [] for op in OFFERED}
    async with _pipeline(settings) as (base, store), SpanProducer(settings) as producer:
        started_us = time.time_ns() // 1000
        args = ["-url", f"{base}/sampling", "-service", "shop-go", "-refresh", "1s"]
        args += ["-duration", f"{_run_s():.0f}s", *(f"{op}={rate}" for op, rate in OFFERED.items())]
        process = await asyncio.create_subprocess_exec(
            str(go_client), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=1 << 20
        )
        assert process.stdout is not None
        decoder = msgspec.json.Decoder(Span)
        batch: list[Span] = []
        sent_at = time.monotonic()
        async for line in process.stdout:  # published in batches of up to 0.2 s
            span = decoder.decode(line)
            kept[span.operation_name].append(span)
            batch.append(span)
            if time.monotonic() - sent_at >= 0.2:
                await producer.send(batch)
                batch, sent_at = [], time.monotonic()
        await producer.send(batch)
        await producer.flush()
        assert await process.wait() == 0, (await process.stderr.read()).decode()[-3000:]  # type: ignore[union-attr]
        measured_from = started_us + int(WARMUP_S * 1e6)
        _assert_kept_at_target(kept, measured_from)
        _assert_adjusted_estimate(kept, measured_from)
        await _assert_stats_exact(base, "shop-go", kept)
        await _assert_estimate(store, "shop-go", measured_from)


def _offer(tracer_provider: TracerProvider, until: float, stop: threading.Event) -> None:
    """Start each operation's root spans at its offered rate until ``until`` (monotonic) or ``stop``."""
    tracer = tracer_provider.get_tracer("remote-sampling-test")
    begin = time.monotonic()
    started = dict.fromkeys(OFFERED, 0)
    while not stop.is_set() and (now := time.monotonic()) < until:
        for operation, rate in OFFERED.items():
            while started[operation] < int(rate * (now - begin)):
                started[operation] += 1
                tracer.start_span(operation, kind=SpanKind.SERVER).end()
        time.sleep(0.005)


async def test_the_python_remote_sampler_keeps_each_operation_at_the_target(sampling_settings: Settings) -> None:
    settings = sampling_settings
    memory = InMemorySpanExporter()
    async with _pipeline(settings) as (base, store):
        sampler = RemoteSampler("shop-py", f"{base}/api/sampling", interval_s=1.0)
        provider = TracerProvider(resource=Resource.create({"service.name": "shop-py"}), sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(memory))
        provider.add_span_processor(BatchSpanProcessor(KafkaSpanExporter(settings), schedule_delay_millis=200))
        started_us = time.time_ns() // 1000
        stop = threading.Event()
        until = time.monotonic() + _run_s()
        try:
            await asyncio.to_thread(_offer, provider, until, stop)
        finally:
            stop.set()
            sampler.close()
            await asyncio.to_thread(provider.shutdown)
        kept = _kept(memory)
        measured_from = started_us + int(WARMUP_S * 1e6)
        _assert_kept_at_target(kept, measured_from)
        _assert_adjusted_estimate(kept, measured_from)
        await _assert_stats_exact(base, "shop-py", kept)
        await _assert_estimate(store, "shop-py", measured_from)


def _kept(memory: InMemorySpanExporter) -> dict[str, list[Span]]:
    """The kept root spans, per operation, as the exporter sends them."""
    kept: dict[str, list[Span]] = {op: [] for op in OFFERED}
    for span in memory.get_finished_spans():
        kept[span.name].append(span_from_sdk(span))
    return kept
