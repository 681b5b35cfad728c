"""FROZEN TEST ORACLE: the trace analysis exactly as it was before the speed rewrite. Do not change what it computes.

A copy of ``shared/analysis.py`` (below this header) from before its rewrite for speed (its two longest
functions since cut into parts, computing exactly what they did), kept only
as the reference the rewritten ``shared.analysis`` must equal, field for field and float for float, on every
input (``tests/unit/test_analysis_equivalence.py``). It is the straightforward formulation of the
definitions, and slow. Never import it outside the tests (and the "before" column of bench/analysis.py);
if the analysis contract itself changes, change the contract tests and retire this file rather than
editing it.

The original module docstring:

Trace analysis: pure functions from a trace's spans to its summary (no I/O, no clock, no logging).

The contract is the "Analysis" section of the design page. In short:

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
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Final

import msgspec

from shared.models import Span

__all__ = [
    "Bottleneck",
    "CriticalSegment",
    "Dependency",
    "TraceAnalysis",
    "TreeNode",
    "analyze",
    "ms",
    "span_tree",
]

BOTTLENECK_SHARE_PERCENT: Final = 10
"""A span is a bottleneck when its self time is strictly more than this share of the trace duration."""


class Bottleneck(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
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


class CriticalSegment(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A section of the critical path owned by one span, in milliseconds relative to the trace start."""

    span_id: str
    span: str
    start: float
    end: float


class Dependency(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Calls from spans of one service to child spans of another, within one trace."""

    parent: str
    child: str
    calls: int
    errors: int
    """Child spans with status error."""


class TraceAnalysis(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
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


def _label(span: Span) -> str:
    return f"{span.service_name}:{span.operation_name}"


def _duration(span: Span) -> int:
    """The span's duration for the analysis: open (or nonsensical negative) durations count as zero."""
    duration = span.duration_us
    return 0 if duration is None or duration < 0 else duration


def _end(span: Span) -> int:
    return span.start_time_us + _duration(span)


def _is_async(parent: Span, child: Span) -> bool:
    return parent.kind == "producer" and child.kind == "consumer"


def _clip(start: int, end: int, window_start: int, window_end: int) -> tuple[int, int] | None:
    """``[start, end]`` clipped to the window, or None when it lies entirely outside it.

    As in Jaeger's ``sanitizeOverFlowingChildren``: a span starting at or after the window's end, or ending
    at or before its start, is outside; a zero-length span is inside when ``window_start <= start <
    window_end``.
    """
    if start == end:
        return (start, start) if window_start <= start < window_end else None
    clipped_start = max(start, window_start)
    clipped_end = min(end, window_end)
    return (clipped_start, clipped_end) if clipped_start < clipped_end else None


def _cycles_cut(by_id: dict[str, Span]) -> tuple[list[str], int]:
    """(one member per parent-link cycle, whose link is cut, the number of spans in cycles)."""
    # Every span has at most one parent, so the parent links form a functional graph: walking up from
    # any span ends at a parentless span, at an orphan, or in a cycle. Each walk stops at spans already
    # settled by an earlier walk, so this is O(n) in total.
    cut: list[str] = []  # one member per cycle becomes an extra root; its parent link is cut
    cycle_members = 0
    settled: set[str] = set()
    for first in by_id:
        if first in settled:
            continue
        path: list[str] = []
        position: dict[str, int] = {}
        current: str | None = first
        while current is not None and current not in settled:
            if current in position:
                cycle = path[position[current] :]
                cycle_members += len(cycle)
                cut.append(min(cycle, key=lambda sid: (by_id[sid].start_time_us, sid)))
                break
            position[current] = len(path)
            path.append(current)
            parent_id = by_id[current].parent_span_id
            current = parent_id if parent_id is not None and parent_id != current and parent_id in by_id else None
        settled.update(path)
    return cut, cycle_members


class _Forest:
    """The spans of one trace as a forest: deduplicated, cycles broken, children sorted."""

    __slots__ = ("by_id", "children", "main_root", "orphan_count", "parent", "roots")

    def __init__(self, spans: Sequence[Span]) -> None:
        by_id: dict[str, Span] = {}
        for span in spans:
            by_id[span.span_id] = span  # the last duplicate wins
        self.by_id = by_id

        parentless: list[str] = []
        orphans: list[str] = []
        for span_id, span in by_id.items():
            parent_id = span.parent_span_id
            if parent_id is None:
                parentless.append(span_id)
            elif parent_id == span_id or parent_id not in by_id:
                orphans.append(span_id)

        cut, cycle_members = _cycles_cut(by_id)

        cut_set = set(cut)
        children: dict[str, list[str]] = {}
        parent: dict[str, str] = {}
        for span_id, span in by_id.items():
            parent_id = span.parent_span_id
            if parent_id is None or parent_id == span_id or parent_id not in by_id or span_id in cut_set:
                continue
            children.setdefault(parent_id, []).append(span_id)
            parent[span_id] = parent_id
        for kids in children.values():
            kids.sort(key=lambda sid: (by_id[sid].start_time_us, sid))
        self.children = children
        self.parent = parent

        self.main_root: str | None = (
            min(
                parentless,
                key=lambda sid: (by_id[sid].start_time_us, by_id[sid].duration_us is None, sid),
            )
            if parentless
            else None
        )
        extra = [sid for sid in parentless if sid != self.main_root] + orphans + cut
        extra.sort(key=lambda sid: (by_id[sid].start_time_us, sid))
        self.roots: list[str] = ([self.main_root] if self.main_root is not None else []) + extra
        self.orphan_count = len(orphans) + cycle_members


def span_tree(spans: Sequence[Span]) -> list[TreeNode]:
    """The trace as a forest of :class:`TreeNode`.

    Roots: the main root (if any), then the orphan and extra roots by start time. Every distinct span
    appears exactly once; cycles are broken. Built iteratively, so depth does not matter.
    """
    forest = _Forest(spans)
    nodes = {span_id: TreeNode(span=span, children=[]) for span_id, span in forest.by_id.items()}
    for parent_id, kids in forest.children.items():
        nodes[parent_id].children = [nodes[kid] for kid in kids]
    return [nodes[root] for root in forest.roots]


class _Timing:
    """The sanitized forest: clipped windows, kept synchronous children, self times."""

    __slots__ = ("kids", "main", "self_us", "side", "window")

    def __init__(self, forest: _Forest, trace_start: int, trace_end: int) -> None:
        by_id = forest.by_id
        self.window: dict[str, tuple[int, int]] = {}
        self.kids: dict[str, list[str]] = {}  # kept synchronous children, in start order
        self.main: list[str] = []  # spans of the sanitized main tree
        self.side: list[str] = []  # spans of the sanitized extra-root subtrees
        async_spans: list[str] = []  # spans of the sanitized async subtrees

        main_root = forest.main_root
        if main_root is not None:
            root = by_id[main_root]
            self._sanitize(forest, main_root, (root.start_time_us, _end(root)), self.main)
        for root_id in forest.roots:
            if root_id == main_root:
                continue
            span = by_id[root_id]
            if main_root is None:
                window: tuple[int, int] | None = (span.start_time_us, _end(span))
            else:
                window = _clip(span.start_time_us, _end(span), trace_start, trace_end)
            if window is not None:
                self._sanitize(forest, root_id, window, self.side)
        # Async work roots its own subtree wherever its producer is, even if the producer was dropped.
        for child_id, parent_id in forest.parent.items():
            child = by_id[child_id]
            if _is_async(by_id[parent_id], child):
                self._sanitize(forest, child_id, (child.start_time_us, _end(child)), async_spans)

        self.self_us: dict[str, int] = {}
        for span_id in (*self.main, *self.side, *async_spans):
            start, end = self.window[span_id]
            busy = 0
            run_start = run_end = start
            for kid in self.kids.get(span_id, ()):
                kid_start, kid_end = self.window[kid]  # clipped starts keep the start order
                if kid_start > run_end:
                    busy += run_end - run_start
                    run_start, run_end = kid_start, kid_end
                elif kid_end > run_end:
                    run_end = kid_end
            busy += run_end - run_start
            self.self_us[span_id] = end - start - busy

    def _sanitize(self, forest: _Forest, root_id: str, window: tuple[int, int], out: list[str]) -> None:
        by_id = forest.by_id
        self.window[root_id] = window
        stack = [root_id]
        while stack:
            span_id = stack.pop()
            out.append(span_id)
            span = by_id[span_id]
            start, end = self.window[span_id]
            kept: list[str] = []
            for kid in forest.children.get(span_id, ()):
                child = by_id[kid]
                if _is_async(span, child):
                    continue
                clipped = _clip(child.start_time_us, _end(child), start, end)
                if clipped is None:
                    continue
                self.window[kid] = clipped
                kept.append(kid)
            if kept:
                self.kids[span_id] = kept
                stack.extend(kept)

    def critical_path(self, root_id: str) -> list[tuple[str, int, int]]:
        """The Jaeger UI critical path of the sanitized main tree: ``(span_id, start, end)`` in time order.

        Walks backwards from the root's end: a span hands the path to its last-finishing child (owning the
        section from that child's end to the cursor); back from a child, the next candidate is the child
        that ended strictly before the returning child's start; with no candidate left, the span owns the
        section from its own start to the cursor and the walk returns to its parent. Candidate end times
        strictly decrease within a span, so each span is entered at most once.
        """
        window = self.window

        def frame(span_id: str) -> tuple[str, list[str], list[int]]:
            kids = self.kids.get(span_id, [])
            # by end time; among equal ends the earliest in start order is last, so it wins (as in Jaeger)
            order = sorted(range(len(kids)), key=lambda i: (window[kids[i]][1], -i))
            return span_id, [kids[i] for i in order], [window[kids[i]][1] for i in order]

        sections: list[tuple[str, int, int]] = []
        stack = [frame(root_id)]
        cursor = window[root_id][1]
        returning_start: int | None = None
        while stack:
            span_id, by_end, ends = stack[-1]
            index = len(ends) - 1 if returning_start is None else bisect_left(ends, returning_start) - 1
            if index >= 0:
                child_end = ends[index]
                if child_end < cursor:
                    sections.append((span_id, child_end, cursor))
                stack.append(frame(by_end[index]))
                cursor = child_end
                returning_start = None
            else:
                span_start = window[span_id][0]
                if span_start < cursor:
                    sections.append((span_id, span_start, cursor))
                stack.pop()
                cursor = returning_start = span_start
        sections.reverse()
        merged: list[tuple[str, int, int]] = []
        for section in sections:
            if merged and merged[-1][0] == section[0] and merged[-1][2] == section[1]:
                merged[-1] = (section[0], merged[-1][1], section[2])
            else:
                merged.append(section)
        return merged


def _empty(trace_id: str) -> TraceAnalysis:
    """The analysis of a trace without spans."""
    return TraceAnalysis(
        trace_id=trace_id,
        root_span_id=None,
        root_service=None,
        root_operation=None,
        start_us=0,
        duration_us=0,
        span_count=0,
        error_count=0,
        failed=False,
        complete=False,
        orphan_spans=0,
        open_spans=0,
        services=[],
        operations=[],
        bottlenecks=[],
        service_breakdown={},
        critical_path=[],
        critical_path_segments=[],
        critical_path_duration=0.0,
        dependencies=[],
    )


def _bottlenecks(timing: _Timing, by_id: dict[str, Span], duration_us: int) -> list[Bottleneck]:
    """Spans whose self time is over the bottleneck share of the trace, largest first."""
    bottlenecks: list[Bottleneck] = []
    if duration_us > 0:
        candidates = [
            span_id
            for span_id in (*timing.main, *timing.side)
            if timing.self_us[span_id] * 100 > duration_us * BOTTLENECK_SHARE_PERCENT
        ]
        candidates.sort(key=lambda sid: (-timing.self_us[sid], by_id[sid].start_time_us, sid))
        for span_id in candidates:
            start, end = timing.window[span_id]
            self_us = timing.self_us[span_id]
            bottlenecks.append(
                Bottleneck(
                    span=_label(by_id[span_id]),
                    span_id=span_id,
                    duration=ms(end - start),
                    self_time=ms(self_us),
                    percentage=round(self_us / duration_us * 100, 2),
                )
            )
    return bottlenecks


def _dependencies(forest: _Forest) -> list[Dependency]:
    """Calls between services (parent service, child service), with their errors."""
    by_id = forest.by_id
    edges: dict[tuple[str, str], list[int]] = {}
    for child_id, parent_id in forest.parent.items():
        child = by_id[child_id]
        edge = (by_id[parent_id].service_name, child.service_name)
        if edge[0] == edge[1]:
            continue  # calls inside one service are not dependencies between services
        counts = edges.setdefault(edge, [0, 0])
        counts[0] += 1
        counts[1] += child.status == "error"
    dependencies = [
        Dependency(parent=parent, child=child, calls=calls, errors=errors)
        for (parent, child), (calls, errors) in sorted(edges.items())
    ]
    return dependencies


def _critical_path(
    timing: _Timing, forest: _Forest, start_us: int
) -> tuple[list[tuple[str, int, int]], list[CriticalSegment], list[str]]:
    """The critical path's sections (µs), its segments (ms from the trace start) and its labels."""
    by_id = forest.by_id
    sections = timing.critical_path(forest.main_root) if forest.main_root is not None else []
    segments = [
        CriticalSegment(
            span_id=span_id, span=_label(by_id[span_id]), start=ms(start - start_us), end=ms(end - start_us)
        )
        for span_id, start, end in sections
    ]
    critical_path: list[str] = []
    for segment in segments:
        if not critical_path or critical_path[-1] != segment.span:
            critical_path.append(segment.span)
    return sections, segments, critical_path


def analyze(trace_id: str, spans: Sequence[Span]) -> TraceAnalysis:
    """The analysis of one trace (see the module docstring for the definitions)."""
    forest = _Forest(spans)
    by_id = forest.by_id
    if not by_id:
        return _empty(trace_id)

    all_spans = list(by_id.values())
    min_start = min(span.start_time_us for span in all_spans)
    max_end = max(_end(span) for span in all_spans)
    root = by_id[forest.main_root] if forest.main_root is not None else None
    if root is None:
        start_us, duration_us = min_start, max_end - min_start
    elif root.duration_us is None:
        start_us, duration_us = root.start_time_us, max_end - min_start
    else:
        start_us, duration_us = root.start_time_us, _duration(root)

    error_count = sum(1 for span in all_spans if span.status == "error")
    services = sorted({span.service_name for span in all_spans})
    operations = sorted({(span.service_name, span.operation_name) for span in all_spans})

    timing = _Timing(forest, start_us, start_us + duration_us)

    breakdown_us = dict.fromkeys(services, 0)
    for span_id, self_us in timing.self_us.items():
        breakdown_us[by_id[span_id].service_name] += self_us
    service_breakdown = {
        service: ms(total) for service, total in sorted(breakdown_us.items(), key=lambda item: (-item[1], item[0]))
    }

    bottlenecks = _bottlenecks(timing, by_id, duration_us)

    sections, segments, critical_path = _critical_path(timing, forest, start_us)

    dependencies = _dependencies(forest)

    return TraceAnalysis(
        trace_id=trace_id,
        root_span_id=root.span_id if root is not None else None,
        root_service=root.service_name if root is not None else None,
        root_operation=root.operation_name if root is not None else None,
        start_us=start_us,
        duration_us=duration_us,
        span_count=len(all_spans),
        error_count=error_count,
        failed=error_count > 0,
        complete=any(span.parent_span_id is None and span.duration_us is not None for span in all_spans),
        orphan_spans=forest.orphan_count,
        open_spans=sum(1 for span in all_spans if span.duration_us is None),
        services=services,
        operations=operations,
        bottlenecks=bottlenecks,
        service_breakdown=service_breakdown,
        critical_path=critical_path,
        critical_path_segments=segments,
        critical_path_duration=ms(sum(end - start for _, start, end in sections)),
        dependencies=dependencies,
    )
