"""The Cassandra archive's due scan starts from a per-shard floor kept in the owner's memory (see
:mod:`shared.store.cassandra.archive`). A trace finalized below it by another process (a previous owner of
the shard) is found once the shard changes hands here, or at the next full scan (once an hour), never
lost."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bench.workload import realistic_traces
from shared.settings import Settings
from shared.store import ArchivedBlock, TraceStore, open_store
from shared.store.cassandra import CassandraStore
from shared.store.cassandra.archive import RESCAN_S, Registry
from tests.conftest import cassandra_namespace_url

T0 = 1_732_500_000_000_000
HOUR = 3_600_000_000
NOW = T0 + HOUR
BEFORE = NOW + 10 * HOUR
SHARD = "spans/0"


@pytest.fixture
async def two_processes(cassandra_store_keyspace: str) -> AsyncIterator[tuple[CassandraStore, CassandraStore]]:
    """Two stores on one namespace, as two worker processes of one cluster."""
    url = cassandra_namespace_url(cassandra_store_keyspace)
    first = await open_store(Settings.from_env({}, store_url=url), writer=True)
    second = await open_store(Settings.from_env({}, store_url=url), writer=True)
    try:
        assert isinstance(first, CassandraStore) and isinstance(second, CassandraStore)
        yield first, second
    finally:
        await first.close()
        await second.close()


async def _stored(store: TraceStore, start_us: int, seed: int) -> set[str]:
    traces = list(realistic_traces(200, start_us=start_us, seed=seed))
    ids = [trace[0].trace_id for trace in traces]
    spans = [span for trace in traces for span in trace]
    await store.write_batch(spans, [], shards=dict.fromkeys(ids, SHARD), now_us=NOW, grace_us=0, idle_us=0)
    assert len(await store.finalize(ids, now_us=NOW + 1)) == len(ids)
    return set(ids)


async def _due(store: TraceStore) -> set[str]:
    return {t.trace_id for t in await store.archive_due(BEFORE, shard=SHARD, limit=10_000)}


async def test_a_trace_another_owner_finalized_below_the_floor_is_found_on_handover_or_rescan(
    two_processes: tuple[CassandraStore, CassandraStore],
) -> None:
    owner, previous = two_processes
    clock = [0.0]
    owner._registry = Registry(owner.cql, clock=lambda: clock[0])
    moved = await _stored(owner, T0 + 5 * HOUR, seed=1)
    assert await _due(owner) == moved
    block = ArchivedBlock(name="blocks/b", shard=SHARD, start_us=T0, end_us=T0, created_us=NOW + 2, meta=b"m")
    await owner.register_block(block, sorted(moved))
    assert await _due(owner) == set()  # the floor is past everything now

    late = await _stored(previous, T0 - HOUR, seed=2)  # finalized by another process, below the floor
    assert await _due(previous) == late  # a process without a floor for the shard finds them
    assert await _due(owner) == set()  # this one, not yet
    await owner.due_traces({"spans/1"}, NOW + 2, 10)  # the shard left this process: its floor goes
    assert await _due(owner) == late

    later = await _stored(previous, T0 - 2 * HOUR, seed=3)
    assert await _due(owner) == late  # the floor is the first due trace's start
    clock[0] += RESCAN_S
    assert await _due(owner) == late | later
