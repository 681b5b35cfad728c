"""Span lists for the equivalence tests: hypothesis strategies of hostile and of well-formed traces, and
a few big shapes (10k spans: deep, wide, a cycle, random links, the demo traffic)."""

from __future__ import annotations

import functools
import random
from typing import Any

import msgspec
from hypothesis import strategies as st

from shared.demo import make_trace
from shared.models import Kind, Span, StatusInput

T0 = 1_732_500_000_000_000
KINDS: list[Kind | None] = [None, "server", "client", "producer", "consumer", "internal"]
STATUSES: list[StatusInput] = ["success", "error", "ok", "failed"]


@st.composite
def hostile_traces(draw: st.DrawFn) -> list[Span]:
    """Small traces with every awkward feature: ties in start and end, duplicates, cycles, self-parents,
    orphans, several parentless spans, open spans, producer/consumer pairs, zero lengths, huge values."""
    n = draw(st.integers(1, 40))
    scale = draw(st.sampled_from([3, 50, 1000, 2**52]))  # small scales force ties
    ids = draw(st.sampled_from(["plain", "mixed"]))
    names = [f"s{i}" if ids == "plain" else f"{'x' * (i % 3)}{i * 7 % 11}-{i}" for i in range(n)]
    spans: list[Span] = []
    for i in range(n):
        link = draw(st.sampled_from(["tree", "tree", "tree", "tree", "tree", "none", "any", "self", "missing"]))
        if link == "tree":
            parent: str | None = names[draw(st.integers(0, i - 1))] if i else None
        elif link == "any":
            parent = names[draw(st.integers(0, n - 1))]
        elif link == "self":
            parent = names[i]
        elif link == "missing":
            parent = "gone"
        else:
            parent = None
        spans.append(
            Span(
                trace_id="t",
                span_id=names[i],
                parent_span_id=parent,
                service_name=draw(st.sampled_from(["api", "users", "db", "queue", "a:b"])),
                operation_name=draw(st.sampled_from(["get", "put"])),
                start_time_us=draw(st.integers(0, scale)),
                duration_us=draw(st.none() | st.integers(0, scale)),
                kind=draw(st.sampled_from(KINDS)),
                status=draw(st.sampled_from(STATUSES)),
            )
        )
    for i in draw(st.lists(st.integers(0, n - 1), max_size=4)):
        spans.append(
            msgspec.structs.replace(
                spans[i],
                duration_us=draw(st.none() | st.integers(0, scale)),
                parent_span_id=draw(st.sampled_from([spans[i].parent_span_id, None, names[0]])),
            )
        )
    if draw(st.booleans()):
        spans = draw(st.permutations(spans))
    return spans


@st.composite
def nested_traces(draw: st.DrawFn) -> list[Span]:
    """Well-formed trees whose children mostly lie inside their parent (the common shape), in any order."""
    n = draw(st.integers(1, 60))
    windows = [(0, draw(st.integers(1, 10**6)))]
    root = Span(
        trace_id="t",
        span_id="r",
        service_name="gw",
        operation_name="in",
        start_time_us=T0,
        duration_us=windows[0][1],
        kind="server",
    )
    spans = [root]
    for i in range(1, n):
        parent = draw(st.integers(0, i - 1))
        start, end = windows[parent]
        kid_start = draw(st.integers(start, end))
        kid_end = draw(st.integers(kid_start, end + draw(st.sampled_from([0, 0, 0, 10]))))
        windows.append((kid_start, kid_end))
        spans.append(
            Span(
                trace_id="t",
                span_id=f"k{i}",
                parent_span_id="r" if parent == 0 else f"k{parent}",
                service_name=draw(st.sampled_from(["gw", "users", "db", "cache"])),
                operation_name="op",
                start_time_us=T0 + kid_start,
                duration_us=kid_end - kid_start,
                kind=draw(st.sampled_from(KINDS)),
                status=draw(st.sampled_from(["success", "success", "error"])),
            )
        )
    return draw(st.permutations(spans)) if draw(st.booleans()) else spans


@functools.cache
def big_shapes() -> dict[str, list[Span]]:
    def span(span_id: str, parent: str | None, start: int, duration: int | None, **extra: Any) -> Span:
        return Span(
            trace_id="t",
            span_id=span_id,
            parent_span_id=parent,
            service_name=extra.pop("service", "svc"),
            operation_name="op",
            start_time_us=T0 + start,
            duration_us=duration,
            **extra,
        )

    rng = random.Random(7)
    n = 10_000
    return {
        "chain": [span(f"s{i}", f"s{i - 1}" if i else None, i, 2 * (n - i), service=f"svc{i % 5}") for i in range(n)],
        "deep chains": [span("root", None, 0, 10_000_000)]
        + [
            span(f"c{c}-{i}", "root" if i == 0 else f"c{c}-{i - 1}", c * 1_000_000 + i * 500, (1000 - i) * 1000)
            for c in range(10)
            for i in range(1000)
        ],
        "wide": [span("root", None, 0, 1_000_000)]
        + [span(f"k{i}", "root", (i * 37) % 1000 * 1000, (i * 101) % 50 * 1000, service=f"s{i % 7}") for i in range(n)],
        "cycle": [span(f"s{i}", f"s{(i + 1) % n}", i, 1000) for i in range(n)],
        "random": [
            span(
                f"r{i}",
                rng.choice([None, "gone", f"r{rng.randrange(n)}", f"r{rng.randrange(i + 1)}"]),
                rng.randrange(10**6),
                rng.choice([None, rng.randrange(10**5)]),
                kind=rng.choice(KINDS),
                service=rng.choice(["a", "b", "c"]),
            )
            for i in range(n)
        ],
        "demo concatenated": [s for i in range(700) for s in make_trace(rng, T0 + i * 10)],
    }
