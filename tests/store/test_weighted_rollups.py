"""Rollups under head sampling, on every backend: each trace counts with its adjusted count (1 / the
probability its producer sampled it with) in every series, ``/stats`` keeps the traces received beside
the estimates, and re-finalization and purge take a trace's weight out exactly. Probabilities here are
powers of two, so the expected adjusted counts are exact integers computed from the spans' tags."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from shared.models import Span, TagValue
from shared.sampling import Sampler, endpoint_rates
from shared.store import TraceStore
from shared.store.base import Unseen, Window
from shared.store.sketch import bin_of
from tests.store.test_contract import MS, NOW, SECOND, finalize_one, simple_trace, span, write
from tests.store.test_rollups import BASE, HOUR, MINUTE, finalize_all

PROBABILISTIC = "probabilistic"


def sampled_trace(
    trace_id: str, start: int, weight: int, *, error: bool = False, tracestate: bool = False
) -> list[Span]:
    """api -> db, sampled at 1/weight: by the Jaeger attributes or by the tracestate threshold."""
    tags: dict[str, TagValue] = {}
    if weight > 1 and not tracestate:
        tags = {"jaeger.sampler.type": PROBABILISTIC, "jaeger.sampler.param": 1 / weight}
    trace = simple_trace(trace_id, start=start, child_status="error" if error else "success", root_tags=tags)
    if tracestate and weight > 1:
        threshold = (1 << 56) - (1 << 56) // weight  # p = 1 / weight
        digits = format(threshold, "014x").rstrip("0") or "0"
        trace = [s if s.parent_span_id else _with_state(s, f"ot=th:{digits}") for s in trace]
    return trace


def _with_state(s: Span, state: str) -> Span:
    return msgspec.structs.replace(s, trace_state=state)


TRACES: list[tuple[str, int, int, bool]] = [
    # (trace id, start offset, weight, failed)
    ("w1", 0, 4, False),
    ("w2", 10 * SECOND, 4, True),
    ("w3", 20 * SECOND, 2, False),
    ("w4", MINUTE + 5 * SECOND, 1, False),
    ("w5", MINUTE + 6 * SECOND, 8, False),
    ("w6", 2 * HOUR, 16, True),
]


def build() -> list[list[Span]]:
    return [
        sampled_trace(tid, BASE + offset, weight, error=failed, tracestate=i % 2 == 1)
        for i, (tid, offset, weight, failed) in enumerate(TRACES)
    ]


def expected(picked: Sequence[tuple[str, int, int, bool]]) -> dict[str, int]:
    return {
        "completed": sum(1 for *_, failed in picked if not failed),
        "failed": sum(1 for *_, failed in picked if failed),
        "estimated_completed": sum(w for _, _, w, failed in picked if not failed),
        "estimated_failed": sum(w for _, _, w, failed in picked if failed),
    }


async def stats_figures(store: TraceStore, window: Window | None = None) -> dict[str, int]:
    stats = await store.stats(window=window)
    return {
        "completed": stats.completed_traces,
        "failed": stats.failed_traces,
        "estimated_completed": stats.estimated_completed_traces,
        "estimated_failed": stats.estimated_failed_traces,
    }


async def test_every_series_counts_each_trace_with_its_adjusted_count(store: TraceStore) -> None:
    await finalize_all(store, build())
    assert await stats_figures(store) == expected(TRACES)
    stats = await store.stats()
    total = sum(w for _, _, w, _ in TRACES)
    assert stats.estimated_total_traces == total and stats.total_traces == len(TRACES)
    # spans: each trace has one api span and one db span (the db span fails in a failed trace)
    assert stats.services["api"].count == total and stats.services["db"].count == total
    assert stats.services["db"].error_count == sum(w for *_, w, failed in TRACES if failed)
    assert stats.unseen["api"] == Unseen(
        traces=total - len(TRACES), failed=sum(w - 1 for *_, w, f in TRACES if f), spans=total - len(TRACES)
    )
    assert stats.unseen["db"].spans == total - len(TRACES) and stats.unseen["db"].traces == 0
    assert stats.total_duration_us == total * 10 * MS
    endpoints = await store.rollups("endpoints", None)
    assert [(r.key, r.count, r.bins) for r in endpoints] == [(("api", "GET /"), total, {bin_of(10 * MS): total})]
    ops = await store.rollups("operations", None)
    assert sorted((r.key[0], r.count, sum(r.bins.values())) for r in ops) == [
        ("api", total, total),
        ("db", total, total),
    ]
    deps = await store.dependencies(0)
    assert [(d.parent, d.child, d.calls) for d in deps] == [("api", "db", total)]
    assert sum(row.traces for row in await store.critical_contexts(None) if len(row.path) == 1) == total


async def test_windows_and_steps_count_the_weights_of_their_traces(store: TraceStore) -> None:
    traces = build()
    await write(store, [s for t in traces for s in t])
    await store.finalize([t[0].trace_id for t in traces], now_us=NOW, sampler=Sampler(rate=0.0, slow_us=HOUR))
    assert await stats_figures(store) == expected(TRACES)  # sampled out at the tail, counted all the same
    first_hour = Window(start_us=BASE, end_us=BASE + HOUR)
    assert await stats_figures(store, first_hour) == expected(TRACES[:5])
    steps = await store.rollups("endpoints", Window(start_us=BASE, end_us=BASE + 2 * MINUTE), step_us=MINUTE)
    assert [(r.t_us, r.count) for r in steps] == [(BASE, 10), (BASE + MINUTE, 9)]


async def test_refinalization_and_purge_take_the_weight_out_exactly(store: TraceStore) -> None:
    await finalize_all(store, build())
    # a late span of w1 (weight 4) re-finalizes it: its old contribution goes, the new one comes
    late = span("w1", "late", parent="root", service="cache", start=BASE + SECOND, duration=MS)
    await write(store, [late], now=NOW + SECOND)
    await finalize_one(store, "w1", now=NOW + 2 * SECOND)
    stats = await store.stats()
    assert await stats_figures(store) == expected(TRACES)
    assert stats.services["cache"].count == 4 and stats.unseen["cache"] == Unseen(spans=3)
    assert await store.purge(BASE + HOUR) == 5
    assert await stats_figures(store) == expected(TRACES[5:])
    left = await store.stats()
    assert set(left.unseen) == {"api", "db"} and left.unseen["api"].traces == 15
    assert await store.purge(BASE + 3 * HOUR) == 1
    empty = await store.stats()
    assert empty.unseen == {} and empty.estimated_total_traces == 0 and empty.services == {}


async def test_the_tail_samplers_endpoint_rates_are_the_ordinary_traffic_of_the_last_whole_minutes(
    store: TraceStore,
) -> None:
    now = BASE + 10 * MINUTE + 30 * SECOND  # the rates read minutes 5..9
    inside = [
        sampled_trace("r1", BASE + 5 * MINUTE, 4),
        sampled_trace("r2", BASE + 9 * MINUTE + 59 * SECOND, 2, tracestate=True),
        sampled_trace("r3", BASE + 7 * MINUTE, 8, error=True),  # failed: not ordinary traffic
    ]
    outside = [sampled_trace("o1", BASE + 4 * MINUTE, 16), sampled_trace("o2", BASE + 10 * MINUTE, 16)]
    await finalize_all(store, [*inside, *outside])
    assert await endpoint_rates(store, now) == {("api", "GET /"): (4 + 2) / 300}
    sampler = Sampler(rate=1.0, slow_us=HOUR, target_tps=0.01, refresh_s=60)
    await sampler.refresh(store, now)
    assert sampler.rates == {("api", "GET /"): (4 + 2) / 300} and sampler.read_at_us == now
    await sampler.refresh(store, now + 59 * SECOND)  # held for refresh_s
    assert sampler.read_at_us == now
