"""The hot store's side of the archive, on every backend of the ``store`` fixture: the traces due to move,
a block's registration (read back by time window, idempotent) taking its traces' hot rows out while the
rollups keep counting them, block drops, and pins that the hot purge respects."""

from __future__ import annotations

import msgspec

from bench.workload import realistic_traces
from shared.settings import Settings
from shared.store import ArchivedBlock, TraceQuery, TraceStore, open_store
from shared.store.base import RollupRow, StoreStats, Window
from tests.conftest import cassandra_namespace_url

T0 = 1_732_500_000_000_000
NOW = T0 + 3_600_000_000
HOUR = 3_600_000_000


async def _stored(store: TraceStore, n: int, shard: str = "spans/0", start_us: int = T0, seed: int = 1) -> list[str]:
    """The ids of some realistic traces, of ``n`` spans or a little more, written and finalized."""
    traces = list(realistic_traces(n, start_us=start_us, seed=seed))
    ids = [trace[0].trace_id for trace in traces]
    spans = [span for trace in traces for span in trace]
    await store.write_batch(spans, [], shards=dict.fromkeys(ids, shard), now_us=NOW, grace_us=0, idle_us=0)
    assert len(await store.finalize(ids, now_us=NOW + 1)) == len(ids)
    return ids


def _block(name: str, start_us: int, end_us: int, created_us: int = NOW + 2) -> ArchivedBlock:
    return ArchivedBlock(
        name=name, shard="spans/0", start_us=start_us, end_us=end_us, created_us=created_us, meta=b"\x00meta\xff"
    )


async def test_due_traces_are_those_of_the_shard_started_before_oldest_first(store: TraceStore) -> None:
    ids = await _stored(store, 600)
    other = await _stored(store, 100, shard="spans/1", start_us=T0 + 10 * HOUR, seed=2)
    due = await store.archive_due(NOW + 10 * HOUR, shard="spans/0", limit=1000)
    assert {t.trace_id for t in due} == set(ids)
    starts = [t.analysis.start_us for t in due if t.analysis is not None]
    assert len(starts) == len(due) and starts == sorted(starts)
    assert due[:10] == await store.archive_due(NOW + 10 * HOUR, shard="spans/0", limit=10)
    for trace in due[:5]:
        assert trace == await store.get_trace(trace.trace_id)
    assert await store.archive_due(T0, shard="spans/0", limit=10) == []
    assert {t.trace_id for t in await store.archive_due(NOW + 20 * HOUR, shard="spans/1", limit=10)} == set(other)


async def test_registered_blocks_read_back_by_window_and_take_the_hot_rows_not_the_rollups(
    store: TraceStore,
) -> None:
    ids = await _stored(store, 800)
    moved, kept = ids[: len(ids) // 2], ids[len(ids) // 2 :]
    window = Window(start_us=T0 - HOUR, end_us=NOW + HOUR)
    before = (await store.stats(), await store.stats(window=window), await store.rollups("operations", window))
    query = TraceQuery(limit=1000)
    assert len(await store.find_traces(query)) == len(ids)
    endpoints = {trace_id: await _endpoint(store, trace_id) for trace_id in ids}
    assert len(set(endpoints.values())) > 1

    first, second = _block("blocks/a", T0, T0 + HOUR), _block("blocks/b", T0 + 2 * HOUR, T0 + 3 * HOUR)
    await store.register_block(first, moved)
    await store.register_block(first, moved)  # idempotent: a retry after a lost answer
    await store.register_block(second, [])

    for trace_id in moved:
        assert await store.get_trace(trace_id) is None
    assert all([await store.get_trace(trace_id) is not None for trace_id in kept])
    assert sorted(s.trace_id for s in await store.find_traces(query)) == sorted(kept)
    assert {t.trace_id for t in await store.archive_due(NOW + 10 * HOUR, shard="spans/0", limit=1000)} == set(kept)
    after = (await store.stats(), await store.stats(window=window), await store.rollups("operations", window))
    assert _without_slowest(after) == _without_slowest(before)
    for service, operation in set(endpoints.values()):  # the tail reads walk the kept traces' rows alone
        tail = await store.slow_trace_contexts(service, operation, None, min_duration_us=0, limit=10_000)
        assert tail.traces == sum(endpoints[trace_id] == (service, operation) for trace_id in kept)

    assert await store.archived_blocks() == [first, second]
    assert await store.archived_blocks(start_us=T0 + HOUR, end_us=T0 + 2 * HOUR) == [first, second]
    assert await store.archived_blocks(start_us=T0 + HOUR + 1, end_us=T0 + 2 * HOUR - 1) == []
    assert await store.archived_blocks(start_us=T0 + 2 * HOUR + 5) == [second]
    assert await store.archived_blocks(end_us=T0 + 30) == [first]

    await store.drop_blocks(["blocks/a", "blocks/missing"])
    assert await store.archived_blocks() == [second]


async def _endpoint(store: TraceStore, trace_id: str) -> tuple[str, str]:
    """The trace's root service and operation (its endpoint)."""
    trace = await store.get_trace(trace_id)
    assert trace is not None and trace.analysis is not None
    return trace.analysis.root_service or "", trace.analysis.root_operation or ""


def _without_slowest(answers: tuple[StoreStats, StoreStats, list[RollupRow]]) -> tuple[object, ...]:
    """The answers with the slowest traces left out: they are read from the traces the hot store holds."""
    total, windowed, rows = answers
    return msgspec.structs.replace(total, slowest=[]), msgspec.structs.replace(windowed, slowest=[]), rows


async def test_a_trace_finalized_again_after_the_read_stays_hot(store: TraceStore) -> None:
    ids = await _stored(store, 100)
    await store.register_block(_block("blocks/old-read", T0, T0 + HOUR, created_us=NOW), ids)  # read before
    assert all([await store.get_trace(trace_id) is not None for trace_id in ids])
    assert [b.name for b in await store.archived_blocks()] == ["blocks/old-read"]


async def test_a_trace_finalized_after_a_move_with_an_older_start_is_due(store: TraceStore) -> None:
    """A late trace (or one finalized again) may start before every trace a scan already answered: it is
    due all the same (the Cassandra store's scans start from where the last one found its first)."""
    ids = await _stored(store, 300, start_us=T0 + 5 * HOUR)
    before = NOW + 10 * HOUR
    assert {t.trace_id for t in await store.archive_due(before, shard="spans/0", limit=1000)} == set(ids)
    await store.register_block(_block("blocks/first", T0 + 5 * HOUR, T0 + 6 * HOUR), ids)
    assert await store.archive_due(before, shard="spans/0", limit=1000) == []
    late = await _stored(store, 100, start_us=T0 - HOUR, seed=3)
    due = await store.archive_due(before, shard="spans/0", limit=1000)
    assert {t.trace_id for t in due} == set(late)


async def test_pinned_traces_are_kept_by_the_hot_purge(store: TraceStore) -> None:
    ids = await _stored(store, 200)
    assert len(ids) > 4
    await store.pin_trace(ids[0])
    await store.pin_trace(ids[0])
    await store.pin_trace(ids[3])
    assert await store.pinned_traces() == {ids[0], ids[3]}
    await store.purge(NOW + 10 * HOUR)
    assert {t for t in ids if (await store.get_trace(t)) is not None} == {ids[0], ids[3]}
    found = await store.find_traces(TraceQuery(limit=100, service_name="database"))
    assert {s.trace_id for s in found} <= {ids[0], ids[3]}


async def test_the_cassandra_store_opens_with_an_archive_its_rows_outliving_the_archive_delay(
    cassandra_store_keyspace: str,
) -> None:
    """The hot purge waits for a trace to be ``TRACING_ARCHIVE_AFTER_H`` old (and moved): the rows' TTL, the
    purge's safety net, must not end it before."""
    from shared.store.cassandra import CassandraStore, ttl_for

    url = cassandra_namespace_url(cassandra_store_keyspace)
    for archive_url, expected in (("file:///tmp/kafka-tracing-archive", ttl_for(48.0)), ("", ttl_for(1.0))):
        settings = Settings.from_env({}, store_url=url, archive_url=archive_url, retention_h=1.0, archive_after_h=48.0)
        opened = await open_store(settings)
        try:
            assert isinstance(opened, CassandraStore) and opened.cql.ttl_s == expected
            assert await opened.archived_blocks() == [] and await opened.pinned_traces() == set()
        finally:
            await opened.close()
