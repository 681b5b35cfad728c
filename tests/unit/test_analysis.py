"""The trace analysis: hand-computed examples, hostile shapes, and properties over random traces."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.analysis import (
    Bottleneck,
    CriticalSegment,
    Dependency,
    TraceAnalysis,
    TreeNode,
    _Forest,
    _Timing,
    analyze,
    ms,
    span_tree,
)
from shared.models import Kind, Span, StatusInput
from tests.spans import span_at, us

T0 = 1_732_500_000_000_000  # a realistic epoch in microseconds
EPSILON = 1e-6


def make_span(
    span_id: str,
    parent: str | None,
    start_ms: float,
    duration_ms: float | None,
    *,
    service: str = "svc",
    operation: str = "op",
    kind: Kind | None = None,
    status: StatusInput = "success",
) -> Span:
    """A span with times given in milliseconds relative to ``T0``."""
    start_us = T0 + round(start_ms * 1000)
    return span_at(
        "trace-abc-123", span_id, parent, service, operation, start_us, us(duration_ms), kind=kind, status=status
    )


def walk(roots: list[TreeNode]) -> Iterator[TreeNode]:
    """Every node of a forest, depth first, without recursion."""
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def path_of(analysis: TraceAnalysis) -> list[tuple[str, float, float]]:
    return [(s.span_id, s.start, s.end) for s in analysis.critical_path_segments]


def self_times(spans: list[Span]) -> dict[str, int]:
    forest = _Forest(spans)
    result = analyze("t", spans)
    return _Timing(forest, result.start_us, result.start_us + result.duration_us).self_us


# --- the seed-like trace --------------------------------------------------------------------------------


def seed_trace() -> list[Span]:
    return [
        make_span("gw", None, 0, 123, service="api-gateway", operation="handleUserRequest", kind="server"),
        make_span("us", "gw", 10, 45, service="user-service", operation="getUser", kind="server"),
        make_span("db", "us", 15, 23, service="database", operation="query", kind="client"),
    ]


def test_seed_trace_summary() -> None:
    result = analyze("trace-abc-123", seed_trace())
    assert result.root_span_id == "gw"
    assert (result.root_service, result.root_operation) == ("api-gateway", "handleUserRequest")
    assert result.start_us == T0
    assert result.duration_us == 123_000
    assert result.span_count == 3
    assert (result.error_count, result.failed, result.complete) == (0, False, True)
    assert (result.orphan_spans, result.open_spans) == (0, 0)
    assert result.services == ["api-gateway", "database", "user-service"]
    assert result.operations == [
        ("api-gateway", "handleUserRequest"),
        ("database", "query"),
        ("user-service", "getUser"),
    ]


def test_seed_trace_self_times_breakdown_and_bottlenecks() -> None:
    # gateway 123 - 45 = 78, user-service 45 - 23 = 22, database 23
    assert self_times(seed_trace()) == {"gw": 78_000, "us": 22_000, "db": 23_000}
    result = analyze("trace-abc-123", seed_trace())
    assert result.service_breakdown == {"api-gateway": 78.0, "database": 23.0, "user-service": 22.0}
    assert list(result.service_breakdown) == ["api-gateway", "database", "user-service"]  # largest first
    assert result.bottlenecks == [
        Bottleneck(
            span="api-gateway:handleUserRequest",
            span_id="gw",
            duration=123.0,
            self_time=78.0,
            percentage=63.41,
        ),
        Bottleneck(span="database:query", span_id="db", duration=23.0, self_time=23.0, percentage=18.7),
        Bottleneck(span="user-service:getUser", span_id="us", duration=45.0, self_time=22.0, percentage=17.89),
    ]


def test_seed_trace_critical_path() -> None:
    result = analyze("trace-abc-123", seed_trace())
    assert result.critical_path == [
        "api-gateway:handleUserRequest",
        "user-service:getUser",
        "database:query",
        "user-service:getUser",
        "api-gateway:handleUserRequest",
    ]
    assert path_of(result) == [
        ("gw", 0.0, 10.0),
        ("us", 10.0, 15.0),
        ("db", 15.0, 38.0),
        ("us", 38.0, 55.0),
        ("gw", 55.0, 123.0),
    ]
    assert result.critical_path_duration == 123.0
    assert result.dependencies == [
        Dependency(parent="api-gateway", child="user-service", calls=1, errors=0),
        Dependency(parent="user-service", child="database", calls=1, errors=0),
    ]


def test_wire_shape_is_camel_case() -> None:
    encoded = msgspec.json.decode(msgspec.json.encode(analyze("trace-abc-123", seed_trace())))
    assert {"traceId", "rootSpanId", "spanCount", "serviceBreakdown", "criticalPathSegments"} <= set(encoded)
    assert set(encoded["bottlenecks"][0]) == {"span", "spanId", "duration", "selfTime", "percentage"}
    assert set(encoded["criticalPathSegments"][0]) == {"spanId", "span", "start", "end"}
    assert msgspec.json.decode(msgspec.json.encode(analyze("x", seed_trace())), type=TraceAnalysis) == analyze(
        "x", seed_trace()
    )


# --- siblings -------------------------------------------------------------------------------------------


def test_overlapping_siblings_only_the_last_finishing_is_on_the_path() -> None:
    spans = [
        make_span("root", None, 0, 100, service="a"),
        make_span("x", "root", 10, 50, service="b"),  # 10..60, overlaps y's start
        make_span("y", "root", 40, 40, service="c"),  # 40..80, finishes last
    ]
    result = analyze("t", spans)
    assert path_of(result) == [("root", 0.0, 40.0), ("y", 40.0, 80.0), ("root", 80.0, 100.0)]
    assert result.critical_path == ["a:op", "c:op", "a:op"]
    assert self_times(spans) == {"root": 30_000, "x": 50_000, "y": 40_000}  # union 10..80
    assert result.service_breakdown == {"b": 50.0, "c": 40.0, "a": 30.0}


def test_sequential_siblings_are_all_on_the_path() -> None:
    spans = [
        make_span("root", None, 0, 100),
        make_span("x", "root", 10, 20),
        make_span("y", "root", 40, 40),
    ]
    assert path_of(analyze("t", spans)) == [
        ("root", 0.0, 10.0),
        ("x", 10.0, 30.0),
        ("root", 30.0, 40.0),
        ("y", 40.0, 80.0),
        ("root", 80.0, 100.0),
    ]


def test_child_ending_exactly_at_the_returning_start_is_skipped() -> None:
    # "strictly before" (as in Jaeger): x ends when y starts, so after y the next candidate must end
    # before 40 and x is not on the path; the root owns 0..40
    spans = [
        make_span("root", None, 0, 100),
        make_span("x", "root", 10, 30),  # 10..40
        make_span("y", "root", 40, 40),  # 40..80
    ]
    assert path_of(analyze("t", spans)) == [("root", 0.0, 40.0), ("y", 40.0, 80.0), ("root", 80.0, 100.0)]


def test_same_end_the_longest_child_wins() -> None:
    spans = [
        make_span("root", None, 0, 100),
        make_span("short", "root", 50, 30),
        make_span("long", "root", 20, 60),
    ]
    assert path_of(analyze("t", spans)) == [("root", 0.0, 20.0), ("long", 20.0, 80.0), ("root", 80.0, 100.0)]


# --- async work -----------------------------------------------------------------------------------------


def test_consumer_of_producer_is_async() -> None:
    spans = [
        make_span("root", None, 0, 100, service="api", kind="server"),
        make_span("send", "root", 10, 10, service="api", operation="send", kind="producer"),
        make_span("recv", "send", 50, 200, service="worker", operation="recv", kind="consumer"),  # 50..250
        make_span("work", "recv", 60, 40, service="db", operation="write", kind="client"),  # 60..100
    ]
    result = analyze("t", spans)
    # the consumer is neither clipped to its producer nor blocking it; its subtree has its own window
    assert self_times(spans) == {"root": 90_000, "send": 10_000, "recv": 160_000, "work": 40_000}
    assert result.service_breakdown == {"worker": 160.0, "api": 100.0, "db": 40.0}
    assert path_of(result) == [("root", 0.0, 10.0), ("send", 10.0, 20.0), ("root", 20.0, 100.0)]
    assert result.critical_path_duration == 100.0
    # async work does not block the request, so it is not a bottleneck of it either; send is exactly 10%
    assert [b.span_id for b in result.bottlenecks] == ["root"]
    assert all(b.percentage <= 100 for b in result.bottlenecks)
    assert Dependency(parent="api", child="worker", calls=1, errors=0) in result.dependencies


def test_consumer_under_a_client_span_is_synchronous() -> None:
    spans = [
        make_span("root", None, 0, 100, kind="server"),
        make_span("call", "root", 10, 50, kind="client"),
        make_span("serve", "call", 20, 60, kind="consumer"),  # clipped to 20..60
    ]
    assert self_times(spans) == {"root": 50_000, "call": 10_000, "serve": 40_000}


# --- clipping -------------------------------------------------------------------------------------------


def test_child_sticking_out_is_clipped_and_one_outside_is_dropped() -> None:
    spans = [
        make_span("root", None, 50, 100, service="a"),  # 50..150
        make_span("early", "root", 20, 50, service="b"),  # 20..70 -> 50..70
        make_span("late", "root", 130, 70, service="c"),  # 130..200 -> 130..150
        make_span("away", "root", 300, 100, service="d"),  # outside: dropped with its subtree
        make_span("away-kid", "away", 310, 10, service="d"),
    ]
    result = analyze("t", spans)
    assert result.span_count == 5
    assert self_times(spans) == {"root": 60_000, "early": 20_000, "late": 20_000}
    assert result.service_breakdown == {"a": 60.0, "b": 20.0, "c": 20.0, "d": 0.0}
    late = next(b for b in result.bottlenecks if b.span_id == "late")
    assert (late.duration, late.self_time, late.percentage) == (20.0, 20.0, 20.0)
    assert path_of(result) == [
        ("early", 0.0, 20.0),
        ("root", 20.0, 80.0),
        ("late", 80.0, 100.0),
    ]
    assert result.critical_path_duration == 100.0


def test_grandchild_is_clipped_to_the_clipped_parent() -> None:
    spans = [
        make_span("root", None, 0, 100),
        make_span("kid", "root", 50, 100),  # -> 50..100
        make_span("grandkid", "kid", 90, 100),  # -> 90..100 (not 90..150)
        make_span("lost", "kid", 120, 5),  # inside kid's raw window, outside its clipped one
    ]
    assert self_times(spans) == {"root": 50_000, "kid": 40_000, "grandkid": 10_000}


# --- hostile shapes -------------------------------------------------------------------------------------


def test_orphans_attach_as_extra_roots() -> None:
    spans = [
        make_span("root", None, 0, 100, service="a"),
        make_span("kid", "root", 10, 20, service="a"),
        make_span("orphan", "never-arrived", 60, 80, service="b"),  # 60..140, clipped to 60..100
        make_span("orphan-kid", "orphan", 70, 10, service="c"),
    ]
    result = analyze("t", spans)
    assert result.orphan_spans == 1
    assert result.complete
    assert [node.span.span_id for node in span_tree(spans)] == ["root", "orphan"]
    assert self_times(spans) == {"root": 80_000, "kid": 20_000, "orphan": 30_000, "orphan-kid": 10_000}
    assert result.service_breakdown == {"a": 100.0, "b": 30.0, "c": 10.0}
    assert {s.span_id for s in result.critical_path_segments} == {"root", "kid"}
    assert Dependency(parent="b", child="c", calls=1, errors=0) in result.dependencies


def test_orphan_outside_the_trace_window_is_dropped_for_timing() -> None:
    spans = [make_span("root", None, 0, 100), make_span("orphan", "gone", 500, 10, service="far")]
    result = analyze("t", spans)
    assert result.service_breakdown["far"] == 0.0
    assert result.span_count == 2


def test_cycle_is_broken() -> None:
    spans = [
        make_span("root", None, 0, 100),
        make_span("x", "y", 20, 30, service="cx"),
        make_span("y", "x", 10, 50, service="cy"),
        make_span("z", "x", 25, 5, service="cz"),
    ]
    result = analyze("t", spans)
    assert result.orphan_spans == 2  # both cycle members
    roots = span_tree(spans)
    assert [node.span.span_id for node in roots] == ["root", "y"]  # the earliest cycle member roots it
    assert sorted(node.span.span_id for node in walk(roots)) == ["root", "x", "y", "z"]
    assert self_times(spans)["y"] == 20_000
    assert result.critical_path == ["svc:op"]


def test_self_parent_is_an_orphan() -> None:
    spans = [make_span("root", None, 0, 100), make_span("me", "me", 10, 10, service="loop")]
    result = analyze("t", spans)
    assert result.orphan_spans == 1
    assert [node.span.span_id for node in span_tree(spans)] == ["root", "me"]
    assert result.service_breakdown["loop"] == 10.0
    assert not any(d.parent == "loop" for d in result.dependencies)


def test_rootless_trace() -> None:
    spans = [
        make_span("a", "missing", 10, 30, service="one"),
        make_span("b", "a", 15, 5, service="two"),
        make_span("c", "other-missing", 50, 40, service="three"),
    ]
    result = analyze("t", spans)
    assert result.root_span_id is None
    assert result.root_service is None
    assert not result.complete
    assert result.start_us == T0 + 10_000
    assert result.duration_us == 80_000  # max end 90 - min start 10
    assert result.orphan_spans == 2
    assert result.critical_path == []
    assert result.critical_path_segments == []
    assert result.critical_path_duration == 0.0
    assert result.service_breakdown == {"three": 40.0, "one": 25.0, "two": 5.0}
    assert [b.span_id for b in result.bottlenecks] == ["c", "a"]
    assert result.bottlenecks[0].percentage == 50.0


def test_open_spans_are_counted_and_zero_length() -> None:
    spans = [
        make_span("root", None, 0, 100),
        make_span("open-kid", "root", 10, None),
        make_span("done-kid", "root", 20, 30),
    ]
    result = analyze("t", spans)
    assert result.open_spans == 1
    assert result.complete
    assert self_times(spans) == {"root": 70_000, "open-kid": 0, "done-kid": 30_000}
    assert "open-kid" not in {s.span_id for s in result.critical_path_segments}


def test_open_root_is_not_complete() -> None:
    spans = [
        make_span("root", None, 10, None),
        make_span("kid", "root", 5, 50),
        make_span("k2", "root", 20, 70),
    ]
    result = analyze("t", spans)
    assert not result.complete
    assert result.open_spans == 1
    assert result.root_span_id == "root"
    assert result.duration_us == 85_000  # max end 90 - min start 5
    assert result.critical_path == []


def test_duplicates_keep_the_last_one() -> None:
    spans = [
        make_span("root", None, 0, None),
        make_span("kid", "root", 10, 20, status="error"),
        make_span("root", None, 0, 100),
        make_span("kid", "root", 10, 20),
    ]
    result = analyze("t", spans)
    assert (result.span_count, result.open_spans, result.error_count, result.failed) == (2, 0, 0, False)
    assert result.complete
    assert len(list(walk(span_tree(spans)))) == 2


def test_errors_and_dependencies() -> None:
    spans = [
        make_span("root", None, 0, 100, service="api"),
        make_span("a", "root", 10, 10, service="db", status="error"),
        make_span("b", "root", 30, 10, service="db"),
        make_span("c", "root", 50, 10, service="api"),  # same service: not a dependency
        make_span("d", "c", 52, 5, service="cache", status="failed"),
    ]
    result = analyze("t", spans)
    assert (result.error_count, result.failed) == (2, True)
    assert result.dependencies == [
        Dependency(parent="api", child="cache", calls=1, errors=1),
        Dependency(parent="api", child="db", calls=2, errors=1),
    ]


def test_main_root_is_the_earliest_parentless_span() -> None:
    spans = [
        make_span("late", None, 50, 10),
        make_span("early", None, 0, 100),
        make_span("kid", "late", 55, 1),
    ]
    result = analyze("t", spans)
    assert result.root_span_id == "early"
    assert result.orphan_spans == 0
    assert [node.span.span_id for node in span_tree(spans)] == ["early", "late"]
    assert {s.span_id for s in result.critical_path_segments} == {"early"}


def test_zero_duration_trace_has_no_bottlenecks() -> None:
    result = analyze("t", [make_span("root", None, 0, 0), make_span("kid", "root", 0, 0)])
    assert result.duration_us == 0
    assert result.bottlenecks == []
    assert result.critical_path == []


def test_empty_trace() -> None:
    result = analyze("t", [])
    assert (result.span_count, result.duration_us, result.complete, result.root_span_id) == (
        0,
        0,
        False,
        None,
    )
    assert span_tree([]) == []


def test_children_are_sorted_by_start_then_id() -> None:
    spans = [
        make_span("root", None, 0, 100),
        make_span("b", "root", 10, 1),
        make_span("c", "root", 5, 1),
        make_span("a", "root", 10, 1),
    ]
    assert [node.span.span_id for node in span_tree(spans)[0].children] == ["c", "a", "b"]


def test_ms() -> None:
    assert ms(123_000) == 123.0
    assert ms(1_234_567) == 1234.567
    assert ms(1) == 0.001
    assert ms(0.4) == 0.0


# --- big and deep traces --------------------------------------------------------------------------------


def chain(n: int) -> list[Span]:
    return [
        Span(
            trace_id="t",
            span_id=f"s{i}",
            parent_span_id=f"s{i - 1}" if i else None,
            service_name=f"svc{i % 5}",
            operation_name="op",
            start_time_us=T0 + i,
            duration_us=2 * (n - i),
        )
        for i in range(n)
    ]


def test_ten_thousand_deep_chain() -> None:
    spans = chain(10_000)
    started = time.perf_counter()
    result = analyze("t", spans)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0
    assert result.span_count == 10_000
    assert result.critical_path_duration == ms(20_000)
    assert len(list(walk(span_tree(spans)))) == 10_000


def test_thousand_deep_chains_ten_thousand_spans() -> None:
    spans = [make_span("root", None, 0, 10_000)]
    for c in range(10):
        for i in range(1000):
            parent = "root" if i == 0 else f"c{c}-{i - 1}"
            spans.append(make_span(f"c{c}-{i}", parent, c * 1000 + i * 0.5, 1000 - i, service=f"s{c}"))
    started = time.perf_counter()
    result = analyze("t", spans)
    assert time.perf_counter() - started < 2.0
    assert result.span_count == 10_001
    assert result.critical_path_duration == 10_000.0
    assert len(list(walk(span_tree(spans)))) == 10_001


def test_ten_thousand_wide() -> None:
    spans = [make_span("root", None, 0, 1000, service="root")] + [
        make_span(f"k{i}", "root", (i * 37) % 1000, (i * 101) % 50, service=f"s{i % 7}") for i in range(10_000)
    ]
    started = time.perf_counter()
    result = analyze("t", spans)
    assert time.perf_counter() - started < 2.0
    assert result.span_count == 10_001
    assert result.critical_path_duration == 1000.0
    assert len(span_tree(spans)[0].children) == 10_000


def test_ten_thousand_span_cycle() -> None:
    n = 10_000
    spans = [make_span(f"s{i}", f"s{(i + 1) % n}", i / 1000, 1) for i in range(n)]
    result = analyze("t", spans)
    assert result.orphan_spans == n
    assert result.root_span_id is None
    roots = span_tree(spans)
    assert [node.span.span_id for node in roots] == ["s0"]
    assert len(list(walk(roots))) == n


# --- properties over random and hostile traces ----------------------------------------------------------

SERVICES = ["api", "users", "db", "queue"]
KINDS: list[Kind | None] = [None, "server", "client", "producer", "consumer", "internal"]
STATUSES: list[StatusInput] = ["success", "error"]


@st.composite
def traces(draw: st.DrawFn) -> list[Span]:
    n = draw(st.integers(1, 30))
    huge = draw(st.booleans())
    spans: list[Span] = []
    for i in range(n):
        link = draw(st.sampled_from(["tree", "tree", "tree", "tree", "none", "any", "self", "missing"]))
        if link == "tree":
            parent: str | None = f"s{draw(st.integers(0, i - 1))}" if i else None
        elif link == "any":
            parent = f"s{draw(st.integers(0, n - 1))}"
        elif link == "self":
            parent = f"s{i}"
        elif link == "missing":
            parent = "gone"
        else:
            parent = None
        start = draw(st.integers(0, 2**52 if huge else 1000))
        spans.append(
            Span(
                trace_id="t",
                span_id=f"s{i}",
                parent_span_id=parent,
                service_name=draw(st.sampled_from(SERVICES)),
                operation_name=draw(st.sampled_from(["get", "put"])),
                start_time_us=start,
                duration_us=draw(st.none() | st.integers(0, 2**40 if huge else 1000)),
                kind=draw(st.sampled_from(KINDS)),
                status=draw(st.sampled_from(STATUSES)),
            )
        )
    duplicates = draw(st.lists(st.integers(0, n - 1), max_size=3))
    for i in duplicates:
        spans.append(msgspec.structs.replace(spans[i], duration_us=draw(st.none() | st.integers(0, 500))))
    return spans


def root_budget_us(spans: list[Span], result: TraceAnalysis) -> int:
    """Sum of the clipped durations of every timing root: main, extra (clipped to the trace) and async."""
    trace_start, trace_end = result.start_us, result.start_us + result.duration_us
    total = 0
    roots = span_tree(spans)
    for index, node in enumerate(roots):
        start = node.span.start_time_us
        end = start + (node.span.duration_us or 0)
        if index and result.root_span_id is not None:
            start, end = max(start, trace_start), min(end, trace_end)
        total += max(0, end - start)
    for node in walk(roots):
        if node.span.kind == "producer":
            total += sum(c.span.duration_us or 0 for c in node.children if c.span.kind == "consumer")
    return total


@st.composite
def sequential_traces(draw: st.DrawFn) -> list[Span]:
    """Random trees whose siblings never overlap (no parallel work), some sticking out of their parent."""
    n = draw(st.integers(1, 25))
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    windows: dict[int, tuple[int, int]] = {0: (0, draw(st.integers(0, 10**6)))}
    spans: list[Span] = []
    for i in range(n):
        start, end = windows[i]
        kids = [k for k in range(i + 1, n) if parents[k] == i]
        slot = (end - start) // max(1, len(kids))
        for j, kid in enumerate(kids):
            offset = draw(st.integers(0, slot))
            length = draw(st.integers(0, slot - offset))
            stick_out = draw(st.sampled_from([0, 0, 0, slot]))  # overlaps the next slot only if it is clipped
            kid_start = start + j * slot + offset
            windows[kid] = (kid_start, kid_start + length + (stick_out if j == len(kids) - 1 else 0))
        parent = parents[i]
        spans.append(
            Span(
                trace_id="t",
                span_id=f"s{i}",
                parent_span_id=None if parent is None else f"s{parent}",
                service_name=draw(st.sampled_from(SERVICES)),
                operation_name="op",
                start_time_us=start,
                duration_us=end - start,
            )
        )
    return spans


PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


@PROPERTY_SETTINGS
@given(traces())
def test_span_tree_holds_every_span_once(spans: list[Span]) -> None:
    roots = span_tree(spans)
    seen = [node.span.span_id for node in walk(roots)]
    assert len(seen) == len(set(seen))
    assert set(seen) == {span.span_id for span in spans}
    last = {span.span_id: span for span in spans}
    assert all(node.span is last[node.span.span_id] for node in walk(roots))
    for node in walk(roots):
        keys = [(c.span.start_time_us, c.span.span_id) for c in node.children]
        assert keys == sorted(keys)
    result = analyze("t", spans)
    if result.root_span_id is not None:
        assert roots[0].span.span_id == result.root_span_id
    extra = [(node.span.start_time_us, node.span.span_id) for node in roots[result.root_span_id is not None :]]
    assert extra == sorted(extra)


def covered(intervals: list[tuple[int, int]]) -> int:
    """Length of the union of intervals, by a sweep over sorted endpoints (independent of the module's)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    total = depth = 0
    last = 0
    for at, step in events:
        if depth > 0:
            total += at - last
        depth += step
        last = at
    return total


@PROPERTY_SETTINGS
@given(traces())
def test_analysis_invariants(spans: list[Span]) -> None:
    result = analyze("t", spans)
    distinct = {span.span_id: span for span in spans}
    assert result.span_count == len(distinct)
    assert result.open_spans == sum(1 for s in distinct.values() if s.duration_us is None)
    assert result.failed == (result.error_count > 0)
    assert result.duration_us >= 0
    assert 0 <= result.orphan_spans <= result.span_count
    duration = ms(result.duration_us)

    segments = result.critical_path_segments
    for segment in segments:
        assert 0 <= segment.start < segment.end <= duration
    for before, after in pairwise(segments):
        assert before.end <= after.start
    assert result.critical_path_duration <= duration + EPSILON
    if result.root_span_id is None:
        assert segments == []
    elif distinct[result.root_span_id].duration_us is not None:
        # Jaeger's walk tiles the whole root window
        assert result.critical_path_duration == duration
        assert all(a.end == b.start for a, b in pairwise(segments))
    assert all(a != b for a, b in pairwise(result.critical_path))

    for bottleneck in result.bottlenecks:
        assert 0 <= bottleneck.self_time <= bottleneck.duration <= duration
        assert 10 <= bottleneck.percentage <= 100  # > 10% before rounding to 2 decimals
    self_ms = [b.self_time for b in result.bottlenecks]
    assert self_ms == sorted(self_ms, reverse=True)

    assert set(result.service_breakdown) == set(result.services)
    assert all(value >= 0 for value in result.service_breakdown.values())

    forest = _Forest(spans)
    timing = _Timing(forest, result.start_us, result.start_us + result.duration_us)
    for span_id, self_us in timing.self_us.items():
        start, end = timing.window[span_id]
        kids = [timing.window[kid] for kid in timing.kids.get(span_id, [])]
        assert all(start <= kid_start <= kid_end <= end for kid_start, kid_end in kids)
        assert self_us == end - start - covered(kids)
        assert 0 <= self_us <= end - start
    for span_id in (*timing.main, *timing.side):
        assert result.start_us <= timing.window[span_id][0] <= timing.window[span_id][1]
        assert timing.window[span_id][1] <= result.start_us + result.duration_us

    msgspec.json.encode(result)  # always encodable


def reference_critical_path(timing: _Timing, root_id: str) -> list[tuple[str, int, int]]:
    """A direct transcription of the Jaeger UI walk (recursive; only for small test trees)."""
    sections: list[tuple[str, int, int]] = []
    parent_of = {kid: span_id for span_id, kids in timing.kids.items() for kid in kids}

    def visit(span_id: str, returning_start: int | None) -> None:
        start, end = timing.window[span_id]
        best: str | None = None
        best_end = -1
        for kid in timing.kids.get(span_id, []):  # start order; the first of equal ends wins
            kid_end = timing.window[kid][1]
            if (returning_start is None or kid_end < returning_start) and kid_end > best_end:
                best, best_end = kid, kid_end
        section_end = end if returning_start is None else returning_start
        if best is not None:
            if best_end != section_end:
                sections.append((span_id, best_end, section_end))
            visit(best, None)
        else:
            if start != section_end:
                sections.append((span_id, start, section_end))
            if span_id != root_id:
                visit(parent_of[span_id], start)

    visit(root_id, None)
    merged: list[tuple[str, int, int]] = []
    for span_id, start, end in reversed(sections):
        if merged and merged[-1][0] == span_id and merged[-1][2] == start:
            merged[-1] = (span_id, merged[-1][1], end)
        else:
            merged.append((span_id, start, end))
    return merged


@PROPERTY_SETTINGS
@given(traces())
def test_critical_path_matches_the_jaeger_walk(spans: list[Span]) -> None:
    forest = _Forest(spans)
    if forest.main_root is None:
        return
    result = analyze("t", spans)
    timing = _Timing(forest, result.start_us, result.start_us + result.duration_us)
    expected = reference_critical_path(timing, forest.main_root)
    assert timing.critical_path(forest.main_root) == expected
    assert [s.span_id for s in result.critical_path_segments] == [span_id for span_id, _, _ in expected]


@PROPERTY_SETTINGS
@given(sequential_traces())
def test_without_parallel_work_self_times_add_up_to_the_root(spans: list[Span]) -> None:
    # With overlapping siblings, parallel work counts once per branch, so the breakdown can exceed the
    # trace; without overlap, the self times of a tree add up exactly to its root's duration.
    result = analyze("t", spans)
    assert result.orphan_spans == 0
    total = sum(result.service_breakdown.values())
    assert abs(total - ms(root_budget_us(spans, result))) <= EPSILON * max(1.0, total)
    assert abs(total - ms(result.duration_us)) <= EPSILON * max(1.0, total)


@settings(max_examples=60, deadline=None)
@given(traces())
def test_input_order_does_not_matter_without_duplicates(spans: list[Span]) -> None:
    distinct = list({span.span_id: span for span in spans}.values())
    assert analyze("t", distinct) == analyze("t", list(reversed(distinct)))


def test_critical_segment_struct_round_trips() -> None:
    segment = CriticalSegment(span_id="a", span="s:o", start=0.0, end=1.5)
    assert msgspec.json.decode(msgspec.json.encode(segment), type=CriticalSegment) == segment
