"""The seed's workflows, end to end: API → Kafka → (a minimal stand-in for the ingest worker) → store → API.

The stand-in consumes the topic, writes each batch to the store and finalizes the touched traces at once,
so the read endpoints see what the write endpoints published. The curl + jq scripts of the seed run
unchanged; only ``curl`` is wrapped to reach the test server instead of localhost:3000.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from shared.codecs.native import decode_native
from shared.models import Span, SpanFinish
from shared.settings import Settings
from tests.prerequisites import missing as prerequisite_missing

from .support import T0_US, LiveApi, span

pytestmark = pytest.mark.kafka


class StandInWorker:
    """Consumes the API's topic into the store; every touched trace is finalized right away."""

    def __init__(self, api: LiveApi, consumer: AIOKafkaConsumer) -> None:
        self._api = api
        self._consumer = consumer
        self.events = 0

    async def run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=50)
            spans: list[Span] = []
            finishes: list[SpanFinish] = []
            shards: dict[str, str] = {}
            for partition, records in batches.items():
                for record in records:
                    for event in decode_native(record.value):
                        (spans if isinstance(event, Span) else finishes).append(event)  # type: ignore[arg-type]
                        shards[event.trace_id] = f"{partition.topic}/{partition.partition}"
            if shards:
                now = time.time_ns() // 1000
                store = self._api.store
                await store.write_batch(spans, finishes, shards=shards, now_us=now, grace_us=0, idle_us=0)
                await store.finalize(list(shards), now_us=now)
                self.events += len(spans) + len(finishes)

    async def wait_for(self, events: int, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.events < events:
            assert time.monotonic() < deadline, f"only {self.events} of {events} events were ingested"
            await asyncio.sleep(0.02)


@pytest.fixture
async def worker(api: LiveApi, settings: Settings) -> AsyncIterator[StandInWorker]:
    consumer = AIOKafkaConsumer(
        settings.topic, **settings.kafka_options(), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    stand_in = StandInWorker(api, consumer)
    task = asyncio.create_task(stand_in.run())
    try:
        yield stand_in
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()


async def _post(api: LiveApi, path: str, body: dict[str, Any]) -> Any:
    reply = await api.post(path, body)
    assert reply.status == 201, reply.text
    return reply.json


async def test_complete_request_trace_workflow(api: LiveApi, worker: StandInWorker) -> None:
    """Workflow 1, as written: its TRACE and ROOT_SPAN come from two different /traces/start calls, so the
    two recorded spans point at a parent of another trace and show up as orphans of TRACE."""
    start = {"serviceName": "api-gateway", "operationName": "processOrder"}
    trace = (await _post(api, "/traces/start", start))["traceId"]
    root_span = (await _post(api, "/traces/start", start))["spanId"]
    common = {"traceId": trace, "parentSpanId": root_span, "status": "success"}
    users = await _post(
        api,
        "/traces/span",
        {
            **common,
            "serviceName": "user-service",
            "operationName": "validateUser",
            "tags": {"userId": "user-123"},
            "duration": 45,
        },
    )
    database = await _post(
        api,
        "/traces/span",
        {
            **common,
            "serviceName": "database",
            "operationName": "insertOrder",
            "tags": {"table": "orders"},
            "duration": 23,
        },
    )
    await worker.wait_for(4)

    body = (await api.get(f"/traces/{trace}")).json
    assert body["rootSpan"]["serviceName"] == "api-gateway"
    assert body["rootSpan"]["duration"] is None  # the workflow never finishes it
    assert [s["spanId"] for s in body["spans"]] == [users["spanId"], database["spanId"]]
    assert [s["duration"] for s in body["spans"]] == [45.0, 23.0]
    assert [s["tags"] for s in body["spans"]] == [{"userId": "user-123"}, {"table": "orders"}]
    assert (body["serviceCalls"], body["orphanSpans"], body["openSpans"], body["complete"]) == (3, 2, 1, False)

    visual = (await api.get(f"/traces/{trace}/visualize")).json
    assert visual["tree"]["children"] == []
    assert [o["spanId"] for o in visual["orphans"]] == [users["spanId"], database["spanId"]]

    analysis = (await api.get(f"/traces/{trace}/analyze")).json
    assert analysis["serviceCalls"] == 3
    assert isinstance(analysis["bottlenecks"], list)


async def test_integration_example(api: LiveApi, worker: StandInWorker) -> None:
    """The seed's instrumentation example: start, record a downstream span, finish the root by span id."""
    ids = await _post(api, "/traces/start", {"serviceName": "my-service", "operationName": "handleRequest"})
    await asyncio.sleep(0.06)  # the downstream call takes a while
    child = await _post(
        api,
        "/traces/span",
        {
            "traceId": ids["traceId"],
            "parentSpanId": ids["spanId"],
            "serviceName": "user-service",
            "operationName": "getUser",
            "duration": 45,
            "tags": {"userId": "123", "cache": "hit"},
        },
    )
    finished = await _post(api, "/traces/span/finish", {"spanId": ids["spanId"], "status": "success"})
    assert finished == {"spanId": ids["spanId"], "traceId": ids["traceId"], "status": "success"}
    await worker.wait_for(3)

    body = (await api.get(f"/traces/{ids['traceId']}")).json
    assert (body["status"], body["complete"], body["orphanSpans"], body["openSpans"]) == ("completed", True, 0, 0)
    assert body["rootSpan"]["spanId"] == ids["spanId"]
    assert body["rootSpan"]["duration"] >= 60
    assert [s["spanId"] for s in body["spans"]] == [child["spanId"]]
    tree = (await api.get(f"/traces/{ids['traceId']}/visualize")).json["tree"]
    assert [c["spanId"] for c in tree["children"]] == [child["spanId"]]
    analysis = (await api.get(f"/traces/{ids['traceId']}/analyze")).json
    assert analysis["criticalPath"][0] == "my-service:handleRequest"
    assert "my-service" in analysis["serviceBreakdown"]


WORKFLOWS = r"""
# --- 1. Complete Request Trace ---
# Start trace in API Gateway
TRACE=$(curl -s -X POST http://localhost:3000/traces/start \
  -H "Content-Type: application/json" \
  -d '{"serviceName":"api-gateway","operationName":"processOrder"}' \
  | jq -r '.traceId')

ROOT_SPAN=$(curl -s -X POST http://localhost:3000/traces/start \
  -H "Content-Type: application/json" \
  -d '{"serviceName":"api-gateway","operationName":"processOrder"}' \
  | jq -r '.spanId')

# Add span for user service call
curl -X POST http://localhost:3000/traces/span \
  -H "Content-Type: application/json" \
  -d "{
    \"traceId\":\"$TRACE\",
    \"parentSpanId\":\"$ROOT_SPAN\",
    \"serviceName\":\"user-service\",
    \"operationName\":\"validateUser\",
    \"tags\":{\"userId\":\"user-123\"},
    \"duration\":45,
    \"status\":\"success\"
  }"

# Add span for database query
curl -X POST http://localhost:3000/traces/span \
  -H "Content-Type: application/json" \
  -d "{
    \"traceId\":\"$TRACE\",
    \"parentSpanId\":\"$ROOT_SPAN\",
    \"serviceName\":\"database\",
    \"operationName\":\"insertOrder\",
    \"tags\":{\"table\":\"orders\"},
    \"duration\":23,
    \"status\":\"success\"
  }"

echo "TRACE=$TRACE ROOT_SPAN=$ROOT_SPAN"

# --- 2. Finding Slow Requests ---
# Query for slow traces (>500ms)
curl "http://localhost:3000/traces/query?minDuration=500&limit=20" | jq

# Analyze each slow trace
for trace in $(curl -s "http://localhost:3000/traces/query?minDuration=500" \
  | jq -r '.[].traceId'); do
  echo "Analyzing $trace:"
  curl -s "http://localhost:3000/traces/$trace/analyze" | jq '.bottlenecks'
done

# --- 3. Service Health Monitoring ---
# Get statistics
curl http://localhost:3000/stats | jq

# Check service performance
curl http://localhost:3000/stats | jq '.serviceStats'

# Find failed traces
curl "http://localhost:3000/traces/query?status=failed" | jq
"""


async def test_the_curl_and_jq_workflows_run_unchanged(api: LiveApi) -> None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    if missing:
        prerequisite_missing(f"the seed's workflows need {', '.join(missing)}")
    await api.ingest(
        [
            span("slow-1", "s1", None, "api-gateway", "checkout", 0, 900),
            span("slow-1", "s2", "s1", "database", "complexQuery", 100, 600),
            span("slow-2", "t1", None, "api-gateway", "search", 1000, 1200, status="error"),
            span("fast-1", "u1", None, "api-gateway", "health", 2000, 5),
        ],
        now_us=T0_US,
    )
    await api.finalize("slow-1", "slow-2", "fast-1", now_us=T0_US + 10_000_000)

    port = api.url.rsplit(":", 1)[1]
    shim = (
        f'curl() {{ local a=(); for x in "$@"; do a+=("${{x//localhost:3000/127.0.0.1:{port}}}"); done; '
        'command curl "${a[@]}"; }\n'
    )
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        shim + WORKFLOWS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    text = out.decode()
    assert process.returncode == 0, err.decode()
    assert "parse error" not in err.decode()  # jq parsed every answer

    ids = re.search(r"TRACE=([0-9a-f]{32}) ROOT_SPAN=([0-9a-f]{16})", text)
    assert ids is not None, text
    assert f'"traceId":"{ids[1]}"' in text  # the two spans were recorded in TRACE
    # Workflow 2: both slow traces analyzed, newest first; the database query is the bottleneck of slow-1.
    assert "Analyzing slow-2:" in text and "Analyzing slow-1:" in text
    assert text.index("Analyzing slow-2:") < text.index("Analyzing slow-1:")
    assert '"span": "database:complexQuery"' in text
    assert "Analyzing fast-1:" not in text
    # Workflow 3: the stats and the failed trace.
    assert '"totalTraces": 3' in text
    assert '"api-gateway": {' in text
    assert '"traceId": "slow-2"' in text
