"""Hostile strings (SQL injection, path traversal, control characters, huge values) in every parameter,
path segment and tag are inert: a clean 4xx or an honest empty answer, never a 500, nothing changed."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from .support import T0_US, LiveApi, span

pytestmark = pytest.mark.kafka

HOSTILE = [
    "'; DROP TABLE spans; --",
    "\" OR 1=1 --",
    "../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%00",
    "<script>alert(1)</script>",
    "${jndi:ldap://x}",
    "a" * 5000,
    "☃\u202e",
]  # fmt: skip
PARAMS = ["serviceName", "operationName", "minDuration", "maxDuration", "status", "tag", "start", "end", "limit",
          "offset"]  # fmt: skip


async def _stats(api: LiveApi) -> object:
    reply = await api.get("/stats")
    assert reply.status == 200
    body = reply.json
    body.pop("pipeline", None)
    return body


@pytest.fixture
async def seeded(api: LiveApi) -> LiveApi:
    spans = [
        span("t1", "root", None, "api-gateway", "GET /", 0, 10, tags={"k": "'; DROP TABLE traces; --"}),
        span("t1", "child", "root", "'; DROP TABLE spans; --", "../../etc/passwd", 1, 2),
    ]
    await api.ingest(spans, now_us=T0_US)
    await api.finalize("t1", now_us=T0_US + 1)
    return api


async def test_hostile_query_parameters(seeded: LiveApi) -> None:
    before = await _stats(seeded)
    for param in PARAMS:
        for value in HOSTILE:
            reply = await seeded.get(f"/traces/query?{param}={quote(value, safe='')}")
            assert reply.status in (200, 400), (param, value, reply.status, reply.text[:200])
            if reply.status == 400:
                assert set(reply.json) == {"error"}
            else:
                assert isinstance(reply.json, list)
    assert await _stats(seeded) == before


async def test_hostile_strings_stored_as_data_are_found_as_data(seeded: LiveApi) -> None:
    reply = await seeded.get(f"/traces/query?serviceName={quote(HOSTILE[0], safe='')}")
    assert [t["traceId"] for t in reply.json] == ["t1"]
    reply = await seeded.get(f"/traces/query?tag={quote('k:' + chr(39) + '; DROP TABLE traces; --', safe='')}")
    assert [t["traceId"] for t in reply.json] == ["t1"]
    trace = (await seeded.get("/traces/t1")).json
    assert {s["operationName"] for s in trace["spans"]} == {"../../etc/passwd"}


async def test_hostile_path_segments(seeded: LiveApi) -> None:
    for value in HOSTILE:
        for suffix in ("", "/visualize", "/analyze"):
            reply = await seeded.get(f"/traces/{quote(value, safe='')}{suffix}")
            assert reply.status in (400, 404), (value, suffix, reply.status)
            assert set(reply.json) == {"error"}
    for path in ("/ui/../pyproject.toml", "/ui/%2e%2e/pyproject.toml", "/ui/..%2fpyproject.toml", "/../etc/passwd"):
        reply = await seeded.get(path)
        assert reply.status in (400, 403, 404), (path, reply.status)
        assert "kafka-tracing" not in reply.text


async def test_hostile_write_bodies(seeded: LiveApi) -> None:
    for value in HOSTILE:
        for body in (
            {"serviceName": value, "operationName": "op"},
            {"serviceName": "svc", "operationName": "op", "traceId": value},
            {"serviceName": "svc", "operationName": "op", "tags": {value: value}},
        ):
            reply = await seeded.post("/traces/start", body)
            assert reply.status in (201, 400, 413), (body, reply.status, reply.text[:200])
        reply = await seeded.post("/traces/span/finish", {"spanId": value})
        assert reply.status in (400, 404), (value, reply.status)
