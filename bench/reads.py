"""Benchmark: read latency as the store grows. `/stats` and `/traces/{id}/analyze` are served from
precomputed rows (rollups, the stored analysis), so their cost must not grow with the number of traces.

    python bench/reads.py --traces 1000 100000      # one row per size; real HTTP over a socket

Fills a fresh SQLite store per size directly through the store API (write_batch + finalize, as the
worker does), starts the query API on it, and times requests with an HTTP client. No broker needed:
the API's write side is not exercised.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web

from query_api.app import create_app
from shared.demo import make_trace
from shared.settings import Settings
from shared.store import TraceStore, open_store


async def fill(store: TraceStore, traces: int, seed: int = 3) -> tuple[list[str], int]:
    rng = random.Random(seed)
    ids: list[str] = []
    spans_total = 0
    start = time.time_ns() // 1000 - 3_600_000_000
    chunk = 500
    for i in range(0, traces, chunk):
        batch = [make_trace(rng, start + (i + j) * 1000, max_spans=12) for j in range(min(chunk, traces - i))]
        spans = [s for t in batch for s in t]
        spans_total += len(spans)
        trace_ids = [t[0].trace_id for t in batch]
        await store.write_batch(spans, [], shards={t: "bench/0" for t in trace_ids}, now_us=0, grace_us=0, idle_us=0)
        await store.finalize(trace_ids, now_us=1)
        ids.extend(trace_ids)
    return ids, spans_total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def timed(session: aiohttp.ClientSession, urls: list[str]) -> tuple[float, float]:
    samples = []
    for url in urls:
        t = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            assert response.status == 200, (url, response.status)
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def measure(traces: int, requests: int) -> dict[str, tuple[float, float]]:
    tmp = tempfile.mkdtemp(prefix="bench-reads-")
    settings = Settings.from_env({}, store_url=f"sqlite:///{tmp}/traces.db")
    store = await open_store(settings)
    ids, spans = await fill(store, traces)
    port = _free_port()
    app = create_app(settings, store=store)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(9)
    try:
        async with aiohttp.ClientSession() as session:
            picks = [rng.choice(ids) for _ in range(requests)]
            results = {
                "GET /stats": await timed(session, [f"{base}/stats"] * requests),
                "GET /traces/{id}": await timed(session, [f"{base}/traces/{t}" for t in picks]),
                "GET /traces/{id}/analyze": await timed(session, [f"{base}/traces/{t}/analyze" for t in picks]),
                "GET /traces/query?serviceName=database&limit=20": await timed(
                    session, [f"{base}/traces/query?serviceName=database&limit=20"] * requests
                ),
                "GET /traces/query?minDuration=100&limit=20": await timed(
                    session, [f"{base}/traces/query?minDuration=100&limit=20"] * requests
                ),
            }
    finally:
        await runner.cleanup()
        await store.close()
    print(f"  ({traces} traces, {spans} spans)", file=sys.stderr)
    return results


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    table = {n: await measure(n, args.requests) for n in args.traces}
    names = list(next(iter(table.values())))
    header = "".join(f"{f'{n:,} traces p50/p99 ms':>28}" for n in args.traces)
    print(f"{'request':<50}{header}")
    for name in names:
        cells = "".join(f"{f'{table[n][name][0]:.2f} / {table[n][name][1]:.2f}':>28}" for n in args.traces)
        print(f"{name:<50}{cells}")


if __name__ == "__main__":
    asyncio.run(main())
