"""Span chunks: how a trace's spans are stored (since layout v2), and the merge rules that read them back.

A **chunk** is what one write batch changed in one trace: the span and finish events that changed the
trace's state, encoded once as one stored value (compact msgpack compressed with zstd: see
:mod:`shared.store.encoding`). A trace's spans are the merge of its chunks
in write order (``seq``); the rules are the store contract's (:mod:`shared.store.base`):

* a span version replaces the stored one when it differs, except that an open version (no duration)
  never replaces a finished one;
* a finish event is kept beside its span (even before the span arrives) and merged when the trace is
  read: duration from its end time (never negative), its status when set, its tags over the span's;
* anything identical to what is stored is a duplicate and changes nothing.

Equality is msgspec's value equality of the decoded events, so versions that differ only in the type of
an equal number (``1`` / ``1.0`` / ``true`` in a tag) are duplicates.

:class:`TraceState` applies these rules in memory. The write path applies a batch to the state the
trace had (from the worker's cache or read back from its chunks) and stores only the net change of each
span as the new chunk; reading applies the stored chunks in order. Both go through the same
:meth:`TraceState.apply`, so what is stored and what is read back cannot disagree. Pure: no I/O.
Why one chunk per batch: docs/adr/0001-chunk-per-batch-exactly-once.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeVar, cast

import msgspec

from shared.models import Event, Span, SpanFinish, merge_finish
from shared.store.encoding import Dictionaries, decode_chunk, encode_chunk, payload_size

__all__ = ["Change", "StoredStates", "TraceState", "decode_chunk", "encode_chunk"]


def _is_open(body: Span | None, finish: SpanFinish | None) -> bool:
    return body is not None and body.duration_us is None and finish is None


class Change(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What applying one batch did to a trace."""

    events: list[Event]
    """The net change of every span that changed: its new version and/or its new finish event (what the
    chunk stores). Empty: the batch held only duplicates."""
    span_ids: list[str]
    """Ids of the spans that changed (a span and its finish count once)."""
    root_finished: bool
    """A root span (no parent) is finished now and was not before this batch."""
    opened: list[str]
    """Spans open after the batch and not before: they enter the open-span index."""
    closed: list[str]
    """Spans open before the batch and finished (or gone) after it: they leave the open-span index."""


E = TypeVar("E", Span, SpanFinish)


def _keep_changed(
    current: dict[str, E], before: Mapping[str, E | None], events: list[Event], changed: dict[str, None]
) -> None:
    """The spans (or finishes) whose value differs from ``before`` go to ``events`` and ``changed``; an
    A→B→A in one batch changed nothing, and keeps the stored object."""
    for span_id, old in before.items():
        new = current[span_id]
        if new is not old and new != old:
            events.append(new)
            changed[span_id] = None
        elif old is not None:
            current[span_id] = old


class TraceState:
    """One trace's spans after the merge rules: span versions and finish events by span id, and the ids
    of spans that changed after the trace was finalized (late). ``version`` counts the chunks applied:
    a state is the store's current one exactly when its version equals the trace row's chunk count."""

    __slots__ = ("bodies", "finishes", "late", "nbytes", "version")

    def __init__(self) -> None:
        self.bodies: dict[str, Span] = {}
        self.finishes: dict[str, SpanFinish] = {}
        self.late: set[str] = set()
        self.version = 0
        self.nbytes = 0  # msgpack size of the chunks applied, uncompressed (the cache's measure of this state)

    @classmethod
    def from_chunks(cls, chunks: Iterable[tuple[bool, bytes]], dicts: Dictionaries | None = None) -> TraceState:
        """The state stored as ``chunks`` (``(late, body)`` in ``seq`` order; ``dicts``: the store's
        dictionaries, every one the chunks name loaded)."""
        state = cls()
        for late, body in chunks:
            events = decode_chunk(body, dicts)
            if late or state.bodies or state.finishes:
                state.apply(events, late=late)
            else:  # the first chunk (most traces have one): nothing to compare, no change to report
                state._load_fresh(events)
            state.version += 1
            state.nbytes += payload_size(body)
        return state

    def copy(self) -> TraceState:
        other = TraceState()
        other.bodies = dict(self.bodies)
        other.finishes = dict(self.finishes)
        other.late = set(self.late)
        other.version = self.version
        other.nbytes = self.nbytes
        return other

    @property
    def has_spans(self) -> bool:
        """A span (not only finish events) is stored: the trace can be read."""
        return bool(self.bodies)

    def root_finished(self) -> bool:
        finishes = self.finishes
        return any(
            body.parent_span_id is None and (body.duration_us is not None or span_id in finishes)
            for span_id, body in self.bodies.items()
        )

    def open_span_ids(self) -> list[str]:
        return [sid for sid, body in self.bodies.items() if _is_open(body, self.finishes.get(sid))]

    def apply(self, events: Sequence[Event], *, late: bool) -> Change:
        """Apply ``events`` in order (the merge rules above) and return the net change.

        ``late``: the trace was finalized when these events were written; every span they change is
        recorded as late.
        """
        if not self.bodies and not self.finishes:
            return self._apply_fresh(events, late=late)
        before_body, before_finish = self._merge(events)
        changed_events: list[Event] = []
        changed: dict[str, None] = {}
        _keep_changed(self.bodies, before_body, changed_events, changed)
        _keep_changed(self.finishes, before_finish, changed_events, changed)
        if not changed:
            return Change(events=[], span_ids=[], root_finished=False, opened=[], closed=[])
        span_ids = list(changed)
        if late:
            self.late.update(span_ids)
        return self._transitions(changed_events, span_ids, before_body, before_finish)

    def _merge(self, events: Sequence[Event]) -> tuple[dict[str, Span | None], dict[str, SpanFinish | None]]:
        """Merge ``events`` into the state; what each touched span and finish was before."""
        bodies = self.bodies
        finishes = self.finishes
        before_body: dict[str, Span | None] = {}
        before_finish: dict[str, SpanFinish | None] = {}
        for event in events:
            span_id = event.span_id
            if type(event) is Span:
                current = bodies.get(span_id)
                if span_id not in before_body:
                    before_body[span_id] = current
                if current is None or (
                    current != event and not (current.duration_us is not None and event.duration_us is None)
                ):
                    bodies[span_id] = event
            else:
                assert type(event) is SpanFinish
                current_finish = finishes.get(span_id)
                if span_id not in before_finish:
                    before_finish[span_id] = current_finish
                if current_finish != event:
                    finishes[span_id] = event
        return before_body, before_finish

    def _transitions(
        self,
        changed_events: list[Event],
        span_ids: list[str],
        before_body: Mapping[str, Span | None],
        before_finish: Mapping[str, SpanFinish | None],
    ) -> Change:
        """The change of the changed spans: which opened or closed, and whether a root span finished."""
        bodies = self.bodies
        finishes = self.finishes
        root_finished = False
        opened: list[str] = []
        closed: list[str] = []
        for span_id in span_ids:
            body = bodies.get(span_id)
            finish = finishes.get(span_id)
            old_body = before_body.get(span_id, body)
            old_finish = before_finish.get(span_id, finish)
            was_open = _is_open(old_body, old_finish)
            now_open = _is_open(body, finish)
            if now_open and not was_open:
                opened.append(span_id)
            elif was_open and not now_open:
                closed.append(span_id)
            if (
                body is not None
                and body.parent_span_id is None
                and (body.duration_us is not None or finish is not None)
                and not (
                    old_body is not None
                    and old_body.parent_span_id is None
                    and (old_body.duration_us is not None or old_finish is not None)
                )
            ):
                root_finished = True
        return Change(
            events=changed_events, span_ids=span_ids, root_finished=root_finished, opened=opened, closed=closed
        )

    def _apply_fresh(self, events: Sequence[Event], *, late: bool) -> Change:
        """:meth:`apply` on an empty state (a trace's first batch, the common case): the same rules, with
        nothing stored to compare against."""
        self._load_fresh(events)
        bodies = self.bodies
        finishes = self.finishes
        span_ids = list(dict.fromkeys([*bodies, *finishes]))
        if late:
            self.late.update(span_ids)
        opened = [sid for sid, body in bodies.items() if body.duration_us is None and sid not in finishes]
        root_finished = any(
            body.parent_span_id is None and (body.duration_us is not None or sid in finishes)
            for sid, body in bodies.items()
        )
        return Change(
            events=[*bodies.values(), *finishes.values()],
            span_ids=span_ids,
            root_finished=root_finished,
            opened=opened,
            closed=[],
        )

    def _load_fresh(self, events: Sequence[Event]) -> None:
        """The merge rules on an empty state, without computing a :class:`Change`: what reading a trace's
        first chunk back needs, and the first half of :meth:`_apply_fresh`."""
        bodies = self.bodies
        finishes = self.finishes
        for event in events:
            if type(event) is Span:
                current = bodies.get(event.span_id)
                if current is None or current.duration_us is None or event.duration_us is not None:
                    bodies[event.span_id] = event
            else:
                finishes[event.span_id] = cast(SpanFinish, event)

    def spans(self) -> list[Span]:
        """The trace's spans, finish events merged, ordered by span id (finish events without their span
        are not spans yet and are left out)."""
        finishes = self.finishes
        out: list[Span] = []
        for span_id in sorted(self.bodies):
            body = self.bodies[span_id]
            finish = finishes.get(span_id)
            out.append(body if finish is None else merge_finish(body, finish))
        return out


class StoredStates(Mapping[str, TraceState]):
    """Traces' states as their stored chunks, each built when asked for and not kept.

    What a finalize round without a cache reads back (a finalizer process): built one trace at a time,
    each state and its spans are freed before the next trace's are decoded, so a round works within one
    trace's objects, where building every state first kept a round's spans alive (5,000 of them) and the
    analysis of each trace found them long out of the processor's caches."""

    __slots__ = ("_chunks", "_dicts")

    def __init__(self, chunks: Mapping[str, Sequence[tuple[bool, bytes]]], dicts: Dictionaries | None = None) -> None:
        self._chunks = chunks
        self._dicts = dicts

    def __getitem__(self, trace_id: str) -> TraceState:
        return TraceState.from_chunks(self._chunks[trace_id], self._dicts)

    def __iter__(self) -> Iterator[str]:
        return iter(self._chunks)

    def __len__(self) -> int:
        return len(self._chunks)
