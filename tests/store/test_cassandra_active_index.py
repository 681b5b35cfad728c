"""The Cassandra store's active index under the race a loaded node shows: a finalization can run between
a batch's chunk (which makes the trace due) and the batch's ``idx_active`` insert, so the delete of the
finalization reaches the node before the insert. The insert carries the batch's clock and the delete the
finalization's (``USING TIMESTAMP``), so the delete still wins and the trace is not listed as active for
good. The late insert is replayed here exactly as the writer sends it, on a real node."""

from __future__ import annotations

from shared.store import TraceQuery
from shared.store.cassandra import CassandraStore
from shared.store.cassandra.writer import ACTIVE
from shared.store.rollups import HOUR_US
from tests.store.test_contract import MS, NOW, simple_trace, write


async def test_an_active_index_insert_arriving_after_the_finalization_loses(cassandra: CassandraStore) -> None:
    await write(cassandra, simple_trace("t-late-insert"), now=NOW)
    assert (await cassandra.stats()).active_traces == 1
    assert [a.trace_id for a in await cassandra.finalize(["t-late-insert"], now_us=NOW + 600 * MS)] == ["t-late-insert"]
    assert (await cassandra.stats()).active_traces == 0

    # the batch's step 5, delivered only now: the same statement and values the writer sent
    cql = cassandra.cql
    values = (cql.ns, NOW // HOUR_US, "t-late-insert", NOW, True, cql.ttl_s, NOW)
    await cql.partitions([[(ACTIVE, values)]])

    assert (await cassandra.stats()).active_traces == 0
    assert await cassandra.find_traces(TraceQuery(status="active")) == []
    assert [s.trace_id for s in await cassandra.find_traces(TraceQuery())] == ["t-late-insert"]
