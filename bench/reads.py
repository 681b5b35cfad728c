"""(e) Read latency over real HTTP with a large store: trace by id, analyze, query (by service; by
minDuration; by a tag; by service and a tag), stats (all time and over the last hour), a service's time
series, Jaeger's latency metrics, an endpoint's aggregated critical path (from the rollups, and over the
slowest 10,000 traces of the endpoint), against ``python -m query_api`` running as its own process.

    python bench/reads.py --spans 100000 1000000     # one column per store size
    python bench/reads.py --spans 1000000 --window-minute 31   # also windows pinned to :31

The windows "up to now" start at the minute of the hour the clock is at (logged), which decides how many
rollup rows they read; ``--window-minute M`` adds reads of windows given by ``start`` and ``end`` that
start and end at minute M of the hour (the last such minute before the reads), so that a window's worst
minute can be measured at any time.

The store (SQLite) is filled directly through the store API (``write_batch`` + ``finalize``, as the worker
does), then the API is started on it. ``/stats`` and ``/analyze`` are served from precomputed rows (rollups,
the stored analysis), so their cost must not grow with the store. Needs a broker (the API's write side
opens a producer at start-up) but publishes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import msgspec

from bench.common import Processes, Row, free_port, log, percentile, render_table, settings_env, wait_http
from shared.demo import make_trace
from shared.gc_tuning import tuned_gc
from shared.models import Span
from shared.settings import Settings
from shared.store import TraceStore, open_store


@dataclass
class Filled:
    trace_ids: list[str]
    spans: int
    seconds: float


SPREAD_US = 86_400_000_000
"""The fill spreads its traces over the last day, so windows of an hour or a day hold different traces."""


async def fill(store: TraceStore, spans_wanted: int, *, seed: int = 3, chunk: int = 500) -> Filled:
    """Demo traces spread evenly over the last day, written and finalized ``chunk`` traces at a time: the
    last hour holds a 24th of them, as a store with steady traffic would."""
    # the fill's traces made once beforehand (same seed) to count them: the gap between two traces' starts
    # then spreads them over the whole day, whatever the generator's trace size (a mean learnt from the
    # first thousand left the last half hour empty)
    sample, traces, counted = random.Random(seed), 0, 0
    while counted < spans_wanted:
        counted += len(make_trace(sample, 0))
        traces += 1
    rng = random.Random(seed)
    ids: list[str] = []
    spans_total = 0
    start = time.time_ns() // 1000 - SPREAD_US
    gap = max(1, SPREAD_US // max(1, traces))
    started = time.perf_counter()
    while spans_total < spans_wanted:
        batch: list[list[Span]] = []
        while len(batch) < chunk and spans_total < spans_wanted:
            trace = make_trace(rng, start + (len(ids) + len(batch)) * gap)
            batch.append(trace)
            spans_total += len(trace)
        spans = [s for t in batch for s in t]
        trace_ids = [t[0].trace_id for t in batch]
        await store.write_batch(spans, [], shards=dict.fromkeys(trace_ids, "bench/0"), now_us=0, grace_us=0, idle_us=0)
        await store.finalize(trace_ids, now_us=1)
        ids.extend(trace_ids)
        if spans_total // 100_000 != (spans_total - len(spans)) // 100_000:
            log(f"store filled with {spans_total:,} / {spans_wanted:,} spans, {time.perf_counter() - started:.0f} s")
    return Filled(ids, spans_total, time.perf_counter() - started)


TAIL = 0.6
"""The tail asked for in the tail read: with 1M spans stored, processOrder's slowest 40% are the 10,000
traces a tail read aggregates at most."""


@dataclass
class ReadsResult:
    traces: int
    spans: int
    fill_seconds: float
    latency_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # request -> (p50, p99)


async def _timed(session: aiohttp.ClientSession, urls: list[str]) -> list[float]:
    samples = []
    for url in urls:
        t = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {url}: HTTP {response.status}")
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def pinned_end_ms(minute: int, now_us: int) -> int:
    """The last moment at ``minute`` of an hour (``:MM:00``) before ``now_us``, in epoch milliseconds."""
    hour_us, minute_us = 3_600_000_000, 60_000_000
    end = now_us - now_us % hour_us + minute * minute_us
    return (end if end <= now_us else end - hour_us) // 1000


async def read_latency(
    settings: Settings,
    processes: Processes,
    workdir: Path,
    spans_wanted: int,
    requests: int,
    window_minute: int | None = None,
) -> ReadsResult:
    """Fill a fresh SQLite store in ``workdir`` with ``spans_wanted`` spans, serve it with the real API
    process, and time ``requests`` sequential requests per kind (after a few warm-up requests)."""
    store_path = workdir / f"reads-{spans_wanted}.db"
    port = free_port()
    api_settings = msgspec.structs.replace(
        settings, store_url=f"sqlite:///{store_path}", api_bind=f"127.0.0.1:{port}", log_level="WARNING"
    )
    store = await open_store(api_settings)
    try:
        filled = await fill(store, spans_wanted)
    finally:
        await store.close()
    result = ReadsResult(len(filled.trace_ids), filled.spans, filled.seconds)
    api = processes.start(f"api-reads-{spans_wanted}", [sys.executable, "-m", "query_api"], settings_env(api_settings))
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/healthz", 60, api)
        rng = random.Random(9)
        kinds: dict[str, Callable[[], str]] = {
            "GET /traces/{id}": lambda: f"{base}/traces/{rng.choice(filled.trace_ids)}",
            "GET /traces/{id}/analyze": lambda: f"{base}/traces/{rng.choice(filled.trace_ids)}/analyze",
            "GET /traces/query?serviceName=database&limit=20": lambda: (
                f"{base}/traces/query?serviceName=database&limit=20"
            ),
            "GET /traces/query?minDuration=100&limit=20": lambda: f"{base}/traces/query?minDuration=100&limit=20",
            "GET /traces/query?tag=rpc.method:refund&limit=20": lambda: (
                f"{base}/traces/query?tag=rpc.method:refund&limit=20"
            ),
            "GET /traces/query?serviceName=database&tag=db.operation.name:INSERT&limit=20": lambda: (
                f"{base}/traces/query?serviceName=database&tag=db.operation.name:INSERT&limit=20"
            ),
            "GET /stats": lambda: f"{base}/stats",
            "GET /stats?window=1h": lambda: f"{base}/stats?window=1h",
            "GET /stats/timeseries?serviceName=database&window=1h&step=60000": lambda: (
                f"{base}/stats/timeseries?serviceName=database&window=1h&step=60000"
            ),
            "GET /api/metrics/latencies?service=api-gateway&quantile=0.95 (1 h, 1 min step)": lambda: (
                f"{base}/api/metrics/latencies?service=api-gateway&quantile=0.95&lookback=3600000&step=60000"
                "&ratePer=600000"
            ),
            "GET /analyze/endpoints/api-gateway/processOrder/critical-path?window=24h": lambda: (
                f"{base}/analyze/endpoints/api-gateway/processOrder/critical-path?window=24h"
            ),
            f"GET .../critical-path?window=24h&tail={TAIL} (10,000 traces)": lambda: (
                f"{base}/analyze/endpoints/api-gateway/processOrder/critical-path?window=24h&tail={TAIL}"
            ),
        }
        log(f"windows up to now start at :{time.gmtime().tm_min:02d} (minute of the hour)")
        if window_minute is not None:
            end_ms = pinned_end_ms(window_minute, time.time_ns() // 1000)
            kinds[f"GET /stats?start=&end= (1 h, :{window_minute:02d} to :{window_minute:02d})"] = lambda: (
                f"{base}/stats?start={end_ms - 3_600_000}&end={end_ms}"
            )
            kinds[f"GET .../critical-path?start=&end= (24 h, :{window_minute:02d} to :{window_minute:02d})"] = lambda: (
                f"{base}/analyze/endpoints/api-gateway/processOrder/critical-path?start={end_ms - 86_400_000}"
                f"&end={end_ms}"
            )
        # the client's own collector pauses are not the API's latency: tuned as the worker's, after the fill
        with tuned_gc():
            async with aiohttp.ClientSession() as session:
                for name, url in kinds.items():
                    await _timed(session, [url() for _ in range(min(20, requests))])  # warm-up: page cache, connection
                    samples = await _timed(session, [url() for _ in range(requests)])
                    result.latency_ms[name] = (percentile(samples, 0.5), percentile(samples, 0.99))
    finally:
        processes.stop(api)
        for path in store_path.parent.glob(f"{store_path.name}*"):  # the file, its -wal, -shm and -lock
            path.unlink()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--window-minute",
        type=int,
        choices=range(60),
        metavar="M",
        help="also read windows that start and end at minute M of the hour (0-59)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tracing-bench-"))
    processes = Processes(workdir)
    settings = Settings.from_env()
    try:
        results = [
            await read_latency(settings, processes, workdir, n, args.requests, args.window_minute) for n in args.spans
        ]
    finally:
        processes.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for result in results:
        for name, (p50, p99) in result.latency_ms.items():
            rows.append(Row("e", name, f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", notes=f"{result.spans:,} spans stored"))
    print(render_table(rows))


if __name__ == "__main__":
    asyncio.run(main())
