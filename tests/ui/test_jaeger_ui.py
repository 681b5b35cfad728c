"""The real Jaeger UI shows archived traces: a build of jaeger-ui served by ``scripts/jaeger_ui.py`` in front of
the query API, in headless Chromium. Traces produced with start times three hours in the past go through
the real broker into a worker with a folder archive, which moves them out of the hot store; recent ones
stay hot. The UI's search over both finds every one of them, its trace page draws an archived trace's
spans, and its archive button pins the trace.

Opt-in: the UI is a separate project built with npm (a few minutes), so this runs when
``TRACING_TEST_JAEGER_UI`` names a build folder (``npm ci && npm run build`` in jaeger-ui's
``packages/jaeger-ui``, tag v1.73.0: its ``build/``), and is skipped otherwise.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import msgspec
import pytest
from playwright.async_api import Browser, Request

from query_api import create_app
from shared.demo import make_trace
from shared.kafka import SpanProducer, ensure_topics
from shared.models import Span
from shared.settings import Settings
from tests.api.support import serve
from tests.conftest import free_port
from tests.e2e.helpers import reader, wait_for
from tests.e2e.workers import ROOT, WorkerProcess
from tests.ui.conftest import VIEWPORT

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

UI_BUILD = os.environ.get("TRACING_TEST_JAEGER_UI", "")
HOUR_US = 3_600_000_000


@pytest.fixture
def ui_build() -> Path:
    if not UI_BUILD:
        pytest.skip("TRACING_TEST_JAEGER_UI is not set (a build folder of jaeger-ui)")
    build = Path(UI_BUILD)
    assert (build / "index.html").is_file(), f"TRACING_TEST_JAEGER_UI={UI_BUILD}: no index.html there"
    return build


def _root(trace: list[Span]) -> Span:
    return next(span for span in trace if not span.parent_span_id)


async def test_the_jaeger_ui_shows_archived_traces(
    ui_build: Path, settings: Settings, tmp_path: Path, browser: Browser
) -> None:
    archiving = msgspec.structs.replace(
        settings, archive_url=(tmp_path / "archive").as_uri(), archive_after_h=1.0, archive_check_s=1.0
    )
    rng = random.Random(73)
    now = time.time_ns() // 1000
    old = [make_trace(rng, now - 3 * HOUR_US + i * 2_000_000) for i in range(60)]
    recent = [make_trace(rng, now - 600_000_000 + i * 2_000_000) for i in range(30)]
    service = _root(old[0]).service_name
    expected = {t[0].trace_id for t in old + recent if any(s.service_name == service for s in t)}
    await ensure_topics(archiving, [archiving.topic, archiving.dlq_topic])
    async with reader(archiving):
        pass
    worker = WorkerProcess(archiving, tmp_path / "worker.log")
    try:
        async with SpanProducer(archiving) as producer:
            for trace in old + recent:
                await producer.send(trace)
            await producer.flush()

        async def moved() -> bool:
            async with reader(archiving) as store:
                hot = [await store.get_trace(t[0].trace_id) for t in old[:1] + recent[:1]]
                return hot[0] is None and hot[1] is not None and bool(await store.archived_blocks())

        await wait_for(moved, timeout_s=180, what="the old traces archived, the recent ones hot")
    finally:
        assert worker.stop() == 0, worker.output()

    archived = _root(old[7])
    async with serve(create_app(archiving)) as api_url:
        port = free_port()
        ui = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "scripts" / "jaeger_ui.py"), "--ui", str(ui_build), "--api", api_url,
            "--port", str(port), "--archive", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            assert ui.stdout is not None
            assert b"Jaeger UI on" in await asyncio.wait_for(ui.stdout.readline(), timeout=30)
            context = await browser.new_context(viewport=VIEWPORT)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            posts: list[Request] = []
            page.on("requestfinished", lambda r: posts.append(r) if r.method == "POST" else None)
            query = {"service": service, "start": now - 4 * HOUR_US, "end": now + 60_000_000, "limit": 500}
            await page.goto(f"http://127.0.0.1:{port}/search?{urlencode(query)}&lookback=custom")
            await page.wait_for_selector(".ResultItem", timeout=30_000)
            shown = await page.locator(".ResultItem .TraceName").all_inner_texts()
            assert len(shown) == len(expected)
            assert archived.trace_id[:7] in await page.content()

            await page.goto(f"http://127.0.0.1:{port}/trace/{archived.trace_id}")
            await page.wait_for_selector(".span-row", timeout=30_000)
            assert await page.locator(".span-row").count() == len(old[7])
            assert (
                f"{archived.service_name}: {archived.operation_name}"
                in await page.locator(".TracePageHeader").first.inner_text()
            )
            await page.get_by_role("button", name="Archive Trace").click()
            await wait_for(lambda: bool(posts), timeout_s=10, what="the archive button's request")
            response = await posts[0].response()
            assert response is not None and response.status == 200
            assert posts[0].url.endswith(f"/api/archive/{archived.trace_id}")
            assert errors == []
            await context.close()
        finally:
            ui.terminate()
            await ui.wait()
    async with reader(archiving) as store:
        assert archived.trace_id in await store.pinned_traces()
