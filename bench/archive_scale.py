"""(j) The archive at scale, behind S3Proxy (``scripts/s3.sh``): how fast one worker moves traces into it,
its bytes a span, and reads of the query API over HTTP with millions of archived spans.

    python -m bench.archive_scale                         # 10M archived spans (a few minutes on 2 cores)
    python -m bench.archive_scale --spans 1000000 --dir /tmp/archive-bench

1. **move**: for the demo and the realistic workloads (``bench/workload.py``), ``--move-spans`` spans of
   finalized traces, started two days ago, are written into a fresh SQLite hot store through the store API
   (``write_batch`` + ``finalize``, as the worker does); then the real :class:`ingest.archiving.Archiver`
   of one worker owning their shard moves every due trace into blocks on S3Proxy (``move_due``: read from
   the hot store, block written, PUT, registered and the hot rows removed). Spans/s from the first read
   to the last registration; bytes a span = the blocks' bytes over the spans moved.
2. **fill**: ``--spans`` demo spans archived straight into blocks, without the hot store in between: the
   same traces (finalized, analysed) the archiver reads from it, written by the same block writer
   (:func:`~shared.archive.block.write_block`, ``--jobs`` processes) in blocks of the archiver's size
   (:data:`~ingest.archiving.BLOCK_TRACES` traces), PUT and registered in the SQLite registry by the
   archiver's own :func:`~ingest.archiving.publish_block`. The traces start evenly over ``--days`` days
   ending two days ago, oldest first (as the archiver moves them), so an hour holds a ``24 * days``-th of
   them.
3. **reads**: ``python -m query_api`` on that SQLite file and archive, as its own process; ``--requests``
   sequential keep-alive requests per kind (after warm-up requests): a random archived trace by id
   (``/traces/{id}`` and Jaeger's ``/api/traces/{id}``) and a search by a random service over a random
   archived hour (``/traces/query`` and Jaeger's ``/api/traces``, ``limit=20``: Jaeger's answers whole
   traces). p50 and p99 in ms.

Needs Java 17 for S3Proxy (its jars are fetched once into the cache), pyarrow and obstore (the ``bench``
extra) and a Kafka broker (the API's write side opens a producer at start-up; nothing is published).
Everything it starts is stopped and its directory removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import msgspec

from bench.archive import finalized_trace
from bench.common import (
    ROOT,
    Processes,
    Row,
    Skipped,
    free_port,
    log,
    ms,
    percentile,
    rate,
    render_table,
    script_down,
    script_up,
    settings_env,
    wait_http,
)
from bench.workload import demo_traces, realistic_traces
from ingest.archiving import BLOCK_TRACES, Archiver, publish_block
from ingest.ownership import Ownership
from shared.demo import make_trace
from shared.models import Span
from shared.settings import Settings
from shared.store import TraceStore, open_store

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
AGE_US = 2 * DAY_US
"""The archived traces' newest start is this old: past the archiver's default 24 hours."""
DAYS = 5.0
"""The archived traces' time range (days)."""
SHARDS = 12
"""The fill's shards (the partitions of the bench's topics): a trace goes to one, round robin, and each
shard's owner moves its own traces into its own blocks, so a block of 10M spans over 5 days covers about
7 hours and a one-hour search meets about 14 blocks."""
SHARD = "bench/0"
S3_SCRIPT = ROOT / "scripts" / "s3.sh"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "tracing", "AWS_SECRET_ACCESS_KEY": "tracing-secret"}
"""scripts/s3.sh's default local test credentials."""
WORKLOADS: dict[str, Callable[..., Iterator[list[Span]]]] = {"demo": demo_traces, "realistic": realistic_traces}


@dataclass
class Moved:
    workload: str
    spans: int
    traces: int
    seconds: float
    blocks: int
    block_bytes: int


@dataclass
class Filled:
    shards: int
    spans: int
    traces: int
    blocks: int
    block_bytes: int
    seconds: float
    start_us: int
    end_us: int
    sample_ids: list[str]


@dataclass
class Result:
    moved: list[Moved]
    filled: Filled
    latency_ms: dict[str, tuple[float, float]] = field(default_factory=dict)
    found: dict[str, float] = field(default_factory=dict)  # search kind -> mean traces an answer


# -- 1. the move --------------------------------------------------------------------------------------


async def hot_fill(store: TraceStore, workload: str, spans_wanted: int, start_us: int, chunk: int = 500) -> int:
    """``spans_wanted`` spans of finalized traces of ``workload`` in the hot store, shard :data:`SHARD`;
    how many traces."""
    batch: list[list[Span]] = []
    traces = 0

    async def flush() -> None:
        spans = [s for t in batch for s in t]
        ids = [t[0].trace_id for t in batch]
        await store.write_batch(spans, [], shards=dict.fromkeys(ids, SHARD), now_us=0, grace_us=0, idle_us=0)
        await store.finalize(ids, now_us=1)
        batch.clear()

    for trace in WORKLOADS[workload](spans_wanted, start_us=start_us):
        batch.append(trace)
        traces += 1
        if len(batch) == chunk:
            await flush()
    if batch:
        await flush()
    return traces


async def move(settings: Settings, workdir: Path, workload: str, spans_wanted: int) -> Moved:
    """Fill a fresh SQLite hot store with ``workload``'s finalized traces and time one worker's archiver
    moving them all."""
    path = workdir / f"move-{workload}.db"
    s = msgspec.structs.replace(settings, store_url=f"sqlite:///{path}")
    store = await open_store(s)
    location = s.archive_location()
    assert location is not None
    from shared.archive.objects import open_object_store

    objects = open_object_store(location)
    ownership = Ownership()
    ownership.shards.add(SHARD)
    archiver = Archiver(s, store, ownership, objects)
    try:
        start_us = time.time_ns() // 1000 - AGE_US - HOUR_US
        traces = await hot_fill(store, workload, spans_wanted, start_us)
        before = {b.name for b in await store.archived_blocks()}
        started = time.perf_counter()
        moved = await archiver.move_due()
        seconds = time.perf_counter() - started
        from shared.archive.block import decode_meta

        metas = [decode_meta(b.meta) for b in await store.archived_blocks() if b.name not in before]
        spans = sum(m.span_count for m in metas)
        if moved != traces or sum(m.trace_count for m in metas) != traces:
            raise RuntimeError(f"{workload}: {traces:,} traces due, {moved:,} moved")
        if await store.archive_due(time.time_ns() // 1000, shard=SHARD, limit=1):
            raise RuntimeError(f"{workload}: traces left in the hot store after the move")
        return Moved(workload, spans, traces, seconds, len(metas), sum(m.size for m in metas))
    finally:
        await store.close()
        await objects.close()
        for p in path.parent.glob(f"{path.name}*"):
            p.unlink()


# -- 2. the fill ----------------------------------------------------------------------------------------


def _mean_trace_spans(seed: int) -> float:
    rng = random.Random(seed)
    sample = [len(make_trace(rng, 0)) for _ in range(2000)]
    return sum(sample) / len(sample)


def make_block(
    index: int, shards: int, first_us: int, gap_us: int, finalized_us: int
) -> tuple[bytes, bytes, list[str]]:
    """Block ``index`` of the fill (its own generator seed), of shard ``index % shards``: the shard's next
    :data:`BLOCK_TRACES` finalized demo traces (the traces start ``gap_us`` apart from ``first_us`` and go
    to the shards round robin), as the archiver reads them from the hot store; (the block, its encoded
    metadata, its trace ids). Runs in a pool process."""
    from shared.archive.block import encode_meta, write_block

    rng = random.Random(1_000_003 * index + 30)
    shard, round_ = index % shards, index // shards
    stored = []
    for i in range(BLOCK_TRACES):
        spans = make_trace(rng, first_us + ((round_ * BLOCK_TRACES + i) * shards + shard) * gap_us)
        stored.append(finalized_trace(spans, finalized_us))
    block = write_block(stored)
    return block.data, encode_meta(block.meta), [t.trace_id for t in stored]


async def fill(settings: Settings, spans_wanted: int, days: float, shards: int, jobs: int) -> Filled:
    """Archive ``spans_wanted`` demo spans over ``days`` days ending :data:`AGE_US` ago into the archive
    and registry of ``settings`` (see the module's doc)."""
    from shared.archive.block import Block, decode_meta
    from shared.archive.objects import open_object_store

    mean = _mean_trace_spans(30)
    blocks = shards * max(1, round(spans_wanted / mean / BLOCK_TRACES / shards))
    span_us = int(days * DAY_US)
    end_us = time.time_ns() // 1000 - AGE_US
    first_us = end_us - span_us
    gap_us = max(1, span_us // (blocks * BLOCK_TRACES))
    location = settings.archive_location()
    assert location is not None
    store = await open_store(settings)
    objects = open_object_store(location)
    rng = random.Random(7)
    sample_ids: list[str] = []
    spans = traces = size = 0
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            pending = [
                loop.run_in_executor(pool, make_block, i, shards, first_us, gap_us, end_us)
                for i in range(min(blocks, 2 * jobs))
            ]
            submitted = len(pending)
            while pending:
                shard = f"bench/{(submitted - len(pending)) % shards}"
                data, meta_bytes, ids = await pending.pop(0)
                if submitted < blocks:
                    pending.append(loop.run_in_executor(pool, make_block, submitted, shards, first_us, gap_us, end_us))
                    submitted += 1
                meta = decode_meta(meta_bytes)
                await publish_block(objects, store, shard, Block(data=data, meta=meta), ids, created_us=end_us)
                spans, traces, size = spans + meta.span_count, traces + meta.trace_count, size + meta.size
                sample_ids.extend(rng.sample(ids, 20))
                done = submitted - len(pending)
                if done % 20 == 0 or done == blocks:
                    log(f"archived {spans:,} spans in {done} / {blocks} blocks, {time.perf_counter() - started:.0f} s")
    finally:
        await store.close()
        await objects.close()
    return Filled(shards, spans, traces, blocks, size, time.perf_counter() - started, first_us, end_us, sample_ids)


# -- 3. the reads ---------------------------------------------------------------------------------------


async def _timed(
    session: aiohttp.ClientSession, urls: list[str], check: Callable[[object], int]
) -> tuple[list[float], int]:
    """Each URL fetched in turn: the times in ms, and the sum of ``check`` over the answers."""
    samples, found = [], 0
    for url in urls:
        t = time.perf_counter()
        async with session.get(url) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {url}: HTTP {response.status}: {body[:200]!r}")
        samples.append((time.perf_counter() - t) * 1000)
        found += check(msgspec.json.decode(body))
    return samples, found


def _archived_trace(answer: object) -> int:
    assert isinstance(answer, dict)
    if answer.get("tier") != "archive":
        raise RuntimeError(f"not an archived trace: {str(answer)[:200]}")
    return 1


def _jaeger_trace(answer: object) -> int:
    assert isinstance(answer, dict)
    data = answer.get("data") or []
    if len(data) != 1 or data[0].get("tier") != "archive":
        raise RuntimeError(f"not one archived trace: {str(answer)[:200]}")
    return 1


def _listed(answer: object) -> int:
    if isinstance(answer, dict):
        answer = answer.get("data", answer.get("traces", []))
    assert isinstance(answer, list)
    return len(answer)


def read_kinds(
    filled: Filled, services: list[str], rng: random.Random, base: str = ""
) -> dict[str, tuple[Callable[[], str], Callable[[object], int]]]:
    """The read kinds of the row: their name, a random URL (below ``base``) and the check of an answer (what
    it counts)."""
    hours = max(1, (filled.end_us - filled.start_us) // HOUR_US)

    def hour() -> tuple[int, int]:
        start = filled.start_us + rng.randrange(hours) * HOUR_US
        return start, start + HOUR_US

    def seed_search() -> str:
        start, end = hour()
        service = rng.choice(services)
        return f"{base}/traces/query?serviceName={service}&start={start // 1000}&end={end // 1000}&limit=20"

    def jaeger_search() -> str:
        start, end = hour()
        return f"{base}/api/traces?service={rng.choice(services)}&start={start}&end={end}&limit=20"

    return {
        "GET /traces/{id}": (lambda: f"{base}/traces/{rng.choice(filled.sample_ids)}", _archived_trace),
        "GET /api/traces/{id} (Jaeger)": (lambda: f"{base}/api/traces/{rng.choice(filled.sample_ids)}", _jaeger_trace),
        "GET /traces/query?serviceName=S&start=&end= (1 h)&limit=20": (seed_search, _listed),
        "GET /api/traces?service=S&start=&end= (1 h)&limit=20 (Jaeger: whole traces)": (jaeger_search, _listed),
    }


async def reads(
    settings: Settings, processes: Processes, filled: Filled, requests: int, services: list[str]
) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    port = free_port()
    api = msgspec.structs.replace(settings, api_bind=f"127.0.0.1:{port}", log_level="WARNING")
    child = processes.start("api-archive", [sys.executable, "-m", "query_api"], {**settings_env(api), **S3_KEYS})
    base = f"http://127.0.0.1:{port}"
    kinds = read_kinds(filled, services, random.Random(9), base)
    latency: dict[str, tuple[float, float]] = {}
    found: dict[str, float] = {}
    try:
        await wait_http(f"{base}/healthz", 60, child)
        async with aiohttp.ClientSession() as session:
            for name, (url, check) in kinds.items():
                await _timed(session, [url() for _ in range(min(20, requests))], check)  # the connection, the catalog
                samples, total = await _timed(session, [url() for _ in range(requests)], check)
                latency[name] = (percentile(samples, 0.5), percentile(samples, 0.99))
                found[name] = total / requests
                log(f"(j) {name}: p50 {ms(latency[name][0])}, p99 {ms(latency[name][1])}")
    finally:
        processes.stop(child)
    return latency, found


# -- the row --------------------------------------------------------------------------------------------


def s3_up(workdir: Path) -> str:
    """A fresh S3Proxy (own port, state in ``workdir``); its archive URL."""
    port = free_port()
    return script_up(S3_SCRIPT, ["--port", str(port), "--dir", str(workdir / "s3")], "s3://", 120, "scripts/s3.sh up")


async def measure(
    settings: Settings,
    processes: Processes,
    workdir: Path,
    *,
    spans: int,
    move_spans: int,
    days: float,
    requests: int,
    jobs: int,
    shards: int = SHARDS,
) -> Result:
    if shutil.which("java") is None:
        raise Skipped("no java: S3Proxy (scripts/s3.sh) needs Java 17")
    url = s3_up(workdir)
    processes.on_exit(lambda: script_down(S3_SCRIPT, workdir / "s3", 60))
    os.environ.update(S3_KEYS)
    try:
        s = msgspec.structs.replace(settings, archive_url=url)
        moved = []
        for workload in WORKLOADS:
            log(f"(j) move: {move_spans:,} {workload} spans into a hot store, then archived by one worker")
            moved.append(await move(s, workdir, workload, move_spans))
            m = moved[-1]
            log(f"(j) moved {m.spans:,} spans in {m.seconds:.1f} s: {m.block_bytes / m.spans:.1f} B a span")
        fill_settings = msgspec.structs.replace(s, store_url=f"sqlite:///{workdir / 'archive.db'}")
        log(f"(j) fill: {spans:,} demo spans archived over {days:g} days ({jobs} block writers)")
        filled = await fill(fill_settings, spans, days, shards, jobs)
        services = sorted({sp.service_name for t in demo_traces(20_000, start_us=0) for sp in t})
        result = Result(moved, filled)
        result.latency_ms, result.found = await reads(fill_settings, processes, filled, requests, services)
        return result
    finally:
        script_down(S3_SCRIPT, workdir / "s3", 60)


def rows(result: Result, requests: int, days: float) -> list[Row]:
    out = []
    for m in result.moved:
        out.append(
            Row(
                "j",
                f"archive move, one worker ({m.workload} workload)",
                rate(m.spans / m.seconds),
                f"{m.block_bytes / m.spans:.1f} B a span",
                f"{m.spans:,} spans / {m.traces:,} finalized traces from a SQLite hot store into {m.blocks} blocks "
                f"on S3Proxy in {m.seconds:.1f} s (ingest.archiving.Archiver.move_due: read, write the block, PUT, "
                "register and delete the hot rows)",
            )
        )
    f = result.filled
    for i, (name, (p50, p99)) in enumerate(result.latency_ms.items()):
        goal = 100.0 if "{id}" in name else 500.0
        found = result.found[name]
        note = (
            f"{f.spans:,} demo spans / {f.traces:,} traces archived in {f.blocks} blocks "
            f"({f.block_bytes / f.spans:.1f} B a span) over {days:g} days and {f.shards} shards, on S3Proxy, "
            f"registered in SQLite (filled in {f.seconds:.0f} s by the block writer and publish_block, without "
            f"the hot store); python -m query_api as its own process; {requests} "
            "sequential requests per kind, random archived ids and hours; "
            if i == 0
            else ""
        )
        if "query" in name or "service=" in name:
            note += f"{found:.1f} traces an answer"
        out.append(
            Row(
                "j",
                f"archived read {name}",
                f"p50 {ms(p50)}, p99 {ms(p99)}",
                f"goal p99 < {goal:.0f} ms: {'yes' if p99 < goal else 'no'}",
                note,
            )
        )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=10_000_000, help="demo spans archived for the reads")
    parser.add_argument("--move-spans", type=int, default=200_000, help="spans a workload the archiver moves")
    parser.add_argument("--days", type=float, default=DAYS, help="the archived traces' time range")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per kind")
    parser.add_argument("--shards", type=int, default=SHARDS, help="shards the archived traces are spread over")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="block-writing processes of the fill")
    parser.add_argument("--dir", type=Path, help="where S3Proxy and SQLite keep their data (default: a temporary one)")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="tracing-archive-bench-", dir=args.dir))
    processes = Processes(workdir)
    settings = Settings.from_env()
    started = time.monotonic()
    try:
        result = await measure(
            settings,
            processes,
            workdir,
            spans=args.spans,
            move_spans=args.move_spans,
            days=args.days,
            requests=args.requests,
            jobs=args.jobs,
            shards=args.shards,
        )
    finally:
        processes.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    table = rows(result, args.requests, args.days)
    for row in table:
        row.seconds = time.monotonic() - started
    print(render_table(table))


if __name__ == "__main__":
    asyncio.run(main())
