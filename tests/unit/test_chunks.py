"""The merge rules of storage layout v2 (``shared/store/chunks.py``): what a batch changes, what is
stored, and what reading the chunks back gives, against a plain model of the rules."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from shared.models import Event, Span, SpanFinish, merge_finish
from shared.store.chunks import StoredStates, TraceState, decode_chunk, encode_chunk

SPAN_IDS = ["a", "b", "c"]


def versions() -> st.SearchStrategy[Event]:
    span = st.builds(
        Span,
        trace_id=st.just("t"),
        span_id=st.sampled_from(SPAN_IDS),
        parent_span_id=st.sampled_from([None, "a", "x"]),
        service_name=st.sampled_from(["s1", "s2"]),
        operation_name=st.just("op"),
        start_time_us=st.integers(0, 5),
        duration_us=st.one_of(st.none(), st.integers(0, 5)),
        tags=st.dictionaries(st.sampled_from(["k", "j"]), st.integers(0, 2), max_size=2),
    )
    finish = st.builds(
        SpanFinish,
        trace_id=st.just("t"),
        span_id=st.sampled_from(SPAN_IDS),
        end_time_us=st.integers(0, 9),
        status=st.sampled_from([None, "error"]),
    )
    return st.one_of(span, finish)


def model(batches: Sequence[Sequence[Event]]) -> tuple[dict[str, Span], dict[str, SpanFinish]]:
    """The rules one event at a time: a differing version replaces the stored one unless it is open and
    the stored one finished; a differing finish event replaces the stored one."""
    bodies: dict[str, Span] = {}
    finishes: dict[str, SpanFinish] = {}
    for batch in batches:
        for e in batch:
            if isinstance(e, Span):
                old = bodies.get(e.span_id)
                if old is None or (old != e and not (old.duration_us is not None and e.duration_us is None)):
                    bodies[e.span_id] = e
            elif finishes.get(e.span_id) != e:
                finishes[e.span_id] = e
    return bodies, finishes


@given(st.lists(st.lists(versions(), max_size=6), min_size=1, max_size=4))
def test_state_follows_the_rules_and_chunks_read_back_the_same(batches: list[list[Event]]) -> None:
    state = TraceState()
    chunks: list[tuple[bool, bytes]] = []
    for i, batch in enumerate(batches):
        before = (dict(state.bodies), dict(state.finishes))
        change = state.apply(batch, late=i > 0)
        # what changed is exactly the net difference, once per span
        changed = {sid for sid in {*before[0], *state.bodies} if before[0].get(sid) != state.bodies.get(sid)}
        changed |= {sid for sid in {*before[1], *state.finishes} if before[1].get(sid) != state.finishes.get(sid)}
        assert set(change.span_ids) == changed
        assert len(change.span_ids) == len(set(change.span_ids))
        if change.events:
            chunks.append((i > 0, encode_chunk(change.events)))
    bodies, finishes = model(batches)
    assert state.bodies == bodies
    assert state.finishes == finishes
    expected = [merge_finish(b, finishes[sid]) if sid in finishes else b for sid, b in sorted(bodies.items())]
    assert state.spans() == expected
    back = TraceState.from_chunks(chunks)
    assert back.bodies == state.bodies and back.finishes == state.finishes
    assert back.late == state.late
    assert back.open_span_ids() == state.open_span_ids()
    assert [decode_chunk(body) for _, body in chunks] == [
        decode_chunk(encode_chunk(decode_chunk(b))) for _, b in chunks
    ]
    # a finalizer process's read-back: the same state, built afresh at each access (none is kept)
    stored = StoredStates({"t": chunks, "empty": []})
    assert list(stored) == ["t", "empty"] and len(stored) == 2
    first, second = stored["t"], stored["t"]
    assert first is not second
    assert (first.bodies, first.finishes, first.late, first.version) == (
        back.bodies,
        back.finishes,
        back.late,
        back.version,
    )
    assert not stored["empty"].has_spans


@given(st.lists(versions(), max_size=8))
def test_the_first_batch_takes_the_general_rules(batch: list[Event]) -> None:
    """The empty-state fast path gives what the general path gives (forced by a span of another id)."""
    fresh = TraceState().apply(batch, late=False)
    seeded = TraceState()
    seeded.apply([Span(trace_id="t", span_id="zz", service_name="s", operation_name="o", start_time_us=0)], late=False)
    general = seeded.apply(batch, late=False)
    assert sorted(fresh.span_ids) == sorted(general.span_ids)
    assert sorted(fresh.opened) == sorted(general.opened)
    assert fresh.root_finished == general.root_finished
    key = lambda e: (type(e).__name__, e.span_id)  # noqa: E731
    assert sorted(fresh.events, key=key) == sorted(general.events, key=key)


def test_duplicates_change_nothing_and_open_never_replaces_finished() -> None:
    closed = Span(trace_id="t", span_id="a", service_name="s", operation_name="o", start_time_us=0, duration_us=3)
    opened = Span(trace_id="t", span_id="a", service_name="s", operation_name="o", start_time_us=0)
    state = TraceState()
    assert state.apply([opened], late=False).opened == ["a"]
    change = state.apply([closed], late=False)
    assert (change.span_ids, change.closed, change.root_finished) == (["a"], ["a"], True)
    assert state.apply([closed, opened], late=True).events == []
    assert state.late == set()
