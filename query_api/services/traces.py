"""The trace reads of the seed API: one trace, its tree, its analysis, and trace search (milliseconds out).

A finalized trace is served from the analysis stored at finalization; an active one (no stored analysis
yet) is analyzed on the fly from its stored spans. A trace with no stored span is :class:`NotFound`. Traces
are read through both tiers (:class:`~shared.archive.tiered.TieredReads`); each answer says which one
(``tier``).
"""

from __future__ import annotations

from typing import Any

from shared.analysis import TraceAnalysis, TreeNode, analyze_aside, ms, span_tree
from shared.archive.tiered import Tier, TieredReads
from shared.models import STATUS_OF, Span, flat_tags
from shared.store.base import StoredTrace, TraceQuery, TraceStatus

from ..errors import NotFound
from ..shapes import (
    AnalysisView,
    LogView,
    SpanView,
    TraceSummaryView,
    TraceView,
    Visualization,
    VisualNode,
    shape_of,
)


def _ms_or_none(us: int | None) -> float | None:
    return None if us is None else ms(us)


def span_view(span: Span) -> SpanView:
    return SpanView(
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        service_name=span.service_name,
        operation_name=span.operation_name,
        start_time=ms(span.start_time_us),
        duration=_ms_or_none(span.duration_us),
        status=STATUS_OF[span.status],
        kind=span.kind,
        tags=flat_tags(span),  # resource attributes and scope merged in, as the seed API always showed them
        logs=[LogView(timestamp=ms(log.timestamp_us), fields=log.fields) for log in span.logs],
    )


def _visual_node(span: Span, trace_start_us: int) -> VisualNode:
    return VisualNode(
        span_id=span.span_id,
        service_name=span.service_name,
        operation_name=span.operation_name,
        duration=_ms_or_none(span.duration_us),
        start_offset=ms(span.start_time_us - trace_start_us),
        status=STATUS_OF[span.status],
        children=[],
    )


def visual_tree(root: TreeNode, trace_start_us: int) -> VisualNode:
    """The :class:`VisualNode` tree of ``root``, built iteratively (depth does not matter)."""
    top = _visual_node(root.span, trace_start_us)
    stack = [(root, top)]
    while stack:
        node, visual = stack.pop()
        for child in node.children:
            child_visual = _visual_node(child.span, trace_start_us)
            visual.children.append(child_visual)
            stack.append((child, child_visual))
    return top


def _completeness(stored: StoredTrace, analysis: TraceAnalysis, status: TraceStatus) -> dict[str, Any]:
    """The completeness fields :class:`TraceView` and :class:`AnalysisView` share."""
    completeness = stored.completeness
    return {
        "status": status,
        "complete": analysis.complete,
        "orphan_spans": analysis.orphan_spans,
        "late_spans": completeness.late_spans,
        "open_spans": analysis.open_spans,
        "finalized_at": _ms_or_none(completeness.finalized_at_us),
        "refinalizations": completeness.refinalizations,
    }


class TraceService:
    """One trace (as spans, a tree or an analysis) and trace search, through both tiers."""

    def __init__(self, reads: TieredReads) -> None:
        self._reads = reads

    async def _load(self, trace_id: str) -> tuple[StoredTrace, TraceAnalysis, TraceStatus, Tier]:
        """The stored trace, its analysis, status and tier; :class:`NotFound` when no span of it is stored."""
        found = await self._reads.get_trace(trace_id)
        if found is None:
            raise NotFound(f"trace {trace_id} not found")
        stored = found.trace
        if stored.state == "finalized" and stored.analysis is not None:
            analysis = stored.analysis
            status: TraceStatus = "failed" if analysis.failed else "completed"
        else:
            analysis = await analyze_aside(trace_id, stored.spans)
            status = "active"
        return stored, analysis, status, found.tier

    async def trace(self, trace_id: str) -> TraceView:
        """The trace: its root span apart, the other spans by start time (then span id), completeness."""
        stored, analysis, status, tier = await self._load(trace_id)
        root: Span | None = None
        others: list[Span] = []
        for span in stored.spans:
            if span.span_id == analysis.root_span_id:
                root = span
            else:
                others.append(span)
        others.sort(key=lambda s: (s.start_time_us, s.span_id))
        return TraceView(
            trace_id=trace_id,
            root_span=None if root is None else span_view(root),
            spans=[span_view(span) for span in others],
            service_calls=analysis.span_count,
            duration=ms(analysis.duration_us),
            start_time=ms(analysis.start_us),
            tier=tier,
            **_completeness(stored, analysis, status),
        )

    async def search(self, query: TraceQuery) -> list[TraceSummaryView]:
        """The summaries of the traces matching ``query``, newest first (the store's order)."""
        return [
            shape_of(
                TraceSummaryView,
                s,
                service_name=s.root_service,
                operation_name=s.root_operation,
                start_time=ms(s.start_us),
                duration=ms(s.duration_us),
                service_calls=s.span_count,
                tier=tier,
            )
            for s, tier in await self._reads.find_traces(query)
        ]

    async def visualize(self, trace_id: str) -> Visualization:
        """The span tree from the trace's root span, and the trees of its other roots as orphans."""
        stored, analysis, _, tier = await self._load(trace_id)
        trees = span_tree(stored.spans)
        start = analysis.start_us
        main: VisualNode | None = None
        if trees and analysis.root_span_id is not None and trees[0].span.span_id == analysis.root_span_id:
            main = visual_tree(trees[0], start)
            trees = trees[1:]
        return Visualization(
            trace_id=trace_id,
            duration=ms(analysis.duration_us),
            service_calls=analysis.span_count,
            tree=main,
            orphans=[visual_tree(tree, start) for tree in trees],
            tier=tier,
        )

    async def analysis(self, trace_id: str) -> AnalysisView:
        """The trace's analysis: stored at finalization, computed on the fly while the trace is active."""
        stored, analysis, status, tier = await self._load(trace_id)
        return shape_of(
            AnalysisView,
            analysis,
            trace_id=trace_id,
            tier=tier,
            total_duration=ms(analysis.duration_us),
            service_calls=analysis.span_count,
            **_completeness(stored, analysis, status),
        )

    async def check(self) -> None:
        """Raise if the store cannot answer."""
        await self._reads.store.check()
