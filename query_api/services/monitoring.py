"""Monitoring reads: overall statistics with the ingest pipeline's health, per-operation statistics and
time series of a service. All from the time-bucketed rollups (O(buckets in the window), never O(traces))
and the workers' heartbeats. Milliseconds out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Final

from shared.analysis import ms
from shared.store.base import (
    Heartbeat,
    QueryError,
    RollupRow,
    ServiceStats,
    TraceStore,
    Unseen,
    Window,
    merged_stats_many,
)

from ..errors import BadRequest
from ..shapes import (
    OperationStatsList,
    OperationStatsView,
    PipelineView,
    ServiceStatsView,
    SlowTraceView,
    StatsView,
    TimePointView,
    TimeseriesView,
    WindowView,
    WorkerView,
    shape_of,
)
from .clock import Clock, now_us

MAX_POINTS: Final = 1440
"""The most points a time series answers (a day at one-minute steps)."""
MINUTE_US: Final = 60_000_000
NOTHING_UNSEEN: Final = Unseen()
HEARTBEAT_WINDOW_US: Final = 30_000_000
"""``/stats`` reports the workers whose last heartbeat is newer than this."""


def window_view(window: Window | None) -> WindowView | None:
    if window is None:
        return None
    aligned = window.aligned()
    return WindowView(start=ms(aligned.start_us), end=ms(aligned.end_us))


def quantiles(stats: ServiceStats) -> tuple[float, float, float]:
    """p50, p95 and p99 of ``stats``'s latency sketch, in milliseconds (each within 1% of the exact value)."""
    p50, p95, p99 = stats.percentiles_us((0.50, 0.95, 0.99))
    return ms(p50), ms(p95), ms(p99)


def mean_ms(total_us: float, count: int) -> float:
    """``total_us / count`` in milliseconds; 0 without a count."""
    return ms(total_us / count) if count else 0.0


def _service_stats(stats: ServiceStats, unseen: Unseen) -> ServiceStatsView:
    """One service's view: counts received (the estimate minus the unseen), the rest estimates."""
    p50, p95, p99 = quantiles(stats)
    avg = mean_ms(stats.total_duration_us, stats.count)
    return ServiceStatsView(
        count=stats.count - unseen.spans,
        avg_duration=avg,
        error_count=stats.error_count - unseen.errors,
        p50=p50,
        p95=p95,
        p99=p99,
        estimated_count=stats.count,
        estimated_error_count=stats.error_count,
    )


def _pipeline(beats: Sequence[Heartbeat]) -> PipelineView:
    workers = [shape_of(WorkerView, b, updated_at=ms(b.updated_at_us)) for b in beats]
    return PipelineView(
        workers=workers,
        total_lag=sum(sum(b.lag.values()) for b in beats),
        spans_per_second=round(float(sum(b.spans_per_second for b in beats)), 3),
        dead_lettered=sum(b.dead_lettered for b in beats),
        late_spans=sum(b.late_spans for b in beats),
    )


class MonitorService:
    """``/stats``, ``/stats/operations`` and ``/stats/timeseries`` from a :class:`TraceStore`."""

    def __init__(self, store: TraceStore, *, clock: Clock = now_us, slowest: int = 5) -> None:
        self._store = store
        self._clock = clock
        self._slowest = slowest

    async def stats(self, window: Window | None = None) -> StatsView:
        """Trace counts, the slowest traces and per-service statistics over all time (or ``window``), and
        the pipeline as the heartbeats of the last 30 seconds tell it."""
        stats = await self._store.stats(slowest=self._slowest, window=window)
        beats = await self._store.heartbeats(newer_than_us=self._clock() - HEARTBEAT_WINDOW_US)
        return StatsView(
            total_traces=stats.total_traces,
            active_traces=stats.active_traces,
            completed_traces=stats.completed_traces,
            failed_traces=stats.failed_traces,
            avg_duration=mean_ms(
                stats.total_duration_us, stats.estimated_completed_traces + stats.estimated_failed_traces
            ),
            slowest_traces=[SlowTraceView(trace_id=s.trace_id, duration=ms(s.duration_us)) for s in stats.slowest],
            service_stats={
                service: _service_stats(s, stats.unseen.get(service, NOTHING_UNSEEN))
                for service, s in stats.services.items()
            },
            pipeline=_pipeline(beats),
            estimated_total_traces=stats.estimated_total_traces,
            estimated_completed_traces=stats.estimated_completed_traces,
            estimated_failed_traces=stats.estimated_failed_traces,
            window=window_view(stats.window),
        )

    async def operation_stats(self, service: str, window: Window | None) -> OperationStatsList:
        """Per operation of ``service`` (all its span kinds together), busiest first."""
        rows = await self._store.rollups("operations", window, service=service)
        per_operation: dict[str, list[RollupRow]] = defaultdict(list)
        for row in rows:
            per_operation[row.key[1]].append(row)
        operations = []
        merged = merged_stats_many(list(per_operation.values()))
        for (operation, group), stats in zip(per_operation.items(), merged, strict=True):
            p50, p95, p99 = quantiles(stats)
            operations.append(
                OperationStatsView(
                    operation=operation,
                    span_kinds=sorted({r.key[2] for r in group}),
                    count=stats.count,
                    error_count=stats.error_count,
                    avg_duration=mean_ms(stats.total_duration_us, stats.count),
                    p50=p50,
                    p95=p95,
                    p99=p99,
                )
            )
        operations.sort(key=lambda o: (-o.count, o.operation))
        return OperationStatsList(service_name=service, window=window_view(window), operations=operations)

    async def series(
        self,
        service: str,
        operation: str | None,
        window: Window,
        step_us: int,
        *,
        span_kinds: Sequence[str] | None = None,
        by_operation: bool = False,
    ) -> dict[str | None, list[tuple[int, ServiceStats]]]:
        """Per step (and per operation when ``by_operation``): the summed rollups of the service's spans
        of those kinds; steps without spans are left out. Raises :class:`BadRequest` for a step the
        minute rollups cannot serve or that gives too many points."""
        check_step(window, step_us)
        try:
            rows = await self._store.rollups(
                "operations", window, step_us=step_us, service=service, operation=operation
            )
        except QueryError as exc:
            raise BadRequest(exc.param, exc.message) from None
        groups: dict[str | None, dict[int, list[RollupRow]]] = defaultdict(lambda: defaultdict(list))
        for row in rows:
            if span_kinds is not None and row.key[2] not in span_kinds:
                continue
            groups[row.key[1] if by_operation else None][row.t_us].append(row)
        out = {}
        for key, steps in groups.items():
            times = sorted(steps)
            out[key] = list(zip(times, merged_stats_many([steps[t] for t in times]), strict=True))
        return out

    async def timeseries(self, service: str, operation: str | None, window: Window, step_us: int) -> TimeseriesView:
        """One point per ``step_us`` of ``window`` with spans of the service (or of one operation of it)."""
        series = (await self.series(service, operation, window, step_us)).get(None, [])
        points = []
        for t, stats in series:
            p50, p95, p99 = quantiles(stats)
            points.append(
                TimePointView(
                    t=ms(t),
                    count=stats.count,
                    errors=stats.error_count,
                    rate=round(stats.count / (step_us / 1_000_000), 6),
                    p50=p50,
                    p95=p95,
                    p99=p99,
                )
            )
        view = window_view(window)
        assert view is not None
        return TimeseriesView(
            step=step_us // 1000, service_name=service, operation_name=operation, window=view, points=points
        )


def check_step(window: Window, step_us: int, *, param: str = "step") -> None:
    if step_us < MINUTE_US or step_us % MINUTE_US:
        raise BadRequest(param, "must be a whole number of minutes (60000 ms steps): the rollups are per minute")
    aligned = window.aligned()
    points = -(-(aligned.end_us - aligned.start_us) // step_us)
    if points > MAX_POINTS:
        raise BadRequest(param, f"gives {points} points over this window; at most {MAX_POINTS}: use a larger step")
