"""The Jaeger-compatible APIs on a live server, checked field by field against Jaeger's own shapes.

Classic ``/api/``: Jaeger's UI model (``internal/uimodel``) in the ``{data, total, limit, offset, errors}``
envelope of ``cmd/query/app/http_handler.go``. Current ``/api/v3/``: OTLP JSON in ``{"result": ...}`` and
``{"error": {"httpCode", "message"}}`` errors, as the v3 HTTP gateway answers.

Traces are written straight into the store (as a worker would) and finalized, except one left active.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from .conftest import ServeApi
from .support import SEED, T0_US, LiveApi, seed_trace, span

pytestmark = pytest.mark.kafka

FAILED = "trace-err-456"
SLOW = "trace-slow-789"
OPEN = "trace-open-000"
BIG = 2**60
"""An integer tag a JavaScript number cannot hold exactly."""
T0_NS = T0_US * 1000
T0_RFC3339 = "2024-11-25T02:00:00Z"


async def _seed(api: LiveApi) -> None:
    """Three finalized traces (starting at T0, T0+1 s and T0+5 s) and one active trace with an open span.

    * SEED: api-gateway handleUserRequest (123 ms) → user-service getUserById (45 ms) → database query
    * FAILED: api-gateway checkout (500 ms) → payment-service charge (300 ms, status error)
    * SLOW: api-gateway handleUserRequest (2 s), alone
    """
    spans = [
        *seed_trace({"event": "cache miss", "attempt": 2}),
        span(FAILED, "f-root", None, "api-gateway", "checkout", 1000, 500, kind="server"),
        span(
            FAILED,
            "f-child",
            "f-root",
            "payment-service",
            "charge",
            1100,
            300,
            kind="client",
            status="error",
            tags={"card": "visa", "amount.cents": BIG},
        ),
        span(SLOW, "s-root", None, "api-gateway", "handleUserRequest", 5000, 2000, kind="server"),
    ]
    await api.ingest(spans, now_us=T0_US + 10_000_000)
    await api.finalize(SEED, FAILED, SLOW, now_us=T0_US + 20_000_000)
    await api.ingest(
        [span(OPEN, "o-root", None, "api-gateway", "longPoll", 9000, None, kind="server")], now_us=T0_US + 20_000_000
    )


def _envelope(data: Any, *, total: int = 0, errors: Any = None) -> dict[str, Any]:
    return {"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}


def _classic_error(code: int, msg: str) -> dict[str, Any]:
    return _envelope(None, errors=[{"code": code, "msg": msg}])


def _v3_error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"httpCode": code, "message": message}}


def _kv(key: str, type_: str, value: Any) -> dict[str, Any]:
    return {"key": key, "type": type_, "value": value}


def _child_of(trace_id: str, span_id: str) -> list[dict[str, str]]:
    return [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": span_id}]


SEED_CLASSIC: dict[str, Any] = {
    "traceID": SEED,
    "spans": [
        {
            "traceID": SEED,
            "spanID": "span-root-001",
            "operationName": "handleUserRequest",
            "references": [],
            "startTime": T0_US,
            "duration": 123_000,
            "tags": [_kv("span.kind", "string", "server")],
            "logs": [],
            "processID": "p1",
            "warnings": None,
        },
        {
            "traceID": SEED,
            "spanID": "span-child-002",
            "operationName": "getUserById",
            "references": _child_of(SEED, "span-root-001"),
            "startTime": T0_US + 10_000,
            "duration": 45_000,
            "tags": [
                _kv("userId", "string", "user-456"),
                _kv("cache", "string", "miss"),
                _kv("span.kind", "string", "client"),
            ],
            "logs": [
                {
                    "timestamp": T0_US + 20_000,
                    "fields": [_kv("event", "string", "cache miss"), _kv("attempt", "int64", 2)],
                }
            ],
            "processID": "p2",
            "warnings": None,
        },
        {
            "traceID": SEED,
            "spanID": "span-child-003",
            "operationName": "query",
            "references": _child_of(SEED, "span-child-002"),
            "startTime": T0_US + 20_000,
            "duration": 23_000,
            "tags": [
                _kv("db.type", "string", "postgresql"),
                _kv("rows", "int64", 3),
                _kv("cache.hit", "bool", True),
                _kv("ratio", "float64", 0.5),
            ],
            "logs": [],
            "processID": "p3",
            "warnings": None,
        },
    ],
    "processes": {
        "p1": {"serviceName": "api-gateway", "tags": []},
        "p2": {"serviceName": "user-service", "tags": []},
        "p3": {"serviceName": "database", "tags": []},
    },
    "warnings": None,
    "tier": "hot",
}


# -- classic /api/: traces ---------------------------------------------------------------------------


async def test_classic_trace_has_jaegers_ui_model(api: LiveApi) -> None:
    await _seed(api)
    reply = await api.get(f"/api/traces/{SEED}")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json == _envelope([SEED_CLASSIC])


async def test_classic_error_status_kind_and_big_integers_become_tags(api: LiveApi) -> None:
    await _seed(api)
    trace = (await api.get(f"/api/traces/{FAILED}")).json["data"][0]
    assert trace["processes"] == {
        "p1": {"serviceName": "api-gateway", "tags": []},
        "p2": {"serviceName": "payment-service", "tags": []},
    }
    root, child = trace["spans"]
    assert root["tags"] == [_kv("span.kind", "string", "server")]
    assert child["references"] == _child_of(FAILED, "f-root")
    assert child["tags"] == [
        _kv("card", "string", "visa"),
        _kv("amount.cents", "int64", str(BIG)),  # beyond 2^53: a string, as Jaeger sends it
        _kv("span.kind", "string", "client"),
        _kv("error", "bool", True),
    ]
    assert (child["startTime"], child["duration"], child["processID"]) == (T0_US + 1_100_000, 300_000, "p2")


async def test_classic_open_span_has_zero_duration_and_a_warning(api: LiveApi) -> None:
    await _seed(api)
    reply = await api.get(f"/api/traces/{OPEN}")
    assert reply.status == 200
    (only,) = reply.json["data"][0]["spans"]
    assert only["duration"] == 0
    assert only["startTime"] == T0_US + 9_000_000
    assert len(only["warnings"]) == 1 and "open" in only["warnings"][0]


async def test_classic_unknown_trace_is_a_404_envelope(api: LiveApi) -> None:
    reply = await api.get("/api/traces/0123456789abcdef0123456789abcdef")
    assert reply.status == 404
    assert reply.json == _classic_error(404, "trace not found")


async def test_classic_bad_trace_id_is_a_400_envelope(api: LiveApi) -> None:
    reply = await api.get("/api/traces/" + quote("not an id", safe=""))
    assert reply.status == 400
    body = reply.json
    assert body["data"] is None and body["errors"][0]["code"] == 400
    assert body["errors"][0]["msg"].startswith("unable to parse param 'traceID'")


# -- classic /api/traces search ----------------------------------------------------------------------


async def _search(api: LiveApi, query: str) -> list[str]:
    reply = await api.get("/api/traces?" + query)
    assert reply.status == 200, reply.text
    body = reply.json
    assert (body["total"], body["limit"], body["offset"], body["errors"]) == (0, 0, 0, None)
    return [trace["traceID"] for trace in body["data"]]


async def test_classic_search_returns_whole_traces_newest_first(api: LiveApi) -> None:
    await _seed(api)
    reply = await api.get("/api/traces?service=api-gateway")
    assert reply.status == 200
    data = reply.json["data"]
    assert [t["traceID"] for t in data] == [SLOW, FAILED, SEED]  # the active trace is not searched
    assert data[2] == SEED_CLASSIC
    assert await _search(api, "service=database") == [SEED]
    assert await _search(api, "service=nobody") == []


async def test_classic_search_by_operation(api: LiveApi) -> None:
    await _seed(api)
    assert await _search(api, "service=api-gateway&operation=checkout") == [FAILED]
    assert await _search(api, "service=api-gateway&operation=handleUserRequest") == [SLOW, SEED]


async def test_classic_search_by_tags(api: LiveApi) -> None:
    """Service, operation and tags must hold on ONE span, as Jaeger's stores match them
    (``internal/storage/v1/memory/memory.go``: ``validSpan`` checks the service, operation, durations and
    every tag of the query on each span, tags looked up in the span's tags, its process's tags and its
    log fields; ``validTrace`` keeps a trace when one span passes)."""
    await _seed(api)
    assert await _search(api, "service=database&tag=db.type:postgresql") == [SEED]
    assert await _search(api, "service=api-gateway&tag=db.type:postgresql") == []  # on a database span
    assert await _search(api, "service=payment-service&tags=" + quote(json.dumps({"card": "visa"}))) == [FAILED]
    assert await _search(api, "service=api-gateway&tags=" + quote(json.dumps({"card": "visa"}))) == []
    assert await _search(api, "service=database&tags=" + quote(json.dumps({"rows": 3, "cache.hit": True}))) == [SEED]
    # both forms together are ANDed, on the same span
    both = "service=user-service&tag=cache:miss&tags=" + quote(json.dumps({"userId": "user-456"}))
    assert await _search(api, both) == [SEED]
    apart = "service=user-service&tag=cache:miss&tags=" + quote(json.dumps({"db.type": "postgresql"}))
    assert await _search(api, apart) == []  # each tag is on a span of the trace, not on one span
    assert await _search(api, "service=api-gateway&tag=cache:miss&tag=card:visa") == []
    # error=true: a span whose status is an error (the status is not stored as a tag), of that service
    assert await _search(api, "service=payment-service&tag=error:true") == [FAILED]
    assert await _search(api, "service=payment-service&tags=" + quote(json.dumps({"error": "true"}))) == [FAILED]
    assert await _search(api, "service=api-gateway&tag=error:true") == []  # its spans did not fail
    # log fields count, as in Jaeger's memory store
    assert await _search(api, "service=user-service&tag=" + quote("event:cache miss")) == [SEED]
    assert await _search(api, "service=user-service&operation=getUserById&tag=cache:miss") == [SEED]
    assert await _search(api, "service=user-service&operation=query&tag=cache:miss") == []
    # a value may hold colons
    assert await _search(api, "service=user-service&tag=userId:user-456") == [SEED]


async def test_classic_search_by_go_durations(api: LiveApi) -> None:
    await _seed(api)
    assert await _search(api, "service=api-gateway&minDuration=1s") == [SLOW]
    assert await _search(api, "service=api-gateway&minDuration=1.5s") == [SLOW]
    assert await _search(api, "service=api-gateway&maxDuration=200ms") == [SEED]
    assert await _search(api, "service=api-gateway&minDuration=200ms&maxDuration=1s") == [FAILED]
    assert await _search(api, "service=api-gateway&minDuration=123000us") == [SLOW, FAILED, SEED]
    assert await _search(api, "service=api-gateway&maxDuration=122999µs") == []
    assert await _search(api, "service=api-gateway&minDuration=1m") == []
    assert await _search(api, "service=api-gateway&minDuration=0&maxDuration=0") == [SLOW, FAILED, SEED]


async def test_classic_search_by_time_window_in_microseconds(api: LiveApi) -> None:
    await _seed(api)
    assert await _search(api, f"service=api-gateway&start={T0_US + 500_000}&end={T0_US + 2_000_000}") == [FAILED]
    assert await _search(api, f"service=api-gateway&start={T0_US}") == [SLOW, FAILED, SEED]
    assert await _search(api, f"service=api-gateway&end={T0_US}") == [SEED]
    assert await _search(api, f"service=api-gateway&start={T0_US + 1}&end={T0_US + 999_999}") == []
    # lookback stands for start when start is absent (the UI sends it with start and end; custom = none)
    assert await _search(api, f"service=api-gateway&end={T0_US + 2_500_000}&lookback=2s") == [FAILED]
    assert await _search(api, f"service=api-gateway&end={T0_US + 2_500_000}&lookback=custom") == [FAILED, SEED]
    assert await _search(api, f"service=api-gateway&end={T0_US + 2_500_000}&lookback=2d") == [FAILED, SEED]
    lookback_ignored = f"service=api-gateway&start={T0_US}&end={T0_US + 2_500_000}&lookback=1ms"
    assert await _search(api, lookback_ignored) == [FAILED, SEED]


async def test_classic_search_limit(api: LiveApi) -> None:
    await _seed(api)
    assert await _search(api, "service=api-gateway&limit=1") == [SLOW]
    assert await _search(api, "service=api-gateway&limit=2") == [SLOW, FAILED]
    assert await _search(api, "service=api-gateway&limit=0") == [SLOW, FAILED, SEED]  # 0: the default (20)
    assert await _search(api, "service=api-gateway&limit=100000") == [SLOW, FAILED, SEED]  # capped at 1000


async def test_classic_search_by_trace_ids_reports_the_missing_ones(api: LiveApi) -> None:
    await _seed(api)
    reply = await api.get(f"/api/traces?traceID={SEED}&traceID=missing-trace&traceID={OPEN}&traceID={SEED}")
    assert reply.status == 200
    body = reply.json
    assert [t["traceID"] for t in body["data"]] == [SEED, OPEN]
    assert body["data"][0] == SEED_CLASSIC
    assert body["errors"] == [{"msg": "trace not found", "traceID": "missing-trace"}]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("service=a&minDuration=abc", "unable to parse param 'minDuration': invalid duration \"abc\""),
        ("service=a&maxDuration=10", "unable to parse param 'maxDuration': missing unit in duration \"10\""),
        ("service=a&minDuration=5parsecs", "unable to parse param 'minDuration': unknown unit \"parsecs\" in duration"),
        ("service=a&minDuration=-1s", "unable to parse param 'minDuration': a duration must not be negative"),
        ("service=a&minDuration=2s&maxDuration=1s", "'maxDuration' should be greater than 'minDuration'"),
        ("service=a&start=yesterday", "unable to parse param 'start': invalid syntax"),
        ("service=a&end=1.5", "unable to parse param 'end': invalid syntax"),
        ("service=a&start=-5", "unable to parse param 'start': must be between 0 and"),
        ("service=a&start=20&end=10", "'end' should not be before 'start'"),
        ("service=a&limit=ten", "unable to parse param 'limit': invalid syntax"),
        ("service=a&limit=99999999999", "unable to parse param 'limit': value out of range"),
        ("service=a&tag=novalue", "malformed 'tag' parameter, expecting key:value, received: novalue"),
        ("service=a&tags=%7Bbroken", "malformed 'tags' parameter, cannot unmarshal JSON"),
        ("service=a&tags=%5B1%5D", "malformed 'tags' parameter, expecting a JSON object"),
        ("service=a&tags=%7B%22k%22%3Anull%7D", "unable to parse param 'tags': the value of 'k' must be"),
        ("service=a&lookback=soon", "unable to parse param 'lookback': invalid duration \"soon\""),
        ("traceID=bad%20id", "unable to parse param 'traceID'"),
    ],
)
async def test_classic_search_bad_parameters(api: LiveApi, query: str, message: str) -> None:
    reply = await api.get("/api/traces?" + query)
    assert reply.status == 400, reply.text
    body = reply.json
    assert set(body) == {"data", "total", "limit", "offset", "errors"}
    assert body["data"] is None
    ((error),) = body["errors"]
    assert error["code"] == 400
    assert error["msg"].startswith(message), error["msg"]


# -- classic /api/: services, operations, dependencies ------------------------------------------------


async def test_classic_services_and_operations(api: LiveApi) -> None:
    """``/api/operations`` answers one ``{name, spanKind}`` per (operation, span kind) the service's spans
    had, and ``spanKind`` keeps one kind, as Jaeger's stores do (``GetOperations`` with
    ``OperationQueryParameters{ServiceName, SpanKind}``; the Cassandra store's ``operation_names_v2``
    table is keyed by service, span kind and operation)."""
    services = ["api-gateway", "database", "payment-service", "user-service"]
    reply = await api.get("/api/services")
    assert reply.status == 200
    assert reply.json == _envelope([], total=0)
    await _seed(api)
    assert (await api.get("/api/services")).json == _envelope(services, total=4)
    legacy = await api.get("/api/services/api-gateway/operations")
    assert legacy.json == _envelope(["checkout", "handleUserRequest"], total=2)
    assert (await api.get("/api/services/nobody/operations")).json == _envelope([], total=0)
    ops = await api.get("/api/operations?service=api-gateway&spanKind=server")
    assert ops.json == _envelope(
        [{"name": "checkout", "spanKind": "server"}, {"name": "handleUserRequest", "spanKind": "server"}], total=2
    )
    # each operation carries the span kinds it was seen with; spanKind filters (Jaeger's GetOperations)
    assert (await api.get("/api/operations?service=api-gateway&spanKind=client")).json == _envelope([], total=0)
    assert (await api.get("/api/operations?service=database")).json == _envelope(
        [{"name": "query", "spanKind": ""}], total=1
    )
    missing = await api.get("/api/operations")
    assert missing.status == 400
    assert missing.json == _classic_error(400, "parameter 'service' is required")


async def test_classic_operations_of_a_service_with_a_slash_in_its_name(api: LiveApi) -> None:
    await api.ingest([span("t-slash", "r", None, "team/api", "op a", 0, 1)], now_us=T0_US + 1_000_000)
    await api.finalize("t-slash", now_us=T0_US + 2_000_000)
    reply = await api.get("/api/services/" + quote("team/api", safe="") + "/operations")
    assert reply.json == _envelope(["op a"], total=1)


async def test_classic_dependencies(api: LiveApi) -> None:
    await _seed(api)
    end_ms = T0_US // 1000 + 3_600_000
    reply = await api.get(f"/api/dependencies?endTs={end_ms}&lookback=7200000")
    assert reply.status == 200
    body = reply.json
    assert (body["total"], body["limit"], body["offset"], body["errors"]) == (0, 0, 0, None)
    assert sorted(body["data"], key=lambda d: (d["parent"], d["child"])) == [
        {"parent": "api-gateway", "child": "payment-service", "callCount": 1},
        {"parent": "api-gateway", "child": "user-service", "callCount": 1},
        {"parent": "user-service", "child": "database", "callCount": 1},
    ]
    filtered = await api.get(f"/api/dependencies?endTs={end_ms}&lookback=7200000&service=database")
    assert filtered.json["data"] == [{"parent": "user-service", "child": "database", "callCount": 1}]
    # the default window is the last day up to now: the seeded traces are older
    assert (await api.get("/api/dependencies")).json == _envelope([])
    bad = await api.get("/api/dependencies?endTs=tomorrow")
    assert bad.status == 400
    assert bad.json["errors"][0]["msg"].startswith("unable to parse param 'endTs'")
    negative = await api.get("/api/dependencies?lookback=-1")
    assert negative.status == 400


# -- /api/v3/ ----------------------------------------------------------------------------------------


def _attr(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "value": value}


def _resource(service: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resource": {"attributes": [_attr("service.name", {"stringValue": service})]},
        "scopeSpans": [{"scope": {}, "spans": spans}],
    }


def _nanos(offset_ms: float) -> str:
    return str(T0_NS + round(offset_ms * 1_000_000))


SEED_OTLP: list[dict[str, Any]] = [
    _resource(
        "api-gateway",
        [
            {
                "traceId": SEED,
                "spanId": "span-root-001",
                "name": "handleUserRequest",
                "kind": 2,
                "startTimeUnixNano": _nanos(0),
                "endTimeUnixNano": _nanos(123),
                "attributes": [],
                "events": [],
                "status": {},
            }
        ],
    ),
    _resource(
        "user-service",
        [
            {
                "traceId": SEED,
                "spanId": "span-child-002",
                "parentSpanId": "span-root-001",
                "name": "getUserById",
                "kind": 3,
                "startTimeUnixNano": _nanos(10),
                "endTimeUnixNano": _nanos(55),
                "attributes": [
                    _attr("userId", {"stringValue": "user-456"}),
                    _attr("cache", {"stringValue": "miss"}),
                ],
                "events": [
                    {
                        "timeUnixNano": _nanos(20),
                        "name": "cache miss",
                        "attributes": [_attr("attempt", {"intValue": "2"})],
                    }
                ],
                "status": {},
            }
        ],
    ),
    _resource(
        "database",
        [
            {
                "traceId": SEED,
                "spanId": "span-child-003",
                "parentSpanId": "span-child-002",
                "name": "query",
                "kind": 0,
                "startTimeUnixNano": _nanos(20),
                "endTimeUnixNano": _nanos(43),
                "attributes": [
                    _attr("db.type", {"stringValue": "postgresql"}),
                    _attr("rows", {"intValue": "3"}),
                    _attr("cache.hit", {"boolValue": True}),
                    _attr("ratio", {"doubleValue": 0.5}),
                ],
                "events": [],
                "status": {},
            }
        ],
    ),
]


async def test_v3_trace_is_otlp_json(api: LiveApi) -> None:
    await _seed(api)
    reply = await api.get(f"/api/v3/traces/{SEED}")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json == {"result": {"resourceSpans": SEED_OTLP}}


async def test_v3_error_status_kinds_and_big_integers(api: LiveApi) -> None:
    await _seed(api)
    resources = (await api.get(f"/api/v3/traces/{FAILED}")).json["result"]["resourceSpans"]
    assert [r["resource"]["attributes"][0]["value"]["stringValue"] for r in resources] == [
        "api-gateway",
        "payment-service",
    ]
    (root,) = resources[0]["scopeSpans"][0]["spans"]
    (child,) = resources[1]["scopeSpans"][0]["spans"]
    assert (root["kind"], root["status"]) == (2, {})
    assert (child["kind"], child["status"]) == (3, {"code": 2})
    assert child["attributes"] == [
        _attr("card", {"stringValue": "visa"}),
        _attr("amount.cents", {"intValue": str(BIG)}),
    ]
    assert (child["startTimeUnixNano"], child["endTimeUnixNano"]) == (_nanos(1100), _nanos(1400))


async def test_v3_open_span_ends_at_its_start(api: LiveApi) -> None:
    await _seed(api)
    (resource,) = (await api.get(f"/api/v3/traces/{OPEN}")).json["result"]["resourceSpans"]
    (only,) = resource["scopeSpans"][0]["spans"]
    assert only["startTimeUnixNano"] == only["endTimeUnixNano"] == _nanos(9000)


async def test_v3_unknown_and_bad_trace_ids(api: LiveApi) -> None:
    missing = await api.get("/api/v3/traces/0123456789abcdef0123456789abcdef")
    assert missing.status == 404
    assert missing.json == _v3_error(404, "No traces found")
    bad = await api.get("/api/v3/traces/" + quote("not an id", safe=""))
    assert bad.status == 400
    assert bad.json["error"]["httpCode"] == 400
    assert bad.json["error"]["message"].startswith("malformed parameter trace_id:")
    await _seed(api)
    bad_time = await api.get(f"/api/v3/traces/{SEED}?startTime=today")
    assert bad_time.status == 400
    assert bad_time.json["error"]["message"].startswith("malformed parameter startTime: cannot parse")
    hinted = await api.get(f"/api/v3/traces/{SEED}?start_time={T0_RFC3339}&rawTraces=true")
    assert hinted.status == 200


WINDOW = f"query.startTimeMin={T0_RFC3339}&query.startTimeMax=2024-11-25T03:00:00Z"


async def _v3_search(api: LiveApi, query: str) -> list[str]:
    """Trace ids of a v3 search in answer order ([] for Jaeger's 404 "No traces found")."""
    reply = await api.get("/api/v3/traces?" + query)
    if reply.status == 404:
        assert reply.json == _v3_error(404, "No traces found")
        return []
    assert reply.status == 200, reply.text
    ids: list[str] = []
    for resource in reply.json["result"]["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for s in scope["spans"]:
                if s["traceId"] not in ids:
                    ids.append(s["traceId"])
    return ids


async def test_v3_search(api: LiveApi) -> None:
    await _seed(api)
    reply = await api.get(f"/api/v3/traces?{WINDOW}&query.serviceName=database")
    assert reply.status == 200
    assert reply.json == {"result": {"resourceSpans": SEED_OTLP}}  # whole traces
    assert await _v3_search(api, f"{WINDOW}&query.serviceName=api-gateway") == [SLOW, FAILED, SEED]
    assert await _v3_search(api, f"{WINDOW}&query.service_name=api-gateway&query.operation_name=checkout") == [FAILED]
    assert await _v3_search(api, f"{WINDOW}&query.operationName=handleUserRequest") == [SLOW, SEED]
    assert await _v3_search(api, f"{WINDOW}&query.durationMin=1.5s") == [SLOW]
    assert await _v3_search(api, f"{WINDOW}&query.duration_min=200ms&query.duration_max=1s") == [FAILED]
    assert await _v3_search(api, f"{WINDOW}&query.searchDepth=2") == [SLOW, FAILED]
    assert await _v3_search(api, f"{WINDOW}&query.num_traces=1") == [SLOW]
    attributes = quote(json.dumps({"card": "visa"}))
    assert await _v3_search(api, f"{WINDOW}&query.attributes={attributes}") == [FAILED]
    errors = quote(json.dumps({"error": "true"}))
    assert await _v3_search(api, f"{WINDOW}&query.attributes={errors}") == [FAILED]
    assert await _v3_search(api, f"{WINDOW}&query.serviceName=nobody") == []


async def test_v3_search_time_window(api: LiveApi) -> None:
    await _seed(api)
    window = "query.start_time_min=2024-11-25T02:00:00.5Z&query.start_time_max=2024-11-25T03:00:02%2B01:00"
    assert await _v3_search(api, window) == [FAILED]
    nanos = "query.startTimeMin=2024-11-25T02:00:00.000000001Z&query.startTimeMax=2024-11-25T02:00:01.000000999Z"
    assert await _v3_search(api, nanos) == [FAILED]  # SEED starts 1 ns before the window
    before_epoch = "query.startTimeMin=1960-01-01T00:00:00Z&query.startTimeMax=1969-12-31T00:00:00Z"
    assert await _v3_search(api, before_epoch) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("query.serviceName=a", "query.startTimeMin and query.startTimeMax are required"),
        (f"query.startTimeMin={T0_RFC3339}", "query.startTimeMin and query.startTimeMax are required"),
        (
            f"query.startTimeMin=yesterday&query.startTimeMax={T0_RFC3339}",
            'malformed parameter query.startTimeMin: cannot parse "yesterday" as an RFC 3339 time',
        ),
        (
            f"query.start_time_min={T0_RFC3339}&query.start_time_max=2024-13-01T00:00:00Z",
            "malformed parameter query.start_time_max: cannot parse",
        ),
        (
            f"query.startTimeMin={T0_RFC3339}&query.startTimeMax={T0_RFC3339}",
            "query.startTimeMin must be before query.startTimeMax",
        ),
        (f"{WINDOW}&query.durationMin=fast", 'malformed parameter query.durationMin: invalid duration "fast"'),
        (f"{WINDOW}&query.duration_max=10", "malformed parameter query.duration_max: missing unit in duration"),
        (f"{WINDOW}&query.durationMin=2s&query.durationMax=1s", "'query.durationMax' should be greater than"),
        (f"{WINDOW}&query.searchDepth=many", "malformed parameter query.searchDepth: invalid syntax"),
        (f"{WINDOW}&query.attributes=%7Bx", "malformed parameter query.attributes: invalid JSON"),
        (f"{WINDOW}&query.rawTraces=maybe", "malformed parameter query.rawTraces: invalid syntax"),
    ],
)
async def test_v3_search_bad_parameters(api: LiveApi, query: str, message: str) -> None:
    reply = await api.get("/api/v3/traces?" + query)
    assert reply.status == 400, reply.text
    assert set(reply.json) == {"error"}
    assert set(reply.json["error"]) == {"httpCode", "message"}
    assert reply.json["error"]["httpCode"] == 400
    assert reply.json["error"]["message"].startswith(message), reply.json["error"]["message"]


async def test_v3_services_and_operations(api: LiveApi) -> None:
    """``/api/v3/operations``: as the classic one; Jaeger's v3 HTTP gateway reads ``spanKind`` and still
    accepts its deprecated ``span_kind`` (``internal/...apiv3/http_gateway.go``, ``getOperations``)."""
    assert (await api.get("/api/v3/services")).json == {"services": []}
    await _seed(api)
    services = await api.get("/api/v3/services")
    assert services.status == 200
    assert services.json == {"services": ["api-gateway", "database", "payment-service", "user-service"]}
    operations = await api.get("/api/v3/operations?service=api-gateway")
    assert operations.json == {
        "operations": [{"name": "checkout", "spanKind": "server"}, {"name": "handleUserRequest", "spanKind": "server"}]
    }
    # spanKind (and Jaeger's deprecated span_kind) filter: the database span set no kind
    assert (await api.get("/api/v3/operations?service=database&span_kind=client")).json == {"operations": []}
    assert (await api.get("/api/v3/operations?service=user-service&spanKind=client")).json == {
        "operations": [{"name": "getUserById", "spanKind": "client"}]
    }
    assert (await api.get("/api/v3/operations")).json == {"operations": []}


# -- auth --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/services",
        "/api/traces?service=api-gateway",
        f"/api/traces/{SEED}",
        "/api/services/api-gateway/operations",
        "/api/operations?service=api-gateway",
        "/api/dependencies",
        "/api/v3/services",
        "/api/v3/operations?service=api-gateway",
        f"/api/v3/traces?{WINDOW}",
        f"/api/v3/traces/{SEED}",
    ],
)
async def test_read_tokens_apply(serve_api: ServeApi, path: str) -> None:
    async with serve_api(read_tokens=("reader",), write_tokens=("writer",)) as api:
        await _seed(api)
        anonymous = await api.get(path)
        assert anonymous.status == 401
        assert "error" in anonymous.json
        writer = await api.get(path, headers={"Authorization": "Bearer writer"})
        assert writer.status == 403
        reader = await api.get(path, headers={"Authorization": "Bearer reader"})
        assert reader.status == 200, reader.text


# -- size --------------------------------------------------------------------------------------------


async def test_a_large_trace_is_served_by_both_apis(api: LiveApi) -> None:
    """3000 spans: converted off the event loop; every span arrives, parents as references."""
    spans = [span("big", "s0", None, "svc-0", "op", 0, 5000)]
    spans += [span("big", f"s{i}", f"s{i - 1}", f"svc-{i % 7}", f"op-{i % 3}", i, 1) for i in range(1, 3000)]
    await api.ingest(spans, now_us=T0_US + 10_000_000)
    await api.finalize("big", now_us=T0_US + 20_000_000)
    classic = (await api.get("/api/traces/big")).json["data"][0]
    assert len(classic["spans"]) == 3000 and len(classic["processes"]) == 7
    assert classic["spans"][2999]["references"] == _child_of("big", "s2998")
    found = (await api.get("/api/traces?service=svc-3")).json["data"]
    assert [t["traceID"] for t in found] == ["big"] and len(found[0]["spans"]) == 3000
    resources = (await api.get("/api/v3/traces/big")).json["result"]["resourceSpans"]
    assert len(resources) == 7
    assert sum(len(r["scopeSpans"][0]["spans"]) for r in resources) == 3000
