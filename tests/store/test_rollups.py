"""Time-bucketed rollups, windows, span kinds, Jaeger's same-span search and critical paths across
traces, on every backend (the ``store`` fixture). Expected values are computed here from the spans
themselves, independently of the store's rollup code."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Final

import pytest

from shared.analysis import analyze
from shared.critical_paths import ELIDED, MAX_CONTEXT_DEPTH
from shared.demo import make_trace
from shared.models import Kind, Span
from shared.sampling import Sampler
from shared.store import QueryError, TraceStore
from shared.store.base import Window
from shared.store.sketch import merged
from tests.store.test_contract import MS, NOW, SECOND, T0, finalize_one, search, simple_trace, span, write

MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
BASE = (T0 // HOUR) * HOUR  # an hour boundary


def window(start: int, end: int) -> Window:
    return Window(start_us=start, end_us=end)


async def finalize_all(store: TraceStore, traces: Iterable[Sequence[Span]], *, now: int = NOW) -> None:
    batch = list(traces)
    await write(store, [s for t in batch for s in t])
    analyses = await store.finalize([t[0].trace_id for t in batch], now_us=now)
    assert len(analyses) == len(batch)


def trace_at(
    trace_id: str, start: int, *, service: str = "api", error: bool = False, duration: int = 10 * MS
) -> list[Span]:
    return simple_trace(
        trace_id,
        start=start,
        duration=duration,
        root_service=service,
        child_status="error" if error else "success",
    )


# -- windows -------------------------------------------------------------------------------------------


async def test_windows_separate_traces_started_hours_apart(store: TraceStore) -> None:
    early = [trace_at(f"e{i}", BASE + 5 * MINUTE + i * SECOND) for i in range(3)]
    late = [trace_at(f"l{i}", BASE + 3 * HOUR + 30 * SECOND + i * SECOND, error=i == 0) for i in range(4)]
    await finalize_all(store, [*early, *late])

    everything = await store.stats()
    assert (everything.completed_traces, everything.failed_traces) == (6, 1)
    assert everything.window is None

    first = await store.stats(window=window(BASE, BASE + HOUR))
    assert (first.completed_traces, first.failed_traces, first.active_traces) == (3, 0, 0)
    assert first.services["api"].count == 3
    assert first.services["db"].count == 3
    assert {s.trace_id for s in first.slowest} == {"e0", "e1", "e2"}
    assert first.window == window(BASE, BASE + HOUR)

    second = await store.stats(window=window(BASE + 2 * HOUR, BASE + 4 * HOUR))
    assert (second.completed_traces, second.failed_traces) == (3, 1)
    assert second.services["db"].error_count == 1
    assert {s.trace_id for s in second.slowest} == {"l0", "l1", "l2", "l3"}

    between = await store.stats(window=window(BASE + HOUR, BASE + 3 * HOUR))
    assert between.total_traces == 0 and between.services == {}

    # windows are counted in whole minutes: the start rounds down, the end up
    odd = await store.stats(window=window(BASE + 5 * MINUTE + 30 * SECOND, BASE + 5 * MINUTE + 31 * SECOND))
    assert odd.window == window(BASE + 5 * MINUTE, BASE + 6 * MINUTE)
    assert odd.completed_traces == 3


async def test_whole_hours_and_edge_minutes_add_up(store: TraceStore) -> None:
    """A window over whole hours plus minutes at both edges reads hour rows and minute rows; the totals
    are those of the traces inside, exactly."""
    starts = [BASE + m * MINUTE + 7 * SECOND for m in (0, 59, 60, 61, 119, 120, 150, 179, 180, 200)]
    await finalize_all(store, [trace_at(f"t{i}", s) for i, s in enumerate(starts)])
    for lo, hi in [(59, 181), (0, 240), (61, 120), (60, 180), (1, 2), (119, 121), (150, 151), (0, 1)]:
        w = window(BASE + lo * MINUTE, BASE + hi * MINUTE)
        expected = sum(1 for s in starts if w.start_us <= s < w.end_us)
        rows = await store.rollups("endpoints", w)
        assert sum(r.count for r in rows) == expected, (lo, hi)
        stats = await store.stats(window=w)
        assert stats.completed_traces == expected
        assert stats.services.get("db") is None or stats.services["db"].count == expected


async def test_time_series_adds_up_to_the_window(store: TraceStore) -> None:
    rng = random.Random(5)
    traces = [make_trace(rng, BASE + rng.randrange(0, 3 * HOUR), error_rate=0.2) for _ in range(150)]
    await finalize_all(store, traces)
    w = window(BASE, BASE + 3 * HOUR)
    for step in (MINUTE, 5 * MINUTE, HOUR):
        series = await store.rollups("operations", w, step_us=step, service="api-gateway")
        whole = await store.rollups("operations", w, service="api-gateway")
        assert {r.t_us for r in series} <= set(range(w.start_us, w.end_us, step))
        for key in {r.key for r in whole}:
            points = [r for r in series if r.key == key]
            total = next(r for r in whole if r.key == key)
            assert sum(p.count for p in points) == total.count
            assert sum(p.errors for p in points) == total.errors
            assert sum(p.duration_us for p in points) == total.duration_us
            assert merged(p.bins for p in points) == total.bins
    # per minute: each point counts exactly the gateway spans of the traces that started in that minute
    per_minute: dict[int, int] = defaultdict(int)
    for t in traces:
        root = t[0]
        per_minute[root.start_time_us - root.start_time_us % MINUTE] += sum(
            1 for s in t if s.service_name == "api-gateway"
        )
    series = await store.rollups("operations", w, step_us=MINUTE, service="api-gateway")
    got: dict[int, int] = defaultdict(int)
    for r in series:
        got[r.t_us] += r.count
    assert got == per_minute
    with pytest.raises(QueryError) as bad:
        await store.rollups("operations", w, step_us=30 * SECOND)
    assert bad.value.param == "step"


ODD_WINDOWS: Final = [
    (20, 110),
    (5, 55),
    (45, 170),
    (0, 180),
    (59, 61),
    (1, 179),
    (35, 95),
    *((m, m + 60) for m in (1, 9, 10, 11, 29, 30, 31, 35, 39, 41, 50, 55, 59, 61, 69, 70)),
    (31, 45),
    (12, 18),
    (3, 9),
    (22, 39),
    (41, 119),
]
"""Windows (minutes from BASE) starting at every kind of minute of the hour and ten minutes: read as hour
rows, ten-minute rows and minutes, less those outside them where that is fewer."""


async def test_windows_with_part_hours_equal_their_minutes(store: TraceStore) -> None:
    """Whatever rows a window is read from (hour and ten-minute rows less the minutes outside it, where that
    is fewer), its sums are those of its minutes, read one minute at a time."""
    rng = random.Random(8)
    traces = [make_trace(rng, BASE + rng.randrange(0, 3 * HOUR), error_rate=0.2) for _ in range(120)]
    await finalize_all(store, traces)
    per_minute = [await store.critical_contexts(window(BASE + m * MINUTE, BASE + (m + 1) * MINUTE)) for m in range(180)]
    for first, end in ODD_WINDOWS:
        w = window(BASE + first * MINUTE, BASE + end * MINUTE)
        await assert_equals_its_minutes(store, w)
        contexts: dict[tuple[tuple[str, str], tuple[str, ...]], list[int]] = defaultdict(lambda: [0, 0])
        for rows in per_minute[first:end]:
            for row in rows:
                sums = contexts[row.endpoint, row.path]
                sums[0] += row.critical_us
                sums[1] += row.traces
        got = {(r.endpoint, r.path): [r.critical_us, r.traces] for r in await store.critical_contexts(w)}
        assert got == dict(contexts), (first, end)


async def assert_equals_its_minutes(store: TraceStore, w: Window) -> None:
    """The window's rollups of both series and its stats, read whole, equal its minute rows summed."""
    for series in ("operations", "endpoints"):
        whole = {r.key: (r.count, r.errors, r.duration_us, r.bins) for r in await store.rollups(series, w)}
        points = await store.rollups(series, w, step_us=MINUTE)
        assert whole == {
            key: (
                sum(p.count for p in mine),
                sum(p.errors for p in mine),
                sum(p.duration_us for p in mine),
                merged(p.bins for p in mine),
            )
            for key in {p.key for p in points}
            for mine in [[p for p in points if p.key == key]]
        }, (w, series)
    stats = await store.stats(window=w)
    points = await store.rollups("operations", w, step_us=MINUTE)
    assert {name: (s.count, s.error_count, s.bins) for name, s in stats.services.items()} == {
        service: (sum(p.count for p in mine), sum(p.errors for p in mine), merged(p.bins for p in mine))
        for service in {p.key[0] for p in points}
        for mine in [[p for p in points if p.key[0] == service]]
    }, w


async def assert_grains_agree(store: TraceStore, first: int, end: int) -> None:
    """Every ten minutes and hour (and a window across them) of minutes ``first`` to ``end`` from BASE,
    read from its own rows, equals its minutes: re-finalizations, late spans and purges kept every grain
    the sum of its minutes."""
    for lo, hi in [*((m, m + 10) for m in range(first, end, 10)), *((m, m + 60) for m in range(first, end, 60))]:
        await assert_equals_its_minutes(store, window(BASE + lo * MINUTE, BASE + hi * MINUTE))
    await assert_equals_its_minutes(store, window(BASE + (first + 1) * MINUTE, BASE + (end - 1) * MINUTE))


async def test_late_span_moves_a_trace_to_its_new_start_bucket(store: TraceStore) -> None:
    """A rootless trace starts at its earliest span: a late span an hour earlier moves the whole trace's
    contribution from one bucket to another, exactly."""
    child = span("r1", "c", parent="gone", service="db", start=BASE + 2 * HOUR + 10 * SECOND, duration=MS)
    await write(store, [child])
    await finalize_one(store, "r1")
    assert (await store.stats(window=window(BASE + 2 * HOUR, BASE + 3 * HOUR))).total_traces == 1
    earlier = span("r1", "e", parent="gone", service="cache", start=BASE + HOUR + 10 * SECOND, duration=MS)
    await write(store, [earlier], now=NOW + SECOND)
    await finalize_one(store, "r1", now=NOW + 2 * SECOND)
    assert (await store.stats(window=window(BASE + 2 * HOUR, BASE + 3 * HOUR))).total_traces == 0
    moved = await store.stats(window=window(BASE + HOUR, BASE + 2 * HOUR))
    assert moved.total_traces == 1
    assert {name: s.count for name, s in moved.services.items()} == {"db": 1, "cache": 1}
    await assert_grains_agree(store, 60, 180)
    minute = await store.rollups("operations", window(BASE + HOUR, BASE + HOUR + MINUTE), step_us=MINUTE)
    assert sorted((r.key[0], r.count) for r in minute) == [("cache", 1), ("db", 1)]


async def test_purge_and_sampling_keep_windows_exact(store: TraceStore) -> None:
    old = [trace_at(f"o{i}", BASE + i * MINUTE) for i in range(3)]
    new = [trace_at(f"n{i}", BASE + 2 * HOUR + i * MINUTE) for i in range(3)]
    await write(store, [s for t in [*old, *new] for s in t])
    await store.finalize([t[0].trace_id for t in [*old, *new]], now_us=NOW, sampler=Sampler(rate=0.0, slow_us=HOUR))
    assert (await store.stats(window=window(BASE, BASE + HOUR))).completed_traces == 3  # dropped, still counted
    assert await store.purge(BASE + HOUR) == 3
    assert (await store.stats(window=window(BASE, BASE + HOUR))).total_traces == 0
    assert await store.rollups("operations", window(BASE, BASE + HOUR), step_us=MINUTE) == []
    assert (await store.stats(window=window(BASE + 2 * HOUR, BASE + 3 * HOUR))).completed_traces == 3
    await assert_grains_agree(store, 0, 180)
    assert (await store.stats()).completed_traces == 3


async def test_active_traces_in_a_window_are_those_first_seen_in_it(store: TraceStore) -> None:
    await write(store, [span("a1", "root", duration=None)], now=NOW)
    await write(store, [span("a2", "root", duration=None)], now=NOW + 2 * HOUR)
    assert (await store.stats()).active_traces == 2
    assert (await store.stats(window=window(NOW - MINUTE, NOW + MINUTE))).active_traces == 1
    assert (await store.stats(window=window(NOW + HOUR, NOW + 3 * HOUR))).active_traces == 1


# -- span kinds ----------------------------------------------------------------------------------------


async def test_operations_keep_their_span_kinds(store: TraceStore) -> None:
    await finalize_all(
        store,
        [
            [
                span("k1", "root", service="api", operation="GET /", kind="server"),
                span("k1", "c1", parent="root", service="api", operation="call db", kind="client"),
                span("k1", "c2", parent="root", service="api", operation="call db", kind="producer"),
                span("k1", "c3", parent="root", service="api", operation="work"),
            ]
        ],
    )
    assert await store.operation_kinds("api") == [
        ("GET /", "server"),
        ("call db", "client"),
        ("call db", "producer"),
        ("work", ""),
    ]
    assert await store.operations("api") == ["GET /", "call db", "work"]
    rows = await store.rollups("operations", None, service="api", operation="call db")
    assert sorted((r.key[2], r.count) for r in rows) == [("client", 1), ("producer", 1)]


# -- Jaeger's same-span search --------------------------------------------------------------------------


async def test_same_span_search_needs_one_span_with_everything(store: TraceStore) -> None:
    """The seed's search is trace-level; Jaeger's (``same_span``) needs one span of the service to carry
    the tags and the duration (as Jaeger's memory store's ``validSpan`` checks every condition on one
    span)."""
    await finalize_all(
        store,
        [
            [  # the error tag is on the db span, not on an api span
                span("x1", "root", service="api", operation="GET /", duration=50 * MS),
                span("x1", "db", parent="root", service="db", operation="q", duration=40 * MS, tags={"error": True}),
            ],
            [  # an api span with the tag, and a slow api span without it
                span("x2", "root", service="api", operation="GET /", start=T0 + SECOND, duration=50 * MS),
                span(
                    "x2",
                    "a",
                    parent="root",
                    service="api",
                    operation="check",
                    start=T0 + SECOND,
                    duration=2 * MS,
                    tags={"error": True},
                ),
            ],
            [  # one api span with the tag that is slow
                span("x3", "root", service="api", operation="GET /", start=T0 + 2 * SECOND, duration=90 * MS),
                span(
                    "x3",
                    "b",
                    parent="root",
                    service="api",
                    operation="check",
                    start=T0 + 2 * SECOND,
                    duration=80 * MS,
                    tags={"error": True},
                ),
            ],
        ],
    )
    tags = (("error", "true"),)
    assert await search(store, service_name="api", tags=tags) == ["x3", "x2", "x1"]
    assert await search(store, service_name="api", tags=tags, same_span=True) == ["x3", "x2"]
    assert await search(store, service_name="api", tags=tags, min_duration_us=30 * MS, same_span=True) == ["x3"]
    assert await search(store, service_name="api", min_duration_us=30 * MS, same_span=True) == ["x3", "x2", "x1"]
    assert await search(store, service_name="db", min_duration_us=45 * MS, same_span=True) == []
    assert await search(store, service_name="db", min_duration_us=40 * MS, same_span=True) == ["x1"]
    assert await search(store, service_name="api", operation_name="check", max_duration_us=5 * MS, same_span=True) == [
        "x2"
    ]
    # trace-level: minDuration bounds the trace's duration, tags may sit on any span
    assert await search(store, service_name="db", min_duration_us=45 * MS) == ["x1"]
    # paging counts matches, not candidates
    assert await search(store, service_name="api", tags=tags, same_span=True, limit=1) == ["x3"]
    assert await search(store, service_name="api", tags=tags, same_span=True, limit=1, offset=1) == ["x2"]


async def test_same_span_search_pages_through_many_candidates(store: TraceStore) -> None:
    """Candidates that fail the same-span check are skipped page after page, so a match behind many of
    them is still found (exact, not a sample)."""
    decoys = [
        [
            span(f"d{i:03}", "root", service="api", start=T0 + (i + 1) * SECOND),
            span(f"d{i:03}", "c", parent="root", service="db", start=T0 + (i + 1) * SECOND, tags={"k": "v"}),
        ]
        for i in range(450)
    ]
    match = [span("m", "root", service="api", start=T0, tags={"k": "v"})]
    await finalize_all(store, [match, *decoys])
    assert await search(store, service_name="api", tags=(("k", "v"),), same_span=True) == ["m"]


# -- critical paths across traces ---------------------------------------------------------------------


def expected_contexts(traces: Iterable[Sequence[Span]]) -> dict[tuple[str, str], dict[tuple[str, ...], list[int]]]:
    """endpoint -> context -> [critical µs, traces], from each trace's own criticalPathSegments."""
    out: dict[tuple[str, str], dict[tuple[str, ...], list[int]]] = defaultdict(dict)
    for spans in traces:
        analysis = analyze(spans[0].trace_id, spans)
        by_id = {s.span_id: s for s in spans}
        per_context: dict[tuple[str, ...], int] = defaultdict(int)
        for segment in analysis.critical_path_segments:
            chain: list[str] = []
            current: str | None = segment.span_id
            while current is not None and current in by_id and len(chain) <= len(spans):
                chain.append(f"{by_id[current].service_name}:{by_id[current].operation_name}")
                current = by_id[current].parent_span_id
            chain.reverse()
            if len(chain) > MAX_CONTEXT_DEPTH:
                chain = [*chain[: MAX_CONTEXT_DEPTH - 2], ELIDED, chain[-1]]
            per_context[tuple(chain)] += round((segment.end - segment.start) * 1000)
        endpoint = (analysis.root_service or "", analysis.root_operation or "")
        for context, critical in per_context.items():
            row = out[endpoint].setdefault(context, [0, 0])
            row[0] += critical
            row[1] += 1
    return out


async def contexts_of(
    store: TraceStore, w: Window | None = None
) -> dict[tuple[str, str], dict[tuple[str, ...], list[int]]]:
    got: dict[tuple[str, str], dict[tuple[str, ...], list[int]]] = defaultdict(dict)
    for row in await store.critical_contexts(w):
        got[row.endpoint][row.path] = [row.critical_us, row.traces]
    return got


def random_trace(rng: random.Random, trace_id: str, start: int) -> list[Span]:
    """Fan-out, overlapping and overflowing children, async producer/consumer children."""
    spans = [span(trace_id, "s0", service="gw", operation=rng.choice(["a", "b"]), start=start, duration=100 * MS)]
    for i in range(1, rng.randint(2, 14)):
        parent = spans[rng.randrange(len(spans))]
        offset = rng.randint(-5, 90) * MS
        kind: Kind | None = rng.choice([None, "client", "producer", "consumer"])
        spans.append(
            span(
                trace_id,
                f"s{i}",
                parent=parent.span_id,
                service=rng.choice(["users", "db", "cache"]),
                operation=rng.choice(["get", "put"]),
                start=parent.start_time_us + offset,
                duration=rng.randint(1, 60) * MS,
                kind=kind,
            )
        )
    return spans


async def test_critical_contexts_equal_the_sum_of_each_traces_segments(store: TraceStore) -> None:
    rng = random.Random(15)
    traces = [random_trace(rng, f"c{i:03}", BASE + rng.randrange(0, 2 * HOUR)) for i in range(120)]
    traces += [make_trace(rng, BASE + rng.randrange(0, 2 * HOUR)) for _ in range(60)]
    await finalize_all(store, traces)
    assert await contexts_of(store) == expected_contexts(traces)
    w = window(BASE + 30 * MINUTE, BASE + 90 * MINUTE)
    inside = [t for t in traces if w.start_us <= analyze(t[0].trace_id, t).start_us < w.end_us]
    assert await contexts_of(store, w) == expected_contexts(inside)
    # bottom-up: the same time grouped by each context's own (last) label
    bottom_up: dict[str, int] = defaultdict(int)
    for contexts in expected_contexts(traces).values():
        for path, (critical, _) in contexts.items():
            bottom_up[path[-1]] += critical
    got: dict[str, int] = defaultdict(int)
    for row in await store.critical_contexts(None):
        got[row.path[-1]] += row.critical_us
    assert got == bottom_up


async def test_critical_contexts_stay_exact_under_late_spans_and_purge(store: TraceStore) -> None:
    rng = random.Random(3)
    traces = {f"p{i}": random_trace(rng, f"p{i}", BASE + i * MINUTE) for i in range(20)}
    await finalize_all(store, traces.values())
    for i in range(0, 20, 3):  # a late child on the critical path of every third trace
        late = span(
            f"p{i}",
            "late",
            parent="s0",
            service="queue",
            operation="wait",
            start=BASE + i * MINUTE + 90 * MS,
            duration=9 * MS,
        )
        traces[f"p{i}"] = [*traces[f"p{i}"], late]
        await write(store, [late], now=NOW + SECOND)
        await finalize_one(store, f"p{i}", now=NOW + 2 * SECOND)
    assert await contexts_of(store) == expected_contexts(traces.values())
    assert await store.purge(BASE + 10 * MINUTE) == 10
    assert await contexts_of(store) == expected_contexts([t for k, t in traces.items() if int(k[1:]) >= 10])
    await assert_grains_agree(store, 0, 60)
    for lo, hi in [(0, 10), (10, 20), (0, 60), (11, 29), (9, 59)]:  # ten-minute and hour rows, and less
        sums: dict[tuple[str, str], dict[tuple[str, ...], list[int]]] = defaultdict(dict)
        for m in range(lo, hi):
            for endpoint, paths in (
                await contexts_of(store, window(BASE + m * MINUTE, BASE + (m + 1) * MINUTE))
            ).items():
                for path, (critical, n) in paths.items():
                    total = sums[endpoint].setdefault(path, [0, 0])
                    total[0] += critical
                    total[1] += n
        assert await contexts_of(store, window(BASE + lo * MINUTE, BASE + hi * MINUTE)) == sums, (lo, hi)


async def test_deep_contexts_are_capped(store: TraceStore) -> None:
    chain = [span("deep", "s0", service="svc", operation="op0", duration=1000 * MS)]
    for i in range(1, 100):
        chain.append(
            span(
                "deep",
                f"s{i}",
                parent=f"s{i - 1}",
                service="svc",
                operation=f"op{i}",
                start=T0 + i * MS,
                duration=(1000 - 2 * i) * MS,
            )
        )
    await finalize_all(store, [chain])
    rows = await store.critical_contexts(None)
    assert max(len(r.path) for r in rows) == MAX_CONTEXT_DEPTH
    assert any(ELIDED in r.path and r.path[-1] == "svc:op99" for r in rows)
    assert sum(r.critical_us for r in rows) == 1000 * MS


async def test_slow_trace_contexts_select_by_duration_and_window(store: TraceStore) -> None:
    traces = [trace_at(f"s{i}", BASE + i * MINUTE, duration=(i + 1) * MS) for i in range(30)]
    await finalize_all(store, traces)

    def expected(chosen: Iterable[Sequence[Span]]) -> dict[tuple[str, ...], tuple[int, int]]:
        return {p: (us, n) for p, (us, n) in expected_contexts(chosen)[("api", "GET /")].items()}

    def got(tail: Any) -> dict[tuple[str, ...], tuple[int, int]]:
        return {r.path: (r.critical_us, r.traces) for r in tail.contexts}

    slow = await store.slow_trace_contexts("api", "GET /", None, min_duration_us=25 * MS, limit=100)
    assert (slow.traces, slow.min_duration_us) == (6, 25 * MS)
    assert got(slow) == expected(traces[24:])
    two = await store.slow_trace_contexts("api", "GET /", None, min_duration_us=0, limit=2)
    assert (two.traces, two.min_duration_us) == (2, 29 * MS)
    assert got(two) == expected(traces[28:])
    windowed = await store.slow_trace_contexts(
        "api", "GET /", window(BASE, BASE + 10 * MINUTE), min_duration_us=5 * MS, limit=100
    )
    assert (windowed.traces, windowed.min_duration_us) == (6, 5 * MS)
    assert got(windowed) == expected(traces[4:10])
    none = await store.slow_trace_contexts("nope", "GET /", None, min_duration_us=0, limit=10)
    assert (none.traces, none.min_duration_us, none.contexts) == (0, None, [])
