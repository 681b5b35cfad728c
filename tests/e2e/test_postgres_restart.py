"""PostgreSQL restarted mid-stream: two ``python -m ingest`` workers and the API (``python -m query_api``)
on a PostgreSQL of the test's own (``scripts/postgres.sh`` on a free port in the test's temp dir, never
the shared one) while spans flow. The server is stopped and started again: while it is away every read
route answers 503 with a JSON ``{"error": ...}`` body (never a 500); then workers and API carry on by
themselves, and every span ends up stored exactly once, every trace finalized.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from query_api.app import create_app
from shared.kafka import ensure_topics
from shared.settings import Settings
from shared.store import open_store
from tests.conftest import ROOT, free_port
from tests.e2e.faults import (
    Api,
    assert_stored_exactly_once,
    consuming,
    produce_steadily,
    running_api,
    wait_until_drained,
)
from tests.e2e.helpers import demo_traces, finalized_counts, wait_for
from tests.e2e.workers import WorkerProcess, stop_all
from tests.prerequisites import missing

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

POSTGRES_SH = ROOT / "scripts" / "postgres.sh"
TOTAL_SPANS = 6000
TRACE = "{trace}"


def _reads(end_ms: int) -> dict[str, str]:
    """A request of every read route that asks the store (route template -> path; ``{trace}`` is a stored
    trace's id), each valid, so that it reaches the store."""
    v3_window = "query.start_time_min=2020-01-01T00:00:00Z&query.start_time_max=2100-01-01T00:00:00Z"
    return {
        "/healthz": "/healthz",
        "/traces/query": "/traces/query?limit=5",
        "/traces/{traceId}": f"/traces/{TRACE}",
        "/traces/{traceId}/visualize": f"/traces/{TRACE}/visualize",
        "/traces/{traceId}/analyze": f"/traces/{TRACE}/analyze",
        "/stats": "/stats",
        "/stats/operations": "/stats/operations?serviceName=api-gateway",
        "/stats/timeseries": "/stats/timeseries?serviceName=api-gateway",
        "/analyze/endpoints": "/analyze/endpoints",
        "/analyze/operations": "/analyze/operations",
        "/analyze/endpoints/{service}/{operation}/critical-path": "/analyze/endpoints/api-gateway/op/critical-path",
        "/analyze/endpoints/{service}/{operation}/changes": "/analyze/endpoints/api-gateway/op/changes",
        "/api/traces": "/api/traces?service=api-gateway&limit=5",
        "/api/traces/{traceID}": f"/api/traces/{TRACE}",
        "/api/services": "/api/services",
        "/api/services/{service}/operations": "/api/services/api-gateway/operations",
        "/api/operations": "/api/operations?service=api-gateway",
        "/api/dependencies": f"/api/dependencies?endTs={end_ms}&lookback=3600000",
        "/api/metrics/latencies": "/api/metrics/latencies?service=api-gateway&quantile=0.95",
        "/api/metrics/calls": "/api/metrics/calls?service=api-gateway",
        "/api/metrics/errors": "/api/metrics/errors?service=api-gateway",
        "/api/v3/traces": f"/api/v3/traces?query.service_name=api-gateway&{v3_window}",
        "/api/v3/traces/{trace_id}": f"/api/v3/traces/{TRACE}",
        "/api/v3/services": "/api/v3/services",
        "/api/v3/operations": "/api/v3/operations?service=api-gateway",
        "/analytics/v1/dependencies": "/analytics/v1/dependencies?service=api-gateway&start=0&end=0",
        "/api/sampling": "/api/sampling?service=api-gateway",
        "/sampling": "/sampling?service=frontend",
    }


INTERVAL_CACHED = frozenset({"/api/sampling", "/sampling"})
"""Read routes whose answer is computed once per sampling interval and served from memory until the next:
not asked before the outage (an answer computed then would be served, rightly, while the store is away)."""

STORELESS = frozenset({"/openapi.json", "/metrics", "/ui", "/ui/{path}", "/api/metrics/minstep"})
"""Read routes that never ask the store: they keep answering 200 while it is away."""


def test_the_reads_cover_every_read_route() -> None:
    app = create_app(Settings.from_env({}))
    routes = {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource is not None}
    assert routes == set(_reads(0)) | STORELESS


class Postgres:
    """A PostgreSQL cluster of ``scripts/postgres.sh`` in ``state``, on ``port``."""

    def __init__(self, state: Path, port: int) -> None:
        self.state = state
        self.port = port

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(POSTGRES_SH), *args, "--dir", str(self.state)], capture_output=True, text=True, timeout=180
        )

    def up(self) -> str:
        """Start it (initdb the first time); its URL."""
        result = self._run("up", "--port", str(self.port))
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip().splitlines()[-1]

    def down(self, *, purge: bool = False) -> None:
        result = self._run("down", *(["--purge"] if purge else []))
        assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[tuple[Postgres, str]]:
    """A PostgreSQL of this test's own and its URL; stopped and removed after."""
    server = Postgres(tmp_path / "postgres", free_port())
    try:
        try:
            url = server.up()
        except AssertionError as exc:
            missing(f"no PostgreSQL: scripts/postgres.sh up failed: {exc}")
        yield server, url
    finally:
        server.down(purge=True)


async def _all_away(api: Api, reads: dict[str, str]) -> None:
    """Every store read answers 503 with a JSON error; the store-less routes still answer 200."""
    for route, path in reads.items():
        status, body = await api.get(path)
        assert status == 503, (route, status, body)
        assert isinstance(body, dict) and set(body) == {"error"} and body["error"], (route, body)
    for path in ("/openapi.json", "/metrics"):
        assert (await api.get(path))[0] == 200, path


async def test_postgres_restarts_mid_stream(settings: Settings, postgres: tuple[Postgres, str], tmp_path: Path) -> None:
    server, url = postgres
    settings = msgspec.structs.replace(settings, store_url=url, idle_timeout_s=3.0, grace_ms=300)
    traces = demo_traces(random.Random(41), TOTAL_SPANS, time.time_ns() // 1000 - 5_000_000)
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    store = await open_store(settings)  # creates the schema before the workers race for it
    workers = [WorkerProcess(settings, tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        async with running_api(settings, tmp_path / "api.log") as api:
            await consuming(workers, settings.topic)
            producing = asyncio.create_task(produce_steadily(settings, traces, seconds=12))

            async def progressed() -> bool:
                return (await finalized_counts(store))[1] >= len(traces) // 10

            await wait_for(progressed, timeout_s=60, what="a tenth of the traces finalized")
            trace_id = traces[0][0].trace_id
            reads = {
                route: path.replace(TRACE, trace_id) for route, path in _reads(time.time_ns() // 1_000_000).items()
            }
            for route, path in reads.items():
                if route not in INTERVAL_CACHED:
                    status, body = await api.get(path)
                    assert status in (200, 404), (route, status, body)  # 404: a Jaeger v3 search found nothing

            await asyncio.to_thread(server.down)
            await _all_away(api, reads)

            def retrying() -> bool:  # every worker met the outage writing a batch, and waits to retry it
                return all("batch failed" in w.output() for w in workers)

            await wait_for(retrying, timeout_s=30, what="every worker retrying a batch")
            assert server.up() == url
            await producing
            await store.close()
            store = await open_store(settings)
            await wait_until_drained(store, traces, timeout_s=120)
            for route, path in reads.items():
                status, body = await api.get(path)
                assert status in (200, 404), (route, status, body)
            assert all(w.alive() for w in workers), "\n".join(w.output()[-2000:] for w in workers)
    finally:
        codes = stop_all(workers)
        await store.close()
    assert codes == [0, 0], "\n".join(w.output()[-3000:] for w in workers)
    assert "unexpected error" not in api.process.output()
    store = await open_store(settings)
    try:
        await assert_stored_exactly_once(store, traces)
    finally:
        await store.close()
