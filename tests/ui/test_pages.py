"""The web UI in a real headless Chromium against the real API: what each page shows matches the API.

Every test reads the shared data set of :mod:`tests.ui.data` through the live API and checks the page
against the API's own answers (bar sizes to the pixel, critical path, graph edges, stats numbers), that
the page logged no console error, and saves a screenshot under ``artifacts/screenshots/``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from query_api import create_app
from tests.api.support import LiveApi, heartbeat, serve

from .conftest import Page
from .data import OLD_CHECKOUTS, SHOP_SERVICES

if TYPE_CHECKING:
    from playwright.async_api import FloatRect

pytestmark = pytest.mark.kafka

TOKEN = "reader-token"


async def _json(api: LiveApi, path: str) -> Any:
    reply = await api.get(path)
    assert reply.status == 200, (path, reply.status, reply.text)
    return reply.json


async def _open(page: Page, url: str) -> None:
    """Go to ``url`` and wait until the page finished rendering its route."""
    await page.page.goto(url)
    await _settled(page)


async def _settled(page: Page) -> None:
    """Wait until the page finished rendering the route of the current hash.

    ``body[data-state=ready]`` alone is not enough after a click: the URL changes at once, while the
    ``hashchange`` that renders the new route runs later, so the previous route's ``ready`` still shows.
    """
    await page.page.wait_for_function(
        "() => document.body.dataset.state === 'ready' && document.body.dataset.route === window.location.hash"
    )


async def _attr(locator: Any, name: str) -> str:
    value = await locator.get_attribute(name)
    assert value is not None, name
    return str(value)


async def _banner(page: Page) -> str:
    await page.page.get_by_test_id("error").wait_for(state="visible")
    return str(await page.page.get_by_test_id("error-text").inner_text())


async def _assert_no_banner(page: Page) -> None:
    assert await page.page.get_by_test_id("error").is_hidden(), await page.page.get_by_test_id("error").inner_text()


# -- search ------------------------------------------------------------------------------------------


async def test_search_by_service_lists_its_traces(ui_api: LiveApi, page: Page) -> None:
    await _open(page, f"{ui_api.url}/ui/")
    await _assert_no_banner(page)
    form = page.page.get_by_test_id("search-form")
    await form.get_by_test_id("search-serviceName").fill("payment-service")
    await form.get_by_test_id("search-submit").click()
    await page.page.wait_for_url("**/ui/#/search?serviceName=payment-service")
    await _settled(page)

    expected = await _json(ui_api, "/traces/query?serviceName=payment-service")
    assert {t["traceId"] for t in expected} == {"checkout-1", "checkout-2", *OLD_CHECKOUTS}
    rows = page.page.get_by_test_id("trace-result")
    assert [await _attr(rows.nth(i), "data-trace-id") for i in range(await rows.count())] == [
        t["traceId"] for t in expected
    ]
    assert await page.page.get_by_test_id("results-count").inner_text() == f"{len(expected)} traces"

    # Each row: root service and operation, span count, status, a duration bar relative to the slowest.
    slowest = max(t["duration"] for t in expected)
    for i, trace in enumerate(expected):
        row = rows.nth(i)
        text = await row.inner_text()
        assert "api-gateway" in text and "POST /checkout" in text
        assert await row.get_by_test_id("result-spans").inner_text() == f"{trace['serviceCalls']} spans"
        assert await row.get_by_test_id("status-badge").inner_text() == trace["status"].upper()
        bar = await row.get_by_test_id("result-duration-bar").bounding_box()
        track = await row.locator(".result-track").bounding_box()
        assert bar is not None and track is not None
        assert abs(bar["width"] - track["width"] * trace["duration"] / slowest) <= 1

    await rows.first.click()
    await page.page.wait_for_url(f"**/ui/#/trace/{expected[0]['traceId']}")
    await _settled(page)
    assert await page.page.get_by_test_id("trace-id").inner_text() == expected[0]["traceId"]
    assert page.errors() == []


async def test_search_filters_status_tags_and_duration(ui_api: LiveApi, page: Page) -> None:
    await _open(page, f"{ui_api.url}/ui/#/search?status=failed")
    rows = page.page.get_by_test_id("trace-result")
    assert [await _attr(rows.nth(i), "data-trace-id") for i in range(await rows.count())] == ["orders-failed"]
    assert await rows.first.get_by_test_id("result-errors").inner_text() == "2 errors"

    # Several tags, typed into the form; min and max duration.
    await _open(page, f"{ui_api.url}/ui/#/search")
    form = page.page.get_by_test_id("search-form")
    for tag in ("http.method:POST", "amount:42.5"):
        await form.get_by_test_id("search-tag").fill(tag)
        await form.get_by_test_id("search-tag").press("Enter")
    assert await form.get_by_test_id("tag-chip").count() == 2
    await form.get_by_test_id("search-minDuration").fill("300")
    await form.get_by_test_id("search-submit").click()
    await page.page.wait_for_url("**minDuration=300**")
    await _settled(page)
    expected = await _json(ui_api, "/traces/query?tag=http.method:POST&tag=amount:42.5&minDuration=300")
    assert [t["traceId"] for t in expected] == ["checkout-1"]
    assert [await _attr(rows.nth(i), "data-trace-id") for i in range(await rows.count())] == ["checkout-1"]

    await _open(page, f"{ui_api.url}/ui/#/search?serviceName=api-gateway&maxDuration=12&limit=50")
    expected = await _json(ui_api, "/traces/query?serviceName=api-gateway&maxDuration=12&limit=50")
    assert {t["traceId"] for t in expected} == {"health-1", "health-2"}
    assert [await _attr(rows.nth(i), "data-trace-id") for i in range(await rows.count())] == [
        t["traceId"] for t in expected
    ]
    assert page.errors() == []


async def test_search_page_screenshot(ui_api: LiveApi, page: Page) -> None:
    await _open(page, f"{ui_api.url}/ui/#/search?limit=50")
    expected = await _json(ui_api, "/traces/query?limit=50")
    assert await page.page.get_by_test_id("trace-result").count() == len(expected) > 5
    await page.screenshot("search")
    assert page.errors() == []


# -- trace ---------------------------------------------------------------------------------------------


def _tree_order(node: dict[str, Any], depth: int = 0) -> list[tuple[str, int]]:
    rows = [(node["spanId"], depth)]
    for child in node["children"]:
        rows += _tree_order(child, depth + 1)
    return rows


async def test_trace_waterfall_is_to_scale(ui_api: LiveApi, page: Page) -> None:
    trace = await _json(ui_api, "/traces/checkout-1")
    vis = await _json(ui_api, "/traces/checkout-1/visualize")
    await _open(page, f"{ui_api.url}/ui/#/trace/checkout-1")
    await _assert_no_banner(page)

    rows = page.page.get_by_test_id("span-row")
    order = _tree_order(vis["tree"])
    assert len(order) == trace["serviceCalls"] == 8
    assert [
        (await _attr(rows.nth(i), "data-span-id"), int(await _attr(rows.nth(i), "data-depth")))
        for i in range(await rows.count())
    ] == order

    # Rows indent by depth.
    labels = [await rows.nth(i).locator(".svc").bounding_box() for i in range(len(order))]
    for (_, depth), label in zip(order, labels, strict=True):
        assert label is not None
        assert abs(label["x"] - labels[0]["x"] - 14 * depth) <= 1  # type: ignore[index]

    spans = {s["spanId"]: s for s in [trace["rootSpan"], *trace["spans"]]}
    total = trace["duration"]
    widths = {}
    for i, (span_id, _) in enumerate(order):
        track = await rows.nth(i).locator(".wf-track").bounding_box()
        bar = await rows.nth(i).get_by_test_id("span-bar").bounding_box()
        assert track is not None and bar is not None
        span = spans[span_id]
        offset = span["startTime"] - trace["startTime"]
        assert abs(bar["width"] - track["width"] * span["duration"] / total) <= 1, span_id
        assert abs(bar["x"] - track["x"] - track["width"] * offset / total) <= 1, span_id
        widths[span_id] = bar["width"]
    # Ratios of widths are ratios of durations (within a pixel).
    root = trace["rootSpan"]
    for span_id, width in widths.items():
        assert abs(width - widths[root["spanId"]] * spans[span_id]["duration"] / root["duration"]) <= 1
    assert page.errors() == []


def _intersect(a: FloatRect, b: FloatRect) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


@pytest.mark.parametrize("width", [1440, 1000])  # 1000: the narrow layout (a 240 px name column)
async def test_duration_labels_never_cover_the_names(ui_api: LiveApi, page: Page, width: int) -> None:
    """Each bar's duration label stays inside its row's track: after the bar, before it when the bar
    reaches the right end, inside its right end when the bar spans the track (the root's) — never over the
    service and operation names, as the root row's label once was."""
    await page.page.set_viewport_size({"width": width, "height": 900})
    await _open(page, f"{ui_api.url}/ui/#/trace/checkout-1")
    rows = page.page.get_by_test_id("span-row")
    placement = {}
    for i in range(await rows.count()):
        row = rows.nth(i)
        span_id = await _attr(row, "data-span-id")
        label = await row.get_by_test_id("span-duration").bounding_box()
        names = await row.locator(".wf-label").bounding_box()
        service = await row.locator(".svc").bounding_box()
        operation = await row.locator(".op").bounding_box()
        track = await row.locator(".wf-track").bounding_box()
        bar = await row.get_by_test_id("span-bar").bounding_box()
        assert label and names and service and operation and track and bar
        assert not _intersect(label, service) and not _intersect(label, operation), span_id
        assert not _intersect(label, names), span_id
        assert track["x"] <= label["x"] and label["x"] + label["width"] <= track["x"] + track["width"] + 1, span_id
        placement[span_id] = (
            "inside" if bar["x"] <= label["x"] and label["x"] + label["width"] <= bar["x"] + bar["width"]
            else "after" if label["x"] >= bar["x"] + bar["width"] else "before"
        )  # fmt: skip
    assert placement["gw-1"] == "inside"  # the root: its bar is the whole track
    assert placement["ord-1"] == "inside"  # 60..400 of 420 ms: no room on either side
    assert placement["auth-1"] == "after"  # a narrow bar near the start
    assert placement["fraud-1"] == "before"  # a bar ending near the right end
    if width == 1440:
        await page.screenshot("trace-duration-labels")
    assert page.errors() == []


async def test_trace_critical_path_is_highlighted(ui_api: LiveApi, page: Page) -> None:
    analysis = await _json(ui_api, "/traces/checkout-1/analyze")
    trace = await _json(ui_api, "/traces/checkout-1")
    await _open(page, f"{ui_api.url}/ui/#/trace/checkout-1")
    segments = analysis["criticalPathSegments"]
    on_path = {seg["spanId"] for seg in segments}
    assert on_path and on_path != {s["spanId"] for s in trace["spans"]} | {trace["rootSpan"]["spanId"]}

    rows = page.page.get_by_test_id("span-row")
    flagged = set()
    for i in range(await rows.count()):
        row = rows.nth(i)
        span_id = await _attr(row, "data-span-id")
        critical = await _attr(row, "data-critical")
        assert critical == ("true" if span_id in on_path else "false"), span_id
        assert await row.get_by_test_id("critical-marker").count() == (1 if span_id in on_path else 0)
        if critical == "true":
            flagged.add(span_id)
    assert flagged == on_path

    # Each segment drawn where the analysis puts it, on its span's row.
    drawn = page.page.get_by_test_id("critical-segment")
    assert await drawn.count() == len(segments)
    total = trace["duration"]
    found = []
    for i in range(len(segments)):
        el = drawn.nth(i)
        span_id = await _attr(el, "data-span-id")
        start, end = float(await _attr(el, "data-start")), float(await _attr(el, "data-end"))
        row = page.page.locator(f'[data-testid="span-row"][data-span-id="{span_id}"]')
        assert await row.locator('[data-testid="critical-segment"]').count() >= 1
        track = await row.locator(".wf-track").bounding_box()
        box = await el.bounding_box()
        assert track is not None and box is not None
        assert abs(box["x"] - track["x"] - track["width"] * start / total) <= 1
        assert abs(box["width"] - track["width"] * (end - start) / total) <= 1
        found.append((span_id, start, end))
    assert sorted(found) == sorted((seg["spanId"], seg["start"], seg["end"]) for seg in segments)

    # The analysis panels show the API's bottlenecks, breakdown and path.
    bottlenecks = page.page.get_by_test_id("bottleneck-row")
    assert [await _attr(bottlenecks.nth(i), "data-span-id") for i in range(await bottlenecks.count())] == [
        b["spanId"] for b in analysis["bottlenecks"]
    ]
    breakdown = page.page.get_by_test_id("breakdown-row")
    shown = {
        await _attr(breakdown.nth(i), "data-service"): float(await _attr(breakdown.nth(i), "data-value"))
        for i in range(await breakdown.count())
    }
    assert shown == analysis["serviceBreakdown"]
    steps = page.page.get_by_test_id("critical-path-step")
    assert await steps.locator(".step-label").all_inner_texts() == analysis["criticalPath"]
    assert [
        (await _attr(steps.nth(i), "data-span-id"), float(await _attr(steps.nth(i), "data-start")))
        for i in range(await steps.count())
    ] == [(seg["spanId"], seg["start"]) for seg in segments]
    await page.screenshot("trace")
    assert page.errors() == []


async def test_trace_span_detail_shows_tags_and_logs(ui_api: LiveApi, page: Page) -> None:
    await _open(page, f"{ui_api.url}/ui/#/trace/checkout-1")
    row = page.page.locator('[data-testid="span-row"][data-span-id="pay-1"]')
    await row.click()
    detail = page.page.locator('[data-testid="span-detail"][data-span-id="pay-1"]')
    await detail.wait_for()
    tags = detail.get_by_test_id("tag-row")
    assert {await _attr(tags.nth(i), "data-key"): (await tags.nth(i).locator("td").inner_text()) for i in range(3)} == {
        "amount": "42.5",
        "card.present": "false",
        "http.method": "POST",
    }
    logs = await detail.get_by_test_id("log-row").all_inner_texts()
    assert len(logs) == 2
    assert "+5 ms" in logs[0] and "card tokenized" in logs[0]
    assert "+150 ms" in logs[1] and "attempt=1" in logs[1]
    await page.screenshot("trace-detail")
    await row.click()  # closes again
    assert await detail.count() == 0

    # Error spans are red.
    await _open(page, f"{ui_api.url}/ui/#/trace/orders-failed")
    errors = page.page.locator('[data-testid="span-row"][data-error="true"]')
    assert sorted(await errors.evaluate_all("rows => rows.map(r => r.dataset.spanId)")) == ["db-f", "ord-f"]
    color = await errors.first.get_by_test_id("span-bar").evaluate("el => getComputedStyle(el).backgroundColor")
    assert color == "rgb(220, 38, 38)"
    assert page.errors() == []


@pytest.mark.parametrize("trace_id", ["upload-active", "search-orphan", "checkout-2"])
async def test_trace_completeness_matches_the_api(ui_api: LiveApi, page: Page, trace_id: str) -> None:
    trace = await _json(ui_api, f"/traces/{trace_id}")
    await _open(page, f"{ui_api.url}/ui/#/trace/{trace_id}")
    box = page.page.get_by_test_id("completeness")
    for key in ("orphanSpans", "lateSpans", "openSpans", "refinalizations"):
        assert await _attr(box.locator(f'[data-field="{key}"]'), "data-value") == str(trace[key]), key
    badge = await box.get_by_test_id("complete-badge").inner_text()
    assert badge == ("COMPLETE" if trace["complete"] else "INCOMPLETE")
    assert await page.page.get_by_test_id("span-row").count() == trace["serviceCalls"]
    if trace_id == "upload-active":
        assert trace["openSpans"] == 1 and trace["status"] == "active"
        assert await page.page.locator(".wf-bar.open").count() == 1
        await page.screenshot("trace-active")
    if trace_id == "search-orphan":
        assert trace["orphanSpans"] == 1
        assert await page.page.locator(".span-row.orphan").count() == 1
    assert page.errors() == []


async def test_unknown_trace_shows_the_api_error(ui_api: LiveApi, page: Page) -> None:
    await _open(page, f"{ui_api.url}/ui/#/trace/no-such-trace")
    text = await _banner(page)
    assert text.startswith("404: trace no-such-trace not found"), text
    assert "could not be loaded" in await page.page.locator("main").inner_text()
    await page.screenshot("trace-not-found")
    assert page.page_errors == []
    assert all("404" in message for message in page.errors())  # only the failed requests themselves

    await _open(page, f"{ui_api.url}/ui/#/search?minDuration=500&maxDuration=100")
    assert (await _banner(page)).startswith("400: maxDuration: must be >= minDuration")
    assert page.page_errors == []


# -- dependencies ------------------------------------------------------------------------------------


DAY_MS = 86_400_000
LOOKBACK_MS: dict[str | None, int | None] = {None: DAY_MS, "1h": 3_600_000, "7d": 7 * DAY_MS, "all": None}
"""The page's window (None: its default, the last day) as /api/dependencies' lookback (None: since 0)."""
CALLS: dict[str | None, tuple[int, int]] = {None: (6, 5), "1h": (4, 3), "7d": (7, 6), "all": (7, 6)}
"""The data set's gateway -> order-service and payment -> fraud calls per window (see tests/ui/data.py)."""


async def _expected_dependencies(api: LiveApi, source: str, window: str | None) -> dict[tuple[str, str], int]:
    """The edges the page must show for ``window``: /api/dependencies' answer, or the sums of the
    analyses' dependencies over the traces listed in the window (the page's fallback when that endpoint is
    missing)."""
    now_ms = int(time.time() * 1000)
    lookback = LOOKBACK_MS[window]
    if source == "api":
        end = now_ms + 60_000
        body = await _json(api, f"/api/dependencies?endTs={end}&lookback={end if lookback is None else lookback}")
        return {(d["parent"], d["child"]): d["callCount"] for d in body["data"]}
    edges: dict[tuple[str, str], int] = {}
    start = 0 if lookback is None else now_ms - lookback
    for summary in await _json(api, f"/traces/query?limit=200&start={start}"):
        for dep in (await _json(api, f"/traces/{summary['traceId']}/analyze"))["dependencies"]:
            key = (dep["parent"], dep["child"])
            edges[key] = edges.get(key, 0) + dep["calls"]
    return edges


@pytest.mark.parametrize(
    ("source", "window"), [("api", None), ("analyses", None), ("api", "1h"), ("analyses", "7d"), ("api", "all")]
)
async def test_dependency_graph_shows_services_and_call_counts(
    ui_api: LiveApi, page: Page, source: str, window: str | None
) -> None:
    expected = await _expected_dependencies(ui_api, source, window)
    # The data set's calls in the window: checkouts call order-service from the gateway and charge cards.
    assert (expected[("api-gateway", "order-service")], expected[("payment-service", "fraud-service")]) == CALLS[window]
    assert set(SHOP_SERVICES) <= {name for edge in expected for name in edge}
    if source == "analyses":  # as if the API had no /api/dependencies
        await page.page.route(
            "**/api/dependencies?*",
            lambda route: route.fulfill(status=404, content_type="application/json", body='{"error": "not found"}'),
        )

    await _open(page, f"{ui_api.url}/ui/#/dependencies")
    if window is not None:  # chosen on the page: the URL keeps it
        await page.page.get_by_test_id("window-picker").locator(f'[data-window="{window}"]').click()
        await page.page.wait_for_url(f"**/ui/#/dependencies?window={window}")
        await _settled(page)
        source_el = page.page.get_by_test_id("dep-source")
        assert await _attr(source_el, "data-lookback") == (
            await _attr(source_el, "data-end-ts") if LOOKBACK_MS[window] is None else str(LOOKBACK_MS[window])
        )
    await _assert_no_banner(page)
    assert await _attr(page.page.get_by_test_id("dep-source"), "data-source") == source
    nodes = page.page.get_by_test_id("dep-node")
    names = [await _attr(nodes.nth(i), "data-service") for i in range(await nodes.count())]
    assert sorted(names) == sorted({name for edge in expected for name in edge})
    edges = page.page.get_by_test_id("dep-edge")
    shown = {}
    for i in range(await edges.count()):
        edge = edges.nth(i)
        key = (await _attr(edge, "data-parent"), await _attr(edge, "data-child"))
        count = int(await _attr(edge, "data-count"))
        assert (await edge.get_by_test_id("dep-edge-count").text_content() or "").split(" ")[0] == str(count)
        shown[key] = count
    assert shown == expected

    # Laid out in layers from the roots: every caller is left of what it calls.
    boxes = {name: await nodes.nth(i).bounding_box() for i, name in enumerate(names)}
    for parent, child in expected:
        a, b = boxes[parent], boxes[child]
        assert a is not None and b is not None
        assert a["x"] + a["width"] < b["x"], (parent, child)
    assert boxes["api-gateway"] is not None
    assert boxes["api-gateway"]["x"] == min(box["x"] for box in boxes.values() if box is not None)
    if source == "api" and window is None:
        await page.screenshot("dependencies")
    # The stubbed 404 is the fallback's trigger, nothing else may fail.
    assert page.errors(allow_url="/api/dependencies" if source == "analyses" else None) == []


# -- stats ---------------------------------------------------------------------------------------------


async def _assert_service_rows(page: Page, service_stats: dict[str, dict[str, float]]) -> None:
    """The stats page's service table shows every number of ``serviceStats``."""
    services = page.page.get_by_test_id("service-row")
    assert await services.count() == len(service_stats)
    for name, numbers in service_stats.items():
        row = page.page.locator(f'[data-testid="service-row"][data-service="{name}"]')
        for key, expected in numbers.items():
            assert float(await _attr(row.locator(f'[data-field="{key}"]'), "data-value")) == expected, (name, key)


async def test_stats_page_shows_the_api_numbers(ui_api: LiveApi, page: Page) -> None:
    now = time.time_ns() // 1000
    for worker, lag, rate in (("worker-a", {"spans/0": 7, "spans/1": 3}, 120.5), ("worker-b", {"spans/2": 0}, 80.25)):
        await ui_api.store.record_heartbeat(
            heartbeat(
                worker,
                lag,
                spans_per_second=rate,
                spans_total=5000,
                late_spans=1,
                traces_finalized=321,
                updated_at_us=now,
            )
        )
    await _open(page, f"{ui_api.url}/ui/#/stats")
    await _assert_no_banner(page)
    stats = await _json(ui_api, "/stats")

    async def value(key: str) -> str:
        return await _attr(page.page.locator(f'[data-stat="{key}"]'), "data-value")

    for key in ("totalTraces", "activeTraces", "completedTraces", "failedTraces", "avgDuration"):
        assert float(await value(key)) == stats[key], key
    assert await page.page.locator('[data-stat="totalTraces"] [data-testid="stat-value"]').inner_text() == str(
        stats["totalTraces"]
    )
    pipeline = stats["pipeline"]
    assert len(pipeline["workers"]) == 2
    assert float(await value("pipeline.workers")) == len(pipeline["workers"])
    for key in ("totalLag", "spansPerSecond", "deadLettered", "lateSpans"):
        assert float(await value(f"pipeline.{key}")) == pipeline[key], key
    assert await page.page.get_by_test_id("worker-row").count() == 2

    slow = page.page.get_by_test_id("slow-trace")
    assert [
        (await _attr(slow.nth(i), "data-trace-id"), float(await _attr(slow.nth(i), "data-value")))
        for i in range(await slow.count())
    ] == [(t["traceId"], t["duration"]) for t in stats["slowestTraces"]]

    await _assert_service_rows(page, stats["serviceStats"])
    await page.screenshot("stats")

    # Refresh redraws in place with the new numbers.
    await ui_api.store.record_heartbeat(
        heartbeat("worker-c", {"spans/3": 5}, spans_per_second=1.0, spans_total=1, updated_at_us=time.time_ns() // 1000)
    )
    await page.page.get_by_test_id("stats-refresh").click()
    await page.page.locator('[data-stat="pipeline.workers"][data-value="3"]').wait_for()
    assert float(await value("pipeline.totalLag")) == pipeline["totalLag"] + 5

    # A slowest trace links to its trace page.
    first = stats["slowestTraces"][0]["traceId"]
    await slow.first.get_by_role("link").click()
    await page.page.wait_for_url(f"**/ui/#/trace/{first}")
    await _settled(page)
    assert await page.page.get_by_test_id("trace-id").inner_text() == first
    assert page.errors() == []


# -- auth and failures -----------------------------------------------------------------------------------


async def test_read_tokens_the_page_asks_for_a_token_then_works(ui_api: LiveApi, page: Page) -> None:
    settings = msgspec.structs.replace(ui_api.settings, read_tokens=(TOKEN,))
    async with serve(create_app(settings, store=ui_api.store)) as url:
        await _open(page, f"{url}/ui/#/search")  # the page itself loads without a token
        text = await _banner(page)
        assert text.startswith("401: missing bearer token — set a read token"), text
        assert await page.page.get_by_test_id("trace-result").count() == 0
        assert await page.page.get_by_test_id("token-state").inner_text() == "no token"
        await page.screenshot("auth-required")

        await page.page.get_by_test_id("token-input").fill("wrong")
        await page.page.get_by_test_id("token-save").click()
        await _settled(page)
        assert (await _banner(page)).startswith("403: the read token was not accepted")

        await page.page.get_by_test_id("token-input").fill(TOKEN)
        await page.page.get_by_test_id("token-save").click()
        await _settled(page)
        await _assert_no_banner(page)
        assert await page.page.get_by_test_id("trace-result").count() > 0
        assert await page.page.get_by_test_id("token-state").inner_text() == "token set"

        # Kept in localStorage: other pages and a reload work too.
        assert await page.page.evaluate("localStorage.getItem('tracing.readToken')") == TOKEN
        for route, probe in (
            ("#/stats", "service-row"),
            ("#/dependencies", "dep-node"),
            ("#/trace/checkout-1", "span-row"),
        ):
            await _open(page, f"{url}/ui/{route}")
            await _assert_no_banner(page)
            assert await page.page.get_by_test_id(probe).count() > 0, route

        await page.page.get_by_test_id("token-clear").click()
        await _settled(page)
        assert (await _banner(page)).startswith("401: missing bearer token")
    assert page.page_errors == []
    assert all(("401" in m or "403" in m) for m in page.errors()), page.errors()


async def test_a_network_error_is_shown(ui_api: LiveApi, page: Page) -> None:
    async with serve(create_app(ui_api.settings, store=ui_api.store)) as url:
        await _open(page, f"{url}/ui/#/search")
        await _assert_no_banner(page)
    # The server is gone: the next page's request cannot connect.
    await page.page.get_by_role("link", name="Stats").click()
    await _settled(page)
    text = await _banner(page)
    assert text.startswith("Network error: the API could not be reached"), text
    await page.screenshot("network-error")
    assert page.page_errors == []
