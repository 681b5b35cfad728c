"""Jaeger's metrics API (the Jaeger UI's Monitor tab) served from the rollups, checked against the
shapes Jaeger's query service answers and against values computed here from the spans.

Read from Jaeger: ``cmd/query/app/http_handler.go`` (``latencies``/``calls``/``errors``/``minStep``; a
``MetricFamily`` is a protobuf message, written with the protobuf JSON marshaler; ``minStep`` in the
``structuredResponse`` envelope, in milliseconds), ``cmd/query/app/query_parser.go``
(``parseMetricsQueryParams``: ``service`` repeated, ``groupByOperation``, ``spanKind`` repeated with
``server`` by default, ``endTs``/``lookback``/``step``/``ratePer`` in ms), ``internal/storage/metricstore/
prometheus/metricstore/reader.go`` (names ``service_latencies``, ``service_call_rate``,
``service_error_rate``, ``service_operation_*`` when grouped; help texts; the error rate filled with 0
where there are calls) and ``.../dbmodel/to_domain.go`` (type ``GAUGE``, labels ``service_name`` and
``operation``, ``gaugeValue.doubleValue`` points).
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest

from shared.models import Kind, Span, Status
from tests.percentiles import exact_percentile

from .support import LiveApi

pytestmark = pytest.mark.kafka

MINUTE_MS = 60_000


def _span(trace: str, sid: str, parent: str | None, service: str, op: str, start_ms: int, ms: int,
          kind: Kind | None, status: Status = "success") -> Span:  # fmt: skip
    return Span(
        trace_id=trace,
        span_id=sid,
        parent_span_id=parent,
        service_name=service,
        operation_name=op,
        start_time_us=start_ms * 1000,
        duration_us=ms * 1000,
        kind=kind,
        status=status,
    )


def _rfc3339(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _load(api: LiveApi, end_ms: int) -> list[Span]:
    """Spans in the five minutes before ``end_ms`` (a minute boundary): server spans of two operations of
    ``checkout`` (some failed) with client children, and one ``payments`` server span."""
    spans: list[Span] = []
    for minute in range(5):
        base = end_ms - (5 - minute) * MINUTE_MS + 1000
        for i in range(minute + 1):
            trace = f"t{minute}-{i}"
            op = "POST /pay" if i % 2 else "GET /cart"
            failed = i == 2
            spans.append(
                _span(
                    trace, "r", None, "checkout", op, base + i, 20 + 10 * i, "server", "error" if failed else "success"
                )
            )
            spans.append(_span(trace, "c", "r", "checkout", "call db", base + i + 1, 5, "client"))
            spans.append(_span(trace, "p", "r", "payments", "charge", base + i + 2, 3, "server"))
    await api.ingest(spans, now_us=end_ms * 1000)
    await api.finalize(*sorted({s.trace_id for s in spans}), now_us=end_ms * 1000)
    return spans


def _in_window(spans: list[Span], t_ms: int, rate_per_ms: int, **match: Any) -> list[Span]:
    return [
        s
        for s in spans
        if t_ms - rate_per_ms <= (s.start_time_us // 60_000_000) * 60_000 < t_ms
        and all(getattr(s, k) == v for k, v in match.items())
    ]


def _quantile(q: float, spans: list[Span]) -> float:
    """The exact quantile of the spans' durations, in ms (the API's is within 1% of it)."""
    return exact_percentile([s.duration_us or 0 for s in spans], q) / 1000


async def test_calls_errors_and_latencies_of_the_server_spans(api: LiveApi) -> None:
    end = (time.time_ns() // 1_000_000 // MINUTE_MS) * MINUTE_MS
    spans = await _load(api, end)
    common = f"service=checkout&endTs={end}&lookback={10 * MINUTE_MS}&step={MINUTE_MS}&ratePer={2 * MINUTE_MS}"
    calls = (await api.get(f"/api/metrics/calls?{common}")).json
    assert set(calls) == {"name", "type", "help", "metrics"}
    assert (calls["name"], calls["type"], calls["help"]) == (
        "service_call_rate",
        "GAUGE",
        "calls/sec, grouped by service",
    )
    [metric] = calls["metrics"]
    assert metric["labels"] == [{"name": "service_name", "value": "checkout"}]
    expected = {}
    for t in range(end - 10 * MINUTE_MS, end + 1, MINUTE_MS):
        window = _in_window(spans, t, 2 * MINUTE_MS, service_name="checkout", kind="server")
        if window:
            expected[_rfc3339(t)] = len(window) / 120
    got = {p["timestamp"]: p["gaugeValue"]["doubleValue"] for p in metric["metricPoints"]}
    assert got == pytest.approx(expected)
    assert all(set(p) == {"gaugeValue", "timestamp"} for p in metric["metricPoints"])

    errors = (await api.get(f"/api/metrics/errors?{common}")).json
    assert errors["name"] == "service_error_rate"
    assert errors["help"] == "error rate, computed as a fraction of errors/sec over calls/sec, grouped by service"
    points = {p["timestamp"]: p["gaugeValue"]["doubleValue"] for p in errors["metrics"][0]["metricPoints"]}
    assert set(points) == set(expected)  # zero-filled where there are calls and no errors
    for t in range(end - 10 * MINUTE_MS, end + 1, MINUTE_MS):
        window = _in_window(spans, t, 2 * MINUTE_MS, service_name="checkout", kind="server")
        if window:
            assert points[_rfc3339(t)] == pytest.approx(sum(s.status == "error" for s in window) / len(window))

    latencies = (await api.get(f"/api/metrics/latencies?{common}&quantile=0.95")).json
    assert latencies["name"] == "service_latencies"
    assert latencies["help"] == "0.95th quantile latency, grouped by service"
    values = {p["timestamp"]: p["gaugeValue"]["doubleValue"] for p in latencies["metrics"][0]["metricPoints"]}
    for t in range(end - 10 * MINUTE_MS, end + 1, MINUTE_MS):
        window = _in_window(spans, t, 2 * MINUTE_MS, service_name="checkout", kind="server")
        if window:
            assert values[_rfc3339(t)] == pytest.approx(_quantile(0.95, window), rel=0.01)


async def test_grouped_by_operation_and_span_kinds(api: LiveApi) -> None:
    end = (time.time_ns() // 1_000_000 // MINUTE_MS) * MINUTE_MS
    spans = await _load(api, end)
    common = f"endTs={end}&lookback={10 * MINUTE_MS}&step={5 * MINUTE_MS}&ratePer={10 * MINUTE_MS}"
    grouped = (await api.get(f"/api/metrics/calls?service=checkout&groupByOperation=true&{common}")).json
    assert grouped["name"] == "service_operation_call_rate"
    assert grouped["help"] == "calls/sec, grouped by service & operation"
    by_op = {m["labels"][1]["value"]: m for m in grouped["metrics"]}
    assert set(by_op) == {"GET /cart", "POST /pay"}  # server spans only, by default
    for m in grouped["metrics"]:
        assert [label["name"] for label in m["labels"]] == ["service_name", "operation"]
    last = by_op["GET /cart"]["metricPoints"][-1]
    assert last["timestamp"] == _rfc3339(end)
    window = _in_window(spans, end, 10 * MINUTE_MS, service_name="checkout", operation_name="GET /cart")
    assert last["gaugeValue"]["doubleValue"] == pytest.approx(len(window) / 600)
    client = (await api.get(f"/api/metrics/calls?service=checkout&spanKind=client&groupByOperation=1&{common}")).json
    assert [m["labels"][1]["value"] for m in client["metrics"]] == ["call db"]
    both = (await api.get(f"/api/metrics/calls?service=checkout&service=payments&{common}")).json
    assert [m["labels"][0]["value"] for m in both["metrics"]] == ["checkout", "payments"]
    nothing = (await api.get(f"/api/metrics/calls?service=nobody&{common}")).json
    assert nothing == {
        "name": "service_call_rate",
        "type": "GAUGE",
        "help": "calls/sec, grouped by service",
        "metrics": [],
    }


async def test_minstep_is_the_rollups_minute(api: LiveApi) -> None:
    reply = await api.get("/api/metrics/minstep")
    assert reply.status == 200
    assert reply.json == {"data": 60000, "total": 0, "limit": 0, "offset": 0, "errors": None}


async def test_steps_below_a_minute_are_served_per_minute(api: LiveApi) -> None:
    """The Jaeger UI may ask for Jaeger's default 5 s step: it gets one point per minute."""
    end = (time.time_ns() // 1_000_000 // MINUTE_MS) * MINUTE_MS
    await _load(api, end)
    reply = (await api.get(f"/api/metrics/calls?service=checkout&endTs={end}&lookback=600000&step=5000")).json
    stamps = [p["timestamp"] for p in reply["metrics"][0]["metricPoints"]]
    assert stamps and all(s.endswith(":00Z") for s in stamps)


@pytest.mark.parametrize("family", ["calls", "errors", "latencies"])
async def test_a_service_and_span_kind_without_data_answer_an_empty_metrics_list(api: LiveApi, family: str) -> None:
    """The Monitor tab's empty case. Read from Jaeger: ``cmd/jaeger/internal/extension/jaegerquery/internal/
    http_handler.go`` (``metrics`` writes the reader's ``*metrics.MetricFamily`` with ``writeJSON``, which picks
    the protobuf marshaler for a ``proto.Message``), ``.../internal/json_marshaler.go``
    (``newProtoJSONMarshaler``: gogo ``jsonpb.Marshaler`` with ``EmitDefaults`` false, so an empty repeated
    field is left out), ``internal/proto/metrics/openmetrics.proto`` (``MetricFamily``: ``name`` 1, ``type`` 2,
    ``unit`` 3, ``help`` 4, ``repeated Metric metrics`` 5). Read from jaeger-ui v1.73.0:
    ``packages/jaeger-ui/src/reducers/metrics.tsx`` reads ``metrics.metrics[0]``, which throws when the key
    is missing. So Jaeger's fields stay as they are, and ``metrics`` is always there."""
    end = (time.time_ns() // 1_000_000 // MINUTE_MS) * MINUTE_MS
    await _load(api, end)  # data for checkout's server and client spans, none for its consumer spans
    common = f"endTs={end}&lookback={10 * MINUTE_MS}&step={MINUTE_MS}&ratePer={2 * MINUTE_MS}"
    quantile = "&quantile=0.95" if family == "latencies" else ""
    for query in ("service=order-service&spanKind=server", "service=checkout&spanKind=consumer"):
        reply = await api.get(f"/api/metrics/{family}?{query}&{common}{quantile}")
        assert reply.status == 200
        body = reply.json
        assert body["metrics"] == []
        assert set(body) == {"name", "type", "help", "metrics"}
        assert body["type"] == "GAUGE"
    with_data = (await api.get(f"/api/metrics/{family}?service=checkout&spanKind=server&{common}{quantile}")).json
    assert len(with_data["metrics"]) == 1
