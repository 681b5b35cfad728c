"""S3Proxy SIGKILLed mid-upload while the worker moves traces into it, spans flowing from the real broker,
then started again on the same dir: nothing lost, nothing doubled.

Old traces (their starts hours in the past) are finalized into SQLite by a worker without an archive, then a
worker with an ``s3://`` archive (``TRACING_ARCHIVE_AFTER_H`` 0.01, ``TRACING_ARCHIVE_CHECK_S`` 1) moves them.
Its requests go through a TCP relay in front of S3Proxy that forwards the second block's PUT up to half of
its body and holds it there: S3Proxy is killed (``scripts/s3.sh kill``) while it is receiving that body.
While it is down more traces are sent: the worker keeps ingesting and finalizing them (its archive rounds
fail with one WARNING line, no traceback), and the API answers a read of an archived trace 503 with a JSON
error, a hot trace 200. Once S3Proxy is up again, every trace moves: each is in exactly one registered block
with all its spans, every registered block's object is there, each trace answers by id and each is found
once by a search through both tiers. Last, an object no registered block names (a crash between a PUT and
its registration) is deleted by the shard's owner as garbage, and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import msgspec
import pytest

from ingest.archiving import Archiver
from ingest.ownership import Ownership
from shared.archive.block import block_name, decode_meta
from shared.archive.location import ArchiveLocation
from shared.archive.s3 import S3ObjectStore
from shared.archive.tiered import TieredReads
from shared.kafka import SpanProducer, ensure_topics
from shared.models import Span
from shared.settings import Settings
from shared.store.base import TraceQuery
from tests.conftest import free_port
from tests.e2e.faults import running_api
from tests.e2e.helpers import demo_traces, reader, wait_for
from tests.e2e.s3proxy import ACCESS_KEY, SECRET_KEY, S3Server, server
from tests.e2e.test_archive_move import block_spans, hot_counts
from tests.e2e.workers import WorkerProcess

__all__ = ["server"]  # the fixture

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(900)]

SPANS_BEFORE = 40_000  # ~4,000 traces over 4 shards: a block or more a shard
SPANS_WHILE_DOWN = 5_000
HOURS_AGO_US = 3 * 3_600_000_000
HELD_PUT = 2
"""The PUT held halfway (the first one goes through: its block is registered, so reads need the archive)."""


class HoldingRelay:
    """A TCP relay to S3Proxy that forwards the :data:`HELD_PUT`-th PUT's head and half of its body, then
    holds the rest until :attr:`release` is set (S3Proxy is killed meanwhile)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.puts = 0
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.held_path = ""
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):  # the connections' tasks end on their own
            writer.close()
        await asyncio.sleep(0.1)

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        try:
            upstream, to_upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            to_client.close()
            return
        self._open.update((to_client, to_upstream))
        try:
            await asyncio.gather(self._requests(client, to_upstream), self._pipe(upstream, to_client))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            to_client.close()
            to_upstream.close()
            self._open.difference_update((to_client, to_upstream))

    async def _requests(self, client: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
        """Requests one after another (keep-alive): the head, then ``Content-Length`` bytes of body."""
        while True:
            head = await client.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value)
            hold = False
            if method == "PUT" and length > 0:
                self.puts += 1
                hold = self.puts == HELD_PUT
            out.write(head)
            if hold:
                out.write(await client.readexactly(length // 2))
                await out.drain()
                self.held_path = path
                self.held.set()
                await self.release.wait()
                length -= length // 2
            while length > 0:
                chunk = await client.readexactly(min(length, 1 << 16))
                out.write(chunk)
                await out.drain()
                length -= len(chunk)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
        while chunk := await source.read(1 << 16):
            out.write(chunk)
            await out.drain()
        out.close()


@contextlib.asynccontextmanager
async def relay_to(port: int) -> AsyncIterator[HoldingRelay]:
    relay = HoldingRelay(port)
    try:
        yield relay
    finally:
        await relay.close()


def s3_url(port: int) -> str:
    return f"s3://{ACCESS_KEY}:{quote(SECRET_KEY, safe='')}@tracing/faults?endpoint=http://127.0.0.1:{port}"


async def send(settings: Settings, traces: list[list[Span]]) -> None:
    async with SpanProducer(settings) as producer:
        for trace in traces:
            await producer.send(trace)
        await producer.flush()


async def test_s3proxy_killed_mid_upload_loses_and_doubles_nothing(
    settings: Settings, server: S3Server, tmp_path: Path
) -> None:
    keys = {"TRACING_S3_ACCESS_KEY": ACCESS_KEY, "TRACING_S3_SECRET_KEY": SECRET_KEY}
    s3_port = free_port()
    server.ok("up", "--port", str(s3_port), env=keys)
    rng = random.Random(31)
    start_us = time.time_ns() // 1000 - HOURS_AGO_US
    before = demo_traces(rng, SPANS_BEFORE, start_us)
    while_down = demo_traces(rng, SPANS_WHILE_DOWN, start_us + 1_000_000)
    sent = {trace[0].trace_id: len(trace) for trace in before + while_down}
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    async with reader(settings):
        pass  # the schema, so progress is read before the worker's first write
    worker = WorkerProcess(settings, tmp_path / "worker-hot.log")
    try:
        await send(settings, before)
        await wait_for(lambda: hot_counts(settings)[0] == len(before), timeout_s=180, what="every trace finalized")
    finally:
        assert worker.stop() == 0, worker.output()

    direct = msgspec.structs.replace(settings, archive_url=s3_url(s3_port), archive_after_h=0.01, archive_check_s=1.0)
    async with relay_to(s3_port) as relay:
        relayed = msgspec.structs.replace(direct, archive_url=s3_url(await relay.start()))
        worker = WorkerProcess(relayed, tmp_path / "worker-archive.log")
        try:
            await asyncio.wait_for(relay.held.wait(), timeout=180)
            assert hot_counts(settings)[2] == 1  # the first block registered, the second one's PUT held
            server.ok("kill")  # S3Proxy has received the head and half of the body
            relay.release.set()

            moved, archived_id = await _first_block(settings, before)
            await send(settings, while_down)
            await wait_for(
                lambda: hot_counts(settings)[0] == len(sent) - moved,
                timeout_s=180,
                what="the traces sent while S3Proxy is down finalized",
            )
            await wait_for(
                lambda: "archive: a round failed" in worker.output(), timeout_s=120, what="the failed round logged"
            )
            hot_id = while_down[0][0].trace_id
            async with running_api(direct, tmp_path / "api.log") as api:
                status, body = await api.get(f"/traces/{archived_id}")
                assert status == 503, body
                assert isinstance(body, dict) and "archive unavailable" in body["error"]
                status, body = await api.get(f"/traces/{hot_id}")
                assert status == 200 and body["tier"] == "hot"
            assert hot_counts(settings)[2] == 1  # nothing registered while S3Proxy is down

            server.ok("up", env=keys)  # the same dir, port and keys
            await wait_for(lambda: hot_counts(settings)[1] == 0, timeout_s=300, what="every trace moved")
        finally:
            code = await asyncio.to_thread(worker.stop)  # the relay serves its last requests meanwhile
    output = worker.output()
    assert code == 0, output[-3000:]
    assert output.count("archive: a round failed") == 1, output[-3000:]
    assert "rounds succeed again" in output
    assert "Traceback" not in output

    objects = S3ObjectStore(_location(direct))
    found = await block_spans(direct, objects)
    assert {trace_id: spans for trace_id, (_, spans) in found.items()} == sent  # each once, every span
    listed = {o.name: o.size for o in await objects.list("blocks")}
    held = relay.held_path.partition("?")[0].removeprefix("/tracing/faults/")
    assert held.startswith("blocks/") and held not in listed  # the PUT cut short left no object
    async with reader(direct) as store:
        blocks = await store.archived_blocks()
        for block in blocks:
            assert listed.get(block.name) == decode_meta(block.meta).size, block.name
        tiered = TieredReads(store, objects)
        for trace_id in rng.sample(sorted(sent), 200):
            got = await tiered.get_trace(trace_id)
            assert got is not None and got.tier == "archive" and len(got.trace.spans) == sent[trace_id]
        searched: list[str] = []
        window = TraceQuery(start_us=start_us - 1, end_us=start_us + 10_000_000, limit=1000)
        while page := await tiered.find_traces(msgspec.structs.replace(window, offset=len(searched))):
            searched.extend(s.summary.trace_id for s in page)
        assert sorted(searched) == sorted(sent)  # each found once

        # garbage: a block's object that was never registered, older than the grace, goes; the rest stays
        orphan = block_name(0, start_us, "never-registered")
        await objects.put(orphan, b"a block whose registration never came")
        await asyncio.sleep(0.05)
        ownership = Ownership()
        ownership.shards.update(f"{settings.topic}/{p}" for p in range(settings.partitions))
        collector = Archiver(direct, store, ownership, objects, garbage_grace_s=0.02, move_deadline_s=0.01)
        assert await collector.collect_garbage() >= 1
        left = {o.name for o in await objects.list("blocks")}
        assert orphan not in left
        assert left == {b.name for b in blocks}
    await objects.close()


def _location(settings: Settings) -> ArchiveLocation:
    location = settings.archive_location()
    assert location is not None
    return location


async def _first_block(settings: Settings, traces: list[list[Span]]) -> tuple[int, str]:
    """(traces the registered blocks hold, the id of one of them: not in the hot store)."""
    async with reader(settings) as store:
        held = sum(decode_meta(b.meta).trace_count for b in await store.archived_blocks())
        for trace in traces:
            if await store.get_trace(trace[0].trace_id) is None:
                return held, trace[0].trace_id
    raise AssertionError("no trace moved")
