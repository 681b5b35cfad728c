"""How fast the web UI's pages are with a large store: the time from navigation to a page rendered with
every number it shows (stats over each window with its charts, endpoints, hot operations, an endpoint's
critical path with and without the tail, the dependency graph), in Debian's headless Chromium, against
``python -m query_api`` running as its own process on a SQLite store; and the slowest reads behind them.

    python bench/ui_pages.py --traces 100000          # about 1.3M spans, spread over the last 7 days

The traces (``shared.demo``) start evenly over the last 7 days, so every window has data and the 7-day
charts read a row per minute bucket they touch. Needs a broker (the API opens a producer at start-up)
and the browser (``apt-get install chromium``; ``TRACING_TEST_CHROMIUM`` names another).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import msgspec

from bench.common import Processes, Row, free_port, log, percentile, render_table, settings_env, wait_http
from shared.demo import make_trace
from shared.models import Span
from shared.settings import Settings
from shared.store import open_store

WEEK_US = 7 * 86_400_000_000
CHROMIUM = os.environ.get("TRACING_TEST_CHROMIUM", "/usr/bin/chromium")
ENDPOINT = f"api-gateway/{quote('processOrder', safe='')}"
PAGES = [
    "#/search",  # the reference: loading the UI itself and one search
    *(f"#/stats?window={w}" for w in ("15m", "1h", "6h", "24h", "7d", "all")),
    "#/endpoints?window=24h",
    "#/hot?window=24h",
    "#/hot",
    f"#/endpoint/{ENDPOINT}?window=24h",
    f"#/endpoint/{ENDPOINT}?window=24h&tail=0.95",
    f"#/endpoint/{ENDPOINT}",
    "#/dependencies?window=24h",
]
READS = [
    "/stats?window=24h",
    "/stats/timeseries?serviceName=api-gateway&window=7d&step=7200000",
    "/stats/timeseries?serviceName=api-gateway&window=24h&step=900000",
    "/stats/operations?serviceName=database&window=7d",
    "/analyze/endpoints?window=7d",
    "/analyze/operations?window=7d",
    f"/analyze/endpoints/{ENDPOINT}/critical-path?window=24h",
    f"/analyze/endpoints/{ENDPOINT}/critical-path?window=24h&tail=0.95",
    f"/analyze/endpoints/{ENDPOINT}/changes?window=1h&baseline=24h",
]


async def fill(store_url: str, settings: Settings, traces: int, *, chunk: int = 1000) -> int:
    """``traces`` demo traces starting evenly over the last 7 days, written and finalized as a worker
    does; answers the number of spans."""
    store = await open_store(msgspec.structs.replace(settings, store_url=store_url))
    rng = random.Random(5)
    now = time.time_ns() // 1000
    spans_total = 0
    try:
        for first in range(0, traces, chunk):
            starts = [now - WEEK_US + (i * WEEK_US) // traces for i in range(first, min(traces, first + chunk))]
            batch: list[list[Span]] = [make_trace(rng, start) for start in starts]
            spans = [s for t in batch for s in t]
            ids = [t[0].trace_id for t in batch]
            await store.write_batch(spans, [], shards=dict.fromkeys(ids, "bench/0"), now_us=now, grace_us=0, idle_us=0)
            await store.finalize(ids, now_us=now)
            spans_total += len(spans)
            if (first // chunk) % 20 == 0:
                log(f"{first + len(batch):,} / {traces:,} traces stored")
    finally:
        await store.close()
    return spans_total


async def page_times(base: str, repeats: int) -> dict[str, list[float]]:
    from playwright.async_api import async_playwright

    out: dict[str, list[float]] = {}
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            for hash_ in PAGES:
                samples = []
                for i in range(repeats + 1):  # the first one warms the caches
                    await page.goto("about:blank")
                    started = time.perf_counter()
                    await page.goto(f"{base}/ui/{hash_}")
                    await page.locator("body[data-state=ready]").wait_for(state="attached", timeout=60_000)
                    if await page.get_by_test_id("error").is_visible():
                        raise RuntimeError(f"{hash_}: {await page.get_by_test_id('error').inner_text()}")
                    if i:
                        samples.append((time.perf_counter() - started) * 1000)
                out[hash_] = samples
        finally:
            await browser.close()
    return out


async def read_times(base: str, repeats: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    week_ago_ms = int(time.time() * 1000) - WEEK_US // 1000
    # As the stats page asks for 7-day charts: whole-hour steps from a whole hour (the store's hour rows).
    hourly = f"/stats/timeseries?serviceName=api-gateway&start={week_ago_ms - week_ago_ms % 3_600_000}&step=7200000"
    async with aiohttp.ClientSession() as session:
        for path in [*READS, hourly]:
            samples = []
            for i in range(repeats + 1):
                started = time.perf_counter()
                async with session.get(base + path) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"GET {path}: HTTP {response.status}")
                if i:
                    samples.append((time.perf_counter() - started) * 1000)
            out[path] = samples
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5, help="page loads per page (after one warm-up)")
    parser.add_argument("--requests", type=int, default=50, help="requests per read (after one warm-up)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tracing-ui-bench-"))
    processes = Processes(workdir)
    port = free_port()
    settings = msgspec.structs.replace(
        Settings.from_env(),
        store_url=f"sqlite:///{workdir / 'ui.db'}",
        api_bind=f"127.0.0.1:{port}",
        log_level="WARNING",
    )
    try:
        started = time.perf_counter()
        spans = await fill(settings.store_url, settings, args.traces)
        log(f"filled in {time.perf_counter() - started:.0f} s: {args.traces:,} traces, {spans:,} spans")
        api = processes.start("api-ui", [sys.executable, "-m", "query_api"], settings_env(settings))
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/healthz", 60, api)
        pages = await page_times(base, args.repeats)
        reads = await read_times(base, args.requests)
    finally:
        processes.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    note = f"{args.traces:,} traces, {spans:,} spans"
    rows = [
        Row("ui", f"page {name}", f"median {percentile(s, 0.5):.0f} ms, max {max(s):.0f} ms", notes=note)
        for name, s in pages.items()
    ]
    rows += [
        Row("ui", f"GET {path}", f"p50 {percentile(s, 0.5):.2f} ms, p99 {percentile(s, 0.99):.2f} ms", notes=note)
        for path, s in reads.items()
    ]
    print(render_table(rows))


if __name__ == "__main__":
    asyncio.run(main())
