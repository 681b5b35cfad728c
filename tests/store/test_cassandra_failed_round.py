"""A Cassandra finalization round that fails after it wrote its contributions (step 2) but before the trace
rows (step 3) leaves the trace active, with a contribution under its shard that its row does not record.
The next round of the shard recomputes the pending minutes from the stored contributions; the trace's
next finalization must then not add its contribution on top of the one already counted. Seen in the
fault test (a node killed mid-stream): 1,148 traces counted of 1,000."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import pytest

from shared.store.base import Window
from shared.store.cassandra import CassandraStore, aggregates
from shared.store.cassandra.aggregates import SERIES
from shared.store.cassandra.finalizer import DELETE_TRACE, SUMMARY
from shared.store.cassandra.schema import Cql
from shared.store.rollups import MINUTE
from tests.store.test_contract import MS, NOW, SECOND, SHARD, T0, simple_trace, span, write

Groups = Iterable[Sequence[tuple[str, Sequence[Any]]]]


class Timeout(Exception):
    """What a write that timed out looks like to the round."""


def failing_once(cql: Cql, statement: str = SUMMARY) -> Callable[[Groups], Awaitable[None]]:
    """``cql.partitions`` that fails the next write of ``statement`` (default: the trace summaries, step 3),
    once."""
    real = cql.partitions
    failed = False

    async def partitions(groups: Groups) -> None:
        nonlocal failed
        groups = [list(g) for g in groups]
        if not failed and any(cql_text == statement for g in groups for cql_text, _ in g):
            failed = True
            raise Timeout("request timed out")
        await real(groups)

    return partitions


async def counted(store: CassandraStore) -> tuple[int, int]:
    """(traces in the rollups, spans in the rollups)."""
    stats = await store.stats()
    return stats.completed_traces + stats.failed_traces, sum(s.count for s in stats.services.values())


@pytest.mark.parametrize("other_round_first", [False, True], ids=["retried", "after-another-round"])
async def test_a_round_failed_after_its_contributions_counts_the_trace_once(
    cassandra: CassandraStore, monkeypatch: pytest.MonkeyPatch, other_round_first: bool
) -> None:
    trace = simple_trace("t-half", start=T0)
    other = simple_trace("t-other", start=T0 + 5 * MS)  # the same shard and minute
    await write(cassandra, [*trace, *other], now=NOW)
    monkeypatch.setattr(cassandra.cql, "partitions", failing_once(cassandra.cql))
    with pytest.raises(Timeout):
        await cassandra.finalize(["t-half"], now_us=NOW + 600 * MS)
    stored = await cassandra.get_trace("t-half")
    assert stored is not None and stored.state == "active"

    if other_round_first:  # a round of the shard that adopts it (recomputing the pending minute) first
        assert [a.trace_id for a in await cassandra.finalize(["t-other"], now_us=NOW + 700 * MS)] == ["t-other"]
    assert [a.trace_id for a in await cassandra.finalize(["t-half"], now_us=NOW + 800 * MS)] == ["t-half"]
    if not other_round_first:
        assert [a.trace_id for a in await cassandra.finalize(["t-other"], now_us=NOW + 900 * MS)] == ["t-other"]

    assert await counted(cassandra) == (2, len(trace) + len(other))


async def test_a_failed_refinalization_that_moved_the_contribution_counts_the_trace_once(
    cassandra: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    child = span("t-moved", "child", parent="root", service="db", start=T0)
    await write(cassandra, [child], now=NOW)
    assert [a.trace_id for a in await cassandra.finalize(["t-moved"], now_us=NOW + 600 * MS)] == ["t-moved"]
    # the root arrives late, two minutes earlier: the trace's start, so its contribution's minute, moves
    root = span("t-moved", "root", service="api", start=T0 - 120 * SECOND, duration=121 * SECOND)
    await write(cassandra, [root], now=NOW + 700 * MS)
    monkeypatch.setattr(cassandra.cql, "partitions", failing_once(cassandra.cql))
    with pytest.raises(Timeout):  # the contribution under the new minute, the old one deleted, no trace row
        await cassandra.finalize(["t-moved"], now_us=NOW + 1300 * MS)

    assert [a.trace_id for a in await cassandra.finalize(["t-moved"], now_us=NOW + 1400 * MS)] == ["t-moved"]
    assert await counted(cassandra) == (1, 2)
    earlier = await cassandra.stats(window=Window(start_us=T0 - 150 * SECOND, end_us=T0 - 60 * SECOND))
    later = await cassandra.stats(window=Window(start_us=T0, end_us=T0 + 60 * SECOND))
    assert (earlier.completed_traces, later.completed_traces) == (1, 0)  # at its new start only


async def test_a_round_failed_after_its_trace_rows_is_rolled_up_at_the_owners_next_due_scan(
    cassandra: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trace rows are written (step 3), the rollup slices are not (step 4): the traces are finalized
    and no round of the shard will come again if nothing else is due. The owner's next due scan, finding
    nothing due, finishes the pending slices all the same."""
    trace = simple_trace("t-last", start=T0)
    await write(cassandra, trace, now=NOW, shard=SHARD)
    real_apply = cassandra._aggregates.apply
    failed = False

    async def apply(*args: Any, **kwargs: Any) -> None:
        nonlocal failed
        if not failed:
            failed = True
            raise Timeout("rollup slices: request timed out")
        await real_apply(*args, **kwargs)

    monkeypatch.setattr(cassandra._aggregates, "apply", apply)
    with pytest.raises(Timeout):
        await cassandra.finalize(["t-last"], now_us=NOW + 600 * MS)
    stored = await cassandra.get_trace("t-last")
    assert stored is not None and stored.state == "finalized"
    assert await counted(cassandra) == (0, 0)

    assert await cassandra.due_traces({SHARD}, NOW + 700 * MS, 10) == []
    assert await counted(cassandra) == (1, len(trace))


OTHER = "spans/1"


async def test_a_round_failed_on_one_shard_leaves_no_slice_write_of_another_running(
    cassandra: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round of two shards whose rollup slices fail on one: the other shard's slice updates stop with the
    round. One that went on would write slices computed before the round failed once later rounds have
    written theirs (its memory of the slices, its token: taken as current from then on)."""
    await write(cassandra, simple_trace("t-a", start=T0), now=NOW, shard=SHARD)
    for i, trace_id in enumerate(("t-b0", "t-b1", "t-b2")):
        await write(cassandra, simple_trace(trace_id, start=T0 + (i + 1) * MS), now=NOW, shard=OTHER)
    assert [a.trace_id for a in await cassandra.finalize(["t-b0"], now_us=NOW + 600 * MS)] == ["t-b0"]

    cql = cassandra.cql
    real = cql.partitions
    slices = {spec.insert_cql for spec in SERIES}
    other_entered, release, idle = asyncio.Event(), asyncio.Event(), asyncio.Event()
    idle.set()
    held = 0

    async def partitions(groups: Groups) -> None:
        nonlocal held
        groups = [list(g) for g in groups]
        minute_slices = {v[3] for g in groups for text, v in g if text in slices and v[1] == MINUTE}
        if SHARD in minute_slices:  # fails, once the other shard's first slice write is under way
            await asyncio.wait_for(other_entered.wait(), 30)
            raise Timeout("rollup slices: request timed out")
        if OTHER in minute_slices and not other_entered.is_set():
            other_entered.set()
            held += 1
            idle.clear()
            try:
                await release.wait()
                await real(groups)
            finally:
                held -= 1
                if not held:
                    idle.set()
            return
        await real(groups)

    monkeypatch.setattr(cql, "partitions", partitions)
    with pytest.raises(Timeout):
        await cassandra.finalize(["t-a", "t-b1"], now_us=NOW + 700 * MS)
    monkeypatch.setattr(cql, "partitions", real)
    assert [a.trace_id for a in await cassandra.finalize(["t-b2"], now_us=NOW + 800 * MS)] == ["t-b2"]
    release.set()
    await asyncio.wait_for(idle.wait(), 30)  # whatever of the failed round was still running has ended

    assert await cassandra.due_traces({SHARD, OTHER}, NOW + 900 * MS, 10) == []  # adopts the failed shard
    assert await counted(cassandra) == (4, 8)


async def test_a_trace_row_write_that_failed_but_landed_later_does_not_hide_the_trace(
    cassandra: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that times out may still be applied, on a replica the next reads do not ask (one that was
    killed and comes back, or was slow to answer), and reach the others later. The round's trace row is
    such a write here: the owner's next scan adopts the shard and takes the round's contribution out, as
    the row it reads records none; then the row arrives with the timestamp it was sent with. The trace
    must not become finalized without being counted: the adoption wrote the row's finalization anew."""
    trace = simple_trace("t-ghost", start=T0)
    await write(cassandra, trace, now=NOW, shard=SHARD)
    cql = cassandra.cql
    real = cql.partitions
    sent: list[tuple[int, Sequence[Any]]] = []

    async def partitions(groups: Groups) -> None:
        groups = [list(g) for g in groups]
        rows = [values for g in groups for text, values in g if text == SUMMARY]
        if rows and not sent:
            sent.extend((time.time_ns() // 1000, values) for values in rows)
            raise Timeout("trace rows: request timed out")
        await real(groups)

    monkeypatch.setattr(cql, "partitions", partitions)
    with pytest.raises(Timeout):
        await cassandra.finalize(["t-ghost"], now_us=NOW + 600 * MS)
    monkeypatch.setattr(cql, "partitions", real)
    assert await cassandra.due_traces({SHARD}, NOW + 700 * MS, 10) == ["t-ghost"]  # adopts the shard first

    late = SUMMARY.replace("USING TTL ?", "USING TTL ? AND TIMESTAMP ?")
    await real([[(late, (values[0], stamp, *values[1:]))] for stamp, values in sent])
    due = await cassandra.due_traces({SHARD}, NOW + 800 * MS, 10)
    assert due == ["t-ghost"]
    assert [a.trace_id for a in await cassandra.finalize(due, now_us=NOW + 900 * MS)] == ["t-ghost"]
    assert await counted(cassandra) == (1, len(trace))


async def test_a_round_another_owner_left_pending_is_finished_by_a_process_that_had_adopted_the_shard(
    cassandra: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard goes to another process and comes back between two due scans of this one, so no scan of
    this one released it; that process's round wrote the trace rows and died before the rollup slices.
    A scan here still finishes the pending round, once it is old enough not to be under way any more."""
    trace = simple_trace("t-away", start=T0)
    await write(cassandra, trace, now=NOW, shard=SHARD)
    assert await cassandra.due_traces({SHARD}, NOW, 10) == []  # adopted here, nothing due yet

    elsewhere = CassandraStore(cassandra._session, ttl_s=cassandra.cql.ttl_s)  # another owner, meanwhile

    async def apply(*args: Any, **kwargs: Any) -> None:
        raise Timeout("rollup slices: request timed out")

    monkeypatch.setattr(elsewhere._aggregates, "apply", apply)
    assert await elsewhere.due_traces({SHARD}, NOW + 600 * MS, 10) == ["t-away"]
    with pytest.raises(Timeout):
        await elsewhere.finalize(["t-away"], now_us=NOW + 600 * MS)
    stored = await cassandra.get_trace("t-away")
    assert stored is not None and stored.state == "finalized"

    assert await cassandra.due_traces({SHARD}, NOW + 700 * MS, 10) == []  # the shard is back here
    assert await counted(cassandra) == (0, 0)  # that process's round may still be under way: left to it
    monkeypatch.setattr(aggregates, "ROUND_LEASE_US", 0)  # its record is old enough now: that process died
    assert await cassandra.due_traces({SHARD}, NOW + 800 * MS, 10) == []
    assert await counted(cassandra) == (1, len(trace))


async def test_a_purge_failed_after_its_rollup_update_takes_each_trace_out_once(
    cassandra: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge round deletes the contributions, updates the slices, then deletes the trace rows. Failing at
    the rows, it leaves them for the next purge, whose rollup update must not take them out again."""
    kept = simple_trace("t-kept", start=T0 + 10 * MS)  # the same shard and minute, not purged
    for trace_id, spans in (
        ("t-old1", simple_trace("t-old1", start=T0)),
        ("t-old2", simple_trace("t-old2", start=T0 + MS)),
    ):
        await write(cassandra, spans, now=NOW, shard=SHARD)
        assert [a.trace_id for a in await cassandra.finalize([trace_id], now_us=NOW + 600 * MS)] == [trace_id]
    await write(cassandra, kept, now=NOW, shard=SHARD)
    assert [a.trace_id for a in await cassandra.finalize(["t-kept"], now_us=NOW + 600 * MS)] == ["t-kept"]
    monkeypatch.setattr(cassandra.cql, "partitions", failing_once(cassandra.cql, DELETE_TRACE))
    with pytest.raises(Timeout):
        await cassandra.purge(T0 + 5 * MS, shards={SHARD})
    assert await cassandra.purge(T0 + 5 * MS, shards={SHARD}) == 2

    assert await counted(cassandra) == (1, len(kept))


async def test_a_round_another_process_has_under_way_is_left_to_it(
    cassandra: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes hold a shard at once for a while (one the consumer group dropped goes on with its round
    until it learns of it). The new owner's scan finds the round's record: it leaves the record, and the
    shard, alone, instead of taking out the contributions whose trace rows the round is about to write."""
    trace = simple_trace("t-both", start=T0)
    await write(cassandra, trace, now=NOW, shard=SHARD)
    cql = cassandra.cql
    real = cql.partitions
    writing, release = asyncio.Event(), asyncio.Event()

    async def partitions(groups: Groups) -> None:
        groups = [list(g) for g in groups]
        if any(text == SUMMARY for g in groups for text, _ in g):  # the trace rows wait (a slow write)
            writing.set()
            await asyncio.wait_for(release.wait(), 30)
        await real(groups)

    monkeypatch.setattr(cql, "partitions", partitions)
    under_way = asyncio.create_task(cassandra.finalize(["t-both"], now_us=NOW + 600 * MS))
    await asyncio.wait_for(writing.wait(), 30)
    newcomer = CassandraStore(cassandra._session, ttl_s=cql.ttl_s)  # the shard's new owner
    assert await newcomer.due_traces({SHARD}, NOW + 700 * MS, 10) == []
    release.set()
    assert [a.trace_id for a in await under_way] == ["t-both"]

    assert await newcomer.due_traces({SHARD}, NOW + 800 * MS, 10) == []  # adopted now: the record is gone
    assert await counted(cassandra) == (1, len(trace))


async def test_a_round_that_ran_too_long_stops_before_its_next_write(
    cassandra: CassandraStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round past :data:`ROUND_FENCE_US` writes nothing more (another process may take its record over
    once it is :data:`ROUND_LEASE_US` old); its trace stays active, and the next round finalizes it."""
    trace = simple_trace("t-slow", start=T0)
    await write(cassandra, trace, now=NOW, shard=SHARD)
    monkeypatch.setattr(aggregates, "ROUND_FENCE_US", 0)
    with pytest.raises(aggregates.RoundOverrun):
        await cassandra.finalize(["t-slow"], now_us=NOW + 600 * MS)
    stored = await cassandra.get_trace("t-slow")
    assert stored is not None and stored.state == "active"

    monkeypatch.undo()
    assert [a.trace_id for a in await cassandra.finalize(["t-slow"], now_us=NOW + 700 * MS)] == ["t-slow"]
    assert await counted(cassandra) == (1, len(trace))
