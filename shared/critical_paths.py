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
from collections.abc import Mapping, Sequence
from typing import Final

from shared.analysis import TraceAnalysis
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


def _chain(span_id: str, by_id: Mapping[str, Span]) -> Path:
    """Labels from the root down to ``span_id``, following parent links (the critical path only runs
    through the main tree, so the walk ends at its root; a guard stops at any cycle)."""
    labels: list[str] = []
    seen: set[str] = set()
    current: str | None = span_id
    while current is not None and current in by_id and current not in seen:
        seen.add(current)
        span = by_id[current]
        labels.append(label(span))
        current = span.parent_span_id
    labels.reverse()
    if len(labels) > MAX_CONTEXT_DEPTH:
        labels = [*labels[: MAX_CONTEXT_DEPTH - 2], ELIDED, labels[-1]]
    return tuple(labels)


def trace_contexts(analysis: TraceAnalysis, spans: Sequence[Span]) -> dict[Path, int]:
    """Critical time (µs) per calling context of one trace: its ``criticalPathSegments`` grouped by
    context. The values sum to the trace's critical path duration."""
    segments = analysis.critical_path_segments
    if not segments:
        return {}
    by_id = {span.span_id: span for span in spans}
    chains: dict[str, Path] = {}
    out: dict[Path, int] = {}
    for segment in segments:
        path = chains.get(segment.span_id)
        if path is None:
            path = chains[segment.span_id] = _chain(segment.span_id, by_id)
        # segment bounds are µs / 1000 as doubles: scaling back is exact after rounding
        out[path] = out.get(path, 0) + round(segment.end * 1000) - round(segment.start * 1000)
    return out
