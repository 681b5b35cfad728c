"""The seed's example workflows against the product as it runs: ``python -m ingest`` and
``python -m query_api`` processes on the real broker and a SQLite store, driven over HTTP, then the
seed's own curl + jq commands. Every field the seed documents is checked."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from shared.kafka import ensure_topics
from shared.settings import Settings
from tests.conftest import free_port
from tests.e2e.helpers import wait_for
from tests.e2e.workers import WorkerProcess, settings_env

pytestmark = pytest.mark.kafka


class Pipeline:
    def __init__(self, settings: Settings, base: str, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.base = base
        self.http = http

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.base + path) as response:
            return response.status, await response.json(content_type=None)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.http.post(self.base + path, json=body) as response:
            assert response.status == 201, await response.text()
            return await response.json()

    async def finalized(self, trace_id: str) -> dict[str, Any]:
        result: dict[str, Any] = {}

        async def done() -> bool:
            status, body = await self.get(f"/traces/{trace_id}")
            result.update(body if status == 200 else {})
            return status == 200 and body["status"] in ("completed", "failed")

        await wait_for(done, timeout_s=30, what=f"trace {trace_id} finalized")
        return result


@pytest.fixture
async def pipeline(settings: Settings, tmp_path: Path) -> AsyncIterator[Pipeline]:
    port = free_port()
    settings = msgspec.structs.replace(settings, api_bind=f"127.0.0.1:{port}")
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    api = WorkerProcess(settings, tmp_path / "api.log", module="query_api")
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                assert api.alive(), api.output()
                try:
                    async with http.get(base + "/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, timeout_s=60, what="the API answering /healthz")
            yield Pipeline(settings, base, http)
    finally:
        codes = (api.stop(), worker.stop())
    assert codes == (0, 0), f"api:\n{api.output()[-2000:]}\nworker:\n{worker.output()[-2000:]}"


async def test_seed_workflows_field_by_field(pipeline: Pipeline) -> None:
    p = pipeline
    trace = await _complete_request_trace(p)
    await _visualize_and_analyze(p, trace)
    slow_id = await _slow_and_failed_requests(p, trace["traceId"])
    await _service_health(p, trace, slow_id)


async def _complete_request_trace(p: Pipeline) -> dict[str, Any]:
    """1. Complete request trace: start, add spans (one fails), finish the root with spanId alone."""
    started = await p.post("/traces/start", {"serviceName": "api-gateway", "operationName": "processOrder"})
    trace_id, root_id = started["traceId"], started["spanId"]
    # The children are recorded once done (start = now - duration): let them fit in the root's window.
    await asyncio.sleep(0.08)
    user = await p.post(
        "/traces/span",
        {
            "traceId": trace_id,
            "parentSpanId": root_id,
            "serviceName": "user-service",
            "operationName": "validateUser",
            "tags": {"userId": "user-123"},
            "duration": 45,
            "status": "success",
        },
    )
    db = await p.post(
        "/traces/span",
        {
            "traceId": trace_id,
            "parentSpanId": root_id,
            "serviceName": "database",
            "operationName": "insertOrder",
            "tags": {"table": "orders"},
            "duration": 23,
            "status": "failed",
        },
    )
    await asyncio.sleep(0.15)  # the root spans a little real time after its children finished
    await p.post("/traces/span/finish", {"spanId": root_id, "status": "success"})

    trace = await p.finalized(trace_id)
    assert trace["traceId"] == trace_id
    assert trace["status"] == "failed"  # one span failed
    assert trace["serviceCalls"] == 3
    root = trace["rootSpan"]
    assert {root["spanId"], root["serviceName"], root["operationName"], root["status"]} == {
        root_id,
        "api-gateway",
        "processOrder",
        "success",
    }
    assert isinstance(root["startTime"], int | float) and root["startTime"] > 1.7e12
    assert root["duration"] >= 150 and trace["duration"] == root["duration"]
    assert root["tags"] == {}
    children = {s["spanId"]: s for s in trace["spans"]}
    assert set(children) == {user["spanId"], db["spanId"]}
    assert children[user["spanId"]]["parentSpanId"] == root_id
    assert children[user["spanId"]]["serviceName"] == "user-service"
    assert children[user["spanId"]]["operationName"] == "validateUser"
    assert children[user["spanId"]]["duration"] == 45
    assert children[user["spanId"]]["tags"] == {"userId": "user-123"}
    assert children[db["spanId"]]["status"] == "error"
    assert trace["complete"] is True and trace["orphanSpans"] == 0 and trace["openSpans"] == 0
    return trace


async def _visualize_and_analyze(p: Pipeline, trace: dict[str, Any]) -> None:
    trace_id, root_id = trace["traceId"], trace["rootSpan"]["spanId"]
    status, viz = await p.get(f"/traces/{trace_id}/visualize")
    assert status == 200
    assert (viz["traceId"], viz["duration"], viz["serviceCalls"]) == (trace_id, trace["duration"], 3)
    tree = viz["tree"]
    assert (tree["spanId"], tree["serviceName"], tree["operationName"]) == (root_id, "api-gateway", "processOrder")
    assert sorted((c["serviceName"], c["duration"], c["children"]) for c in tree["children"]) == [
        ("database", 23, []),
        ("user-service", 45, []),
    ]

    status, analysis = await p.get(f"/traces/{trace_id}/analyze")
    assert status == 200
    assert analysis["traceId"] == trace_id
    assert analysis["totalDuration"] == trace["duration"]
    assert analysis["serviceCalls"] == 3
    breakdown = analysis["serviceBreakdown"]
    assert breakdown["user-service"] == 45 and breakdown["database"] == 23
    # the gateway's self time is its duration minus the union of its (possibly overlapping) children
    assert trace["duration"] - 68 - 0.01 <= breakdown["api-gateway"] <= trace["duration"] - 45 + 0.01
    assert analysis["bottlenecks"][0]["span"] == "api-gateway:processOrder"
    for b in analysis["bottlenecks"]:
        assert set(b) >= {"span", "duration", "percentage"} and 10 < b["percentage"] <= 100
    assert analysis["criticalPath"][0] == "api-gateway:processOrder"


async def _slow_and_failed_requests(p: Pipeline, trace_id: str) -> str:
    """2. Finding slow and failed requests; filters by service and operation. Returns the slow trace's id."""
    slow = await p.post("/traces/start", {"serviceName": "api-gateway", "operationName": "getCatalog"})
    await p.post(
        "/traces/span",
        {
            "traceId": slow["traceId"],
            "parentSpanId": slow["spanId"],
            "serviceName": "external-api",
            "operationName": "fetchData",
            "duration": 600,
        },
    )
    await asyncio.sleep(0.65)
    await p.post("/traces/span/finish", {"spanId": slow["spanId"], "traceId": slow["traceId"]})
    await p.finalized(slow["traceId"])
    status, found = await p.get("/traces/query?minDuration=500&limit=20")
    assert status == 200 and [t["traceId"] for t in found] == [slow["traceId"]]
    status, found = await p.get("/traces/query?status=failed")
    assert [t["traceId"] for t in found] == [trace_id]
    status, found = await p.get("/traces/query?serviceName=user-service&limit=10")
    assert [t["traceId"] for t in found] == [trace_id]
    status, found = await p.get("/traces/query?operationName=fetchData")
    assert [t["traceId"] for t in found] == [slow["traceId"]]
    return str(slow["traceId"])


async def _service_health(p: Pipeline, trace: dict[str, Any], slow_id: str) -> None:
    """3. Service health: stats."""
    status, stats = await p.get("/stats")
    assert status == 200
    assert (stats["totalTraces"], stats["activeTraces"], stats["completedTraces"], stats["failedTraces"]) == (
        2,
        0,
        1,
        1,
    )
    assert stats["avgDuration"] == pytest.approx(
        (trace["duration"] + (await p.finalized(slow_id))["duration"]) / 2, abs=0.01
    )
    assert stats["slowestTraces"][0]["traceId"] == slow_id
    assert stats["serviceStats"]["api-gateway"]["count"] == 2
    assert stats["serviceStats"]["user-service"] == stats["serviceStats"]["user-service"] | {
        "count": 1,
        "avgDuration": 45,
    }
    workers = stats["pipeline"]["workers"]
    assert len(workers) == 1 and workers[0]["partitions"]


async def _sh(script: str, env: dict[str, str] | None = None) -> str:
    """Run a bash snippet (curl, jq) without blocking the event loop; its stdout."""
    done = await asyncio.to_thread(
        subprocess.run, ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("curl") is None, reason="needs curl and jq")
async def test_seed_shell_workflow_runs_unchanged(pipeline: Pipeline, tmp_path: Path) -> None:
    """The seed's shell snippets, with only the host changed, run and print what the seed promises."""
    script = """
set -euo pipefail
TRACE=$(curl -s -X POST $BASE/traces/start -H "Content-Type: application/json" \\
  -d '{"serviceName":"api-gateway","operationName":"processOrder"}' | jq -r '.traceId')
ROOT_SPAN=$(curl -s -X POST $BASE/traces/start -H "Content-Type: application/json" \\
  -d '{"serviceName":"api-gateway","operationName":"processOrder"}' | jq -r '.spanId')
curl -s -X POST $BASE/traces/span -H "Content-Type: application/json" \\
  -d "{\\"traceId\\":\\"$TRACE\\",\\"parentSpanId\\":\\"$ROOT_SPAN\\",\\"serviceName\\":\\"user-service\\",
       \\"operationName\\":\\"validateUser\\",\\"tags\\":{\\"userId\\":\\"user-123\\"},\\"duration\\":45,
       \\"status\\":\\"success\\"}" > /dev/null
curl -s -X POST $BASE/traces/span/finish -H "Content-Type: application/json" \\
  -d "{\\"spanId\\":\\"$ROOT_SPAN\\",\\"status\\":\\"success\\"}" > /dev/null
echo "$TRACE"
"""
    env = {**settings_env(pipeline.settings), "BASE": pipeline.base}
    trace_id = (await _sh(script, env)).strip().splitlines()[-1]

    async def visible() -> bool:
        status, body = await pipeline.get(f"/traces/{trace_id}")
        return status == 200 and body["serviceCalls"] >= 1

    await wait_for(visible, timeout_s=30, what="the curl-made trace")
    deadline = time.monotonic() + 30
    while True:  # the seed's loop over slow traces: jq '.[].traceId' must work on /traces/query
        listed = (await _sh(f"curl -s '{pipeline.base}/traces/query?limit=20' | jq -r '.[].traceId'")).split()
        if trace_id in listed or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert trace_id in listed
    stats = await _sh(f"curl -s {pipeline.base}/stats | jq '.serviceStats'")
    assert "user-service" in stats
