"""SLA monitoring over HTTP: ``/stats`` over a window, per-operation stats, time series; and critical
paths across traces: endpoints, an endpoint's aggregated critical path (all, tail, minDuration), hot
operations, changes against a baseline. Expected numbers are computed here from the spans."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import msgspec
import pytest

from shared.analysis import analyze
from shared.models import Span
from tests.percentiles import exact_percentile
from tests.spans import span_at

from .support import LiveApi

pytestmark = pytest.mark.kafka

MS = 1000
MINUTE = 60_000_000
HOUR = 60 * MINUTE


def _span(
    trace: str, sid: str, parent: str | None, service: str, operation: str, start: int, duration: int, **kw: Any
) -> Span:
    return span_at(trace, sid, parent, service, operation, start, duration, **kw)


def checkout(trace: str, start: int, *, db_ms: int, error: bool = False) -> list[Span]:
    """gateway:POST /checkout -> orders:create -> db:insert (db_ms), then payments:charge."""
    total = (db_ms + 30) * MS
    return [
        _span(trace, "r", None, "gateway", "POST /checkout", start, total, kind="server"),
        _span(trace, "o", "r", "orders", "create", start + MS, (db_ms + 10) * MS, kind="client"),
        _span(
            trace,
            "d",
            "o",
            "db",
            "insert",
            start + 2 * MS,
            db_ms * MS,
            kind="client",
            status="error" if error else "success",
        ),
        _span(trace, "p", "r", "payments", "charge", start + (db_ms + 12) * MS, 15 * MS, kind="client"),
    ]


async def load(api: LiveApi, traces: Sequence[Sequence[Span]], now_us: int) -> None:
    await api.ingest([s for t in traces for s in t], now_us=now_us)
    await api.finalize(*[t[0].trace_id for t in traces], now_us=now_us)


def now_us() -> int:
    return time.time_ns() // 1000


async def test_stats_over_a_window(api: LiveApi) -> None:
    now = now_us()
    recent = [checkout(f"n{i}", now - (i + 1) * MINUTE, db_ms=10 + i, error=i == 0) for i in range(4)]
    old = [checkout(f"o{i}", now - 3 * HOUR - i * MINUTE, db_ms=50) for i in range(3)]
    await load(api, [*recent, *old], now)

    everything = (await api.get("/stats")).json
    assert everything["totalTraces"] == 7 and everything["window"] is None
    recent_stats = (await api.get("/stats?window=15m")).json
    assert (recent_stats["completedTraces"], recent_stats["failedTraces"]) == (3, 1)
    assert recent_stats["serviceStats"]["db"]["count"] == 4
    assert recent_stats["serviceStats"]["db"]["errorCount"] == 1
    assert {s["traceId"] for s in recent_stats["slowestTraces"]} <= {f"n{i}" for i in range(4)}
    assert recent_stats["window"]["end"] >= now / 1000
    assert "pipeline" in recent_stats
    start, end = (now - 4 * HOUR) // 1000, (now - 2 * HOUR) // 1000
    old_stats = (await api.get(f"/stats?start={start}&end={end}")).json
    assert old_stats["completedTraces"] == 3 and old_stats["failedTraces"] == 0
    assert old_stats["avgDuration"] == 80.0
    # the windows' totals add up to all time
    assert recent_stats["totalTraces"] + old_stats["totalTraces"] == everything["totalTraces"]


async def test_stats_keep_the_traces_received_beside_the_estimates(api: LiveApi) -> None:
    """Head-sampled traces: one at 1/4 by the Jaeger attributes (failed), one at 1/2 by the tracestate
    threshold, one without sampler information. The seed's fields count what was received; the
    ``estimated`` ones, the averages and the per-operation figures count each trace 1/p times."""
    now = now_us()
    quarter = checkout("q", now - MINUTE, db_ms=10, error=True)
    quarter[0] = msgspec.structs.replace(
        quarter[0], tags={"jaeger.sampler.type": "probabilistic", "jaeger.sampler.param": 0.25}
    )
    half = [msgspec.structs.replace(s, trace_state="ot=th:8") for s in checkout("h", now - MINUTE, db_ms=40)]
    await load(api, [quarter, half, checkout("o", now - MINUTE, db_ms=70)], now)
    stats = (await api.get("/stats")).json
    assert (stats["totalTraces"], stats["completedTraces"], stats["failedTraces"]) == (3, 2, 1)
    assert (stats["estimatedTotalTraces"], stats["estimatedCompletedTraces"], stats["estimatedFailedTraces"]) == (
        7,
        3,
        4,
    )
    assert stats["avgDuration"] == round((4 * 40 + 2 * 70 + 100) / 7, 3)  # trace durations: db_ms + 30
    db = stats["serviceStats"]["db"]
    assert (db["count"], db["errorCount"], db["estimatedCount"], db["estimatedErrorCount"]) == (3, 1, 7, 4)
    operations = (await api.get("/stats/operations?serviceName=db")).json["operations"]
    assert [(o["operation"], o["count"], o["errorCount"]) for o in operations] == [("insert", 7, 4)]
    document = (await api.get("/openapi.json")).json
    assert "estimatedTotalTraces" in document["components"]["schemas"]["StatsView"]["properties"]
    assert "Estimates under head sampling" in document["info"]["description"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("window=15x", "window"),
        ("window=0m", "window"),
        ("window=401d", "window"),
        ("window=15m&start=1", "window"),
        ("end=5", "start"),
        ("start=10&end=5", "end"),
        ("windw=15m", "windw"),
    ],
)
async def test_bad_windows_are_named(api: LiveApi, query: str, param: str) -> None:
    reply = await api.get(f"/stats?{query}")
    assert reply.status == 400
    assert reply.json["error"].startswith(f"{param}:")


def percentile_ms(durations: list[int], q: float) -> float:
    """The exact percentile of the durations (µs), in ms: the API's is within 1% of it."""
    return exact_percentile(durations, q) / 1000


async def test_operation_stats(api: LiveApi) -> None:
    now = now_us()
    traces = [checkout(f"t{i}", now - (i + 1) * MINUTE, db_ms=5 + 3 * i, error=i % 4 == 0) for i in range(12)]
    await load(api, traces, now)
    reply = (await api.get("/stats/operations?serviceName=db&window=1h")).json
    assert reply["serviceName"] == "db"
    [insert] = reply["operations"]
    durations = [s.duration_us or 0 for t in traces for s in t if s.service_name == "db"]
    assert insert["operation"] == "insert" and insert["spanKinds"] == ["client"]
    assert insert["count"] == 12 and insert["errorCount"] == 3
    assert insert["avgDuration"] == round(sum(durations) / len(durations) / 1000, 3)
    for q, field in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        assert insert[field] == pytest.approx(percentile_ms(durations, q), rel=0.01)
    long_ago = (now - 10 * HOUR) // 1000
    assert (await api.get(f"/stats/operations?serviceName=db&start={long_ago}&end={long_ago + 1000}")).json[
        "operations"
    ] == []
    missing = await api.get("/stats/operations")
    assert missing.status == 400 and missing.json["error"].startswith("serviceName:")


async def test_timeseries_adds_up_to_the_window(api: LiveApi) -> None:
    now = now_us()
    rng = random.Random(4)
    traces = [checkout(f"s{i}", now - rng.randrange(MINUTE, 55 * MINUTE), db_ms=rng.randint(1, 90)) for i in range(60)]
    await load(api, traces, now)
    start, end = (now - HOUR) // 1000, now // 1000
    for step in (60_000, 300_000, 900_000):
        reply = (await api.get(f"/stats/timeseries?serviceName=db&start={start}&end={end}&step={step}")).json
        assert reply["step"] == step and reply["serviceName"] == "db" and reply["operationName"] is None
        points = reply["points"]
        assert sum(p["count"] for p in points) == 60
        for p in points:
            assert p["rate"] == pytest.approx(p["count"] / (step / 1000), abs=1e-6)
            assert p["t"] % step == 0 or step % 3_600_000 != 0
            assert 0 <= p["p50"] <= p["p95"] <= p["p99"]
        # each point counts exactly the db spans of traces that started in its step
        expected: dict[float, int] = defaultdict(int)
        first = reply["window"]["start"] * 1000
        for t in traces:
            expected[(first + (t[0].start_time_us - first) // (step * 1000) * step * 1000) / 1000] += 1
        assert {p["t"]: p["count"] for p in points} == expected
    whole = (await api.get(f"/stats?start={start}&end={end}")).json
    assert whole["serviceStats"]["db"]["count"] == 60
    one_op = (await api.get(f"/stats/timeseries?serviceName=db&operationName=insert&start={start}&step=60000")).json
    assert sum(p["count"] for p in one_op["points"]) == 60
    for query, param in [("step=30000", "step"), ("step=90000", "step"), ("window=7d&step=60000", "step")]:
        reply = await api.get(f"/stats/timeseries?serviceName=db&{query}")
        assert reply.status == 400 and reply.json["error"].startswith(f"{param}:"), query


# -- critical paths across traces ------------------------------------------------------------------


def contexts_of(traces: Sequence[Sequence[Span]]) -> dict[tuple[str, ...], tuple[int, int]]:
    """context -> (critical µs, traces), from each trace's own criticalPathSegments."""
    out: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
    for spans in traces:
        by_id = {s.span_id: s for s in spans}
        per: dict[tuple[str, ...], int] = defaultdict(int)
        for seg in analyze(spans[0].trace_id, spans).critical_path_segments:
            chain, current = [], by_id.get(seg.span_id)
            while current is not None:
                chain.append(f"{current.service_name}:{current.operation_name}")
                current = by_id.get(current.parent_span_id or "")
            per[tuple(reversed(chain))] += round((seg.end - seg.start) * 1000)
        for path, us in per.items():
            out[path][0] += us
            out[path][1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


ENDPOINT = f"/analyze/endpoints/gateway/{quote('POST /checkout', safe='')}"


async def test_endpoints_and_their_critical_path(api: LiveApi) -> None:
    now = now_us()
    traces = [checkout(f"c{i}", now - (i + 1) * MINUTE, db_ms=10 + 5 * i) for i in range(20)]
    await load(api, traces, now)

    [endpoint] = (await api.get("/analyze/endpoints?window=1h")).json
    assert (endpoint["service"], endpoint["operation"], endpoint["traces"]) == ("gateway", "POST /checkout", 20)
    critical_total = sum(us for us, _ in contexts_of(traces).values())
    assert endpoint["criticalPathMs"] == critical_total / 1000
    durations = [t[0].duration_us or 0 for t in traces]
    assert endpoint["p95"] == pytest.approx(percentile_ms(durations, 0.95), rel=0.01)

    view = (await api.get(f"{ENDPOINT}/critical-path?window=1h")).json
    assert view["endpoint"] == "gateway:POST /checkout" and view["traces"] == 20 and view["selection"] is None
    expected = contexts_of(traces)
    assert {tuple(c["path"]): (round(c["criticalMs"] * 1000), c["traces"]) for c in view["contexts"]} == expected
    assert [c["criticalMs"] for c in view["contexts"]] == sorted(
        (c["criticalMs"] for c in view["contexts"]), reverse=True
    )
    for c in view["contexts"]:
        assert c["meanMs"] == pytest.approx(c["criticalMs"] / 20, abs=0.001)
    assert sum(c["share"] for c in view["contexts"]) == pytest.approx(100, abs=0.05)
    assert view["criticalPathMs"] == critical_total / 1000
    assert view["maxDepth"] == 32 and view["elidedContexts"] == 0

    # the tail: only traces at or above the endpoint's p95 (as the API reports it), from their own paths
    tail = (await api.get(f"{ENDPOINT}/critical-path?window=1h&tail=0.95")).json
    threshold = tail["selection"]["minDurationMs"] * 1000
    chosen = [t for t in traces if (t[0].duration_us or 0) >= threshold]
    assert 0 < len(chosen) < 20
    assert tail["traces"] == tail["selection"]["selected"] == len(chosen)
    assert not tail["selection"]["truncated"] and tail["selection"]["limit"] == 10_000
    assert {tuple(c["path"]): (round(c["criticalMs"] * 1000), c["traces"]) for c in tail["contexts"]} == contexts_of(
        chosen
    )
    slow = (await api.get(f"{ENDPOINT}/critical-path?minDuration=100")).json
    assert slow["traces"] == sum(1 for t in traces if (t[0].duration_us or 0) >= 100 * MS)
    both = await api.get(f"{ENDPOINT}/critical-path?minDuration=100&tail=0.9")
    assert both.status == 400 and both.json["error"].startswith("tail:")
    assert (await api.get(f"{ENDPOINT}/critical-path?tail=1.5")).status == 400
    unknown = (await api.get("/analyze/endpoints/nope/none/critical-path")).json
    assert unknown["traces"] == 0 and unknown["contexts"] == []


async def test_hot_operations_rank_the_critical_time_of_every_endpoint(api: LiveApi) -> None:
    now = now_us()
    traces = [checkout(f"h{i}", now - (i + 1) * MINUTE, db_ms=40) for i in range(5)]
    other = [
        [
            _span(f"g{i}", "r", None, "gateway", "GET /items", now - MINUTE, 60 * MS),
            _span(f"g{i}", "d", "r", "db", "insert", now - MINUTE + MS, 50 * MS),
        ]
        for i in range(3)
    ]
    await load(api, [*traces, *other], now)
    ranking = (await api.get("/analyze/operations?window=1h")).json
    expected: dict[str, int] = defaultdict(int)
    endpoints: dict[str, set[str]] = defaultdict(set)
    for group, name in ((traces, "POST /checkout"), (other, "GET /items")):
        for path, (us, _) in contexts_of(group).items():
            expected[path[-1]] += us
            endpoints[path[-1]].add(name)
    assert [r["operation"] for r in ranking] == sorted(expected, key=lambda k: (-expected[k], k))
    for r in ranking:
        assert round(r["criticalMs"] * 1000) == expected[r["operation"]]
        assert r["endpoints"] == len(endpoints[r["operation"]])
    assert ranking[0]["operation"] == "db:insert" and ranking[0]["endpoints"] == 2


async def test_changes_against_a_baseline(api: LiveApi) -> None:
    now = now_us()
    baseline = [checkout(f"b{i}", now - 3 * HOUR - i * MINUTE, db_ms=10) for i in range(10)]
    current = [checkout(f"x{i}", now - (i + 1) * MINUTE, db_ms=60) for i in range(5)]
    await load(api, [*baseline, *current], now)
    reply = (await api.get(f"{ENDPOINT}/changes?window=1h&baseline=24h")).json
    assert (reply["currentTraces"], reply["baselineTraces"]) == (5, 10)
    top = reply["changes"][0]
    assert top["path"] == ["gateway:POST /checkout", "orders:create", "db:insert"]
    assert top["currentMeanMs"] == 60.0 and top["baselineMeanMs"] == 10.0 and top["deltaMs"] == 50.0
    assert [c["deltaMs"] for c in reply["changes"]] == sorted((c["deltaMs"] for c in reply["changes"]), reverse=True)
    assert reply["window"]["start"] == reply["baseline"]["end"]
    bad = await api.get(f"{ENDPOINT}/changes?window=1x")
    assert bad.status == 400 and bad.json["error"].startswith("window:")
