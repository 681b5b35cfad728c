"""FROZEN TEST ORACLE: ``contribution`` (rollups) and ``trace_contexts`` (critical paths) as they were
before their loops moved into compiled cores, and (at the end) ``Contribution.index_ops`` and the
operations loop of ``RollupDelta.add``. Do not edit.

Verbatim copies of the functions from ``shared/store/rollups.py`` and ``shared/critical_paths.py``
(below this header; the last two as functions of the op rows), kept only as the reference the rewrites
must equal, field for field, on every input (``tests/unit/test_finalizing_equivalence.py``). Never
import it outside the tests (and the "before" column of bench/analysis.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

from shared.analysis import TraceAnalysis
from shared.critical_paths import ELIDED, MAX_CONTEXT_DEPTH, Path, context_id, label
from shared.models import Span, flat_tags
from shared.store.buckets import BUCKET_BOUNDS_US
from shared.store.rollups import Contribution, OpKey, OpShare
from shared.store.tags import tag_text


def contribution(analysis: TraceAnalysis, spans: Sequence[Span], paths: dict[int, Path] | None = None) -> Contribution:
    """One pass over the spans with plain dicts (a hot loop at finalization). The calling contexts of
    the critical path are added to ``paths`` (id -> labels) when given."""
    ops: dict[tuple[str, str, str | None], list[int]] = {}
    hists: dict[tuple[str, str, str | None], dict[int, int]] = {}
    error_hists: dict[tuple[str, str, str | None], dict[int, int]] = {}
    tags: dict[tuple[str, str], None] = {}
    bounds = BUCKET_BOUNDS_US
    bisect_left = bisect.bisect_left
    for span in spans:
        key = (span.service_name, span.operation_name, span.kind)
        duration = span.duration_us or 0
        row = ops.get(key)
        if row is None:
            row = ops[key] = [0, 0, 0, duration, duration, 0]
            hists[key] = {}
            error_hists[key] = {}
        row[0] += 1
        row[2] += duration
        if duration < row[3]:
            row[3] = duration
        elif duration > row[4]:
            row[4] = duration
        hist = hists[key]
        bucket = bisect_left(bounds, duration)
        hist[bucket] = hist.get(bucket, 0) + 1
        if span.status == "error":
            row[1] += 1
            row[5] += duration
            errors = error_hists[key]
            errors[bucket] = errors.get(bucket, 0) + 1
        for tag_key, value in span.tags.items():
            tags[tag_key, value if type(value) is str else tag_text(value)] = None
        if span.resource or span.scope_name is not None or span.scope_version is not None:
            for tag_key, value in flat_tags(span).items():  # resource attributes and scope are searched too
                tags[tag_key, value if type(value) is str else tag_text(value)] = None
        for log in span.logs:  # and log fields, as Jaeger's stores index them
            for tag_key, value in log.fields.items():
                tags[tag_key, value if type(value) is str else tag_text(value)] = None
    return Contribution(
        start_us=analysis.start_us,
        failed=analysis.failed,
        duration_us=analysis.duration_us,
        endpoint=(analysis.root_service or "", analysis.root_operation or ""),
        ops=[
            (s, o, k or "", r[0], r[1], r[2], r[3], r[4], hists[s, o, k], r[5], error_hists[s, o, k])
            for (s, o, k), r in ops.items()
        ],
        deps=[(d.parent, d.child, d.calls, d.errors) for d in analysis.dependencies],
        tags=list(tags),
        contexts=_context_shares(analysis, spans, paths),
    )


def _context_shares(
    analysis: TraceAnalysis, spans: Sequence[Span], paths: dict[int, Path] | None
) -> list[tuple[int, int]]:
    shares: list[tuple[int, int]] = []
    for path, critical_us in trace_contexts(analysis, spans).items():
        ctx = _context_ids.get(path)
        if ctx is None:
            ctx = context_id(path)
            if len(_context_ids) < 100_000:
                _context_ids[path] = ctx
        if paths is not None:
            paths[ctx] = path
        shares.append((ctx, critical_us))
    return shares


_context_ids: dict[Path, int] = {}
"""Ids of the contexts seen (hashing a path costs more than looking it up); bounded."""


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


def index_ops(ops: Sequence[OpShare]) -> list[tuple[str, str, int, int]]:
    rows: dict[tuple[str, str], list[int]] = {}
    for service, operation, _, _, _, _, low, high, *_ in ops:
        for key in ((service, operation), (service, "")):
            row = rows.get(key)
            if row is None:
                rows[key] = [low, high]
            else:
                row[0] = min(row[0], low)
                row[1] = max(row[1], high)
    return [(s, o, lo, hi) for (s, o), (lo, hi) in rows.items()]


def add_op_shares(
    ops: dict[tuple[int, OpKey], list[int]], minute: int, shares: Sequence[OpShare], sign: int, width: int
) -> None:
    for service, operation, kind, count, errors, total, _, _, hist, _, _ in shares:
        key = (minute, (service, operation, kind))
        row = ops.get(key)
        if row is None:
            row = ops[key] = [0] * width
        row[0] += sign * count
        row[1] += sign * errors
        row[2] += sign * total
        for b, n in hist.items():
            row[3 + b] += sign * n
