"""Critical paths across traces (CRISP): where each endpoint's latency goes, which operations hold back
the most across endpoints, and what changed against a baseline. From the critical-path rollups, or, for
the tail of an endpoint, from the stored critical paths of a bounded number of its slowest traces."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Final

from shared.analysis import ms
from shared.critical_paths import ELIDED, MAX_CONTEXT_DEPTH
from shared.store.base import TraceStore, Window

from ..shapes import (
    ChangesView,
    ChangeView,
    ContextView,
    CriticalPathView,
    EndpointView,
    HotOperationView,
    SelectionView,
)
from .monitoring import quantiles, window_view

TAIL_LIMIT: Final = 10_000
"""The most traces a tail read aggregates (the slowest of those that match)."""


def _share(part: int, whole: int) -> float:
    return round(part * 100 / whole, 2) if whole else 0.0


def _contexts(rows: Iterable[tuple[tuple[str, ...], int, int]], traces: int) -> list[ContextView]:
    """Context views from (path, critical µs, traces) rows, largest first."""
    items = sorted(rows, key=lambda r: (-r[1], r[0]))
    total = sum(critical for _, critical, _ in items)
    return [
        ContextView(
            path=list(path),
            critical_ms=ms(critical),
            mean_ms=round(critical / traces / 1000, 3) if traces else 0.0,
            share=_share(critical, total),
            traces=n,
        )
        for path, critical, n in items
    ]


class CriticalPathService:
    """``/analyze/endpoints``, ``/analyze/operations`` and an endpoint's critical path and changes, from a
    :class:`TraceStore`."""

    def __init__(self, store: TraceStore) -> None:
        self._store = store

    async def endpoints(self, window: Window | None) -> list[EndpointView]:
        """The endpoints with traces in ``window`` (all time: ``None``), largest critical-path total first."""
        rows = await self._store.rollups("endpoints", window)
        critical: dict[tuple[str, str], int] = defaultdict(int)
        for context in await self._store.critical_contexts(window):
            critical[context.endpoint] += context.critical_us
        views = []
        for row in rows:
            service, operation = row.key
            if not service and not operation:
                continue  # traces without a root span have no endpoint
            p50, p95, p99 = quantiles(row.stats())
            views.append(
                EndpointView(
                    service=service,
                    operation=operation,
                    traces=row.count,
                    p50=p50,
                    p95=p95,
                    p99=p99,
                    critical_path_ms=ms(critical.get((service, operation), 0)),
                )
            )
        views.sort(key=lambda v: (-v.critical_path_ms, v.service, v.operation))
        return views

    async def critical_path(
        self,
        service: str,
        operation: str,
        window: Window | None,
        *,
        tail: float | None = None,
        min_duration_us: int | None = None,
    ) -> CriticalPathView:
        """The endpoint's critical paths summed per calling context: of all its traces (from the rollups),
        or of its slowest ones, by quantile (``tail``) or duration (``min_duration_us``), at most
        :data:`TAIL_LIMIT`."""
        endpoint_rows = await self._store.rollups(
            "endpoints", window, service=service, operation=operation, sketch=False
        )
        endpoint_traces = sum(r.count for r in endpoint_rows)
        selection: SelectionView | None = None
        if tail is None and min_duration_us is None:
            contexts = await self._store.critical_contexts(window, service=service, operation=operation)
            rows = [(c.path, c.critical_us, c.traces) for c in contexts]
            traces = endpoint_traces
        else:
            if min_duration_us is None:  # the tail by rank: the slowest ceil(n * (1 - tail)) traces
                assert tail is not None
                wanted = max(1, math.ceil(endpoint_traces * (1 - tail) - 1e-9))
                selected = await self._store.slow_trace_contexts(
                    service, operation, window, min_duration_us=0, limit=min(wanted, TAIL_LIMIT)
                )
                truncated = wanted > TAIL_LIMIT
                threshold = selected.min_duration_us or 0
            else:
                selected = await self._store.slow_trace_contexts(
                    service, operation, window, min_duration_us=min_duration_us, limit=TAIL_LIMIT
                )
                truncated = selected.traces == TAIL_LIMIT
                threshold = min_duration_us
            rows = [(c.path, c.critical_us, c.traces) for c in selected.contexts]
            traces = selected.traces
            selection = SelectionView(
                tail=tail, min_duration_ms=ms(threshold), limit=TAIL_LIMIT, selected=traces, truncated=truncated
            )
        views = _contexts(rows, traces)
        return CriticalPathView(
            endpoint=f"{service}:{operation}",
            traces=traces,
            critical_path_ms=ms(sum(critical for _, critical, _ in rows)),
            contexts=views,
            window=window_view(window),
            selection=selection,
            max_depth=MAX_CONTEXT_DEPTH,
            elided_contexts=sum(1 for v in views if ELIDED in v.path),
        )

    async def operations(self, window: Window | None) -> list[HotOperationView]:
        """Operations by the critical-path time they owned across every endpoint, largest first."""
        contexts = await self._store.critical_contexts(window)
        critical: dict[str, int] = defaultdict(int)
        endpoints: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for c in contexts:
            critical[c.path[-1]] += c.critical_us
            endpoints[c.path[-1]].add(c.endpoint)
        total = sum(critical.values())
        views = [
            HotOperationView(operation=op, critical_ms=ms(us), endpoints=len(endpoints[op]), share=_share(us, total))
            for op, us in critical.items()
        ]
        views.sort(key=lambda v: (-v.critical_ms, v.operation))
        return views

    async def changes(
        self, service: str, operation: str, window: Window, baseline: Window, *, limit: int
    ) -> ChangesView:
        """The ``limit`` calling contexts whose mean critical time per trace grew most from ``baseline`` to
        ``window``."""

        async def side(w: Window) -> tuple[int, dict[tuple[str, ...], int]]:
            traces = sum(
                r.count
                for r in await self._store.rollups("endpoints", w, service=service, operation=operation, sketch=False)
            )
            contexts = await self._store.critical_contexts(w, service=service, operation=operation)
            return traces, {c.path: c.critical_us for c in contexts}

        now_traces, now = await side(window)
        base_traces, base = await side(baseline)
        now_total, base_total = sum(now.values()), sum(base.values())

        def mean(us: int, traces: int) -> float:
            return us / traces / 1000 if traces else 0.0

        changes = [
            ChangeView(
                path=list(path),
                current_mean_ms=round(mean(now.get(path, 0), now_traces), 3),
                baseline_mean_ms=round(mean(base.get(path, 0), base_traces), 3),
                delta_ms=round(mean(now.get(path, 0), now_traces) - mean(base.get(path, 0), base_traces), 3),
                current_share=_share(now.get(path, 0), now_total),
                baseline_share=_share(base.get(path, 0), base_total),
            )
            for path in set(now) | set(base)
        ]
        changes.sort(key=lambda c: (-c.delta_ms, c.path))
        current_view, baseline_view = window_view(window), window_view(baseline)
        assert current_view is not None and baseline_view is not None
        return ChangesView(
            endpoint=f"{service}:{operation}",
            window=current_view,
            baseline=baseline_view,
            current_traces=now_traces,
            baseline_traces=base_traces,
            changes=changes[:limit],
        )
