"""The store contract (``shared/store/base.py``), run against every backend by the ``store`` fixture.

Two clocks appear in these tests: trace time (span start times, around :data:`T0`) and the writer's wall
clock ``now_us`` (around :data:`NOW`), which drives due times. Both are integer microseconds. Expected
rollups are computed here from the spans themselves (:func:`expected_rollups`), independently of the
store's own rollup code, so that "never double counted" is checked against first principles.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from shared.analysis import Dependency, TraceAnalysis, analyze
from shared.models import Kind, Span, SpanFinish, Status, TagValue
from shared.sampling import Sampler
from shared.store import Heartbeat, QueryError, StoredTrace, TraceQuery, TraceStore, WriteResult
from shared.store.sketch import bin_of
from tests.percentiles import exact_percentile

HOUR = 3_600_000_000
SECOND = 1_000_000
MS = 1_000
T0 = 1_732_500_000 * SECOND  # trace time: spans start around here
NOW = T0 + 3600 * SECOND  # the writers' wall clock
GRACE = 500 * MS
IDLE = 60 * SECOND
SHARD = "spans/0"
HOSTILE = "'; DROP TABLE spans; --"


# -- building spans -----------------------------------------------------------------------------------


def span(
    trace_id: str,
    span_id: str,
    *,
    parent: str | None = None,
    service: str = "api",
    operation: str = "handle",
    start: int = T0,
    duration: int | None = 1 * MS,
    status: Status = "success",
    kind: Kind | None = None,
    tags: Mapping[str, TagValue] | None = None,
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        service_name=service,
        operation_name=operation,
        start_time_us=start,
        duration_us=duration,
        status=status,
        kind=kind,
        tags=dict(tags or {}),
    )


def finish(
    trace_id: str,
    span_id: str,
    end: int,
    *,
    status: Status | None = None,
    tags: Mapping[str, TagValue] | None = None,
) -> SpanFinish:
    return SpanFinish(trace_id=trace_id, span_id=span_id, end_time_us=end, status=status, tags=dict(tags or {}))


def with_(s: Span, **changes: object) -> Span:
    """A copy of ``s`` with ``changes`` (attribute names)."""
    return msgspec.structs.replace(s, **changes)


def simple_trace(
    trace_id: str,
    *,
    start: int = T0,
    duration: int = 10 * MS,
    root_service: str = "api",
    root_operation: str = "GET /",
    child_service: str = "db",
    child_operation: str = "query",
    child_status: Status = "success",
    root_tags: Mapping[str, TagValue] | None = None,
    child_tags: Mapping[str, TagValue] | None = None,
) -> list[Span]:
    """A finished root and one finished child in another service (one dependency edge)."""
    return [
        span(
            trace_id,
            "root",
            service=root_service,
            operation=root_operation,
            start=start,
            duration=duration,
            kind="server",
            tags=root_tags,
        ),
        span(
            trace_id,
            "child",
            parent="root",
            service=child_service,
            operation=child_operation,
            start=start + duration // 10,
            duration=duration // 2,
            status=child_status,
            kind="client",
            tags=child_tags,
        ),
    ]


async def write(
    store: TraceStore,
    spans: Sequence[Span] = (),
    finishes: Sequence[SpanFinish] = (),
    *,
    now: int = NOW,
    shard: str = SHARD,
    shards: Mapping[str, str] | None = None,
    grace: int = GRACE,
    idle: int = IDLE,
) -> WriteResult:
    """One ``write_batch``; every trace of the batch came in on ``shard`` unless ``shards`` maps it."""
    trace_ids = {s.trace_id for s in spans} | {f.trace_id for f in finishes}
    owners = {trace_id: shard for trace_id in trace_ids} | dict(shards or {})
    return await store.write_batch(spans, finishes, shards=owners, now_us=now, grace_us=grace, idle_us=idle)


async def finalize_one(store: TraceStore, trace_id: str, *, now: int = NOW) -> TraceAnalysis:
    analyses = await store.finalize([trace_id], now_us=now)
    assert [a.trace_id for a in analyses] == [trace_id]
    return analyses[0]


async def stored(store: TraceStore, trace_id: str) -> StoredTrace:
    trace = await store.get_trace(trace_id)
    assert trace is not None, f"trace {trace_id} not found"
    return trace


def by_id(spans: Iterable[Span]) -> dict[str, Span]:
    return {s.span_id: s for s in spans}


async def due_at(store: TraceStore, trace_id: str, *, shards: Sequence[str] = (SHARD,)) -> int:
    """Probe the trace's due time through ``due_traces`` (binary search on ``now_us``)."""
    low, high = 0, 2**62
    assert trace_id in await store.due_traces(shards, high, 10_000), f"{trace_id} is not due at all"
    while low < high:  # smallest now at which the trace is due
        mid = (low + high) // 2
        if trace_id in await store.due_traces(shards, mid, 10_000):
            high = mid
        else:
            low = mid + 1
    return low


async def search(store: TraceStore, **filters: Any) -> list[str]:
    """Ids of the traces ``find_traces`` answers for ``TraceQuery(**filters)``, in its order."""
    return [t.trace_id for t in await store.find_traces(TraceQuery(**filters))]


# -- expected rollups, from first principles ---------------------------------------------------------


@dataclass(frozen=True)
class Rollups:
    """Everything the store serves from rollups, in one comparable value."""

    completed: int
    failed: int
    total_duration_us: int
    services: dict[str, tuple[int, int, int, dict[int, int]]]  # count, errors, total µs, latency sketch
    service_names: list[str]
    operations: dict[str, list[str]]
    dependencies: list[tuple[str, str, int, int]]  # parent, child, calls, errors


async def rollups_of(store: TraceStore) -> Rollups:
    stats = await store.stats()
    names = await store.services()
    return Rollups(
        completed=stats.completed_traces,
        failed=stats.failed_traces,
        total_duration_us=stats.total_duration_us,
        services={name: (s.count, s.error_count, s.total_duration_us, s.bins) for name, s in stats.services.items()},
        service_names=names,
        operations={name: await store.operations(name) for name in names},
        dependencies=sorted((d.parent, d.child, d.calls, d.errors) for d in await store.dependencies()),
    )


def expected_rollups(traces: Mapping[str, Sequence[Span]]) -> Rollups:
    """The rollups of ``traces`` (trace id -> its merged spans), each finalized exactly once."""
    completed = failed = total = 0
    services: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    sketches: dict[str, Counter[int]] = defaultdict(Counter)
    operations: dict[str, set[str]] = defaultdict(set)
    deps: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for trace_id, spans in traces.items():
        analysis = analyze(trace_id, spans)
        failed += analysis.failed
        completed += not analysis.failed
        total += analysis.duration_us
        for s in spans:
            row = services[s.service_name]
            row[0] += 1
            row[1] += s.status == "error"
            row[2] += s.duration_us or 0
            sketches[s.service_name][bin_of(s.duration_us or 0)] += 1
            operations[s.service_name].add(s.operation_name)
        for d in analysis.dependencies:
            deps[d.parent, d.child][0] += d.calls
            deps[d.parent, d.child][1] += d.errors
    return Rollups(
        completed=completed,
        failed=failed,
        total_duration_us=total,
        services={name: (n, e, d, dict(sketches[name])) for name, (n, e, d) in services.items()},
        service_names=sorted(services),
        operations={name: sorted(ops) for name, ops in operations.items()},
        dependencies=sorted((p, c, n, e) for (p, c), (n, e) in deps.items()),
    )


# -- write_batch --------------------------------------------------------------------------------------


async def test_written_trace_is_active_with_its_spans(store: TraceStore) -> None:
    spans = simple_trace("t1")
    result = await write(store, spans)
    assert result == WriteResult(spans_changed=2, traces_touched=1, late_spans=0)
    trace = await stored(store, "t1")
    assert trace.trace_id == "t1"
    assert trace.state == "active"
    assert by_id(trace.spans) == by_id(spans)
    assert trace.analysis is None
    assert trace.completeness.late_spans == 0
    assert trace.completeness.refinalizations == 0
    assert trace.completeness.finalized_at_us is None
    await store.check()


async def test_unknown_trace_is_none(store: TraceStore) -> None:
    assert await store.get_trace("no-such-trace") is None
    await write(store, simple_trace("t1"))
    assert await store.get_trace("t2") is None
    assert await store.get_trace("root") is None  # a span id is not a trace id


async def test_same_batch_twice_changes_nothing(store: TraceStore) -> None:
    spans = simple_trace("t1")
    finishes = [finish("t1", "open", T0 + 5 * MS, status="error", tags={"k": "v"})]
    spans.append(span("t1", "open", parent="root", start=T0 + MS, duration=None))
    first = await write(store, spans, finishes, now=NOW)
    assert first.spans_changed == 3
    assert first.traces_touched == 1
    before = await stored(store, "t1")
    due_before = await due_at(store, "t1")

    again = await write(store, spans, finishes, now=NOW + 30 * SECOND)
    assert again == WriteResult(spans_changed=0, traces_touched=0, late_spans=0)
    after = await stored(store, "t1")
    assert by_id(after.spans) == by_id(before.spans)
    assert after.state == before.state == "active"
    assert await due_at(store, "t1") == due_before  # a duplicate does not touch the trace (no slide)


async def test_changed_span_counts_as_changed(store: TraceStore) -> None:
    open_root = span("t1", "root", duration=None)
    assert (await write(store, [open_root])).spans_changed == 1
    closed = with_(open_root, duration_us=7 * MS)
    assert await write(store, [closed]) == WriteResult(spans_changed=1, traces_touched=1, late_spans=0)
    assert (await stored(store, "t1")).spans == [closed]
    retagged = with_(closed, tags={"a": "b"})
    assert (await write(store, [retagged])).spans_changed == 1
    assert (await stored(store, "t1")).spans == [retagged]


async def test_open_then_closed_span_in_one_batch_keeps_the_last(store: TraceStore) -> None:
    open_root = span("t1", "root", duration=None)
    closed = with_(open_root, duration_us=3 * MS)
    result = await write(store, [open_root, closed])
    assert result == WriteResult(spans_changed=1, traces_touched=1, late_spans=0)
    assert (await stored(store, "t1")).spans == [closed]


async def test_finish_merges_into_its_span(store: TraceStore) -> None:
    opened = span("t1", "root", start=T0, duration=None, tags={"a": 1, "b": "x"})
    await write(store, [opened])
    done = finish("t1", "root", T0 + 700, status="error", tags={"b": "y", "c": True})
    assert await write(store, [], [done]) == WriteResult(spans_changed=1, traces_touched=1, late_spans=0)
    (merged,) = (await stored(store, "t1")).spans
    assert merged.duration_us == 700
    assert merged.status == "error"
    assert merged.tags == {"a": 1, "b": "y", "c": True}
    assert merged.tags["c"] is True  # a bool stays a bool (not 1)
    assert merged.service_name == "api"
    # the same finish again is a duplicate
    assert await write(store, [], [done]) == WriteResult(spans_changed=0, traces_touched=0, late_spans=0)


async def test_finish_without_status_keeps_the_span_status_and_never_goes_negative(store: TraceStore) -> None:
    await write(store, [span("t1", "a", start=T0, duration=None, status="error")])
    await write(store, [span("t1", "b", parent="a", start=T0 + 10, duration=None)])
    await write(store, [], [finish("t1", "a", T0 + 50), finish("t1", "b", T0)])  # b ends before it starts
    spans = by_id((await stored(store, "t1")).spans)
    assert spans["a"].status == "error"
    assert spans["a"].duration_us == 50
    assert spans["b"].duration_us == 0
    assert spans["b"].status == "success"


async def test_finish_before_its_span_is_kept_and_merged_later(store: TraceStore) -> None:
    early = finish("t1", "root", T0 + 9 * MS, status="error", tags={"late.tag": "yes"})
    result = await write(store, [], [early], now=NOW)
    assert result.spans_changed == 1
    assert result.traces_touched == 1
    # only a finish event is stored: no span yet, so the trace cannot be read
    assert await store.get_trace("t1") is None

    root = span("t1", "root", start=T0, duration=None, tags={"own": "tag"})
    assert (await write(store, [root], now=NOW + SECOND)).spans_changed == 1
    (merged,) = (await stored(store, "t1")).spans
    assert merged.duration_us == 9 * MS
    assert merged.status == "error"
    assert merged.tags == {"own": "tag", "late.tag": "yes"}
    # the merged root is finished: the trace is due after the grace window, not the idle timeout
    assert await due_at(store, "t1") == NOW + SECOND + GRACE
    analysis = await finalize_one(store, "t1", now=NOW + 2 * SECOND)
    assert analysis.complete
    assert analysis.failed
    assert analysis.duration_us == 9 * MS


async def test_mixed_batch_of_spans_and_finishes(store: TraceStore) -> None:
    spans = [
        span("t1", "r1", start=T0, duration=None),
        span("t1", "c1", parent="r1", start=T0 + 10, duration=20),
        span("t2", "r2", start=T0 + SECOND, duration=None, service="web"),
    ]
    finishes = [
        finish("t1", "r1", T0 + 100),  # finishes a span of the same batch
        finish("t2", "r2", T0 + SECOND + 300, tags={"x": 1.5}),
        finish("t2", "pending", T0 + SECOND + 200),  # its span comes later
    ]
    result = await write(store, spans, finishes)
    assert result.traces_touched == 2
    assert result.late_spans == 0
    assert result.spans_changed == 4  # r1 (span + finish) is one row
    t1 = by_id((await stored(store, "t1")).spans)
    assert t1["r1"].duration_us == 100
    assert t1["c1"].duration_us == 20
    t2 = by_id((await stored(store, "t2")).spans)
    assert set(t2) == {"r2"}
    assert t2["r2"].duration_us == 300
    assert t2["r2"].tags == {"x": 1.5}
    await write(store, [span("t2", "pending", parent="r2", start=T0 + SECOND + 50, duration=None)])
    assert by_id((await stored(store, "t2")).spans)["pending"].duration_us == 150


async def test_spans_changed_counts_rows_not_events(store: TraceStore) -> None:
    """A span and its finish in one batch change one span row."""
    result = await write(store, [span("t1", "r", duration=None)], [finish("t1", "r", T0 + 5)])
    assert result == WriteResult(spans_changed=1, traces_touched=1, late_spans=0)


# -- due times ---------------------------------------------------------------------------------------


async def test_unfinished_trace_is_due_after_idle_sliding(store: TraceStore) -> None:
    await write(store, [span("t1", "root", duration=None)], now=NOW)
    assert await due_at(store, "t1") == NOW + IDLE
    assert await store.due_traces([SHARD], NOW + IDLE - 1, 10) == []
    assert await store.due_traces([SHARD], NOW + IDLE, 10) == ["t1"]
    # a new span slides the idle deadline
    await write(store, [span("t1", "c", parent="root")], now=NOW + 10 * SECOND)
    assert await due_at(store, "t1") == NOW + 10 * SECOND + IDLE
    # a rootless trace (only children) is idle-bound too
    await write(store, [span("t2", "c", parent="missing")], now=NOW)
    assert await due_at(store, "t2") == NOW + IDLE
    # finished children (complete or closed by a finish event) do not finish an open root
    opened = [
        span("t3", "root", duration=None),
        span("t3", "a", parent="root"),
        span("t3", "b", parent="root", duration=None),
    ]
    await write(store, opened, now=NOW)
    await write(store, [], [finish("t3", "b", T0 + 5 * MS)], now=NOW + SECOND)
    assert await due_at(store, "t3") == NOW + SECOND + IDLE


async def test_finished_root_makes_the_trace_due_after_grace(store: TraceStore) -> None:
    await write(store, [span("t1", "root", duration=None)], now=NOW)
    await write(store, [], [finish("t1", "root", T0 + 5 * MS)], now=NOW + SECOND)
    assert await due_at(store, "t1") == NOW + SECOND + GRACE
    # later spans never push a finished trace back
    await write(store, [span("t1", "c", parent="root")], now=NOW + 2 * SECOND)
    assert await due_at(store, "t1") == NOW + SECOND + GRACE
    # a root that arrives complete counts the same
    await write(store, [span("t2", "root", duration=MS)], now=NOW)
    assert await due_at(store, "t2") == NOW + GRACE


async def test_grace_never_extends_an_earlier_due_time(store: TraceStore) -> None:
    await write(store, [span("t1", "c", parent="root")], now=NOW, idle=100, grace=10 * SECOND)
    await write(store, [span("t1", "root")], now=NOW + 50, idle=100, grace=10 * SECOND)
    assert await due_at(store, "t1") == NOW + 50 + 100  # min(now + idle, now + grace)


async def test_due_traces_filters_by_shard_and_now_and_orders_by_due(store: TraceStore) -> None:
    # due times: t-c first, then t-a, then t-b (id order differs from due order)
    await write(store, [span("t-c", "root")], now=NOW, shard="spans/0")
    await write(store, [span("t-a", "root")], now=NOW + 1, shard="spans/0")
    await write(store, [span("t-b", "root")], now=NOW + 2, shard="spans/1")
    await write(store, [span("t-x", "root")], now=NOW, shard="spans/2")
    late = NOW + 10 * SECOND
    assert await store.due_traces(["spans/0", "spans/1"], late, 10) == ["t-c", "t-a", "t-b"]
    assert await store.due_traces(["spans/0", "spans/1"], late, 2) == ["t-c", "t-a"]
    assert await store.due_traces(["spans/1"], late, 10) == ["t-b"]
    assert await store.due_traces({"spans/2"}, late, 10) == ["t-x"]
    assert await store.due_traces(["spans/9"], late, 10) == []
    assert await store.due_traces([], late, 10) == []
    assert await store.due_traces(["spans/0", "spans/1"], NOW + GRACE + 1, 10) == ["t-c", "t-a"]
    assert await store.due_traces(["spans/0", "spans/1"], NOW + GRACE - 1, 10) == []


async def test_each_trace_of_a_batch_is_owned_by_its_own_shard(store: TraceStore) -> None:
    batch = [span("t1", "root"), span("t2", "root"), span("t3", "c", parent="root")]
    await write(store, batch, shards={"t1": "spans/1", "t2": "zipkin/0", "t3": "spans/1"})
    later = NOW + 2 * IDLE
    assert await store.due_traces(["spans/1"], later, 10) == ["t1", "t3"]
    assert await store.due_traces(["zipkin/0"], later, 10) == ["t2"]
    assert await store.due_traces([SHARD], later, 10) == []


async def test_trace_keeps_the_shard_of_its_first_write(store: TraceStore) -> None:
    await write(store, [span("t1", "c", parent="root")], shard="spans/3")
    await write(store, [span("t1", "root")], shard="otlp_spans/7")
    await write(store, [], [finish("t1", "c", T0 + 5)], shard="spans/5")
    later = NOW + IDLE * 2
    assert await store.due_traces(["otlp_spans/7", "spans/5"], later, 10) == []
    assert await store.due_traces(["spans/3"], later, 10) == ["t1"]
    # also after finalization and a late span from elsewhere
    await finalize_one(store, "t1", now=later)
    await write(store, [span("t1", "late", parent="root")], shard="spans/5", now=later)
    assert await store.due_traces(["spans/5"], later + IDLE, 10) == []
    assert await store.due_traces(["spans/3"], later + IDLE, 10) == ["t1"]


async def test_finalized_traces_are_not_due(store: TraceStore) -> None:
    await write(store, simple_trace("t1"))
    await finalize_one(store, "t1")
    assert await store.due_traces([SHARD], 2**62, 10) == []


# -- finalize -----------------------------------------------------------------------------------------


async def test_finalize_stores_the_analysis_of_the_stored_spans(store: TraceStore) -> None:
    spans = [
        span("t1", "root", service="gateway", operation="GET /cart", start=T0, duration=100 * MS, kind="server"),
        span(
            "t1",
            "auth",
            parent="root",
            service="auth",
            operation="check",
            start=T0 + 5 * MS,
            duration=10 * MS,
        ),
        span("t1", "db", parent="root", service="db", operation="select", start=T0 + 20 * MS, duration=None),
        span(
            "t1",
            "q",
            parent="produce",
            service="worker",
            operation="consume",
            start=T0 + 30 * MS,
            kind="consumer",
        ),
    ]
    finishes = [finish("t1", "db", T0 + 80 * MS, status="error", tags={"db.rows": 0})]
    await write(store, spans, finishes)
    expected_spans = [
        *spans[:2],
        with_(spans[2], duration_us=60 * MS, status="error", tags={"db.rows": 0}),
        spans[3],
    ]
    expected = analyze("t1", expected_spans)

    analysis = await finalize_one(store, "t1", now=NOW + SECOND)
    assert analysis == expected
    assert analysis.failed
    assert analysis.orphan_spans == 1  # the consumer's producer never arrived

    trace = await stored(store, "t1")
    assert trace.state == "finalized"
    assert trace.analysis == expected
    assert by_id(trace.spans) == by_id(expected_spans)
    assert trace.completeness.finalized_at_us == NOW + SECOND
    assert trace.completeness.refinalizations == 0
    assert trace.completeness.late_spans == 0

    (summary,) = await store.find_traces(TraceQuery())
    assert summary.trace_id == "t1"
    assert summary.status == "failed"
    assert summary.root_service == "gateway"
    assert summary.root_operation == "GET /cart"
    assert summary.start_us == T0
    assert summary.duration_us == 100 * MS
    assert summary.span_count == 4
    assert summary.error_count == 1
    assert summary.complete
    assert summary.services == ["auth", "db", "gateway", "worker"]


async def test_finalize_status_completed_or_failed(store: TraceStore) -> None:
    await write(store, [*simple_trace("ok"), *simple_trace("bad", child_status="error")])
    analyses = await store.finalize(["ok", "bad"], now_us=NOW)
    assert {a.trace_id: a.failed for a in analyses} == {"ok": False, "bad": True}
    assert (await stored(store, "ok")).state == "finalized"
    assert await search(store, status="completed") == ["ok"]
    assert await search(store, status="failed") == ["bad"]
    stats = await store.stats()
    assert (stats.completed_traces, stats.failed_traces, stats.active_traces) == (1, 1, 0)


async def test_rootless_trace_finalizes_incomplete(store: TraceStore) -> None:
    spans = [
        span("t1", "a", parent="gone", start=T0, duration=5 * MS),
        span("t1", "b", parent="gone", start=T0 + 10 * MS, duration=5 * MS, service="db"),
    ]
    await write(store, spans)
    analysis = await finalize_one(store, "t1")
    assert analysis == analyze("t1", spans)
    assert not analysis.complete
    assert analysis.duration_us == 15 * MS  # max end - min start
    (summary,) = await store.find_traces(TraceQuery())
    assert not summary.complete
    assert summary.root_service is None


async def test_finalize_only_touches_active_traces(store: TraceStore) -> None:
    await write(store, [*simple_trace("t1"), *simple_trace("t2")])
    assert [a.trace_id for a in await store.finalize(["t1"], now_us=NOW)] == ["t1"]
    before = await rollups_of(store)
    again = await store.finalize(["t1", "t2", "unknown"], now_us=NOW + SECOND)
    assert [a.trace_id for a in again] == ["t2"]
    assert await store.finalize(["t1", "t2"], now_us=NOW + 2 * SECOND) == []
    assert await store.finalize([], now_us=NOW) == []
    t1 = await stored(store, "t1")
    assert t1.completeness.finalized_at_us == NOW  # not re-finalized
    assert t1.completeness.refinalizations == 0
    after = await rollups_of(store)
    assert after == expected_rollups({"t1": simple_trace("t1"), "t2": simple_trace("t2")})
    assert after.completed == before.completed + 1


# -- late spans --------------------------------------------------------------------------------------


async def test_all_time_service_sketches_are_their_operations_summed(store: TraceStore) -> None:
    """``/stats`` without a window reads each service's all-time sketch on its own (SQL stores: a table of
    its own): it stays the sum of the service's operation sketches through finalization, re-finalization
    and purge."""

    async def check() -> None:
        per_service: dict[str, Counter[int]] = defaultdict(Counter)
        for row in await store.rollups("operations", None):
            per_service[row.key[0]].update(row.bins)
        services = (await store.stats()).services
        assert {name: dict(s.bins) for name, s in services.items()} == {
            name: {i: n for i, n in bins.items() if n} for name, bins in per_service.items()
        }

    await write(
        store, [*simple_trace("t1", duration=40 * MS), *simple_trace("t2", start=T0 + HOUR, root_service="web")]
    )
    await store.finalize(["t1", "t2"], now_us=NOW)
    await check()
    late = span("t1", "late", parent="root", service="queue", operation="publish", start=T0 + 30 * MS, duration=2 * MS)
    await write(store, [late], now=NOW + SECOND)
    await store.finalize(["t1"], now_us=NOW + 2 * SECOND)
    await check()
    await store.purge(T0 + HOUR)
    await check()
    assert set((await store.stats()).services) == {"web", "db"}


async def test_late_span_refinalizes_without_double_counting(store: TraceStore) -> None:
    spans = simple_trace("t1", duration=40 * MS, child_status="error")  # its dependency has an error
    other = simple_trace("t2", start=T0 + HOUR, root_service="web", child_service="cache")
    await write(store, [*spans, *other])
    await store.finalize(["t1", "t2"], now_us=NOW)
    assert await rollups_of(store) == expected_rollups({"t1": spans, "t2": other})

    late = span("t1", "late", parent="root", service="queue", operation="publish", start=T0 + 30 * MS, duration=2 * MS)
    later = NOW + 10 * SECOND
    result = await write(store, [late], now=later, shard="spans/9")
    assert result == WriteResult(spans_changed=1, traces_touched=1, late_spans=1)

    trace = await stored(store, "t1")
    assert trace.state == "active"
    assert trace.analysis is None
    assert await search(store, status="active") == ["t1"]
    assert await due_at(store, "t1") == later + GRACE
    assert await store.due_traces([SHARD], later + GRACE, 10) == ["t1"]

    full = [*spans, late]
    analysis = await finalize_one(store, "t1", now=later + GRACE)
    assert analysis == analyze("t1", full)
    trace = await stored(store, "t1")
    assert trace.state == "finalized"
    assert trace.analysis == analysis
    assert by_id(trace.spans) == by_id(full)
    assert trace.completeness.late_spans == 1
    assert trace.completeness.refinalizations == 1
    assert trace.completeness.finalized_at_us == later + GRACE
    assert await rollups_of(store) == expected_rollups({"t1": full, "t2": other})
    stats = await store.stats()
    assert stats.active_traces == 0
    assert stats.total_traces == 2
    assert await store.operations("queue") == ["publish"]

    # a second late span: counts accumulate, rollups still exact
    late2 = span("t1", "late2", parent="root", service="queue", operation="ack", start=T0 + 35 * MS, duration=MS)
    assert (await write(store, [late2], now=later + SECOND)).late_spans == 1
    await finalize_one(store, "t1", now=later + 2 * SECOND)
    trace = await stored(store, "t1")
    assert trace.completeness.late_spans == 2
    assert trace.completeness.refinalizations == 2
    assert await rollups_of(store) == expected_rollups({"t1": [*full, late2], "t2": other})


async def test_changed_span_after_finalization_is_late_and_reindexed(store: TraceStore) -> None:
    root = span("t1", "root", service="api", operation="old", tags={"v": "1"}, duration=10 * MS)
    await write(store, [root])
    await finalize_one(store, "t1")
    assert await search(store, tags=(("v", "1"),)) == ["t1"]
    changed = with_(root, operation_name="new", tags={"v": "2"})
    assert await write(store, [changed], now=NOW + SECOND) == WriteResult(
        spans_changed=1, traces_touched=1, late_spans=1
    )
    await finalize_one(store, "t1", now=NOW + 2 * SECOND)
    assert (await stored(store, "t1")).spans == [changed]
    assert await search(store, tags=(("v", "1"),)) == []
    assert await search(store, tags=(("v", "2"),)) == ["t1"]
    assert await search(store, operation_name="old") == []
    assert await search(store, operation_name="new") == ["t1"]
    assert await store.operations("api") == ["new"]
    assert await rollups_of(store) == expected_rollups({"t1": [changed]})


async def test_late_finish_of_an_open_span_is_late_and_closes_it(store: TraceStore) -> None:
    spans = [
        span("t1", "root", duration=10 * MS),
        span("t1", "open", parent="root", duration=None, service="db"),
    ]
    await write(store, spans)
    assert (await finalize_one(store, "t1")).open_spans == 1
    result = await write(store, [], [finish("t1", "open", T0 + 4 * MS)], now=NOW + SECOND)
    assert result == WriteResult(spans_changed=1, traces_touched=1, late_spans=1)
    analysis = await finalize_one(store, "t1", now=NOW + 2 * SECOND)
    assert analysis.open_spans == 0
    closed = [spans[0], with_(spans[1], duration_us=4 * MS)]
    assert analysis == analyze("t1", closed)
    assert await rollups_of(store) == expected_rollups({"t1": closed})


async def test_refinalization_moves_trace_from_completed_to_failed(store: TraceStore) -> None:
    spans = simple_trace("t1")
    await write(store, spans)
    assert not (await finalize_one(store, "t1")).failed
    stats = await store.stats()
    assert (stats.completed_traces, stats.failed_traces) == (1, 0)

    bad = span("t1", "bad", parent="root", service="db", operation="query", start=T0 + 2 * MS, status="error")
    await write(store, [bad], now=NOW + SECOND)
    assert (await finalize_one(store, "t1", now=NOW + 2 * SECOND)).failed
    stats = await store.stats()
    assert (stats.completed_traces, stats.failed_traces) == (0, 1)
    assert stats.services["db"].error_count == 1
    assert await rollups_of(store) == expected_rollups({"t1": [*spans, bad]})
    assert await search(store, status="failed") == ["t1"]
    assert await search(store, status="completed") == []


async def test_duplicates_after_finalization_are_noops(store: TraceStore) -> None:
    spans = simple_trace("t1")
    finishes = [finish("t1", "child", T0 + 6 * MS, tags={"f": "1"})]
    await write(store, spans, finishes)
    await finalize_one(store, "t1")
    before = await stored(store, "t1")
    rollups = await rollups_of(store)
    result = await write(store, spans, finishes, now=NOW + SECOND)
    assert result == WriteResult(spans_changed=0, traces_touched=0, late_spans=0)
    assert await stored(store, "t1") == before
    assert (await stored(store, "t1")).state == "finalized"
    assert await store.due_traces([SHARD], 2**62, 10) == []
    assert await rollups_of(store) == rollups
    assert await search(store, status="active") == []


# -- find_traces -------------------------------------------------------------------------------------

SEARCH_TRACES: dict[str, list[Span]] = {
    "t1": simple_trace(
        "t1",
        start=T0 + 1 * SECOND,
        duration=5 * MS,
        root_operation="GET /cart",
        root_tags={"http.method": "GET", "http.status_code": 200},
    ),
    "t2": simple_trace(
        "t2",
        start=T0 + 2 * SECOND,
        duration=50 * MS,
        root_operation="POST /pay",
        child_service="payments",
        child_operation="charge",
        child_status="error",
        root_tags={"http.method": "POST", "http.status_code": 500},
        child_tags={"retry": True},
    ),
    "t3": [
        span(
            "t3",
            "root",
            service="web",
            operation="GET /",
            start=T0 + 3 * SECOND,
            duration=500,
            tags={"cache.hit": False, "ratio": 0.5},
        )
    ],
    "t4": simple_trace(
        "t4",
        start=T0 + 4 * SECOND,
        duration=200 * MS,
        root_operation="GET /cart",
        root_tags={"http.method": "GET", "http.status_code": 200},
        child_tags={"region": "eu"},
    ),
}


async def seed_search(store: TraceStore) -> None:
    """Four finalized traces (t1..t4, newest last) and one active one (t5)."""
    await write(store, [s for spans in SEARCH_TRACES.values() for s in spans])
    await store.finalize(list(SEARCH_TRACES), now_us=NOW)
    await write(store, [span("t5", "root", service="api", start=T0 + 5 * SECOND, duration=None)], now=NOW)


async def test_find_traces_newest_first_and_paging(store: TraceStore) -> None:
    await seed_search(store)
    assert await search(store) == ["t4", "t3", "t2", "t1"]
    assert await search(store, limit=2) == ["t4", "t3"]
    assert await search(store, limit=2, offset=1) == ["t3", "t2"]
    assert await search(store, offset=3) == ["t1"]
    assert await search(store, offset=4) == []
    assert await search(store, limit=1000) == ["t4", "t3", "t2", "t1"]


async def test_find_traces_summary_fields(store: TraceStore) -> None:
    await seed_search(store)
    (summary,) = await store.find_traces(TraceQuery(status="failed"))
    assert summary.trace_id == "t2"
    assert summary.root_service == "api"
    assert summary.root_operation == "POST /pay"
    assert summary.start_us == T0 + 2 * SECOND
    assert summary.duration_us == 50 * MS
    assert summary.span_count == 2
    assert summary.error_count == 1
    assert summary.status == "failed"
    assert summary.complete
    assert summary.services == ["api", "payments"]


async def test_find_traces_by_service_and_operation(store: TraceStore) -> None:
    await seed_search(store)
    assert await search(store, service_name="api") == ["t4", "t2", "t1"]
    assert await search(store, service_name="db") == ["t4", "t1"]  # a child's service counts
    assert await search(store, service_name="web") == ["t3"]
    assert await search(store, service_name="nope") == []
    assert await search(store, operation_name="GET /cart") == ["t4", "t1"]
    assert await search(store, operation_name="charge") == ["t2"]
    assert await search(store, service_name="api", operation_name="POST /pay") == ["t2"]
    # the operation must belong to that service
    assert await search(store, service_name="db", operation_name="GET /cart") == []
    # names match exactly: no LIKE wildcards, no case folding
    assert await search(store, service_name="%") == []
    assert await search(store, service_name="a_i") == []
    assert await search(store, service_name="API") == []


async def test_find_traces_by_duration(store: TraceStore) -> None:
    await seed_search(store)
    assert await search(store, min_duration_us=10 * MS) == ["t4", "t2"]
    assert await search(store, max_duration_us=10 * MS) == ["t3", "t1"]
    assert await search(store, min_duration_us=MS, max_duration_us=100 * MS) == ["t2", "t1"]
    assert await search(store, min_duration_us=300 * MS) == []
    # both bounds are inclusive (min == max is a valid query, so it must be able to match)
    assert await search(store, min_duration_us=50 * MS, max_duration_us=50 * MS) == ["t2"]
    assert await search(store, min_duration_us=500) == ["t4", "t3", "t2", "t1"]
    assert await search(store, max_duration_us=500) == ["t3"]


async def test_find_traces_by_status(store: TraceStore) -> None:
    await seed_search(store)
    assert await search(store, status="completed") == ["t4", "t3", "t1"]
    assert await search(store, status="failed") == ["t2"]
    assert await search(store, status="active") == ["t5"]
    (active,) = await store.find_traces(TraceQuery(status="active"))
    assert active.status == "active"
    # without a status filter only finalized traces are searched
    assert "t5" not in await search(store)


async def test_find_traces_by_tags(store: TraceStore) -> None:
    await seed_search(store)
    assert await search(store, tags=(("http.status_code", "200"),)) == ["t4", "t1"]
    assert await search(store, tags=(("http.method", "GET"), ("http.status_code", "200"))) == ["t4", "t1"]
    assert await search(store, tags=(("http.method", "GET"), ("region", "eu"))) == ["t4"]
    # pairs may sit on different spans of the trace
    assert await search(store, tags=(("http.status_code", "500"), ("retry", "true"))) == ["t2"]
    assert await search(store, tags=(("cache.hit", "false"),)) == ["t3"]
    assert await search(store, tags=(("ratio", "0.5"),)) == ["t3"]
    # ANDed: no trace has both
    assert await search(store, tags=(("http.status_code", "200"), ("retry", "true"))) == []
    # exact key and value
    assert await search(store, tags=(("http.method", "get"),)) == []
    assert await search(store, tags=(("retry", "True"),)) == []
    assert await search(store, tags=(("http.status_code", "%"),)) == []
    # combined with other filters
    assert await search(store, tags=(("http.method", "GET"),), min_duration_us=10 * MS) == ["t4"]


async def test_find_traces_tags_include_finish_event_tags(store: TraceStore) -> None:
    await write(store, [span("t1", "root", duration=None)], [finish("t1", "root", T0 + MS, tags={"done": True})])
    await finalize_one(store, "t1")
    assert await search(store, tags=(("done", "true"),)) == ["t1"]


async def test_find_traces_by_time_window(store: TraceStore) -> None:
    await seed_search(store)
    window = {"start_us": T0 + 1500 * MS, "end_us": T0 + 3500 * MS}
    assert await search(store, **window) == ["t3", "t2"]
    assert await search(store, start_us=T0 + 2500 * MS) == ["t4", "t3"]
    assert await search(store, end_us=T0 + 2500 * MS) == ["t2", "t1"]
    assert await search(store, start_us=T0 + 10 * SECOND) == []
    assert await search(store, service_name="api", **window) == ["t2"]
    # both ends are inclusive (start == end is a valid query, so it must be able to match)
    assert await search(store, start_us=T0 + 2 * SECOND, end_us=T0 + 2 * SECOND) == ["t2"]
    assert await search(store, start_us=T0 + 3 * SECOND, end_us=T0 + 4 * SECOND) == ["t4", "t3"]


@pytest.mark.parametrize(
    ("filters", "params"),
    [
        ({"limit": 0}, {"limit"}),
        ({"limit": 1001}, {"limit"}),
        ({"offset": -1}, {"offset"}),
        ({"min_duration_us": 10, "max_duration_us": 9}, {"minDuration", "maxDuration"}),
        ({"start_us": 10, "end_us": 9}, {"start", "end"}),
        ({"min_duration_us": -1}, {"minDuration", "min_duration_us"}),
        ({"end_us": -1}, {"end", "end_us"}),
        ({"service_name": ""}, {"serviceName"}),
        ({"operation_name": ""}, {"operationName"}),
    ],
)
def test_trace_query_validates_itself(filters: dict[str, Any], params: set[str]) -> None:
    with pytest.raises(QueryError) as raised:
        TraceQuery(**filters)
    assert raised.value.param in params
    assert raised.value.param in str(raised.value)


def test_trace_query_accepts_its_bounds() -> None:
    TraceQuery(limit=1)
    TraceQuery(limit=1000, offset=0)
    TraceQuery(min_duration_us=5, max_duration_us=5, start_us=7, end_us=7)


# -- stats and rollup reads --------------------------------------------------------------------------


async def test_empty_store_reads(store: TraceStore) -> None:
    stats = await store.stats()
    assert (stats.active_traces, stats.completed_traces, stats.failed_traces) == (0, 0, 0)
    assert stats.total_traces == 0
    assert stats.total_duration_us == 0
    assert stats.slowest == []
    assert stats.services == {}
    assert await store.services() == []
    assert await store.operations("api") == []
    assert await store.dependencies() == []
    assert await store.find_traces(TraceQuery()) == []
    assert await store.heartbeats() == []
    assert await store.trace_of_span("x") is None
    assert await store.purge(2**62) == 0


async def test_stats_totals_and_slowest(store: TraceStore) -> None:
    await seed_search(store)
    stats = await store.stats()
    assert stats.active_traces == 1
    assert stats.completed_traces == 3
    assert stats.failed_traces == 1
    assert stats.total_traces == 5
    assert stats.total_duration_us == (5 + 50 + 200) * MS + 500
    assert [(s.trace_id, s.duration_us) for s in stats.slowest] == [
        ("t4", 200 * MS),
        ("t2", 50 * MS),
        ("t1", 5 * MS),
        ("t3", 500),
    ]
    assert [s.trace_id for s in (await store.stats(slowest=2)).slowest] == ["t4", "t2"]
    assert await rollups_of(store) == expected_rollups(SEARCH_TRACES)


async def test_service_percentiles_are_within_one_percent(store: TraceStore) -> None:
    durations = [80, 300, 700, 900, 1_500, 3_000, 3_000, 3_000, 20_000, 70_000_000] * 3
    spans = [span("t1", "root", service="gw", duration=80 * SECOND)]
    spans += [
        span("t1", f"s{i}", parent="root", service="svc", start=T0 + i, duration=d) for i, d in enumerate(durations)
    ]
    await write(store, spans)
    await finalize_one(store, "t1")
    stats = (await store.stats()).services["svc"]
    assert stats.count == len(durations)
    assert stats.total_duration_us == sum(durations)
    assert sum(stats.bins.values()) == len(durations)
    for q in (0.0, 0.1, 0.5, 0.8, 0.95, 0.99, 1.0):
        assert stats.percentile_us(q) == pytest.approx(exact_percentile(durations, q), rel=0.01)
    gateway = (await store.stats()).services["gw"]
    assert gateway.percentile_us(0.5) == pytest.approx(80 * SECOND, rel=0.01)  # beyond the largest fixed bound
    uniform = [span("t2", f"u{i}", service="flat", duration=3_000, start=T0 + i) for i in range(20)]
    await write(store, [span("t2", "root", service="flat", duration=3_000), *uniform])
    await finalize_one(store, "t2")
    flat = (await store.stats()).services["flat"]
    for q in (0.01, 0.5, 0.95, 0.99, 1.0):
        assert flat.percentile_us(q) == pytest.approx(3_000, rel=0.01)


async def test_services_and_operations_come_from_finalized_traces(store: TraceStore) -> None:
    await seed_search(store)
    await write(store, [span("t6", "root", service="only-active", operation="wait", duration=None)])
    assert await store.services() == ["api", "db", "payments", "web"]
    assert await store.operations("api") == ["GET /cart", "POST /pay"]
    assert await store.operations("db") == ["query"]
    assert await store.operations("payments") == ["charge"]
    assert await store.operations("only-active") == []
    assert await store.operations("nope") == []


async def test_dependencies_by_window_at_hour_grain(store: TraceStore) -> None:
    hour0 = (T0 // HOUR) * HOUR
    first = simple_trace("d1", start=hour0 + 10 * MS, root_service="gw", child_service="users")
    second = [
        *simple_trace("d2", start=hour0 + 2 * HOUR + 10 * MS, root_service="gw", child_service="users"),
        span("d2", "x", parent="child", service="db", start=hour0 + 2 * HOUR + 2 * MS, status="error"),
        span("d2", "y", parent="child", service="db", start=hour0 + 2 * HOUR + 3 * MS),
    ]
    await write(store, [*first, *second])
    await store.finalize(["d1", "d2"], now_us=NOW)

    def deps(items: Iterable[Dependency]) -> list[tuple[str, str, int, int]]:
        return [(d.parent, d.child, d.calls, d.errors) for d in items]

    assert deps(await store.dependencies()) == [("gw", "users", 2, 0), ("users", "db", 2, 1)]
    assert deps(await store.dependencies(0, hour0 + HOUR // 2)) == [("gw", "users", 1, 0)]
    assert deps(await store.dependencies(hour0 + HOUR + 1, hour0 + 2 * HOUR + HOUR // 2)) == [
        ("gw", "users", 1, 0),
        ("users", "db", 2, 1),
    ]
    assert deps(await store.dependencies(hour0 + 2 * HOUR + HOUR // 2)) == deps(
        await store.dependencies(hour0 + 2 * HOUR + 1)
    )
    assert deps(await store.dependencies(hour0 + 3 * HOUR + 1)) == []
    assert deps(await store.dependencies(hour0 + HOUR + 1, hour0 + 2 * HOUR - 1)) == []


async def test_trace_of_span(store: TraceStore) -> None:
    """Only open spans are indexed by span id (what a finish by span id alone closes)."""
    await write(store, [*simple_trace("t1"), span("t2", "only-in-t2", duration=None)])
    assert await store.trace_of_span("only-in-t2") == "t2"
    assert await store.trace_of_span("root") is None  # finished: not in the open-span index
    assert await store.trace_of_span("missing") is None
    await write(store, [span("t3", "only-in-t2", parent="x", duration=None)])
    assert await store.trace_of_span("only-in-t2") in {"t2", "t3"}  # a reused id: any one of its traces
    await write(store, [], [finish("t2", "only-in-t2", T0 + MS)])
    assert await store.trace_of_span("only-in-t2") == "t3"  # closed in t2 by its finish event
    await write(store, [span("t3", "only-in-t2", parent="x", duration=MS)])
    assert await store.trace_of_span("only-in-t2") is None  # closed in t3 by a finished version
    # open after finalization too (a late finish closes it), gone with a purge
    await write(store, [span("t4", "root", duration=10 * MS), span("t4", "open", parent="root", duration=None)])
    await finalize_one(store, "t4")
    assert await store.trace_of_span("open") == "t4"
    assert await store.purge(T0 + HOUR) >= 1
    assert await store.trace_of_span("open") is None


async def test_heartbeats_upsert_per_worker_and_filter_by_age(store: TraceStore) -> None:
    def beat(worker: str, at: int, spans_total: int) -> Heartbeat:
        return Heartbeat(
            worker_id=worker,
            partitions=["spans/0", "spans/1"],
            lag={"spans/0": 3, "spans/1": 0},
            spans_per_second=12.5,
            spans_total=spans_total,
            late_spans=1,
            dead_lettered=2,
            traces_finalized=7,
            updated_at_us=at,
        )

    await store.record_heartbeat(beat("w1", NOW, 10))
    await store.record_heartbeat(beat("w2", NOW + SECOND, 20))
    newer = beat("w1", NOW + 5 * SECOND, 99)
    await store.record_heartbeat(newer)
    beats = {b.worker_id: b for b in await store.heartbeats()}
    assert set(beats) == {"w1", "w2"}
    assert beats["w1"] == newer
    assert beats["w2"].spans_total == 20
    assert [b.worker_id for b in await store.heartbeats(newer_than_us=NOW + 3 * SECOND)] == ["w1"]
    assert await store.heartbeats(newer_than_us=NOW + 10 * SECOND) == []


# -- purge --------------------------------------------------------------------------------------------


async def test_purge_removes_old_finalized_traces_and_corrects_rollups(store: TraceStore) -> None:
    old = simple_trace("old", start=T0 - 2 * HOUR, root_service="legacy", child_service="db", child_status="error")
    mid = simple_trace("mid", start=T0 - HOUR, root_service="api", child_service="db")
    new = simple_trace("new", start=T0, root_service="api", child_service="cache")
    await write(store, [*old, *mid, *new])
    await store.finalize(["old", "mid", "new"], now_us=NOW)
    await write(store, [span("stale-active", "root", start=T0 - 3 * HOUR, duration=None)])

    assert await store.purge(T0 - HOUR) == 1  # only "old": "mid" started exactly at the cut-off
    assert await store.get_trace("old") is None
    assert await store.trace_of_span("root") in {"mid", "new", "stale-active"}
    assert await store.get_trace("mid") is not None
    assert await store.get_trace("stale-active") is not None  # active traces are never purged
    assert await rollups_of(store) == expected_rollups({"mid": mid, "new": new})
    assert "legacy" not in await store.services()
    assert await search(store) == ["new", "mid"]
    assert await search(store, tags=()) == ["new", "mid"]
    assert (await store.stats()).active_traces == 1

    assert await store.purge(T0 + 1) == 2
    assert await rollups_of(store) == expected_rollups({})
    assert await store.services() == []
    assert await store.dependencies() == []
    assert await search(store) == []
    assert await store.purge(T0 + 1) == 0


async def test_purge_after_refinalization_subtracts_the_latest_contribution(store: TraceStore) -> None:
    spans = simple_trace("t1", start=T0 - HOUR)
    keep = simple_trace("t2", start=T0)
    await write(store, [*spans, *keep])
    await store.finalize(["t1", "t2"], now_us=NOW)
    await write(store, [span("t1", "late", parent="root", service="late-svc", start=T0 - HOUR)], now=NOW + 1)
    await finalize_one(store, "t1", now=NOW + 2)
    assert await store.purge(T0) == 1
    assert await rollups_of(store) == expected_rollups({"t2": keep})


async def test_purge_after_two_refinalizations_leaves_no_trace_of_it(store: TraceStore) -> None:
    spans = simple_trace("t1", start=T0 - HOUR, root_tags={"k": "v"})
    keep = simple_trace("t2", start=T0)
    await write(store, [*spans, *keep])
    await store.finalize(["t1", "t2"], now_us=NOW)
    late = [
        span("t1", "late", parent="root", service="late-svc", start=T0 - HOUR, tags={"late": "1"}),
        span("t1", "later", parent="root", service="db", operation="other", start=T0 - HOUR, status="error"),
    ]
    for i, extra in enumerate(late):
        await write(store, [extra], now=NOW + 10 * i + 1)
        await finalize_one(store, "t1", now=NOW + 10 * i + 2)
    assert await rollups_of(store) == expected_rollups({"t1": [*spans, *late], "t2": keep})
    assert await search(store, tags=(("late", "1"),)) == ["t1"]
    assert await store.purge(T0) == 1
    assert await rollups_of(store) == expected_rollups({"t2": keep})
    assert await search(store) == ["t2"]
    assert await search(store, tags=(("late", "1"),)) == []
    assert await search(store, tags=(("k", "v"),)) == []
    assert await search(store, service_name="late-svc") == []


# -- hostile strings ---------------------------------------------------------------------------------


async def test_sql_like_names_and_tags_are_inert(store: TraceStore) -> None:
    spans = [
        span(
            "trace-abc-123",
            "span.1:a_b-C",
            service=HOSTILE,
            operation=HOSTILE,
            tags={HOSTILE: HOSTILE, "q": "'"},
        ),
        span("trace-abc-123", "c", parent="span.1:a_b-C", service="db", operation="x", tags={"k": HOSTILE}),
        span("trace-abc-123", "o:p.e-n", parent="c", service="db", operation="x", duration=None),
    ]
    long_id = "A" * 64
    await write(store, [*spans, span(long_id, "0", service='"; --', operation="%")])
    await store.finalize(["trace-abc-123", long_id], now_us=NOW)

    assert by_id((await stored(store, "trace-abc-123")).spans) == by_id(spans)
    assert (await stored(store, long_id)).spans[0].service_name == '"; --'
    assert await search(store, service_name=HOSTILE) == ["trace-abc-123"]
    assert await search(store, operation_name=HOSTILE) == ["trace-abc-123"]
    assert await search(store, tags=((HOSTILE, HOSTILE),)) == ["trace-abc-123"]
    assert await search(store, tags=(("k", HOSTILE), ("q", "'"))) == ["trace-abc-123"]
    assert await search(store, operation_name="%") == [long_id]
    assert await search(store, service_name="' OR '1'='1") == []
    assert await search(store, tags=(("k", "' OR '1'='1"),)) == []
    assert await store.services() == sorted([HOSTILE, "db", '"; --'])
    assert await store.operations(HOSTILE) == [HOSTILE]
    assert await store.trace_of_span("o:p.e-n") == "trace-abc-123"
    assert {"db", HOSTILE, '"; --'} == set((await store.stats()).services)
    deps = await store.dependencies()
    assert [(d.parent, d.child) for d in deps] == [(HOSTILE, "db")]
    # every table is still there and still answers
    await write(store, simple_trace("after"))
    await finalize_one(store, "after")
    assert len(await search(store)) == 3
    assert await rollups_of(store) == expected_rollups(
        {
            "trace-abc-123": spans,
            long_id: [span(long_id, "0", service='"; --', operation="%")],
            "after": simple_trace("after"),
        }
    )


async def test_json_and_unicode_in_names_and_tags_round_trip(store: TraceStore) -> None:
    odd: dict[str, TagValue] = {
        "json": '{"traceId": "x", "$.spanId": [1]}',
        "path": "$.traceId",
        "quotes": "a\\b\"c'd",
        "nul": "a\x00b",
        "emoji": "😀 ünïcödé",
        "like": "%_",
        "$.durationUs": 5,
    }
    spans = [span("t1", "root", service='svc "x" \\ ü', operation="op\nline", tags=odd)]
    await write(store, spans)
    await finalize_one(store, "t1")
    assert (await stored(store, "t1")).spans == spans
    for key, value in odd.items():
        assert await search(store, tags=((key, str(value)),)) == ["t1"], key
    assert await search(store, service_name='svc "x" \\ ü', operation_name="op\nline") == ["t1"]
    assert await store.services() == ['svc "x" \\ ü']
    assert await rollups_of(store) == expected_rollups({"t1": spans})


async def test_hostile_worker_id_and_shard_are_inert(store: TraceStore) -> None:
    await write(store, [span("t1", "root")], shard=HOSTILE)
    assert await store.due_traces([HOSTILE], NOW + GRACE, 10) == ["t1"]
    assert await store.due_traces(["' OR '1'='1"], NOW + GRACE, 10) == []
    beat = Heartbeat(
        worker_id=HOSTILE,
        partitions=[HOSTILE],
        lag={HOSTILE: 1},
        spans_per_second=0.0,
        spans_total=0,
        late_spans=0,
        dead_lettered=0,
        traces_finalized=0,
        updated_at_us=NOW,
    )
    await store.record_heartbeat(beat)
    assert await store.heartbeats() == [beat]


async def test_finish_without_any_span_leaves_no_phantom_trace(store: TraceStore) -> None:
    await write(store, finishes=[finish("ghost", "s1", T0 + MS)])
    assert await store.due_traces([SHARD], NOW + IDLE, 10) == ["ghost"]
    assert await store.finalize(["ghost"], now_us=NOW + IDLE) == []
    stats = await store.stats()
    assert (stats.total_traces, stats.active_traces) == (0, 0)
    assert await search(store) == []
    assert await store.due_traces([SHARD], NOW + 10 * IDLE, 10) == []
    # the span arrives after all: the trace comes to life with the finish merged
    await write(store, [span("ghost", "s1", duration=None)], now=NOW + 2 * IDLE)
    [merged] = (await stored(store, "ghost")).spans
    assert merged.duration_us == MS


async def test_reopened_trace_counts_once_and_stays_searchable(store: TraceStore) -> None:
    await write(store, simple_trace("t1"))
    await finalize_one(store, "t1")
    late = span("t1", "late", parent="root", start=T0 + MS, duration=MS)
    await write(store, [late], now=NOW + SECOND)
    stats = await store.stats()
    assert (stats.total_traces, stats.active_traces, stats.completed_traces) == (1, 0, 1)
    assert await search(store) == ["t1"]  # its last summary is served until it is re-finalized
    assert await search(store, status="active") == ["t1"]


async def test_redelivered_open_version_never_erases_a_finished_span(store: TraceStore) -> None:
    open_root = span("t1", "root", duration=None)
    done_root = with_(open_root, duration_us=5 * MS)
    await write(store, [open_root])
    await write(store, [done_root])
    assert (await write(store, [open_root])).spans_changed == 0
    [root] = (await stored(store, "t1")).spans
    assert root.duration_us == 5 * MS


# -- tail sampling ------------------------------------------------------------------------------------


async def test_sampled_out_trace_counts_in_stats_but_is_gone(store: TraceStore) -> None:
    drop_all = Sampler(rate=0.0, slow_us=10**12)
    fast, failed = simple_trace("fast"), simple_trace("failed", child_status="error")
    slow = simple_trace("slow", duration=2 * SECOND)
    await write(store, [*fast, *failed, *slow])
    await store.finalize(["fast", "failed", "slow"], now_us=NOW, sampler=Sampler(rate=0.0, slow_us=SECOND))
    assert await store.get_trace("fast") is None  # dropped
    assert (await stored(store, "failed")).state == "finalized"  # failed traces are always kept
    assert (await stored(store, "slow")).state == "finalized"  # so are slow ones
    assert sorted(await search(store)) == ["failed", "slow"]
    stats = await store.stats()
    assert (stats.total_traces, stats.completed_traces, stats.failed_traces, stats.active_traces) == (3, 2, 1, 0)
    assert await rollups_of(store) == expected_rollups({"fast": fast, "failed": failed, "slow": slow})

    # a late span of a dropped trace is dropped too: nothing reopens, nothing is counted twice
    late = span("fast", "late", parent="root", start=T0 + MS, duration=MS)
    assert (await write(store, [late], now=NOW + SECOND)).spans_changed == 0
    assert await store.due_traces([SHARD], NOW + 10 * IDLE, 10) == []
    assert await store.get_trace("fast") is None
    assert await store.finalize(["fast"], now_us=NOW + 2 * SECOND, sampler=drop_all) == []
    assert await rollups_of(store) == expected_rollups({"fast": fast, "failed": failed, "slow": slow})

    # retention purges dropped traces as well, and takes their share out of the rollups
    assert await store.purge(T0 + HOUR) == 3
    stats = await store.stats()
    assert stats.total_traces == 0
    assert await rollups_of(store) == expected_rollups({})
