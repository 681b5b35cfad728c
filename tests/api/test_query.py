"""``GET /traces/query``: the shape of a result, and one test per filter.

Traces (start after T0, duration, root service:operation, other services, status, tags):
  A  +0 s    50 ms  checkout:pay               completed  region=eu
  B  +1 s  1500 ms  search:find                failed     region=us
  C  +2 s   700 ms  checkout:refund → db:query completed  http.status_code=200, cache.hit=true
  D  active (not finalized) inventory:reserve
"""

from __future__ import annotations

from typing import Any

import pytest

from .support import T0_US, LiveApi, span

pytestmark = pytest.mark.kafka

T0_MS = T0_US / 1000


@pytest.fixture
async def traces(api: LiveApi) -> LiveApi:
    await api.ingest(
        [
            span("A", "a1", None, "checkout", "pay", 0, 50, tags={"region": "eu"}),
            span("B", "b1", None, "search", "find", 1000, 1500, status="error", tags={"region": "us"}),
            span("C", "c1", None, "checkout", "refund", 2000, 700),
            span("C", "c2", "c1", "db", "query", 2100, 300, tags={"http.status_code": 200, "cache.hit": True}),
            span("D", "d1", None, "inventory", "reserve", 3000, None),
        ],
        now_us=T0_US,
    )
    await api.finalize("A", "B", "C", now_us=T0_US + 10_000_000)
    return api


async def _ids(api: LiveApi, query: str) -> list[str]:
    reply = await api.get("/traces/query" + query)
    assert reply.status == 200, reply.text
    body: list[dict[str, Any]] = reply.json
    return [row["traceId"] for row in body]


async def test_results_are_an_array_of_summaries_newest_first(traces: LiveApi) -> None:
    reply = await traces.get("/traces/query")
    assert reply.status == 200
    assert [row["traceId"] for row in reply.json] == ["C", "B", "A"]  # finalized only, newest first
    assert reply.json[0] == {
        "traceId": "C",
        "serviceName": "checkout",
        "operationName": "refund",
        "startTime": T0_MS + 2000,
        "duration": 700.0,
        "serviceCalls": 2,
        "status": "completed",
        "errorCount": 0,
        "services": ["checkout", "db"],
        "complete": True,
        "tier": "hot",
    }
    assert reply.json[1]["status"] == "failed"
    assert reply.json[1]["errorCount"] == 1


async def test_service_name(traces: LiveApi) -> None:
    assert await _ids(traces, "?serviceName=checkout") == ["C", "A"]
    assert await _ids(traces, "?serviceName=db") == ["C"]  # any span's service, not only the root's
    assert await _ids(traces, "?serviceName=nobody") == []


async def test_operation_name(traces: LiveApi) -> None:
    assert await _ids(traces, "?operationName=find") == ["B"]
    assert await _ids(traces, "?operationName=query") == ["C"]
    assert await _ids(traces, "?serviceName=checkout&operationName=query") == []  # same span's pair


async def test_min_duration(traces: LiveApi) -> None:
    assert await _ids(traces, "?minDuration=1000") == ["B"]
    assert await _ids(traces, "?minDuration=700") == ["C", "B"]  # inclusive
    assert await _ids(traces, "?minDuration=699.5") == ["C", "B"]


async def test_max_duration(traces: LiveApi) -> None:
    assert await _ids(traces, "?maxDuration=100") == ["A"]
    assert await _ids(traces, "?maxDuration=700") == ["C", "A"]  # inclusive
    assert await _ids(traces, "?minDuration=60&maxDuration=1000") == ["C"]


async def test_status(traces: LiveApi) -> None:
    assert await _ids(traces, "?status=failed") == ["B"]
    assert await _ids(traces, "?status=completed") == ["C", "A"]
    assert await _ids(traces, "?status=active") == ["D"]


async def test_status_synonyms(traces: LiveApi) -> None:
    assert await _ids(traces, "?status=error") == ["B"]
    assert await _ids(traces, "?status=success") == ["C", "A"]


async def test_active_traces_are_summarized_as_active(traces: LiveApi) -> None:
    (row,) = (await traces.get("/traces/query?status=active")).json
    assert (row["traceId"], row["status"]) == ("D", "active")


async def test_tag(traces: LiveApi) -> None:
    assert await _ids(traces, "?tag=region:eu") == ["A"]
    assert await _ids(traces, "?tag=http.status_code:200") == ["C"]  # numbers match their text
    assert await _ids(traces, "?tag=cache.hit:true") == ["C"]  # booleans as true/false


async def test_tags_are_repeatable_and_all_must_match(traces: LiveApi) -> None:
    assert await _ids(traces, "?tag=http.status_code:200&tag=cache.hit:true") == ["C"]
    assert await _ids(traces, "?tag=region:eu&tag=region:us") == []


async def test_start(traces: LiveApi) -> None:
    assert await _ids(traces, f"?start={T0_MS + 500:.0f}") == ["C", "B"]
    assert await _ids(traces, f"?start={T0_MS + 1000:.0f}") == ["C", "B"]  # inclusive


async def test_end(traces: LiveApi) -> None:
    assert await _ids(traces, f"?end={T0_MS + 1500:.0f}") == ["B", "A"]
    assert await _ids(traces, f"?start={T0_MS + 500:.0f}&end={T0_MS + 1500:.0f}") == ["B"]


async def test_limit(traces: LiveApi) -> None:
    assert await _ids(traces, "?limit=1") == ["C"]
    assert await _ids(traces, "?limit=1000") == ["C", "B", "A"]


async def test_offset(traces: LiveApi) -> None:
    assert await _ids(traces, "?limit=1&offset=1") == ["B"]
    assert await _ids(traces, "?offset=3") == []


async def test_default_limit_is_20(api: LiveApi) -> None:
    spans = [span(f"t{i:02d}", "r", None, "svc", "op", i, 1) for i in range(25)]
    await api.ingest(spans, now_us=T0_US)
    await api.finalize(*(s.trace_id for s in spans), now_us=T0_US + 1_000_000)
    assert await _ids(api, "") == [f"t{i:02d}" for i in range(24, 4, -1)]
