"""The write path of storage layout v2, the same for every backend: from one batch of events and what
the store holds of the batch's traces, the rows to write. Pure: no I/O.

A backend's ``write_batch`` does, in one transaction:

1. read the row (:class:`TraceRow`) of every trace of the batch that exists, locking it where writers
   run concurrently, and the trace's current :class:`~shared.store.chunks.TraceState` (its copy in the
   writer's cache when that is provably current, else its chunks read back);
2. :func:`plan_write`;
3. write the plan: insert the new traces' rows, update the existing ones, insert one chunk per changed
   trace, and maintain the open-span index;
4. after the commit, put the new states into the cache.

Due times follow the store contract: before a root span finished, ``now + idle`` (sliding with every
write); once one has, ``min(due, now + grace)``; a trace that was finalized and changes again is late:
active again, due ``now + grace``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal

import msgspec

from shared.models import Event, Span, SpanFinish
from shared.store.base import WriteResult
from shared.store.chunks import TraceState, encode_chunk
from shared.store.encoding import Dictionaries, payload_size

RowState = Literal["active", "finalized", "dropped", "waiting"]
"""A trace row's state. ``waiting``: only finish events are stored, no span yet (not searchable, not
due, not counted); the trace becomes active when a span arrives."""


class TraceRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What a write or a finalization needs of an existing trace's row."""

    trace_id: str
    tid: int
    """The row's incarnation: assigned when the row is created, never reused (a purged and re-created
    trace gets a new one), so a cached state of an older incarnation can never pass for the current."""
    state: RowState
    chunks: int
    root_done_us: int | None
    due_us: int


class NewTrace(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    trace_id: str
    shard: str
    due_us: int
    root_done_us: int | None


class TraceUpdate(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    trace_id: str
    tid: int
    chunks: int
    due_us: int
    root_done_us: int | None
    shard: str | None
    """A waiting trace (finish events only) is owned by the shard of the write that brings its first
    span, as a new trace would be; ``None``: the owner stays."""


class Chunk(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    trace_id: str
    seq: int
    """0 for a trace's first chunk; the trace row's chunk count before this one."""
    late: bool
    body: bytes


class WritePlan(msgspec.Struct, kw_only=True, gc=False):
    new: list[NewTrace]
    updates: list[TraceUpdate]
    chunks: list[Chunk]
    opened: list[tuple[str, str]]
    """(trace_id, span_id) entering the open-span index."""
    closed: list[tuple[str, str]]
    """(trace_id, span_id) leaving it."""
    states: dict[str, TraceState]
    """Every changed trace's state after this batch (for the cache, once committed)."""
    result: WriteResult


NOTHING_WRITTEN: Final = WriteResult(spans_changed=0, traces_touched=0, late_spans=0)


def group_events(spans: Sequence[Span], finishes: Sequence[SpanFinish]) -> dict[str, list[Event]]:
    """The batch's events per trace, in batch order (spans first: a finish is kept beside its span
    whatever the order, so only the order among a span's versions matters)."""
    grouped: dict[str, list[Event]] = {}
    for part in (spans, finishes):
        for event in part:
            events = grouped.get(event.trace_id)
            if events is None:
                grouped[event.trace_id] = [event]
            else:
                events.append(event)
    return grouped


def group_batch(
    spans: Sequence[Span], finishes: Sequence[SpanFinish], shards: Mapping[str, str]
) -> dict[str, list[Event]]:
    """:func:`group_events`, checked: every trace of the batch must have its shard in ``shards``."""
    batch = group_events(spans, finishes)
    missing = set(batch).difference(shards)
    if missing:
        raise KeyError(f"no shard given for trace(s) {sorted(missing)}")
    return batch


class WriteBatch(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One :meth:`~shared.store.base.TraceWriter.write_batch` call: its events by trace, and its
    parameters."""

    events: dict[str, list[Event]]
    """The batch's events per trace, in batch order (:func:`group_batch`)."""
    shards: Mapping[str, str]
    now_us: int
    grace_us: int
    idle_us: int


def plan_write(
    batch: WriteBatch,
    rows: Mapping[str, TraceRow],
    states: Mapping[str, TraceState],
    dicts: Dictionaries | None = None,
) -> WritePlan:
    """The rows that writing ``batch`` produces.

    ``rows``: the existing traces of the batch; ``states``: the current state of each of them (mutated
    in place: pass states that are not in any cache); ``dicts``: the writer's zstd dictionaries, which
    compress its chunks (:func:`~shared.store.encoding.encode_chunk`). Traces of the batch not in
    ``rows`` are new. A ``dropped`` trace (sampled out) discards its events. Only the net change of each
    span is stored, so a duplicate changes nothing, not even the trace's due time.
    """
    plan = WritePlan(new=[], updates=[], chunks=[], opened=[], closed=[], states={}, result=NOTHING_WRITTEN)
    spans_changed = late_spans = 0
    for trace_id, events in batch.events.items():
        row = rows.get(trace_id)
        if row is None:
            state = TraceState()
            late = False
        elif row.state == "dropped":
            continue
        else:
            state = states[trace_id]
            late = row.state == "finalized"
        change = state.apply(events, late=late)
        if not change.events:
            continue
        body = encode_chunk(change.events, dicts)
        plan.chunks.append(Chunk(trace_id=trace_id, seq=state.version, late=late, body=body))
        state.version += 1
        state.nbytes += payload_size(body)
        plan.states[trace_id] = state
        spans_changed += len(change.span_ids)
        if late:
            late_spans += len(change.span_ids)
        plan.opened.extend((trace_id, span_id) for span_id in change.opened)
        plan.closed.extend((trace_id, span_id) for span_id in change.closed)
        if row is None:
            plan.new.append(_new_trace(batch, trace_id, change.root_finished))
        else:
            plan.updates.append(_update(batch, row, state.version, change.root_finished))
    plan.result = WriteResult(spans_changed=spans_changed, traces_touched=len(plan.chunks), late_spans=late_spans)
    return plan


def _new_trace(batch: WriteBatch, trace_id: str, root_finished: bool) -> NewTrace:
    now_us = batch.now_us
    due = now_us + batch.idle_us
    root_done: int | None = None
    if root_finished:
        root_done = now_us
        due = min(due, now_us + batch.grace_us)
    return NewTrace(trace_id=trace_id, shard=batch.shards[trace_id], due_us=due, root_done_us=root_done)


def _update(batch: WriteBatch, row: TraceRow, chunks: int, root_finished: bool) -> TraceUpdate:
    now_us = batch.now_us
    root_done = row.root_done_us
    if row.state == "finalized":
        due = now_us + batch.grace_us
    elif root_done is not None:
        due = row.due_us
    else:
        due = now_us + batch.idle_us
    if root_done is None and root_finished:
        root_done = now_us
        due = min(due, now_us + batch.grace_us)
    return TraceUpdate(
        trace_id=row.trace_id,
        tid=row.tid,
        chunks=chunks,
        due_us=due,
        root_done_us=root_done,
        shard=batch.shards[row.trace_id] if row.state == "waiting" else None,
    )
