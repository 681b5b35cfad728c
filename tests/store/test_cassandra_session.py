"""CassandraSession on a real node (``cassandra_url``): the keyspace created from the URL's replication,
rows written and read at QUORUM (one by one, many at once with a bound, as unlogged batches), the
consistency level applied per statement, and failures raised as CassandraError naming the statement
while the session keeps working."""

from __future__ import annotations

import os
import socket

import msgspec
import pytest

from shared.store.cassandra.config import CassandraConfig, CassandraError
from shared.store.cassandra.session import CassandraSession

CHUNK = os.urandom(3584)


async def connect(url: str, **changes: object) -> CassandraSession:
    config = msgspec.structs.replace(CassandraConfig.from_url(url), **changes)
    return await CassandraSession.connect(config)


async def test_creates_the_keyspace_then_writes_and_reads_at_quorum(cassandra_keyspace_url: str) -> None:
    session = await connect(cassandra_keyspace_url)
    try:
        config = session.config
        rows = await session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?", (config.keyspace,)
        )
        assert len(rows) == 1
        replication = rows[0][0]
        assert replication["class"].endswith("SimpleStrategy")
        assert replication["replication_factor"] == str(config.replication_factor)

        await session.execute("CREATE TABLE chunks (trace_id text, seq int, value blob, PRIMARY KEY (trace_id, seq))")
        insert = await session.prepare("INSERT INTO chunks (trace_id, seq, value) VALUES (?, ?, ?)")
        assert await session.prepare("INSERT INTO chunks (trace_id, seq, value) VALUES (?, ?, ?)") is insert
        traces = [f"trace-{i:03d}" for i in range(40)]
        await session.execute_many(
            insert,
            [(t, seq, CHUNK + t.encode()) for t in traces[:20] for seq in range(3)],
            concurrency=16,
            consistency="QUORUM",
        )
        for t in traces[20:]:
            await session.execute_batch(
                insert, [(t, seq, CHUNK + t.encode()) for seq in range(3)], consistency="QUORUM"
            )

        select = await session.prepare("SELECT seq, value FROM chunks WHERE trace_id = ?")
        results = await session.execute_many(select, [(t,) for t in traces], concurrency=8, consistency="QUORUM")
        assert [len(r) for r in results] == [3] * len(traces)  # in the order asked
        for t, rows_of_trace in zip(traces, results, strict=True):
            assert rows_of_trace == [(seq, CHUNK + t.encode()) for seq in range(3)]
        assert await session.execute(select, ("no-such-trace",), consistency="QUORUM") == []

        marks = ", ".join("?" * 10)
        by_in = await session.execute(
            f"SELECT trace_id, seq FROM chunks WHERE trace_id IN ({marks})", traces[15:25], consistency="QUORUM"
        )
        assert sorted(by_in) == [(t, seq) for t in traces[15:25] for seq in range(3)]

        # overwriting is idempotent: the same row again, a new value wins
        await session.execute(insert, (traces[0], 0, b"new"), consistency="QUORUM")
        assert (await session.execute(select, (traces[0],)))[0] == (0, b"new")
    finally:
        await session.close()
        await session.close()  # idempotent


async def test_pages_follow_the_page_state_to_the_last_row(cassandra_keyspace_url: str) -> None:
    session = await connect(cassandra_keyspace_url)
    try:
        await session.execute("CREATE TABLE rows (p int, c int, v text, PRIMARY KEY (p, c))")
        insert = await session.prepare("INSERT INTO rows (p, c, v) VALUES (?, ?, ?)")
        await session.execute_many(insert, [(1, c, f"v{c}") for c in range(250)], concurrency=32)
        select = await session.prepare("SELECT c FROM rows WHERE p = ?")
        pages = [page async for page in session.pages(select, (1,), page_size=100)]
        assert [len(p) for p in pages] == [100, 100, 50]
        assert [row[0] for page in pages for row in page] == list(range(250))
        assert [row[0] for row in await session.execute_all(select, (1,), page_size=7)] == list(range(250))
        assert await session.execute_all(select, (2,)) == []
        first = None
        async for page in session.pages(select, (1,), page_size=10):  # stopping early reads no further
            first = page
            break
        assert first == [(c,) for c in range(10)]
        with pytest.raises(ValueError, match="page_size"):
            await session.execute_all(select, (1,), page_size=0)

        # several statements of one partition in one unlogged batch: inserts and a delete together
        delete = await session.prepare("DELETE FROM rows WHERE p = ? AND c = ?")
        await session.execute_statements([(insert, (1, 1000, "new")), (delete, (1, 0)), (delete, (1, 1))])
        rows = await session.execute_all(select, (1,))
        assert rows[0] == (2,) and rows[-1] == (1000,) and len(rows) == 249
        await session.execute_statements([])  # nothing to do
        with pytest.raises(CassandraError, match="batch of 1 statements"):
            await session.execute_statements([(insert, (1, 1, "x"))], consistency="THREE")
    finally:
        await session.close()


async def test_an_existing_keyspace_is_left_as_it_is(cassandra_keyspace_url: str) -> None:
    first = await connect(cassandra_keyspace_url)
    await first.close()
    again = await connect(cassandra_keyspace_url, replication_factor=5)  # would be unavailable if applied
    try:
        (replication,) = (
            await again.execute(
                "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?", (again.config.keyspace,)
            )
        )[0]
        assert replication["replication_factor"] == str(first.config.replication_factor)
    finally:
        await again.close()


async def test_consistency_is_applied_per_statement(cassandra_keyspace_url: str) -> None:
    session = await connect(cassandra_keyspace_url, replication_factor=1)
    try:
        await session.execute("CREATE TABLE kv (k text PRIMARY KEY, v int)")
        upsert = await session.prepare("INSERT INTO kv (k, v) VALUES (?, ?)")
        await session.execute(upsert, ("a", 1), consistency="QUORUM")
        # one replica per row: a level that needs more replicas than exist must fail, naming the statement
        with pytest.raises(CassandraError, match="INSERT INTO kv"):
            await session.execute(upsert, ("a", 2), consistency="THREE")
        with pytest.raises(CassandraError, match="INSERT INTO kv"):
            await session.execute_batch(upsert, [("a", 3), ("a", 4)], consistency="TWO")
        assert await session.execute("SELECT v FROM kv WHERE k = ?", ("a",), consistency="ONE") == [(1,)]
    finally:
        await session.close()


async def test_failures_name_the_statement_and_the_session_goes_on(cassandra_keyspace_url: str) -> None:
    session = await connect(cassandra_keyspace_url)
    try:
        with pytest.raises(CassandraError, match="SELEC nonsense"):
            await session.execute("SELEC nonsense")
        with pytest.raises(CassandraError, match="no_such_table"):
            await session.prepare("SELECT * FROM no_such_table WHERE k = ?")
        await session.execute("CREATE TABLE kv (k text PRIMARY KEY, v int)")
        upsert = await session.prepare("INSERT INTO kv (k, v) VALUES (?, ?)")
        # the first failure among many is raised
        with pytest.raises(CassandraError, match="INSERT INTO kv"):
            await session.execute_many(
                upsert, [("a", 1), ("b", 2), ("c", 3), ("d", 4)], concurrency=1, consistency="THREE"
            )
        await session.execute_many(upsert, [("a", 1), ("b", 2)], concurrency=2)
        assert sorted(await session.execute("SELECT k, v FROM kv")) == [("a", 1), ("b", 2)]
        with pytest.raises(ValueError, match="concurrency"):
            await session.execute_many(upsert, [("a", 1)], concurrency=0)
    finally:
        await session.close()


async def test_a_missing_keyspace_without_create_is_an_error(cassandra_keyspace_url: str) -> None:
    config = CassandraConfig.from_url(cassandra_keyspace_url)
    with pytest.raises(CassandraError, match=f"cannot use keyspace '{config.keyspace}'"):
        await CassandraSession.connect(config, create_keyspace=False)


async def test_no_node_answering_is_an_error_naming_the_address(cassandra_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # bound, never listening: connections are refused
        config = msgspec.structs.replace(
            CassandraConfig.from_url(cassandra_url), hosts=("127.0.0.1",), port=closed_port, connect_timeout_s=2.0
        )
        with pytest.raises(CassandraError, match=f"127.0.0.1:{closed_port}"):
            await CassandraSession.connect(config)
        # a worker retries while the cluster is down: failed attempts must not pile up file descriptors
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            with pytest.raises(CassandraError):
                await CassandraSession.connect(config)
        assert len(os.listdir("/proc/self/fd")) <= before + 2


def test_closing_waits_only_for_hosts_that_came_back() -> None:
    """The hosts found when connecting do not delay a close; a host that went down (until it is back), one
    that came back up, or one that joined after statements were prepared, do (the driver prepares
    everything on it again)."""
    from shared.store.cassandra.session import _HostEvents

    class Event:
        def __init__(self, name: str) -> None:
            self.name = name

    events = _HostEvents()
    for name in ("ADD", "UP"):
        events.on_event(Event(name), "127.0.0.1")
    assert events.last_up == float("-inf") and not events.down
    events.on_event(Event("DOWN"), "127.0.0.3")
    assert events.down == {"127.0.0.3"} and not events.all_up.is_set()
    events.on_event(Event("UP"), "127.0.0.3")
    came_back = events.last_up
    assert came_back > float("-inf") and not events.down and events.all_up.is_set()
    events.on_event(Event("UP"), "127.0.0.2")  # never down: nothing to re-prepare
    assert events.last_up == came_back
    events.prepared = True
    events.on_event(Event("ADD"), "127.0.0.4")
    assert events.last_up >= came_back
    events.on_event(Event("DOWN"), "127.0.0.4")
    events.on_event(Event("REMOVE"), "127.0.0.4")  # decommissioned: not waited for
    assert not events.down
