"""Finalization, the same for every backend: from the due traces' rows and states, everything their
finalization writes. Pure: no I/O.

A backend's ``finalize`` locks the active rows among the given ids (:class:`FinalizeRow`), gets each
trace's current state (the cache's copy when its chunk count matches the row's, else its chunks read
back), calls :func:`plan_finalize` and writes the plan in the same transaction: summaries, the search
index rows of the traces (the old ones out, the new ones in), the rollup delta, and for sampled-out
traces the deletion of their chunks.

A re-finalized trace's previous share (what its last finalization added, to take out) is its stored
contribution where there is one (Cassandra stores every trace's; the SQL stores a sampled-out trace's,
whose chunks go, and every trace's before they derived them), else it is derived again from the state
the last finalization merged, its first ``final_chunks`` chunks (chunks are only ever appended): the
contribution is a function of the spans alone (:func:`derived_share`). Deriving assumes the code that
computes it is the code that added it: an upgrade that changes the analysis between a trace's
finalization and its re-finalization or purge shifts the rollups by the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import msgspec

from shared.analysis import TraceAnalysis, analyze
from shared.critical_paths import Path
from shared.sampling import Sampler
from shared.store.base import TraceSummary
from shared.store.chunks import TraceState
from shared.store.rollups import Contribution, RollupDelta, contribution, decode_contribution, encode_contribution

NO_STATES: Final[Mapping[str, TraceState]] = {}

_json: Final = msgspec.json.Encoder()
_str_list: Final = msgspec.json.Decoder(list[str])
_analysis_encoder: Final = msgspec.msgpack.Encoder()
encode_analysis: Final[Callable[[TraceAnalysis], bytes]] = _analysis_encoder.encode
decode_analysis: Final = msgspec.msgpack.Decoder(TraceAnalysis).decode


_critical_decoder: Final = msgspec.msgpack.Decoder(list[tuple[int, int]])


def encode_critical(share: Contribution) -> bytes:
    """A trace's critical path by calling context, ``[(context id, critical µs)]``, as the endpoint index
    keeps it for tail reads over many traces."""
    return _analysis_encoder.encode(share.contexts)


def decode_critical(data: bytes) -> list[tuple[int, int]]:
    return _critical_decoder.decode(data)


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


class FinalizeRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What finalization needs of an active trace's row."""

    trace_id: str
    tid: int
    chunks: int
    contribution: bytes | None
    """The previous finalization's share (a re-opened trace) when it was stored, to take out of the
    rollups."""
    final_chunks: int | None = None
    """The chunks the previous finalization merged (SQL stores), to derive its share from when it was not
    stored; ``None``: never finalized, or by a build that stored every share."""
    indexed: bool
    """The previous finalization kept the trace (its search index rows exist)."""


class Summary(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One finalized trace's row values."""

    trace_id: str
    tid: int
    analysis: TraceAnalysis
    kept: bool
    """False: sampled out (counted in the rollups; its chunks and index rows go; state ``dropped``)."""
    late_spans: int
    chunks: int
    """The chunks merged (the SQL stores' ``final_chunks``)."""
    share: Contribution
    contribution_blob: bytes | None
    """The share as stored; ``None`` where it is derived from the chunks when needed (see the module's doc)."""
    services_json: str

    @property
    def status(self) -> str:
        return "failed" if self.analysis.failed else "completed"

    def values(self, *, analysis: bool) -> tuple[Any, ...]:
        """The summary columns of the trace row, in the order ``root_service, root_operation, start_us,
        duration_us, span_count, error_count, status, complete, services, analysis, contribution,
        late_spans``. ``analysis``: the analysis column holds its msgpack (Cassandra), else ``None`` (the
        SQL stores derive it from the spans on read: layout v3)."""
        a = self.analysis
        return (
            a.root_service,
            a.root_operation,
            a.start_us,
            a.duration_us,
            a.span_count,
            a.error_count,
            self.status,
            a.complete,
            self.services_json,
            encode_analysis(a) if analysis else None,
            self.contribution_blob,
            self.late_spans,
        )


class FinalizePlan(msgspec.Struct, kw_only=True, gc=False):
    summaries: list[Summary]
    waiting: list[str]
    """Traces with finish events only (no span): they wait, unsearched, for their spans."""
    index_removed: list[tuple[str, int, Contribution]]
    """(trace_id, tid, previous contribution) of re-finalized traces whose old index rows go."""
    index_added: list[tuple[str, int, Contribution]]
    """(trace_id, tid, contribution) of kept traces: their new index rows."""
    dropped: list[tuple[str, int, list[str]]]
    """(trace_id, tid, open span ids) of sampled-out traces: chunks and open-span entries go."""
    delta: RollupDelta
    paths: dict[int, Path]
    """The calling contexts of these traces' critical paths (id -> labels), for the context dictionary."""
    first: list[Contribution]
    """The contributions of the traces finalized for the first time (for counters that never go back)."""

    @property
    def analyses(self) -> list[TraceAnalysis]:
        return [s.analysis for s in self.summaries]


def derived_share(trace_id: str, state: TraceState, *, tags: bool = True) -> Contribution:
    """The share of the rollups a finalization of ``state`` adds: what the finalization computes, from the
    spans alone (the adjusted count from their sampling tags, context ids by hash); its tags only with
    ``tags`` (what the tag index needs)."""
    spans = state.spans()
    return contribution(analyze(trace_id, spans), spans, tags=tags)


def previous_share(
    trace_id: str, blob: bytes | None, final_chunks: int | None, earlier: Mapping[str, TraceState]
) -> Contribution | None:
    """What a trace's last finalization added to the rollups: its stored ``blob``, else, when it merged
    ``final_chunks`` chunks, derived from its state as of then (``earlier[trace_id]``), else ``None``
    (never finalized)."""
    if blob is not None:
        return decode_contribution(blob)
    if final_chunks is None:
        return None
    return derived_share(trace_id, earlier[trace_id])


def plan_finalize(
    rows: Sequence[FinalizeRow],
    states: Mapping[str, TraceState],
    *,
    sampler: Sampler | None,
    earlier: Mapping[str, TraceState] = NO_STATES,
    store_kept: bool = True,
) -> FinalizePlan:
    """Analyze each trace from its state and build everything its finalization writes.

    ``earlier``: the state as of its previous finalization of each trace with ``final_chunks`` and no
    stored share. ``store_kept``: a kept trace's share is stored too (Cassandra); else only a sampled-out
    trace's (the SQL stores)."""
    delta = RollupDelta()
    plan = FinalizePlan(
        summaries=[], waiting=[], index_removed=[], index_added=[], dropped=[], delta=delta, paths={}, first=[]
    )
    for row in rows:
        state = states[row.trace_id]
        if not state.has_spans:
            plan.waiting.append(row.trace_id)
            continue
        spans = state.spans()
        analysis = analyze(row.trace_id, spans)
        share = contribution(analysis, spans, plan.paths)
        previous = previous_share(row.trace_id, row.contribution, row.final_chunks, earlier)
        if previous is not None:
            delta.add(previous, -1)
            if row.indexed:
                plan.index_removed.append((row.trace_id, row.tid, previous))
        else:
            plan.first.append(share)
        delta.add(share, +1)
        kept = sampler is None or sampler.keep(analysis, share.weight)
        if kept:
            plan.index_added.append((row.trace_id, row.tid, share))
        else:
            plan.dropped.append((row.trace_id, row.tid, state.open_span_ids()))
        plan.summaries.append(
            Summary(
                trace_id=row.trace_id,
                tid=row.tid,
                analysis=analysis,
                kept=kept,
                late_spans=len(state.late),
                chunks=row.chunks,
                share=share,
                contribution_blob=encode_contribution(share) if store_kept or not kept else None,
                services_json=_json.encode(analysis.services).decode(),
            )
        )
    return plan
