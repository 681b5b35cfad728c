"""The read side: builds the API's response shapes from the store's Structs (milliseconds out).

A finalized trace is served from the analysis stored at finalization; an active one (no stored analysis
yet) is analyzed on the fly from its stored spans. No SQL here: only the :class:`TraceStore` Protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from shared.analysis import TraceAnalysis, TreeNode, analyze, ms, span_tree
from shared.clock import now_us
from shared.models import STATUS_OF, Span, flat_tags
from shared.store.base import StoredTrace, TraceQuery, TraceStatus, TraceStore, Window

from .errors import NotFound
from .monitoring import window_view
from .shapes import (
    AnalysisView,
    LogView,
    PipelineView,
    ServiceStatsView,
    SlowTraceView,
    SpanView,
    StatsView,
    TraceSummaryView,
    TraceView,
    Visualization,
    VisualNode,
    WorkerView,
)

Clock = Callable[[], int]
"""Microseconds since the Unix epoch."""

HEARTBEAT_WINDOW_US: Final = 30_000_000
"""``/stats`` reports the workers whose last heartbeat is newer than this."""
ANALYZE_INLINE_MAX_SPANS: Final = 500
"""Active traces larger than this are analyzed in a worker thread (10k spans take ~0.1 s), so the event
loop keeps answering other requests meanwhile."""


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


class QueryService:
    """Answers the read endpoints from a :class:`TraceStore`."""

    def __init__(self, store: TraceStore, *, clock: Clock = now_us, slowest: int = 5) -> None:
        self._store = store
        self._clock = clock
        self._slowest = slowest

    async def _load(self, trace_id: str) -> tuple[StoredTrace, TraceAnalysis, TraceStatus]:
        """The stored trace, its analysis and status; :class:`NotFound` when no span of it is stored."""
        stored = await self._store.get_trace(trace_id)
        if stored is None or not stored.spans:
            raise NotFound(f"trace {trace_id} not found")
        if stored.state == "finalized" and stored.analysis is not None:
            analysis = stored.analysis
            status: TraceStatus = "failed" if analysis.failed else "completed"
        else:
            if len(stored.spans) > ANALYZE_INLINE_MAX_SPANS:
                analysis = await asyncio.to_thread(analyze, trace_id, stored.spans)
            else:
                analysis = analyze(trace_id, stored.spans)
            status = "active"
        return stored, analysis, status

    async def trace(self, trace_id: str) -> TraceView:
        stored, analysis, status = await self._load(trace_id)
        root: Span | None = None
        others: list[Span] = []
        for span in stored.spans:
            if span.span_id == analysis.root_span_id:
                root = span
            else:
                others.append(span)
        others.sort(key=lambda s: (s.start_time_us, s.span_id))
        completeness = stored.completeness
        return TraceView(
            trace_id=trace_id,
            root_span=None if root is None else span_view(root),
            spans=[span_view(span) for span in others],
            service_calls=analysis.span_count,
            duration=ms(analysis.duration_us),
            start_time=ms(analysis.start_us),
            status=status,
            complete=analysis.complete,
            orphan_spans=analysis.orphan_spans,
            late_spans=completeness.late_spans,
            open_spans=analysis.open_spans,
            finalized_at=_ms_or_none(completeness.finalized_at_us),
            refinalizations=completeness.refinalizations,
        )

    async def search(self, query: TraceQuery) -> list[TraceSummaryView]:
        return [
            TraceSummaryView(
                trace_id=s.trace_id,
                service_name=s.root_service,
                operation_name=s.root_operation,
                start_time=ms(s.start_us),
                duration=ms(s.duration_us),
                service_calls=s.span_count,
                status=s.status,
                error_count=s.error_count,
                services=s.services,
                complete=s.complete,
            )
            for s in await self._store.find_traces(query)
        ]

    async def visualize(self, trace_id: str) -> Visualization:
        stored, analysis, _ = await self._load(trace_id)
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
        )

    async def analysis(self, trace_id: str) -> AnalysisView:
        stored, analysis, status = await self._load(trace_id)
        completeness = stored.completeness
        return AnalysisView(
            trace_id=trace_id,
            total_duration=ms(analysis.duration_us),
            service_calls=analysis.span_count,
            bottlenecks=analysis.bottlenecks,
            service_breakdown=analysis.service_breakdown,
            critical_path=analysis.critical_path,
            critical_path_segments=analysis.critical_path_segments,
            critical_path_duration=analysis.critical_path_duration,
            status=status,
            complete=analysis.complete,
            orphan_spans=analysis.orphan_spans,
            late_spans=completeness.late_spans,
            open_spans=analysis.open_spans,
            finalized_at=_ms_or_none(completeness.finalized_at_us),
            refinalizations=completeness.refinalizations,
            dependencies=analysis.dependencies,
        )

    async def stats(self, window: Window | None = None) -> StatsView:
        stats = await self._store.stats(slowest=self._slowest, window=window)
        beats = await self._store.heartbeats(newer_than_us=self._clock() - HEARTBEAT_WINDOW_US)
        finalized = stats.completed_traces + stats.failed_traces
        workers = [
            WorkerView(
                worker_id=b.worker_id,
                partitions=b.partitions,
                lag=b.lag,
                spans_per_second=b.spans_per_second,
                spans_total=b.spans_total,
                late_spans=b.late_spans,
                dead_lettered=b.dead_lettered,
                traces_finalized=b.traces_finalized,
                updated_at=ms(b.updated_at_us),
            )
            for b in beats
        ]
        return StatsView(
            total_traces=stats.total_traces,
            active_traces=stats.active_traces,
            completed_traces=stats.completed_traces,
            failed_traces=stats.failed_traces,
            avg_duration=ms(stats.total_duration_us / finalized) if finalized else 0.0,
            slowest_traces=[SlowTraceView(trace_id=s.trace_id, duration=ms(s.duration_us)) for s in stats.slowest],
            service_stats={
                service: ServiceStatsView(
                    count=s.count,
                    avg_duration=ms(s.total_duration_us / s.count) if s.count else 0.0,
                    error_count=s.error_count,
                    p50=ms(s.percentile_us(0.50)),
                    p95=ms(s.percentile_us(0.95)),
                    p99=ms(s.percentile_us(0.99)),
                )
                for service, s in stats.services.items()
            },
            pipeline=PipelineView(
                workers=workers,
                total_lag=sum(sum(b.lag.values()) for b in beats),
                spans_per_second=round(float(sum(b.spans_per_second for b in beats)), 3),
                dead_lettered=sum(b.dead_lettered for b in beats),
                late_spans=sum(b.late_spans for b in beats),
            ),
            window=window_view(stats.window),
        )

    async def check(self) -> None:
        """Raise if the store cannot answer."""
        await self._store.check()
