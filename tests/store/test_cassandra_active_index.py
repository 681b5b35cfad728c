"""The Cassandra store's active index under the race a loaded node shows: a finalization can run between
a batch's chunk (which makes the trace due) and the batch's ``idx_active`` insert, so the delete of the
finalization reaches the node before the insert. The insert carries the timestamp of the batch's chunks
and the delete a later one than every chunk the finalization read (``USING TIMESTAMP``), so the delete
still wins and the trace is not listed as active for good, whether the batch began before the round
did or after it. The late insert is the writer's own statement, held back and delivered after the round,
on a real node."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from shared.store import TraceQuery
from shared.store.cassandra import CassandraStore
from shared.store.cassandra.writer import ACTIVE
from shared.store.rollups import HOUR_US
from tests.store.test_contract import MS, NOW, SECOND, T0, simple_trace, span, write

Groups = Iterable[Sequence[tuple[str, Sequence[Any]]]]
ROWS = "SELECT trace_id FROM idx_active WHERE ns = ? AND hour = ?"


async def listed(store: CassandraStore, trace_id: str) -> bool:
    """Whether an ``idx_active`` row names the trace (the index itself, not what the reads make of it)."""
    cql = store.cql
    hours = {NOW // HOUR_US, (NOW + 10 * SECOND) // HOUR_US}
    names = {row[0] for hour in sorted(hours) for row in await cql.rows(ROWS, (cql.ns, hour))}
    return trace_id in names


async def write_holding_back_the_active_row(
    store: CassandraStore, monkeypatch: pytest.MonkeyPatch, **kw: Any
) -> Groups:
    """One batch whose ``idx_active`` statements are not sent (the writer takes them as written); returned."""
    cql = store.cql
    real = cql.partitions
    held: list[list[tuple[str, Sequence[Any]]]] = []

    async def partitions(groups: Groups) -> None:
        lists = [list(g) for g in groups]
        held.extend(g for g in lists if any(text == ACTIVE for text, _ in g))
        await real([g for g in lists if not any(text == ACTIVE for text, _ in g)])

    monkeypatch.setattr(cql, "partitions", partitions)
    try:
        await write(store, **kw)
    finally:
        monkeypatch.setattr(cql, "partitions", real)
    assert held, "the batch wrote no idx_active row"
    return held


@pytest.mark.parametrize("began", [-400 * MS, 400 * MS], ids=["before-the-round", "after-the-round-began"])
async def test_an_active_index_insert_arriving_after_the_finalization_loses(
    cassandra: CassandraStore, monkeypatch: pytest.MonkeyPatch, began: int
) -> None:
    await write(cassandra, simple_trace("t-late-insert"), now=NOW)
    assert [a.trace_id for a in await cassandra.finalize(["t-late-insert"], now_us=NOW + 600 * MS)] == ["t-late-insert"]
    assert (await cassandra.stats()).active_traces == 0

    # a late span re-opens the trace; the round (its clock at NOW + 5 s) reads the batch's chunk, and the
    # batch's idx_active insert reaches the node only after the round's delete
    late = span("t-late-insert", "late", parent="root", service="worker", start=T0 + 20 * MS)
    round_us = NOW + 5 * SECOND
    held = await write_holding_back_the_active_row(cassandra, monkeypatch, spans=[late], now=round_us + began)
    assert [a.trace_id for a in await cassandra.finalize(["t-late-insert"], now_us=round_us)] == ["t-late-insert"]
    await cassandra.cql.partitions(held)

    assert not await listed(cassandra, "t-late-insert")
    assert (await cassandra.stats()).active_traces == 0
    assert await cassandra.find_traces(TraceQuery(status="active")) == []
    assert [s.trace_id for s in await cassandra.find_traces(TraceQuery())] == ["t-late-insert"]


async def test_a_batch_after_the_round_keeps_its_trace_listed(cassandra: CassandraStore) -> None:
    """The other side: the round's delete, stamped after the chunks it read (the wall clock, while these
    tests' clocks are years behind), does not hide a trace that a later chunk re-opens."""
    await write(cassandra, simple_trace("t-reopened"), now=NOW)
    assert [a.trace_id for a in await cassandra.finalize(["t-reopened"], now_us=NOW + 600 * MS)] == ["t-reopened"]
    late = span("t-reopened", "late", parent="root", service="worker", start=T0 + 20 * MS)
    await write(cassandra, [late], now=NOW + 700 * MS)

    assert await listed(cassandra, "t-reopened")
    assert (await cassandra.stats()).active_traces == 0  # a re-opened trace is not counted as a new one
    assert [s.trace_id for s in await cassandra.find_traces(TraceQuery(status="active"))] == ["t-reopened"]
