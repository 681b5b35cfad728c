"""The archive's blocks (shared/archive): bytes a span, and the cost of reading them back.

For the demo and the realistic workloads (``bench/workload.py``, seed 5), ``--spans`` spans of finalized
traces are written as one block (:func:`shared.archive.write_block`), which is put in a folder and, with
``--url``, in an S3-compatible store; then ``--reads`` traces are read by id and ``--reads`` searches by
service over one hour are timed through :class:`shared.archive.BlockReader` (a fresh reader for each
store: the first read fetches the footer). The table shows bytes a span of the block (footer included),
its row groups, the analyses' msgpack as zstd would store it beside the spans (what the block leaves out:
it derives them on read), how fast the block is written, and read times (median and p99 in ms).

    python -m bench.archive                                  # a folder only
    bash scripts/s3.sh up                                    # then, with the AWS_* line it prints:
    python -m bench.archive --url "s3://tracing/?endpoint=http://127.0.0.1:9000&region=us-east-1"

``--move`` times the worker's mover instead (:class:`ingest.archiving.Archiver`): ``--spans`` spans of each
workload written and finalized in a SQLite hot store, then moved into a folder archive by one
``move_due`` (hot read, block written, PUT, registration with the hot rows removed): moved spans/s, and
the registrations' share of the time (ms a block).

    python -m bench.archive --move --spans 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import zstandard

from bench.workload import demo_traces, realistic_traces
from shared.analysis import analyze
from shared.archive.block import ZSTD_LEVEL, Block, block_name, write_block
from shared.archive.location import ArchiveLocation
from shared.archive.objects import FileObjectStore, ObjectStore, open_object_store
from shared.archive.reader import BlockReader
from shared.models import Span
from shared.store.base import Completeness, StoredTrace, TraceQuery

HOUR_US = 3_600_000_000
WORKLOADS = {"demo": demo_traces, "realistic": realistic_traces}


def finalized_trace(spans: list[Span], finalized_at_us: int) -> StoredTrace:
    """A trace's spans as the hot store answers the finalized trace (analysed): what the archiver moves."""
    return StoredTrace(
        trace_id=spans[0].trace_id,
        state="finalized",
        spans=spans,
        analysis=analyze(spans[0].trace_id, spans),
        completeness=Completeness(finalized_at_us=finalized_at_us),
    )


def finalized(workload: str, spans: int, start_us: int) -> list[StoredTrace]:
    return [finalized_trace(s, start_us) for s in WORKLOADS[workload](spans, start_us=start_us)]


def analysis_bytes(traces: list[StoredTrace]) -> int:
    """The traces' analyses as msgpack, zstd-compressed together (what a column of them would take)."""
    encode = msgspec.msgpack.Encoder().encode
    payload = b"".join(encode(t.analysis) for t in traces)
    return len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(payload))


async def _timed(times: list[float], pending: Awaitable[Any]) -> Any:
    started = time.perf_counter()
    result = await pending
    times.append((time.perf_counter() - started) * 1000)
    return result


async def reads(store: ObjectStore, block: Block, traces: list[StoredTrace], count: int) -> dict[str, list[float]]:
    name = block_name(0, block.meta.start_us, "bench-" + os.urandom(4).hex())
    await store.put(name, block.data)
    reader, rng = BlockReader(store), random.Random(5)
    by_id: list[float] = []
    search: list[float] = []
    try:
        for trace in rng.sample(traces, min(count, len(traces))):
            got = await _timed(by_id, reader.get_trace(name, block.meta, trace.trace_id))
            assert got is not None and len(got.spans) == len(trace.spans)
        services = block.meta.services
        for _ in range(count):
            start = rng.randrange(block.meta.start_us, max(block.meta.start_us + 1, block.meta.end_us))
            query = TraceQuery(service_name=rng.choice(services), start_us=start, end_us=start + HOUR_US)
            await _timed(search, reader.find_traces(name, block.meta, query))
    finally:
        await store.delete(name)
    return {"by id": by_id, "search": search}


def _ms(times: list[float]) -> str:
    if not times:
        return "n/a"
    p99 = sorted(times)[min(len(times) - 1, int(0.99 * len(times)))]
    return f"{statistics.median(times):.1f} / {p99:.1f}"


async def measure(args: argparse.Namespace) -> list[list[str]]:
    rows = []
    stores: dict[str, Callable[[], ObjectStore]] = {}
    folder = tempfile.TemporaryDirectory(prefix="archive-bench-")
    stores["folder"] = lambda: FileObjectStore(Path(folder.name))
    if args.url:
        location = ArchiveLocation.parse(args.url)
        stores["s3"] = lambda: open_object_store(location)
    with folder:
        for workload in args.workloads.split(","):
            traces = finalized(workload, args.spans, start_us=1_796_600_000_000_000)
            spans = sum(len(t.spans) for t in traces)
            started = time.perf_counter()
            block = write_block(traces)
            write_s = time.perf_counter() - started
            meta = block.meta
            groups = len(meta.row_groups)
            cells = [
                workload,
                f"{spans:,}",
                f"{len(block.data) / spans:.1f}",
                f"{groups} x {sum(g.length for g in meta.row_groups) / groups / 1024:.0f} KiB",
                f"{meta.footer_length / 1024:.0f} KiB",
                f"{analysis_bytes(traces) / spans:.1f}",
                f"{spans / write_s:,.0f}",
            ]
            for make in stores.values():
                times = await reads(make(), block, traces, args.reads)
                cells += [_ms(times["by id"]), _ms(times["search"])]
            rows.append(cells)
    return rows


async def move(workload: str, spans_wanted: int) -> list[str]:
    """One workload through the mover: [workload, spans, blocks, moved spans/s, register ms a block]."""
    from ingest.archiving import Archiver
    from ingest.ownership import Ownership
    from shared.settings import Settings
    from shared.store import ArchivedBlock, open_store

    start_us = 1_796_600_000_000_000
    traces = list(WORKLOADS[workload](spans_wanted, start_us=start_us))
    ids = [trace[0].trace_id for trace in traces]
    spans = [span for trace in traces for span in trace]
    with tempfile.TemporaryDirectory(prefix="archive-move-bench-") as tmp:
        settings = Settings.from_env({}, store_url=f"sqlite:///{Path(tmp) / 'hot.db'}", archive_after_h=1.0)
        store = await open_store(settings)
        try:
            shard = "spans/0"
            for at in range(0, len(spans), 20_000):
                batch = spans[at : at + 20_000]
                await store.write_batch(
                    batch,
                    [],
                    shards=dict.fromkeys({s.trace_id for s in batch}, shard),
                    now_us=start_us,
                    grace_us=0,
                    idle_us=0,
                )
            for at in range(0, len(ids), 2000):
                await store.finalize(ids[at : at + 2000], now_us=start_us + 1)
            registering: list[float] = []
            register = store.register_block

            async def timed(block: ArchivedBlock, trace_ids: Any) -> None:
                await _timed(registering, register(block, trace_ids))

            setattr(store, "register_block", timed)  # noqa: B010 (a method replaced on the instance)
            ownership = Ownership()
            ownership.shards.add(shard)
            archiver = Archiver(settings, store, ownership, FileObjectStore(Path(tmp) / "archive"))
            started = time.perf_counter()
            moved = await archiver.move_due()
            took = time.perf_counter() - started
            assert moved == len(ids), (moved, len(ids))
        finally:
            await store.close()
    return [
        workload,
        f"{len(spans):,}",
        str(len(registering)),
        f"{len(spans) / took:,.0f}",
        f"{statistics.mean(registering):.0f} ({sum(registering) / 10 / took:.0f}%)",
    ]


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000, help="spans a workload (one block)")
    parser.add_argument("--reads", type=int, default=100, help="trace reads and searches timed a store")
    parser.add_argument("--workloads", default="demo,realistic")
    parser.add_argument("--url", default="", help="an s3:// archive URL to time reads on too")
    parser.add_argument("--move", action="store_true", help="time the mover on a SQLite hot store instead")
    args = parser.parse_args()
    if args.move:
        moved = [asyncio.run(move(workload, args.spans)) for workload in args.workloads.split(",")]
        _table(["workload", "spans", "blocks", "moved spans/s", "register ms a block (share)"], moved)
        return
    rows = asyncio.run(measure(args))
    header = ["workload", "spans", "B/span", "row groups", "footer", "analyses B/span", "write spans/s"]
    for store in ["folder", *(["s3"] if args.url else [])]:
        header += [f"{store} by id ms (p50 / p99)", f"{store} 1 h search ms (p50 / p99)"]
    _table(header, rows)


if __name__ == "__main__":
    main()
