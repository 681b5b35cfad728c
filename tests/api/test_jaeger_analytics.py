"""``/analytics/v1/dependencies``: the deep dependency graph in the shape the Jaeger UI's deep-dependencies
page reads (jaeger-ui v1.73.0 ``model/ddg/types.tsx`` and ``transformDdgData.tsx``; see
:mod:`query_api.jaeger.analytics`), from the dependency rollups, on every store backend."""

from __future__ import annotations

from typing import Any

import pytest

from query_api.jaeger.analytics import service_paths
from shared.analysis import Dependency
from shared.models import Span

from .support import T0_US, LiveApi

pytestmark = pytest.mark.kafka

HOUR_MS = 3_600_000
START_MS = T0_US // 1000 - HOUR_MS
END_MS = T0_US // 1000 + HOUR_MS
WINDOW = f"start={START_MS}&end={END_MS}"


def _span(trace: str, sid: str, parent: str | None, service: str, op: str, at_ms: int) -> Span:
    return Span(trace_id=trace, span_id=sid, parent_span_id=parent, service_name=service, operation_name=op,
                start_time_us=T0_US + at_ms * 1000, duration_us=10_000 - at_ms * 1000)  # fmt: skip


async def _load(api: LiveApi) -> None:
    """t1: gateway → users → db; t2: gateway → orders → payments, orders → db; t3: gateway → orders."""
    spans = [
        _span("t1", "a", None, "gateway", "GET /user", 0),
        _span("t1", "b", "a", "users", "getUser", 1),
        _span("t1", "c", "b", "db", "query", 2),
        _span("t2", "a", None, "gateway", "POST /order", 0),
        _span("t2", "b", "a", "orders", "createOrder", 1),
        _span("t2", "c", "b", "payments", "charge", 2),
        _span("t2", "d", "b", "db", "insert", 3),
        _span("t3", "a", None, "gateway", "POST /order", 0),
        _span("t3", "b", "a", "orders", "createOrder", 1),
    ]
    await api.ingest(spans, now_us=T0_US + 20_000)
    await api.finalize("t1", "t2", "t3", now_us=T0_US + 20_000)


def _check_as_the_ui_does(body: dict[str, Any], service: str, operation: str | None) -> None:
    """``transformDdgData``: every path holds the focal node, or the page throws."""
    for entry in body["dependencies"]:
        assert set(entry) == {"path", "attributes"}
        assert any(
            e["service"] == service and (operation is None or e["operation"] == operation) for e in entry["path"]
        )
        assert all(set(e) == {"service", "operation"} for e in entry["path"])
        assert all(a["key"] == "exemplar_trace_id" for a in entry["attributes"])


def _paths(body: dict[str, Any]) -> dict[tuple[str, ...], list[str]]:
    return {
        tuple(e["service"] for e in entry["path"]): sorted(a["value"] for a in entry["attributes"])
        for entry in body["dependencies"]
    }


async def test_paths_through_the_focal_service_with_exemplars(api: LiveApi) -> None:
    await _load(api)
    reply = await api.get(f"/analytics/v1/dependencies?service=orders&{WINDOW}")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json
    _check_as_the_ui_does(body, "orders", None)
    assert _paths(body) == {
        ("gateway", "orders"): ["t2", "t3"],
        ("orders", "db"): ["t2"],
        ("orders", "payments"): ["t2"],
    }
    assert {e["operation"] for entry in body["dependencies"] for e in entry["path"]} == {"*"}

    gateway = (await api.get(f"/analytics/v1/dependencies?service=gateway&{WINDOW}")).json
    _check_as_the_ui_does(gateway, "gateway", None)
    assert _paths(gateway) == {
        ("gateway", "users", "db"): ["t1"],
        ("gateway", "orders", "db"): ["t2"],
        ("gateway", "orders", "payments"): ["t2"],
    }


async def test_the_chosen_operation_names_the_focal_node(api: LiveApi) -> None:
    await _load(api)
    body = (await api.get(f"/analytics/v1/dependencies?service=db&operation=query&{WINDOW}")).json
    _check_as_the_ui_does(body, "db", "query")
    assert _paths(body) == {("gateway", "users", "db"): ["t1"], ("gateway", "orders", "db"): ["t2"]}
    assert [[e["operation"] for e in entry["path"]] for entry in body["dependencies"]] == [["*", "*", "query"]] * 2


async def test_what_the_ui_sends_and_bad_requests(api: LiveApi) -> None:
    await _load(api)
    # the page asks with start=0&end=0: the day up to now, which the seeded traces (2024) are not in
    lonely = (await api.get("/analytics/v1/dependencies?service=orders&start=0&end=0")).json
    assert lonely == {"dependencies": [{"path": [{"service": "orders", "operation": "*"}], "attributes": []}]}
    assert (await api.get(f"/analytics/v1/dependencies?service=nobody&{WINDOW}")).json == {"dependencies": []}
    cases = [
        ("", "service"),
        ("service=orders&start=x", "start"),
        (f"service=orders&start={END_MS}&end={START_MS}", "start"),
    ]
    for query, param in cases:
        bad = await api.get(f"/analytics/v1/dependencies?{query}")
        assert bad.status == 400
        assert bad.json["error"].startswith(f"{param}: ")


def test_service_paths_skip_cycles_and_self_calls() -> None:
    links = [Dependency(parent=p, child=c, calls=1, errors=0) for p, c in
             (("a", "b"), ("b", "c"), ("c", "a"), ("b", "b"), ("c", "d"))]  # fmt: skip
    assert service_paths(links, "b") == [["c", "a", "b"], ["b", "c", "a"], ["b", "c", "d"]]
    assert service_paths([], "x") == [["x"]]
