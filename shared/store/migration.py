"""Storage layout v1 to v2, the same for every SQL backend: one v1 trace's rows to its v2 values. Pure.

Layout v1 kept one row per span (its JSON body, its finish event's JSON, a late flag) and a JSON
contribution per trace without span kinds or time buckets. Migrating a trace:

* its spans become at most two chunks: the spans that are not late, then the late ones (so the late
  count survives the move);
* a trace that has spans and an analysis (finalized, or re-opened by late spans) gets its contribution
  recomputed from its spans and stored analysis, so its rollups gain span kinds, per-operation
  histograms and time buckets, and its index rows their durations;
* a trace that was sampled out (no spans left) keeps what v1 recorded, converted: per service it is
  exact; its operations count their spans, with the service's errors, durations and histogram on the
  service's first operation (no span kind).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from shared.analysis import TraceAnalysis
from shared.models import Span, SpanFinish
from shared.store.chunks import TraceState, encode_chunk
from shared.store.rollups import Contribution, OpShare, contribution

_span_decoder: Final = msgspec.json.Decoder(Span)
_finish_decoder: Final = msgspec.json.Decoder(SpanFinish)
_analysis_decoder: Final = msgspec.json.Decoder(TraceAnalysis)


class V1Contribution(msgspec.Struct, frozen=True, array_like=True):
    """Layout v1's per-trace rollup share (JSON array)."""

    failed: bool
    duration_us: int
    services: dict[str, tuple[int, int, int]]
    buckets: dict[str, dict[int, int]]
    operations: dict[str, dict[str, int]]
    deps: list[tuple[int, str, str, int, int]]


_v1_contribution_decoder: Final = msgspec.json.Decoder(V1Contribution)


class MigratedTrace(msgspec.Struct, frozen=True, kw_only=True):
    chunks: list[tuple[bool, bytes]]
    """(late, body) in order."""
    has_spans: bool
    analysis: TraceAnalysis | None
    contribution: Contribution | None


def migrate_trace(
    span_rows: Sequence[tuple[str | None, str | None, bool]],
    *,
    analysis_json: str | None,
    contribution_json: str | None,
    start_us: int | None,
    root_service: str | None,
    root_operation: str | None,
) -> MigratedTrace:
    """One v1 trace: its span rows ``(body JSON, finish JSON, late)`` and trace-row values."""
    groups: list[list[Span | SpanFinish]] = [[], []]
    for body, finish, late in span_rows:
        events = groups[1 if late else 0]
        if body is not None:
            events.append(_span_decoder.decode(body))
        if finish is not None:
            events.append(_finish_decoder.decode(finish))
    chunks = [(late, encode_chunk(events)) for late, events in ((False, groups[0]), (True, groups[1])) if events]
    state = TraceState.from_chunks(chunks)
    analysis = _analysis_decoder.decode(analysis_json) if analysis_json is not None else None
    share: Contribution | None = None
    if analysis is not None and state.has_spans:
        share = contribution(analysis, state.spans())
    elif contribution_json is not None:
        share = _convert(
            _v1_contribution_decoder.decode(contribution_json),
            start_us=start_us or 0,
            endpoint=(root_service or "", root_operation or ""),
        )
    return MigratedTrace(chunks=chunks, has_spans=state.has_spans, analysis=analysis, contribution=share)


def _convert(old: V1Contribution, *, start_us: int, endpoint: tuple[str, str]) -> Contribution:
    ops: list[OpShare] = []
    for service, (spans, errors, total) in sorted(old.services.items()):
        operations = sorted(old.operations.get(service, {}).items()) or [("unknown", spans)]
        for i, (operation, count) in enumerate(operations):
            first = i == 0
            ops.append(
                (
                    service,
                    operation,
                    "",
                    count,
                    errors if first else 0,
                    total if first else 0,
                    0,
                    0,
                    dict(old.buckets.get(service, {})) if first else {},
                    0,
                    {},
                )
            )
    return Contribution(
        start_us=start_us,
        failed=old.failed,
        duration_us=old.duration_us,
        endpoint=endpoint,
        ops=ops,
        deps=[(parent, child, calls, errors) for _, parent, child, calls, errors in old.deps],
        tags=[],
        contexts=[],
    )
