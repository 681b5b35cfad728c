"""The SLA monitoring and critical-path pages in a real headless Chromium against the real API: the stats
page over a time window (charts, per-operation tables, endpoints), the endpoint page (flame graph, tail,
top contexts, changes), the endpoints list and the hot operations, and the links between the pages.

Each page is checked against the API's own answers for the same window, and where it can be, against
numbers computed here from the data set (:mod:`tests.ui.data`). Relative windows are resolved at
different moments by the page and by a test, so the tests compare at windows whose edges no trace of the
data set is near (6h, 24h, 7d, all), or pin the window the page shows (the stats page names it).
"""

from __future__ import annotations

import itertools
import json
import operator
import re
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from tests.api.support import LiveApi

from .conftest import SCREENSHOTS, Page
from .data import OLD_CHECKOUTS, trace_starts_ms
from .test_pages import _assert_no_banner, _attr, _json, _open, _settled

pytestmark = pytest.mark.kafka

STEP_MS = {"15m": 60_000, "1h": 60_000, "6h": 300_000, "24h": 900_000, "7d": 7_200_000, "all": 7_200_000}
"""The charts' step the page must ask for per window ("all" is charted over 7 days)."""
DAY_MS = 86_400_000
CHECKOUT = ("api-gateway", "POST /checkout")
CHECKOUT_API = f"/analyze/endpoints/api-gateway/{quote('POST /checkout', safe='')}"
CHECKOUT_PAGE = f"#/endpoint/api-gateway/{quote('POST /checkout', safe='')}"
ROW_PX = 24
"""The flame graph's row height."""


async def _choose_window(page: Page, value: str, route: str) -> None:
    """Click the window button ``value`` and wait until ``route`` rendered with it."""
    await page.page.get_by_test_id("window-picker").locator(f'[data-window="{value}"]').click()
    await page.page.wait_for_url(f"**/ui/{route}?window={value}")
    await page.page.locator(f'[data-testid=window-picker] [data-window="{value}"][aria-pressed="true"]').wait_for()
    await _settled(page)


async def _page_window(page: Page) -> tuple[int, int] | None:
    """The window the stats page counted (the /stats answer's), None for all time."""
    counted = page.page.get_by_test_id("stats-window")
    start = await counted.get_attribute("data-start")
    end = await counted.get_attribute("data-end")
    return None if start is None or end is None else (int(float(start)), int(float(end)))


def _window_query(window: tuple[int, int] | None) -> str:
    return "" if window is None else f"start={window[0]}&end={window[1]}"


async def _fields(row: Any, names: list[str]) -> dict[str, float]:
    return {name: float(await _attr(row.locator(f'[data-field="{name}"]'), "data-value")) for name in names}


# -- stats: window, charts, operations --------------------------------------------------------------------


async def _assert_stats_match(page: Page, api: LiveApi, window: tuple[int, int] | None) -> dict[str, Any]:
    """The tiles and the per-service table equal /stats over ``window``; answers that /stats."""
    stats: dict[str, Any] = await _json(api, f"/stats?{_window_query(window)}")
    for key in ("totalTraces", "activeTraces", "completedTraces", "failedTraces", "avgDuration"):
        shown = await _attr(page.page.locator(f'[data-stat="{key}"]'), "data-value")
        assert float(shown) == stats[key], key
    rows = page.page.get_by_test_id("service-row")
    assert await rows.count() == len(stats["serviceStats"])
    for name, numbers in stats["serviceStats"].items():
        row = page.page.locator(f'[data-testid="service-row"][data-service="{name}"]')
        assert await _fields(row, list(numbers)) == numbers, name
    # Independently of the API: the traces of the data set that started in the window.
    starts = trace_starts_ms()
    inside = [t for t, ms in starts.items() if window is None or window[0] <= ms < window[1]]
    assert stats["totalTraces"] == len(inside)
    return stats


async def test_the_window_selector_drives_every_number(ui_api: LiveApi, page: Page) -> None:
    await _open(page, f"{ui_api.url}/ui/#/stats")
    await _assert_no_banner(page)
    assert await _page_window(page) is None  # all time by default
    everything = await _assert_stats_match(page, ui_api, None)
    assert everything["totalTraces"] == len(trace_starts_ms())

    totals = {}
    for value in ("1h", "6h", "15m", "7d"):
        await _choose_window(page, value, "#/stats")
        window = await _page_window(page)
        assert window is not None
        now_ms = time.time() * 1000
        # The window named: the last `value` up to now, widened to whole minutes.
        length = {"15m": 15, "1h": 60, "6h": 360, "7d": 7 * 1440}[value] * 60_000
        assert window[1] % 60_000 == 0 and window[0] % 60_000 == 0
        assert now_ms - 60_000 <= window[1] <= now_ms + 60_000
        assert length <= window[1] - window[0] <= length + 60_000
        totals[value] = (await _assert_stats_match(page, ui_api, window))["totalTraces"]
        # Operations, endpoints and charts are over the same window.
        assert await _attr(page.page.get_by_test_id("service-charts").first, "data-step") == str(STEP_MS[value])
    # The data set's traces 40 minutes, 3 hours and 2 days ago: each wider window holds more of them.
    assert totals["15m"] <= totals["1h"] < totals["6h"] < totals["7d"] == everything["totalTraces"]
    # A reload keeps the window (it is in the URL).
    await page.page.reload()
    await _settled(page)
    assert await page.page.locator('[data-window="7d"][aria-pressed="true"]').count() == 1
    await page.screenshot("stats-window")
    assert page.errors() == []


async def _assert_charts_match(page: Page, api: LiveApi, service: str, window_name: str) -> list[dict[str, Any]]:
    """Every chart of ``service`` draws one point per API point, at its time on the axis and its value's
    height, with the API's numbers; answers the API's points."""
    charts = page.page.locator(f'[data-testid="service-charts"][data-service="{service}"]')
    step = int(await _attr(charts, "data-step"))
    assert step == STEP_MS[window_name]
    plot = charts.locator('[data-metric="rate"] [data-testid="chart-plot"]')
    start = int(float(await _attr(plot, "data-start")))
    end = int(float(await _attr(plot, "data-end")))
    page_window = await _page_window(page)
    hours = step % 3_600_000 == 0  # whole-hour steps start at a whole hour (the store's hour rows)
    if page_window is None:  # all time: the last 7 days
        assert start % 3_600_000 == 0
        assert 7 * DAY_MS <= end - start <= 7 * DAY_MS + 3_600_000 + 60_000
    else:
        assert (start, end) == (
            page_window[0] - page_window[0] % 3_600_000 if hours else page_window[0],
            page_window[1],
        )
    answer = await _json(api, f"/stats/timeseries?serviceName={quote(service)}&start={start}&end={end}&step={step}")
    assert (answer["window"]["start"], answer["window"]["end"], answer["step"]) == (start, end, step)
    points = answer["points"]
    assert points, service
    values: dict[str, dict[str, Callable[[dict[str, Any]], float]]] = {
        "rate": {"rate": lambda p: p["rate"]},
        "errors": {"errorRate": lambda p: p["errors"] / p["count"] * 100 if p["count"] else 0.0},
        "latency": {key: operator.itemgetter(key) for key in ("p50", "p95", "p99")},
    }
    for metric, series in values.items():
        chart = charts.locator(f'[data-testid="chart"][data-metric="{metric}"]')
        box = await chart.get_by_test_id("chart-plot").bounding_box()
        assert box is not None
        top = float(await _attr(chart.get_by_test_id("chart-plot"), "data-top"))
        assert top >= max(value(p) for value in series.values() for p in points)
        for key, value in series.items():
            dots = chart.locator(f'[data-testid="chart-point"][data-series="{key}"]')
            assert await dots.count() == len(points), (service, metric, key)
            for i, p in enumerate(points):
                dot = dots.nth(i)
                assert float(await _attr(dot, "data-t")) == p["t"]
                assert float(await _attr(dot, "data-value")) == pytest.approx(value(p), abs=1e-9)
                at = await dot.bounding_box()
                assert at is not None
                x = box["x"] + box["width"] * (p["t"] - start) / (end - start)
                y = box["y"] + box["height"] * (1 - value(p) / top)
                assert abs(at["x"] + at["width"] / 2 - x) <= 1, (service, metric, key, p["t"])
                assert abs(at["y"] + at["height"] / 2 - y) <= 1, (service, metric, key, p["t"])
    return list(points)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


async def _assert_readout(page: Page, service: str, points: list[dict[str, Any]]) -> None:
    """Pointing at each point of the rate chart shows that step's numbers as the API gave them."""
    charts = page.page.locator(f'[data-testid="service-charts"][data-service="{service}"]')
    overlay = charts.locator('[data-metric="rate"] rect.overlay')
    readout = charts.get_by_test_id("chart-readout")
    for i, p in enumerate(points):
        await overlay.scroll_into_view_if_needed()
        layer = await overlay.bounding_box()
        dot = await charts.locator('[data-metric="rate"] [data-testid="chart-point"]').nth(i).bounding_box()
        assert layer is not None and dot is not None
        await overlay.hover(position={"x": dot["x"] + dot["width"] / 2 - layer["x"], "y": layer["height"] / 2})
        await page.page.locator(
            f'[data-testid="service-charts"][data-service="{service}"][data-hover="{int(p["t"])}"]'
        ).wait_for()
        assert float(await _attr(readout.locator('[data-field="t"]'), "data-value")) == p["t"]
        for key in ("count", "errors", "rate", "p50", "p95", "p99"):
            field = readout.locator(f'[data-field="{key}"]')
            assert float(await _attr(field, "data-value")) == p[key], (p["t"], key)
            shown = (await field.inner_text()).split(" ", 1)[1]  # after the label: "250 ms", "0.02 spans/s"
            assert float(_NUMBER.findall(shown)[0]) == p[key], (p["t"], key)
        # Every chart of the service marks the step.
        assert await charts.locator("line.guide[visibility=visible]").count() == 3


@pytest.mark.parametrize("window", ["6h", "all", "1h", "7d"])
async def test_charts_show_the_api_points(ui_api: LiveApi, page: Page, window: str) -> None:
    await _open(page, f"{ui_api.url}/ui/#/stats?window={window}")
    await _assert_no_banner(page)
    services = await page.page.get_by_test_id("service-card").evaluate_all("cards => cards.map(c => c.dataset.service)")
    stats = await _json(ui_api, f"/stats?{_window_query(await _page_window(page))}")
    assert services == sorted(stats["serviceStats"])
    for service in services:
        points = await _assert_charts_match(page, ui_api, service, window)
        if service == "api-gateway":
            # The gateway's spans per step add up to its count over the window ("all" charts the last 7
            # days, which hold every trace of the data set; no trace starts in the hour before 7 days).
            assert sum(p["count"] for p in points) == stats["serviceStats"][service]["count"]
            await _assert_readout(page, service, points)
    if window == "6h":
        await page.screenshot("stats-charts")
        await page.page.get_by_test_id("service-card").first.screenshot(path=str(SCREENSHOTS / "stats-service.png"))
    assert page.errors() == []


@pytest.mark.parametrize("window", ["all", "6h"])
async def test_operation_tables_equal_the_api(ui_api: LiveApi, page: Page, window: str) -> None:
    await _open(page, f"{ui_api.url}/ui/#/stats?window={window}")
    query = _window_query(await _page_window(page))
    stats = await _json(ui_api, f"/stats?{query}")
    for service in stats["serviceStats"]:
        expected = await _json(ui_api, f"/stats/operations?serviceName={quote(service)}&{query}")
        card = page.page.locator(f'[data-testid="service-card"][data-service="{service}"]')
        rows = card.get_by_test_id("op-row")
        assert await rows.count() == len(expected["operations"]) > 0, service
        for i, op in enumerate(expected["operations"]):
            row = rows.nth(i)
            assert await _attr(row, "data-operation") == op["operation"]
            numbers = {k: op[k] for k in ("count", "errorCount", "avgDuration", "p50", "p95", "p99")}
            assert await _fields(row, list(numbers)) == numbers, (service, op["operation"])
            kinds = await _attr(row.locator('[data-field="spanKinds"]'), "data-value")
            assert kinds == str(op["spanKinds"]).replace("'", '"')
        # The spans of the service's operations add up to the service's.
        assert sum(op["count"] for op in expected["operations"]) == stats["serviceStats"][service]["count"]
    # The endpoints card: the API's first ten endpoints, in its order.
    endpoints = await _json(ui_api, f"/analyze/endpoints?{query}")
    rows = page.page.get_by_test_id("stats-endpoints").get_by_test_id("endpoint-row")
    assert [
        (await _attr(rows.nth(i), "data-service"), await _attr(rows.nth(i), "data-operation"))
        for i in range(await rows.count())
    ] == [(e["service"], e["operation"]) for e in endpoints[:10]]
    for i, e in enumerate(endpoints[:10]):
        fields = {k: e[k] for k in ("traces", "p50", "p95", "p99", "criticalPathMs")}
        assert await _fields(rows.nth(i), list(fields)) == fields
    assert page.errors() == []


# -- endpoint page: flame graph, tail, contexts, changes -------------------------------------------------


def _subtree_totals(contexts: list[dict[str, Any]]) -> dict[tuple[str, ...], float]:
    """Critical ms of every calling context's subtree: its own plus every deeper context's below it."""
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for context in contexts:
        path = tuple(context["path"])
        for depth in range(1, len(path) + 1):
            totals[path[:depth]] += context["criticalMs"]
    return totals


async def _assert_flame_matches(page: Page, view: dict[str, Any]) -> None:
    """One box per calling-context prefix, as wide as its subtree's critical ms out of the endpoint's
    total (within a pixel), at its depth's row, inside its caller's box, siblings side by side."""
    totals = _subtree_totals(view["contexts"])
    grand = sum(c["criticalMs"] for c in view["contexts"])
    assert grand == pytest.approx(view["criticalPathMs"], abs=0.01)
    svg = await page.page.locator('[data-testid="flame"] svg').bounding_box()
    assert svg is not None
    rects = page.page.get_by_test_id("flame-node")
    boxes: dict[tuple[str, ...], Any] = {}
    for i in range(await rects.count()):
        rect = rects.nth(i)
        path = tuple(json.loads(await _attr(rect, "data-path")))
        boxes[path] = await rect.bounding_box()
        assert float(await _attr(rect, "data-total")) == pytest.approx(totals[path], abs=1e-6)
    assert set(boxes) == set(totals)
    for path, box in boxes.items():
        assert box is not None
        assert abs(box["width"] - svg["width"] * totals[path] / grand) <= 1, path
        assert abs(box["y"] - svg["y"] - (len(path) - 1) * ROW_PX) <= 1, path
        if len(path) > 1:
            parent = boxes[path[:-1]]
            assert parent["x"] - 1 <= box["x"] and box["x"] + box["width"] <= parent["x"] + parent["width"] + 1, path
    siblings: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    for path, box in boxes.items():
        siblings[path[:-1]].append(box)
    for group in siblings.values():
        group.sort(key=lambda b: b["x"])
        for a, b in itertools.pairwise(group):
            assert a["x"] + a["width"] <= b["x"] + 1


async def _assert_contexts_table(page: Page, view: dict[str, Any]) -> None:
    rows = page.page.get_by_test_id("context-row")
    shown = min(20, len(view["contexts"]))
    assert await rows.count() == shown
    for i, context in enumerate(view["contexts"][:shown]):
        row = rows.nth(i)
        assert json.loads(await _attr(row.locator('[data-field="path"]'), "data-value")) == context["path"]
        fields = {k: context[k] for k in ("criticalMs", "meanMs", "share", "traces")}
        assert await _fields(row, list(fields)) == fields


async def test_endpoint_flame_graph_tail_and_contexts_match_the_api(ui_api: LiveApi, page: Page) -> None:
    await _open(page, f"{ui_api.url}/ui/{CHECKOUT_PAGE}?window=6h")
    await _assert_no_banner(page)
    everything = await _json(ui_api, f"{CHECKOUT_API}/critical-path?window=6h")
    # Independently: the data set's checkouts that started in the last 6 hours.
    starts = trace_starts_ms()
    now_ms = time.time() * 1000
    recent = {t for t in ("checkout-1", "checkout-2", *OLD_CHECKOUTS) if now_ms - starts[t] < 6 * 3_600_000}
    assert everything["traces"] == len(recent) == 5 and everything["selection"] is None
    head = page.page.get_by_test_id("endpoint-metrics")
    assert await _fields(head, ["traces", "criticalPathMs"]) == {
        "traces": everything["traces"],
        "criticalPathMs": everything["criticalPathMs"],
    }
    await _assert_flame_matches(page, everything)
    await _assert_contexts_table(page, everything)
    await page.screenshot("endpoint")

    # The tail: only the slowest traces (at or above the endpoint's p95), as the API selects them.
    await page.page.get_by_test_id("tail-toggle").locator('[data-tail="0.95"]').click()
    await page.page.wait_for_url("**tail=0.95**")
    await page.page.locator('[data-testid=tail-toggle] [data-tail="0.95"][aria-pressed="true"]').wait_for()
    await _settled(page)
    tail = await _json(ui_api, f"{CHECKOUT_API}/critical-path?window=6h&tail=0.95")
    assert tail["selection"] is not None and 0 < tail["traces"] < everything["traces"]
    assert float(await _attr(head.locator('[data-field="traces"]'), "data-value")) == tail["traces"]
    assert "lasted at least" in await page.page.get_by_test_id("selection").inner_text()
    await _assert_flame_matches(page, tail)
    await _assert_contexts_table(page, tail)
    await page.screenshot("endpoint-tail")

    # Back to all traces; the window stays in the URL.
    await page.page.get_by_test_id("tail-toggle").locator('[data-tail="all"]').click()
    await page.page.locator('[data-testid=tail-toggle] [data-tail="all"][aria-pressed="true"]').wait_for()
    await _settled(page)
    assert page.page.url.endswith(f"{CHECKOUT_PAGE}?window=6h")
    await _assert_flame_matches(page, everything)

    # Zoom: a box clicked spans the whole width; reset restores the scale.
    svg = await page.page.locator('[data-testid="flame"] svg').bounding_box()
    payment = ["api-gateway:POST /checkout", "order-service:createOrder", "payment-service:chargeCard"]
    as_js = json.dumps(payment, separators=(",", ":"))  # as the page's JSON.stringify writes it
    node = page.page.locator(f"[data-testid=flame-node][data-path='{as_js}']")
    await node.click()
    await page.page.get_by_test_id("flame-reset").wait_for()
    zoomed = await node.bounding_box()
    assert svg is not None and zoomed is not None and abs(zoomed["width"] - svg["width"]) <= 1
    await page.page.get_by_test_id("flame-reset").click()
    await _assert_flame_matches(page, everything)
    assert page.errors() == []


async def test_endpoint_changes_against_a_baseline(ui_api: LiveApi, page: Page) -> None:
    await _open(page, f"{ui_api.url}/ui/{CHECKOUT_PAGE}?window=6h")
    picker = page.page.get_by_test_id("baseline-picker")
    await picker.select_option("7d")
    await page.page.wait_for_url("**baseline=7d**")
    await page.page.locator('[data-testid=changes][data-window="6h"][data-baseline="7d"]').wait_for()
    await _settled(page)
    changes = await _json(ui_api, f"{CHECKOUT_API}/changes?window=6h&baseline=7d")
    # The 6 hours hold five checkouts, the 7 days before them the one of two days ago.
    assert (changes["currentTraces"], changes["baselineTraces"]) == (5, 1)
    # The fraud check got slower (115 ms against 30 before scaling): its context grew.
    grown = [c["path"][-1] for c in changes["changes"] if c["deltaMs"] > 0]
    assert "fraud-service:score" in grown
    rows = page.page.get_by_test_id("change-row")
    assert await rows.count() == len(changes["changes"]) > 0
    for i, change in enumerate(changes["changes"]):
        row = rows.nth(i)
        assert json.loads(await _attr(row.locator('[data-field="path"]'), "data-value")) == change["path"]
        fields = {k: change[k] for k in ("currentMeanMs", "baselineMeanMs", "deltaMs", "currentShare", "baselineShare")}
        assert await _fields(row, list(fields)) == fields
    text = await page.page.get_by_test_id("changes-traces").inner_text()
    assert text == f"{changes['currentTraces']} traces now, {changes['baselineTraces']} before"
    await page.page.get_by_test_id("changes").screenshot(path=str(SCREENSHOTS / "endpoint-changes.png"))
    assert page.errors() == []


# -- hot operations, endpoints, links ---------------------------------------------------------------------


@pytest.mark.parametrize("window", ["all", "6h"])
async def test_hot_operations_equal_the_api(ui_api: LiveApi, page: Page, window: str) -> None:
    await _open(page, f"{ui_api.url}/ui/#/hot" + ("" if window == "all" else f"?window={window}"))
    await _assert_no_banner(page)
    ranking = await _json(ui_api, "/analyze/operations" + ("" if window == "all" else f"?window={window}"))
    rows = page.page.get_by_test_id("hot-row")
    assert [await _attr(rows.nth(i), "data-operation") for i in range(await rows.count())] == [
        r["operation"] for r in ranking
    ]
    for i, r in enumerate(ranking):
        fields = {k: r[k] for k in ("criticalMs", "endpoints", "share")}
        assert await _fields(rows.nth(i), list(fields)) == fields
    # Independently: largest first, and the shares add up to the whole.
    assert [r["criticalMs"] for r in ranking] == sorted((r["criticalMs"] for r in ranking), reverse=True)
    assert sum(r["share"] for r in ranking) == pytest.approx(100, abs=0.1)
    endpoints = await _json(ui_api, "/analyze/endpoints" + ("" if window == "all" else f"?window={window}"))
    listed = page.page.get_by_test_id("hot-endpoints").get_by_test_id("endpoint-row")
    assert await listed.count() == min(10, len(endpoints))
    if window == "all":
        await page.screenshot("hot-operations")
        # The window picker: 6h asks the API for 6 hours.
        await _choose_window(page, "6h", "#/hot")
        six = await _json(ui_api, "/analyze/operations?window=6h")
        assert [await _attr(rows.nth(i), "data-operation") for i in range(await rows.count())] == [
            r["operation"] for r in six
        ]
        assert six != ranking
    assert page.errors() == []


async def test_endpoints_list_and_the_links_between_pages(ui_api: LiveApi, page: Page) -> None:
    await _open(page, f"{ui_api.url}/ui/#/endpoints?window=24h")
    await _assert_no_banner(page)
    endpoints = await _json(ui_api, "/analyze/endpoints?window=24h")
    rows = page.page.get_by_test_id("endpoint-row")
    assert [
        (await _attr(rows.nth(i), "data-service"), await _attr(rows.nth(i), "data-operation"))
        for i in range(await rows.count())
    ] == [(e["service"], e["operation"]) for e in endpoints]
    for i, e in enumerate(endpoints):
        fields = {k: e[k] for k in ("traces", "p50", "p95", "p99", "criticalPathMs")}
        assert await _fields(rows.nth(i), list(fields)) == fields
    # The navigation keeps the window.
    for nav in ("search", "dependencies", "stats", "endpoints", "hot"):
        assert await _attr(page.page.locator(f'[data-nav="{nav}"]'), "href") == f"#/{nav}?window=24h"
    assert "active" in await _attr(page.page.locator('[data-nav="endpoints"]'), "class")
    await page.screenshot("endpoints")

    # An endpoint's row opens its page, with the window.
    await page.page.locator(
        f'[data-testid="endpoint-row"][data-service="{CHECKOUT[0]}"][data-operation="{CHECKOUT[1]}"] a'
    ).click()
    await page.page.wait_for_url(f"**/ui/{CHECKOUT_PAGE}?window=24h")
    await _settled(page)
    assert "api-gateway" in (title := await page.page.get_by_test_id("endpoint-title").inner_text())
    assert "POST /checkout" in title
    assert "active" in await _attr(page.page.locator('[data-nav="endpoints"]'), "class")
    await _stats_page_links(ui_api, page)
    assert page.errors() == []


async def _stats_page_links(ui_api: LiveApi, page: Page) -> None:
    """The stats page's links to an endpoint, a service's traces; the trace page's to its endpoint."""
    # The stats page's endpoints link there too, keeping its window.
    await _open(page, f"{ui_api.url}/ui/#/stats?window=6h")
    link = page.page.get_by_test_id("stats-endpoints").locator(
        f'[data-testid="endpoint-row"][data-operation="{CHECKOUT[1]}"] a'
    )
    await link.click()
    await page.page.wait_for_url(f"**/ui/{CHECKOUT_PAGE}?window=6h")
    await _settled(page)
    await page.page.locator('[data-testid=window-picker] [data-window="6h"][aria-pressed="true"]').wait_for()

    # A service's traces from the stats page: the search over the same window.
    await _open(page, f"{ui_api.url}/ui/#/stats?window=6h")
    row = page.page.locator('[data-testid="service-row"][data-service="payment-service"]')
    search = row.get_by_test_id("service-search")
    assert await _attr(search, "href") == "#/search?serviceName=payment-service&window=6h"
    await search.click()
    await page.page.wait_for_url("**/ui/#/search?serviceName=payment-service&window=6h")
    await _settled(page)
    start = int(time.time() * 1000) - 6 * 3_600_000
    expected = await _json(ui_api, f"/traces/query?serviceName=payment-service&start={start}")
    results = page.page.get_by_test_id("trace-result")
    assert [await _attr(results.nth(i), "data-trace-id") for i in range(await results.count())] == [
        t["traceId"] for t in expected
    ]
    assert "checkout-2d" not in {t["traceId"] for t in expected} and len(expected) == 5
    assert await page.page.get_by_test_id("search-range").input_value() == "6h"

    # The trace page links its root service and operation to the endpoint page.
    await _open(page, f"{ui_api.url}/ui/#/trace/checkout-1")
    await page.page.get_by_test_id("trace-endpoint-link").click()
    await page.page.wait_for_url(f"**/ui/{CHECKOUT_PAGE}")
    await _settled(page)
    assert "POST /checkout" in await page.page.get_by_test_id("endpoint-title").inner_text()
