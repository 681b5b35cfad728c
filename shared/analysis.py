"""Trace analysis: pure functions from a trace's spans to its summary (no I/O, no clock, no logging).

The contract is the "Analysis" section of docs/architecture.md. In short:

* Duplicate span ids: the last one wins. Open spans (no duration yet) count as zero-length at their start.
* The span tree: the main root (no parent, earliest start) first, then extra roots by start time: other
  parentless spans, orphans (parent missing or the span itself) and one member of each parent-link cycle
  (the earliest one; the link into it is cut). Every span appears exactly once.
* The sanitized tree, shared by self time, service breakdown, bottlenecks and the critical path: from a
  root down, each child is clipped to its parent's clipped window, and a child entirely outside that window
  is dropped with its subtree (for timing only; it still counts as a span). A CONSUMER child of a PRODUCER
  span is async work: it is not a child for its parent's purposes but the root of a subtree of its own,
  sanitized within its own window. Extra roots are clipped to the trace window when a main root exists.
* Self time: a span's clipped duration minus the union of its synchronous children's clipped intervals.
* Critical path: the Jaeger UI definition, over the sanitized main tree only.

Everything is iterative (no Python recursion) and O(n log n), so 1000-deep and 10k-span traces are fine.

The work lives in :mod:`shared.analysis_core` (one plain object per span, integer microseconds; compiled
with mypyc when a C compiler is available, loaded through :mod:`shared.compiled` so that a stale build is
never used), which builds the result Structs defined here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, cast

import msgspec

from shared.compiled import load_fresh
from shared.models import Span

if TYPE_CHECKING:
    from shared import analysis_core as core
else:
    core = load_fresh("shared.analysis_core")
"""The loaded core: its compiled build when that is fresh, else its source. The store's finalization
(rollup shares, critical-path contexts) uses it too."""

__all__ = [
    "SPAN_LAYOUT",
    "Bottleneck",
    "CriticalSegment",
    "Dependency",
    "TraceAnalysis",
    "TreeNode",
    "analyze",
    "core",
    "ms",
    "span_tree",
]

BOTTLENECK_SHARE_PERCENT: Final = 10
"""A span is a bottleneck when its self time is strictly more than this share of the trace duration."""


class Bottleneck(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    """A span whose own work (self time) takes a large share of the trace."""

    span: str
    """``service:operation``."""
    span_id: str
    duration: float
    """Milliseconds: the span's clipped duration."""
    self_time: float
    """Milliseconds."""
    percentage: float
    """Self time / trace duration × 100, 2 decimals."""


class CriticalSegment(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    """A section of the critical path owned by one span, in milliseconds relative to the trace start."""

    span_id: str
    span: str
    start: float
    end: float


class Dependency(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    """Calls from spans of one service to child spans of another, within one trace."""

    parent: str
    child: str
    calls: int
    errors: int
    """Child spans with status error."""


class TraceAnalysis(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    """Everything the analysis derives from one trace's spans."""

    trace_id: str
    root_span_id: str | None
    root_service: str | None
    root_operation: str | None
    start_us: int
    duration_us: int
    span_count: int
    error_count: int
    failed: bool
    complete: bool
    orphan_spans: int
    open_spans: int
    services: list[str]
    operations: list[tuple[str, str]]
    bottlenecks: list[Bottleneck]
    service_breakdown: dict[str, float]
    critical_path: list[str]
    critical_path_segments: list[CriticalSegment]
    critical_path_duration: float
    dependencies: list[Dependency]


class TreeNode(msgspec.Struct, kw_only=True, rename="camel"):
    """A span and its children (sorted by start time, then span id)."""

    span: Span
    children: list[TreeNode]


def ms(us: int | float) -> float:
    """Microseconds to milliseconds, rounded to 3 decimals.

    For an int, ``us / 1000`` is already the double nearest to the exact 3-decimal value (IEEE division is
    correctly rounded), which is what ``round`` would return: the fast path skips it (a hot line).
    """
    return us / 1000 if type(us) is int else round(us / 1000, 3)


SPAN_LAYOUT: Final = core.SpanLayout(msgspec.structs.astuple, Span.__struct_fields__)
"""How the core reads a :class:`~shared.models.Span`: all fields with one ``astuple`` call, by position."""
_RESULT_TYPES: Final = core.ResultTypes(
    analysis=TraceAnalysis, bottleneck=Bottleneck, segment=CriticalSegment, dependency=Dependency
)


def span_tree(spans: Sequence[Span]) -> list[TreeNode]:
    """The trace as a forest of :class:`TreeNode`.

    Roots: the main root (if any), then the orphan and extra roots by start time. Every distinct span
    appears exactly once; cycles are broken. Built iteratively, so depth does not matter.
    """
    forest = core.Forest(spans, SPAN_LAYOUT)
    tree = {node.position: TreeNode(span=cast(Span, node.span), children=[]) for node in forest.nodes}
    for node in forest.nodes:
        if node.children:
            tree[node.position].children = [tree[kid.position] for kid in node.children]
    return [tree[root.position] for root in forest.roots]


def analyze(trace_id: str, spans: Sequence[Span]) -> TraceAnalysis:
    """The analysis of one trace (see the module docstring for the definitions)."""
    return cast(TraceAnalysis, core.analyze(trace_id, spans, SPAN_LAYOUT, BOTTLENECK_SHARE_PERCENT, _RESULT_TYPES))


ANALYZE_INLINE_MAX_SPANS: Final = 500
"""Traces larger than this are analyzed in a worker thread by :func:`analyze_aside`."""


async def analyze_aside(trace_id: str, spans: Sequence[Span]) -> TraceAnalysis:
    """:func:`analyze` from a coroutine: in a worker thread when the trace is large, so the event loop
    keeps answering other requests meanwhile."""
    if len(spans) > ANALYZE_INLINE_MAX_SPANS:
        return await asyncio.to_thread(analyze, trace_id, spans)
    return analyze(trace_id, spans)


class _Forest:
    """An id-keyed view of :class:`shared.analysis_core.Forest`, for inspection and tests.

    ``by_id`` (the winning span per id), ``children`` (ids, sorted; only spans that have some), ``parent``
    (child id -> parent id, cut cycle links excluded), ``roots``, ``main_root`` (an id or None) and
    ``orphan_count``, as the analysis sees them.
    """

    def __init__(self, spans: Sequence[Span]) -> None:
        self.core = core.Forest(spans, SPAN_LAYOUT)
        nodes = self.core.nodes
        self.by_id = {node.span_id: cast(Span, node.span) for node in nodes}
        self.children = {node.span_id: [kid.span_id for kid in node.children] for node in nodes if node.children}
        self.parent = {node.span_id: nodes[node.parent].span_id for node in nodes if node.parent >= 0}
        self.roots = [root.span_id for root in self.core.roots]
        self.main_root = self.core.main_root.span_id if self.core.main_root is not None else None
        self.orphan_count = self.core.orphan_count


class _Timing:
    """An id-keyed view of :class:`shared.analysis_core.Timing`, for inspection and tests.

    ``window`` (clipped window), ``kids`` (kept synchronous children in start order; only spans that have
    some) and ``self_us`` of every span in a sanitized tree; ``main`` and ``side``: the ids of the main tree
    and of the extra roots' trees; ``critical_path(root_id)``: ``(span_id, start, end)`` in time order.
    """

    def __init__(self, forest: _Forest, trace_start: int, trace_end: int) -> None:
        timing = core.Timing(forest.core, trace_start, trace_end)
        self.nodes = {node.span_id: node for node in forest.core.nodes}
        sanitized = [*timing.main, *timing.side, *timing.async_spans]
        self.main = [node.span_id for node in timing.main]
        self.side = [node.span_id for node in timing.side]
        self.window = {node.span_id: (node.window_start, node.window_end) for node in sanitized}
        self.kids = {node.span_id: [kid.span_id for kid in node.kept] for node in sanitized if node.kept}
        self.self_us = {node.span_id: node.self_us for node in sanitized}

    def critical_path(self, root_id: str) -> list[tuple[str, int, int]]:
        return [(node.span_id, start, end) for node, start, end in core.critical_path(self.nodes[root_id])]
