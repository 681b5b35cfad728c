"""A store holding chunks and contributions of layout v2 (named msgpack, uncompressed) beside layout v3's
reads and re-finalizes them: Cassandra keeps the old values (it has no offline migration), and every
backend reads through the same decoders."""

from __future__ import annotations

import msgspec
import pytest

from shared.store import TraceQuery, TraceStore, finalizing, writing
from shared.store.sql.store import SqlStore
from tests.store.test_contract import MS, NOW, SECOND, T0, by_id, finalize_one, simple_trace, span, stored, write


async def test_old_chunks_and_contributions_read_beside_new_ones(
    store: TraceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = msgspec.msgpack.Encoder().encode
    encoded: list[bytes] = []

    def v2(value: object, *_: object) -> bytes:  # the chunk's dictionaries, if given, unused
        encoded.append(encode(value))
        return encoded[-1]

    with monkeypatch.context() as old_code:
        old_code.setattr(writing, "encode_chunk", v2)
        old_code.setattr(finalizing, "encode_contribution", v2)
        await write(store, simple_trace("t1"))
        await finalize_one(store, "t1")
    # the chunk, and the contribution where a kept trace's is stored: Cassandra's (the SQL stores derive it)
    assert len(encoded) == (1 if isinstance(store, SqlStore) else 2)
    late = span("t1", "late", parent="root", service="queue", start=T0 + 2 * MS)
    await write(store, [late], now=NOW + SECOND)  # a v3 chunk after the v2 one
    await finalize_one(store, "t1", now=NOW + 2 * SECOND)  # the v2 contribution taken out, a v3 one in

    trace = await stored(store, "t1")
    assert by_id(trace.spans) == by_id([*simple_trace("t1"), late])
    assert trace.completeness.refinalizations == 1
    stats = await store.stats()
    assert (stats.completed_traces, stats.failed_traces) == (1, 0)
    assert {name: s.count for name, s in stats.services.items()} == {"api": 1, "db": 1, "queue": 1}
    assert [t.trace_id for t in await store.find_traces(TraceQuery(service_name="queue"))] == ["t1"]
    assert [t.trace_id for t in await store.find_traces(TraceQuery(service_name="db"))] == ["t1"]
