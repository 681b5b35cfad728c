"""What every backend does the same way with stored rows: decode a trace's span rows (finish events
merged), turn one trace's spans into everything its finalization writes, and read a summary row back.
Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from shared.analysis import TraceAnalysis, analyze
from shared.models import Span, SpanFinish, merge_finish
from shared.sampling import Sampler
from shared.store.base import TraceSummary
from shared.store.rollups import Contribution, RollupDelta, contribution, decode_contribution, encode_contribution

_json = msgspec.json.Encoder()
_spans_decoder = msgspec.json.Decoder(list[Span])
_finish_decoder = msgspec.json.Decoder(SpanFinish)
_str_list = msgspec.json.Decoder(list[str])


def summary_from_row(row: Sequence[Any], text: Callable[[str], str] = str) -> TraceSummary:
    """A search result from the columns (trace_id, root_service, root_operation, start_us, duration_us,
    span_count, error_count, status, complete, services JSON); ``text`` undoes a backend's text escaping."""
    return TraceSummary(
        trace_id=row[0],
        root_service=None if row[1] is None else text(row[1]),
        root_operation=None if row[2] is None else text(row[2]),
        start_us=row[3],
        duration_us=row[4],
        span_count=row[5],
        error_count=row[6],
        status=row[7],
        complete=bool(row[8]),
        services=_str_list.decode(row[9]) if row[9] else [],
    )


def decode_spans(bodies: Sequence[str], finishes: Sequence[str | None]) -> list[Span]:
    """Decode span bodies in one msgspec call, merging each non-null finish event into its span."""
    if not bodies:
        return []
    spans = _spans_decoder.decode("[" + ",".join(bodies) + "]")
    for i, finish in enumerate(finishes):
        if finish is not None:
            spans[i] = merge_finish(spans[i], _finish_decoder.decode(finish))
    return spans


class Finalized(msgspec.Struct, frozen=True, kw_only=True):
    """One trace's finalization, ready to be written."""

    analysis: TraceAnalysis
    contribution: Contribution
    kept: bool  # False: sampled out (counted in the rollups, spans and index rows go)

    @property
    def status(self) -> str:
        return "failed" if self.analysis.failed else "completed"

    def analysis_json(self) -> str:
        return _json.encode(self.analysis).decode()

    def services_json(self) -> str:
        return _json.encode(self.analysis.services).decode()

    def contribution_json(self) -> str:
        return encode_contribution(self.contribution).decode()


def finalize_trace(
    trace_id: str,
    spans: Sequence[Span],
    *,
    previous: str | bytes | None,
    delta: RollupDelta,
    sampler: Sampler | None,
) -> Finalized:
    """Analyze the trace, take a previous finalization's share out of ``delta`` and put the new one in,
    and decide whether the sampler keeps it."""
    analysis = analyze(trace_id, spans)
    share = contribution(analysis, spans)
    if previous is not None:
        delta.add(decode_contribution(previous), -1)
    delta.add(share, +1)
    return Finalized(analysis=analysis, contribution=share, kept=sampler is None or sampler.keep(analysis))
