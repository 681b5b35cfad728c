"""Critical paths across traces (after Uber's CRISP, USENIX ATC 2022): each segment of a trace's critical
path is attributed to its **calling context**, the chain of ``service:operation`` labels from the root
span down to the segment's span. Summed per endpoint (root service, root operation) over many traces,
the contexts say where the endpoint's latency goes (top-down, as a flame graph); grouped by their last
label, which operations hold back the most across endpoints (bottom-up). Pure: no I/O.

A context deeper than :data:`MAX_CONTEXT_DEPTH` labels keeps its first ``MAX_CONTEXT_DEPTH - 2``
labels, then :data:`ELIDED`, then the segment's own label: 1000-deep traces stay bounded, and the
bottom-up ranking (by the last label) stays exact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from shared.analysis import SPAN_LAYOUT, TraceAnalysis, core
from shared.models import Span

MAX_CONTEXT_DEPTH: Final = 32
ELIDED: Final = "…"
"""Stands for the labels left out of a context deeper than :data:`MAX_CONTEXT_DEPTH`."""

Path = tuple[str, ...]


def label(span: Span) -> str:
    return f"{span.service_name}:{span.operation_name}"


def context_id(path: Path) -> int:
    """A stable signed 64-bit id of a context (its rows in the rollups are keyed by it)."""
    digest = hashlib.blake2b("\x1f".join(path).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def trace_contexts(analysis: TraceAnalysis, spans: Sequence[Span]) -> dict[Path, int]:
    """Critical time (µs) per calling context of one trace: its ``criticalPathSegments`` grouped by
    context. The values sum to the trace's critical path duration.

    A context: the labels from the root down to the segment's span, following parent links (the critical
    path only runs through the main tree, so the walk ends at its root; a guard stops at any cycle). The
    loop is :func:`shared.analysis_core.critical_contexts` (compiled when built).
    """
    segments = analysis.critical_path_segments
    if not segments:
        return {}
    # segment bounds are µs / 1000 as doubles: scaling back is exact after rounding
    bounds = [(segment.span_id, segment.start, segment.end) for segment in segments]
    return core.critical_contexts(spans, SPAN_LAYOUT, bounds, MAX_CONTEXT_DEPTH, ELIDED)
