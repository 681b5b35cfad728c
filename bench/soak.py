"""Soak: the pipeline under a steady load for an hour, with retention running, watched each minute.

One worker (``python -m ingest``, with its finalizer process) and the API (``python -m query_api``) run as
their own processes on a fresh SQLite store in a temp dir; this process produces the realistic workload
(:func:`bench.workload.realistic_trace`, one message per trace) at a steady rate. Retention is set short
(``TRACING_RETENTION_H`` takes fractions of an hour: 5 minutes by default, purged every 30 s), so that it
bounds the store within the run. With ``--archive-after-min`` the archive runs too, into a ``file://``
folder beside the store (``TRACING_ARCHIVE_AFTER_H`` and ``TRACING_ARCHIVE_RETENTION_D`` take fractions).

Each minute it samples the resident memory of the worker, its finalizer process, its purge planner process
and the API, the disk use (database + write-ahead log), the archive's folder, the traces stored, the CPU the
worker and its children used, the host's load and the freshness p99 of that minute: a few traces a second
are probes, looked up by id until finalized, freshness being the time from just before the trace was handed
to the Kafka client to its finalization (see :class:`Probes`). At the end it drains and checks that nothing
was lost: the worker decoded every span sent and dead-lettered none, and every trace that retention may not
have purged yet is stored with exactly the spans sent (``span_count`` of its row), while none older remains.
Prints the table, the slope of each series (least squares, per 10 minutes, after the first 10) and a verdict
per goal of issue 32.

    python bench/soak.py                      # 60 minutes at 5,000 spans/s
    python bench/soak.py --minutes 2          # a smoke run (slopes over its second half)

Needs a running broker (``make kafka-up``, or ``TRACING_KAFKA_BOOTSTRAP``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Child, Processes, child_pids, free_port, peak_rss, percentile, settings_env, wait_http
from bench.freshness import wait_worker_assigned
from bench.workload import realistic_trace
from shared.gc_tuning import tuned_gc
from shared.kafka import SpanProducer, ensure_topics
from shared.prometheus import parse
from shared.settings import Settings
from shared.store.sqlite import file_size

SEED = 32
PROBES_PER_S = 5.0
LOOK_EVERY_S = 1.0
WINDOW_MIN = 10.0
"""Slopes are fitted after the first this many minutes; freshness compares the first and the last."""
MIB = 2**20


@dataclass
class Sample:
    minute: int
    worker_mib: float
    finalizer_mib: float  # the worker's finalizer process (0 when it finalizes inline)
    planner_mib: float  # the worker's other children: its purge planner (and multiprocessing's resource tracker)
    api_mib: float
    disk_mib: float  # database + write-ahead log
    archive_mib: float  # the archive's blocks (0 without one)
    p99_ms: float  # freshness of the probes that finished in this minute
    probes: int
    sent: int  # spans sent so far
    stored: int  # traces in the store
    cpu_pct: float  # of one core, the worker and its finalizer over the minute
    load: float  # the host's 1-minute load average


SERIES: dict[str, tuple[str, Callable[[Sample], float]]] = {  # name -> (column title, value)
    "worker": ("worker RSS MiB", lambda s: s.worker_mib),
    "finalizer": ("finalizer RSS MiB", lambda s: s.finalizer_mib),
    "planner": ("planner RSS MiB", lambda s: s.planner_mib),
    "api": ("API RSS MiB", lambda s: s.api_mib),
    "disk": ("disk MiB", lambda s: s.disk_mib),
    "archive": ("archive MiB", lambda s: s.archive_mib),
    "p99": ("freshness p99 ms", lambda s: s.p99_ms),
}


@dataclass
class Sent:
    """What the producer sent; ``recent`` holds the traces (start µs, id, spans) still young enough that
    retention may not have purged them, for the check at the end."""

    keep_us: int
    started: float = 0.0  # monotonic s of the first send
    spans: int = 0
    traces: int = 0
    behind_s: float = 0.0  # how far the producer fell behind its schedule at worst
    recent: deque[tuple[int, str, int]] = field(default_factory=deque)

    def add(self, start_us: int, trace_id: str, spans: int) -> None:
        self.spans += spans
        self.traces += 1
        self.recent.append((start_us, trace_id, spans))
        while self.recent[0][0] < start_us - self.keep_us:
            self.recent.popleft()


@dataclass
class Probes:
    """Traces looked up by id until finalized. Freshness = the trace's ``finalizedAt`` (the worker's wall
    clock when its finalization committed, ms) minus this process's wall clock just before the send (one
    machine, one clock): what polling would see with an infinitely fast poll, so each probe is looked up
    only every second or so (less often as it ages), whatever the lag."""

    base: str
    pending: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (next look, sent at wall ms)
    done: list[tuple[float, float]] = field(default_factory=list)  # (monotonic s of the answer, freshness ms)

    def add(self, trace_id: str, sent_ms: float) -> None:
        self.pending[trace_id] = (time.monotonic() + LOOK_EVERY_S, sent_ms)

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event, linger_s: float = 30.0) -> None:
        """Look up the due probes until ``stop`` is set, then until none is pending (``linger_s`` at most)."""
        deadline = math.inf
        while not stop.is_set() or (self.pending and time.monotonic() < deadline):
            if stop.is_set() and deadline == math.inf:  # drained: every probe is due at once
                deadline = time.monotonic() + linger_s
                self.pending = {trace_id: (0.0, sent_ms) for trace_id, (_, sent_ms) in self.pending.items()}
            now = time.monotonic()
            due = [trace_id for trace_id, (at, _) in self.pending.items() if at <= now]
            await asyncio.gather(*(self._look(session, trace_id) for trace_id in due))
            await asyncio.sleep(LOOK_EVERY_S / 10)

    async def _look(self, session: aiohttp.ClientSession, trace_id: str) -> None:
        async with session.get(f"{self.base}/traces/{trace_id}") as response:
            body = await response.json() if response.status == 200 else {}
        now = time.monotonic()
        _, sent_ms = self.pending[trace_id]
        if body.get("finalizedAt") is not None:
            del self.pending[trace_id]
            self.done.append((now, body["finalizedAt"] - sent_ms))
        else:
            age_s = time.time() - sent_ms / 1000
            self.pending[trace_id] = (now + max(LOOK_EVERY_S, age_s / 4), sent_ms)

    def latencies_ms(self, since: float, until: float) -> list[float]:
        """Freshness of the probes answered between two monotonic times."""
        return [latency for at, latency in self.done if since <= at < until]


@dataclass
class Pipeline:
    settings: Settings
    db: Path
    worker: Child
    api: Child
    metrics_url: str
    archive: Path | None  # the archive's folder (file://), if any
    cpu_s: float = 0.0  # the worker's and its children's CPU at the last sample
    smaps: list[tuple[int, dict[str, MemoryMap]]] | None = None  # with --smaps: each minute, per process

    def sample(self, minute: int, sent: Sent, latencies_ms: list[float]) -> Sample:
        for child in (self.worker, self.api):
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited ({child.process.returncode}):\n{child.tail()}")
        children = child_pids(self.worker.pid)
        finalizers = [pid for pid in children if is_finalizer(pid)]
        others = [pid for pid in children if pid not in finalizers]
        cpu_s = sum(cpu_seconds(pid) for pid in [self.worker.pid, *children])
        cpu_pct, self.cpu_s = (cpu_s - self.cpu_s) / 60 * 100, cpu_s
        if self.smaps is not None:
            named = [("worker", self.worker.pid), ("api", self.api.pid)]
            named += [("finalizer", pid) for pid in finalizers] + [("planner", pid) for pid in others]
            self.smaps.append((minute, {name: memory_map(pid) for name, pid in named}))
        return Sample(
            minute, rss_mib(self.worker.pid), sum(map(rss_mib, finalizers)), sum(map(rss_mib, others)),
            rss_mib(self.api.pid), (file_size(self.db) + file_size(Path(f"{self.db}-wal"))) / MIB,
            folder_bytes(self.archive) / MIB,
            percentile(latencies_ms, 0.99), len(latencies_ms), sent.spans, self.count("SELECT count(*) FROM traces"),
            cpu_pct, os.getloadavg()[0],
        )  # fmt: skip

    def count(self, sql: str) -> int:
        (n,) = self.query(sql)[0]
        return int(n)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as c:
            return c.execute(sql).fetchall()

    async def counter(self, session: aiohttp.ClientSession, name: str) -> float:
        async with session.get(self.metrics_url) as response:
            page = await response.text()
        return sum(value for (sample, _), value in parse(page).items() if sample == name)


async def start_pipeline(args: argparse.Namespace, processes: Processes, workdir: Path) -> Pipeline:
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    metrics_port = free_port()
    archive = workdir / "archive" if args.archive_after_min > 0 else None
    archiving = {} if archive is None else {
        "archive_url": archive.as_uri(), "archive_after_h": args.archive_after_min / 60,
        "archive_retention_d": args.archive_retention_min / 1440, "archive_check_s": args.retention_check_s,
    }  # fmt: skip
    settings = Settings.from_env(
        {}, **archiving, kafka_bootstrap=args.bootstrap, topic=prefix, group=prefix, store_url=f"sqlite:///{workdir}/traces.db",
        api_bind=f"127.0.0.1:{free_port()}", worker_metrics_bind=f"127.0.0.1:{metrics_port}",
        retention_h=args.retention_min / 60, retention_check_s=args.retention_check_s, log_level="WARNING",
    )  # fmt: skip
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    env = settings_env(settings)
    worker = processes.start("worker", [sys.executable, "-m", "ingest"], env)
    api = processes.start("api", [sys.executable, "-m", "query_api"], env)
    base = f"http://{settings.api_bind}"
    await wait_http(f"{base}/healthz", 60, api)
    await wait_worker_assigned(base, worker)
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    return Pipeline(settings, workdir / "traces.db", worker, api, metrics, archive)


async def produce(pipeline: Pipeline, sent: Sent, probes: Probes, rate: float, seconds: float) -> None:
    """Realistic traces, one message per trace, at ``rate`` spans/s for ``seconds``; every so many a probe."""
    rng = random.Random(SEED)
    probe_every = max(1, round(rate / 13 / PROBES_PER_S))  # about 13 spans a trace
    async with SpanProducer(pipeline.settings) as producer:
        started = sent.started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            ahead = sent.spans / rate - elapsed
            if ahead > 0.002:
                await asyncio.sleep(ahead)
                continue
            sent.behind_s = max(sent.behind_s, -ahead)
            start_us = time.time_ns() // 1000
            trace = realistic_trace(rng, start_us)
            sent_ms = time.time_ns() / 1e6
            await producer.send(trace)
            if sent.traces % probe_every == 0:
                probes.add(trace[0].trace_id, sent_ms)
            sent.add(start_us, trace[0].trace_id, len(trace))


async def sample_minutes(pipeline: Pipeline, sent: Sent, probes: Probes, minutes: int) -> list[Sample]:
    samples: list[Sample] = []
    started = time.monotonic()
    print(table_header(), file=sys.stderr, flush=True)
    for minute in range(1, minutes + 1):
        await asyncio.sleep(max(0.0, started + minute * 60 - time.monotonic()))
        now = time.monotonic()
        samples.append(pipeline.sample(minute, sent, probes.latencies_ms(now - 60, now)))
        print(table_row(samples[-1]), file=sys.stderr, flush=True)
    return samples


@dataclass
class Loss:
    decoded: float = 0.0  # spans the worker decoded
    dead_lettered: float = 0.0
    missing: int = 0  # spans of traces young enough to be kept that are not stored
    mismatched: int = 0  # spans too many or too few in stored traces
    stale: int = 0  # traces still stored that retention should have purged
    unfinalized: int = 0  # spans of traces still active (only when the drain timed out)
    checked: int = 0  # traces checked one by one
    archived: int = 0  # traces found in the archive's blocks
    stale_blocks: int = 0  # archive blocks all of whose traces are older than the archive's retention
    unfinished_probes: int = 0
    drain_s: float = math.nan  # from the last send until drained (nan: not within the timeout)

    def lost(self, sent: int) -> int:
        """Spans not accounted for (those undecoded are also missing from the traces checked)."""
        undecoded = int(max(0.0, sent - self.decoded))
        return max(undecoded, self.missing + self.unfinalized) + int(self.dead_lettered) + self.mismatched


async def drain(pipeline: Pipeline, sent: Sent, timeout_s: float) -> float:
    """Wait until the worker decoded every span sent and no trace is active; returns how long that took
    (nan when it did not within ``timeout_s``: the check then counts what is missing)."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < started + timeout_s:
            decoded = await pipeline.counter(session, "tracing_worker_spans_total")
            active = pipeline.count("SELECT count(*) FROM traces WHERE state = 'active'")
            if decoded >= sent.spans and active == 0:
                return time.monotonic() - started
            await asyncio.sleep(1.0)
    return math.nan


def archived_spans(pipeline: Pipeline) -> dict[str, int]:
    """trace id -> spans of the traces in the archive's registered blocks (none without an archive)."""
    if pipeline.archive is None:
        return {}
    found: Counter[str] = Counter()
    for (name,) in pipeline.query("SELECT name FROM archive_blocks"):
        table = pq.read_table(pipeline.archive / name, columns=["trace_id", "trace_id_text"])
        found.update(
            text if text is not None else key.hex()
            for key, text in zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True)
        )
    return dict(found)


def stale_blocks(pipeline: Pipeline, retention_us: int) -> int:
    """The registered blocks whose traces all started before the archive's retention bound (the
    retention and the slack of its rounds)."""
    if pipeline.archive is None:
        return 0
    return pipeline.count(f"SELECT count(*) FROM archive_blocks WHERE end_us < {time.time_ns() // 1000 - retention_us}")


async def check_loss(
    pipeline: Pipeline, sent: Sent, retention_us: int, archive_retention_us: int, slack_us: int
) -> Loss:
    """Every span decoded, none dead-lettered; each trace retention may not have purged stored with its
    spans exactly once (its row's span count, or its rows in the archive's blocks); none older left."""
    loss = Loss()
    async with aiohttp.ClientSession() as session:
        loss.decoded = await pipeline.counter(session, "tracing_worker_spans_total")
        loss.dead_lettered = await pipeline.counter(session, "tracing_worker_dead_lettered_total")
    stored: dict[str, int | None] = dict(pipeline.query("SELECT trace_id, span_count FROM traces"))
    archived = archived_spans(pipeline)
    loss.archived = len(archived)
    purgeable_before = time.time_ns() // 1000 - max(retention_us, archive_retention_us)
    for start_us, trace_id, spans in sent.recent:
        loss.checked += 1
        if trace_id in archived and trace_id not in stored:
            loss.mismatched += abs(archived[trace_id] - spans)
            continue
        if trace_id not in stored:
            loss.missing += 0 if start_us < purgeable_before else spans
            continue
        count = stored.pop(trace_id)
        if count is None:
            loss.unfinalized += spans
        elif count != spans:
            loss.mismatched += abs(count - spans)
    loss.stale = len(stored)
    loss.stale_blocks = stale_blocks(pipeline, archive_retention_us + slack_us)
    return loss


def remove_store(workdir: Path) -> None:
    for path in workdir.glob("traces.db*"):
        path.unlink()


def folder_bytes(folder: Path | None) -> int:
    """The bytes of the files under ``folder`` (0 without one)."""
    if folder is None:
        return 0
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):  # deleted meanwhile (the archive's retention)
            total += path.stat().st_size if path.is_file() else 0
    return total


def rss_mib(pid: int) -> float:
    """The resident memory of ``pid`` (0 once it is gone)."""
    try:
        return peak_rss(pid)[1] / MIB
    except OSError:
        return 0.0


def is_finalizer(pid: int) -> bool:
    """Whether ``pid`` is a worker's finalizer process (``python -m ingest.finalizer.child``)."""
    try:
        return b"ingest.finalizer.child" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


ARENA_ALIGN = 64 * MIB
"""glibc's ``HEAP_MAX_SIZE`` on 64-bit: a thread's malloc arena is made of anonymous mappings at this
alignment."""


@dataclass
class MemoryMap:
    """Where a process's resident memory is (``/proc/PID/smaps``), MiB."""

    file: float = 0.0  # mapped files: code, shared libraries, SQLite's shared memory
    heap: float = 0.0  # ``[heap]``: the main arena of glibc's malloc
    arenas: float = 0.0  # anonymous mappings at the 64 MiB alignment of a thread's malloc arena
    arena_count: int = 0
    anon: float = 0.0  # the other anonymous mappings: pymalloc's 1 MiB arenas, large mallocs, stacks

    def cells(self) -> str:
        return f"{self.file:.1f} / {self.heap:.1f} / {self.arenas:.1f} ({self.arena_count}) / {self.anon:.1f}"


def memory_map(pid: int) -> MemoryMap:
    """:class:`MemoryMap` of ``pid`` (empty once it is gone)."""
    found = MemoryMap()
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return found
    kind = ""
    for line in text.splitlines():
        head = line.split(maxsplit=6)
        if "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line: range perms offset dev inode [path]
            start = int(head[0].split("-")[0], 16)
            path = head[5] if len(head) > 5 else ""
            anonymous = not path or path.startswith("[anon")
            kind = "heap" if path == "[heap]" else "file" if not anonymous and not path.startswith("[") else ""
            if anonymous:
                kind = "arenas" if start % ARENA_ALIGN == 0 else "anon"
                found.arena_count += kind == "arenas"
        elif head[0] == "Rss:" and kind:
            setattr(found, kind, getattr(found, kind) + int(head[1]) / 1024)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slope_per_10_min(samples: list[Sample], value: Callable[[Sample], float], after_min: float) -> float:
    points = [(s.minute, value(s)) for s in samples if s.minute > after_min]
    points = [(x, y) for x, y in points if y == y]  # freshness is nan in a minute without probes
    if len(points) < 2:
        return float("nan")
    return statistics.linear_regression([x for x, _ in points], [y for _, y in points]).slope * 10


def table_header() -> str:
    titles = ["minute", *(title for title, _ in SERIES.values()), "probes", "spans sent", "traces stored"]
    titles += ["worker CPU %", "host load"]
    return "| " + " | ".join(titles) + " |\n|" + "|".join("---:" for _ in titles) + "|"


def table_row(s: Sample) -> str:
    cells = [f"{s.minute}", *(f"{value(s):,.1f}" for _, value in SERIES.values())]
    cells += [f"{s.probes}", f"{s.sent:,}", f"{s.stored:,}", f"{s.cpu_pct:.0f}", f"{s.load:.1f}"]
    return "| " + " | ".join(cells) + " |"


def verdicts(
    samples: list[Sample], probes: Probes, loss: Loss, sent: Sent, window: float, archiving: bool
) -> list[tuple[str, bool]]:
    """The goals of issue 32, each with whether it held."""
    rss = {
        name: slope_per_10_min(samples, SERIES[name][1], window) for name in ("worker", "finalizer", "planner", "api")
    }
    disk = [s.disk_mib for s in samples if s.minute > window]
    disk_slope = slope_per_10_min(samples, SERIES["disk"][1], window)
    archive = [s.archive_mib for s in samples if s.minute > window]
    archive_slope = slope_per_10_min(samples, SERIES["archive"][1], window)
    t0, t1 = sent.started, sent.started + samples[-1].minute * 60
    first = percentile(probes.latencies_ms(t0, t0 + window * 60), 0.99)
    last = percentile(probes.latencies_ms(t1 - window * 60, t1 + 3600), 0.99)
    lost = loss.lost(sent.spans)
    archived = [
        (f"archive {archive_slope:+.1f} MiB per 10 min against a mean of {statistics.fmean(archive or [0]):,.0f} "
         f"MiB (goal < 5%), {loss.stale_blocks} blocks older than its retention left, {loss.archived:,} traces "
         "in it", abs(archive_slope) < 0.05 * statistics.fmean(archive or [0]) and loss.stale_blocks == 0),
    ] if archiving else []  # fmt: skip
    return [
        (", ".join(f"{n} {v:+.2f}" for n, v in rss.items()) + " MiB per 10 min (goal < 1)",
         all(abs(v) < 1 for v in rss.values())),
        (f"disk {disk_slope:+.1f} MiB per 10 min against a mean of {statistics.fmean(disk or [0]):,.0f} MiB "
         f"(goal < 5%), {loss.stale} traces older than the retention left", abs(disk_slope) < 0.05 *
         statistics.fmean(disk or [0]) and loss.stale == 0),
        *archived,
        (f"freshness p99 last {window:g} min {last:,.0f} ms / first {window:g} min {first:,.0f} ms = "
         f"{last / first:.2f} (goal <= 1.5)", last <= 1.5 * first),
        (f"{lost:,} spans lost of {sent.spans:,} (decoded {loss.decoded:,.0f}, dead-lettered "
         f"{loss.dead_lettered:,.0f}, missing {loss.missing:,}, wrong counts {loss.mismatched:,}, in active "
         f"traces {loss.unfinalized:,}, of {loss.checked:,} traces checked; drained {loss.drain_s:,.0f} s after "
         f"the last send; {loss.unfinished_probes} probes never finalized)", lost == 0 and loss.unfinished_probes == 0),
    ]  # fmt: skip


def print_smaps(smaps: list[tuple[int, dict[str, MemoryMap]]]) -> None:
    """Each process's memory map each minute: file / [heap] / thread arenas (how many) / other anonymous."""
    print("\nresident MiB by mapping: file / [heap] / thread arenas (how many) / other anonymous")
    names = sorted({name for _, maps in smaps for name in maps})
    print("| minute | " + " | ".join(names) + " |\n|---:|" + "---:|" * len(names))
    for minute, maps in smaps:
        print(f"| {minute} | " + " | ".join(maps[n].cells() if n in maps else "" for n in names) + " |")


def report(
    args: argparse.Namespace, pipeline: Pipeline, samples: list[Sample], probes: Probes, loss: Loss, sent: Sent
) -> bool:
    window = min(WINDOW_MIN, args.minutes / 2)
    print(table_header())
    for s in samples:
        print(table_row(s))
    slopes = {name: slope_per_10_min(samples, value, window) for name, (_, value) in SERIES.items()}
    print(f"\nslope per 10 min after minute {window:g}: " + ", ".join(f"{n} {v:+.2f}" for n, v in slopes.items()))
    all_ms = [latency for _, latency in probes.done]
    print(f"freshness of all {len(all_ms):,} probes: p50 {percentile(all_ms, 0.5):,.0f} ms, "
          f"p99 {percentile(all_ms, 0.99):,.0f} ms")  # fmt: skip
    print(f"offered {args.rate:,.0f} spans/s for {args.minutes} min: {sent.spans:,} spans in {sent.traces:,} "
          f"traces ({sent.spans / args.minutes / 60:,.0f} spans/s), the producer at worst "
          f"{sent.behind_s * 1000:,.0f} ms behind its schedule; retention {args.retention_min:g} min, purged "
          f"every {args.retention_check_s:g} s")  # fmt: skip
    if pipeline.smaps:
        print_smaps(pipeline.smaps)
    results = verdicts(samples, probes, loss, sent, window, pipeline.archive is not None)
    for text, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for _, ok in results)


async def soak(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    processes = Processes(workdir)
    print(f"soak: logs in {workdir} (the store is deleted at the end)", file=sys.stderr, flush=True)
    try:
        pipeline = await start_pipeline(args, processes, workdir)
        pipeline.smaps = [] if args.smaps else None
        retention_us = int(pipeline.settings.retention_h * 3_600_000_000)
        kept_us = max(retention_us, int(args.archive_retention_min * 60e6) if pipeline.archive is not None else 0)
        sent = Sent(keep_us=kept_us + int(2 * args.retention_check_s * 1e6) + 120_000_000)
        probes = Probes(f"http://{pipeline.settings.api_bind}")
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            poller = asyncio.create_task(probes.run(session, stop))
            producer = asyncio.create_task(produce(pipeline, sent, probes, args.rate, args.minutes * 60))
            samples = await sample_minutes(pipeline, sent, probes, args.minutes)
            await producer
            drain_s = await drain(pipeline, sent, args.drain_timeout_s)
            stop.set()
            await poller
        archive_us = int(args.archive_retention_min * 60e6) if pipeline.archive is not None else 0
        slack_us = int(2 * args.retention_check_s * 1e6) + 60_000_000  # a round's period, and its length
        loss = await check_loss(pipeline, sent, retention_us, archive_us, slack_us)
        loss.unfinished_probes, loss.drain_s = len(probes.pending), drain_s
    finally:
        processes.stop_all()
        remove_store(workdir)
    return 0 if report(args, pipeline, samples, probes, loss, sent) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--rate", type=float, default=5000.0, help="offered spans/s")
    parser.add_argument("--retention-min", type=float, default=5.0, help="TRACING_RETENTION_H, in minutes")
    parser.add_argument("--retention-check-s", type=float, default=30.0, help="TRACING_RETENTION_CHECK_S")
    parser.add_argument(
        "--archive-after-min", type=float, default=0.0,
        help="TRACING_ARCHIVE_AFTER_H, in minutes: into a file:// archive in the soak's folder (0: no archive;"
        " 2 with the default retentions: traces age into it, then out of it, within the soak)",
    )  # fmt: skip
    parser.add_argument(
        "--archive-retention-min", type=float, default=6.0, help="TRACING_ARCHIVE_RETENTION_D, in minutes"
    )
    parser.add_argument("--smaps", action="store_true", help="print each process's memory map each minute")
    parser.add_argument("--drain-timeout-s", type=float, default=900.0, help="after the last send")
    parser.add_argument("--bootstrap", default=os.environ.get("TRACING_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    args = parser.parse_args()
    with tuned_gc():
        return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
