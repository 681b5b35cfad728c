"""The archive's object store and blocks on a real S3-compatible server (S3Proxy of ``scripts/s3.sh``, AWS
Signature V4 with the test's keys), opened from a ``TRACING_ARCHIVE_URL`` with the keys in it: blocks
written, traces read back by id with ranged GETs of their row group only (the ranges the store is asked
for), searched, listed by folder and deleted; a wrong secret refused; a missing object is
:class:`ObjectMissing`; a server that is down is an ``OSError``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from urllib.parse import quote

import pytest

from bench.workload import demo_traces, realistic_traces
from shared.archive.block import BLOCKS, block_name, holding_groups, write_block
from shared.archive.objects import ObjectMissing
from shared.archive.reader import BlockReader
from shared.archive.s3 import S3ObjectStore
from shared.settings import Settings
from shared.store.base import Completeness, StoredTrace, TraceQuery
from tests.conftest import free_port
from tests.e2e.s3proxy import ACCESS_KEY, SECRET_KEY, S3Server, server

__all__ = ["server"]  # the fixture

pytestmark = pytest.mark.timeout(900)  # the first `up` on a machine fetches S3Proxy's jars
T0 = 1_796_600_000_000_000


class CountingS3(S3ObjectStore):
    """The S3 store, recording the byte ranges asked for."""

    ranges: list[tuple[int, int]]

    async def get_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        self.ranges.extend(ranges)
        return await super().get_ranges(name, ranges)


def stored(spans_wanted: int, realistic: bool) -> list[StoredTrace]:
    generate = realistic_traces if realistic else demo_traces
    return [
        StoredTrace(
            trace_id=s[0].trace_id,
            state="finalized",
            spans=s,
            analysis=None,
            completeness=Completeness(finalized_at_us=T0),
        )
        for s in generate(spans_wanted, start_us=T0)
    ]


def archive_url(base: str, secret: str = SECRET_KEY) -> str:
    bucket_and_rest = base.removeprefix("s3://")
    bucket, _, rest = bucket_and_rest.partition("/")
    return f"s3://{ACCESS_KEY}:{quote(secret, safe='')}@{bucket}/e2e-archive{rest}"


def test_blocks_on_s3proxy_read_by_id_with_ranged_gets_searched_listed_and_deleted(server: S3Server) -> None:
    up = server.ok(
        "up", "--port", str(free_port()), env={"TRACING_S3_ACCESS_KEY": ACCESS_KEY, "TRACING_S3_SECRET_KEY": SECRET_KEY}
    )
    base = up.stdout.strip().splitlines()[-1]
    location = Settings.from_env({"TRACING_ARCHIVE_URL": archive_url(base)}).archive_location()
    assert location is not None and location.prefix == "e2e-archive/"
    assert SECRET_KEY not in repr(location)
    asyncio.run(_exercise(CountingS3(location), server, base))


async def _exercise(store: CountingS3, server: S3Server, base: str) -> None:
    store.ranges = []
    hours = [stored(12_000, realistic=False), stored(6_000, realistic=True)]
    blocks = [write_block(traces) for traces in hours]
    names = [block_name(shard, T0 + shard * 3_600_000_000, f"e2e{shard}") for shard in range(2)]
    await asyncio.gather(*(store.put(name, block.data) for name, block in zip(names, blocks, strict=True)))
    listed = await store.list(BLOCKS)
    assert [(i.name, i.size) for i in listed] == [(n, b.meta.size) for n, b in zip(names, blocks, strict=True)]
    assert await store.list("blocks/2026-12-0") == []  # whole path segments only
    assert await store.get(names[0]) == blocks[0].data

    reader = BlockReader(store)
    for name, block, traces in zip(names, blocks, hours, strict=True):
        assert len(block.meta.row_groups) >= 2
        for trace in traces[:: max(1, len(traces) // 20)]:
            store.ranges.clear()
            started = time.perf_counter()
            got = await reader.get_trace(name, block.meta, trace.trace_id)
            assert got is not None, trace.trace_id
            assert got.spans == sorted(trace.spans, key=lambda span: span.start_time_us)
            fetched = [r for r in store.ranges if r[0] < block.meta.footer_offset]
            key = bytes.fromhex(trace.trace_id)
            groups = [block.meta.row_groups[i] for i in holding_groups(block.meta, key)]
            assert fetched == [(g.offset, g.offset + g.length) for g in groups]
            assert time.perf_counter() - started < 5
        service = traces[0].spans[0].service_name
        found = await reader.find_traces(name, block.meta, TraceQuery(service_name=service, limit=7))
        assert len(found) == 7 and found == sorted(found, key=lambda s: s.start_us, reverse=True)
        newest = max(traces, key=lambda t: min(s.start_time_us for s in t.spans))
        assert found[0].start_us == min(s.start_time_us for s in newest.spans)
        assert await reader.get_trace(name, block.meta, "0" * 32) is None

    await store.delete(names[0])
    await store.delete(names[0])  # nothing there: no error
    assert [i.name for i in await store.list("")] == names[1:]
    with pytest.raises(ObjectMissing):
        await store.get(names[0])
    with pytest.raises(ObjectMissing):
        await BlockReader(store).get_trace(names[0], blocks[0].meta, hours[0][0].trace_id)

    wrong = Settings.from_env({"TRACING_ARCHIVE_URL": archive_url(base, "wrong")})
    location = wrong.archive_location()
    assert location is not None
    with pytest.raises(OSError, match="archive: "):
        await S3ObjectStore(location).get(names[1])
    server.ok("down")
    with pytest.raises(OSError, match="archive: "):
        await store.get(names[1])
