"""The benchmark: one command, one table (``make bench``).

    python bench/run.py [--quick] [--only a,b,c,d,e,f,g,h,i,j] [--spans N] [--read-spans N] [--active-traces N]

Rows, every figure measured in this run (see bench/README.md for what limits each):
  a  raw aiokafka consume-only rate of the pre-filled topics of both workloads: the demo traces batched
     one message per trace, and 10-span traces one span per message (the ceiling for a Python consumer)
  b  decode-only rate, native JSON messages → spans, in process
  c  one worker end to end on SQLite and on PostgreSQL, on both workloads, and on one Cassandra node:
     until every span is stored, until every trace is finalized; ratio to (a) of the same topic; and two
     worker processes on a 3-node Cassandra cluster (batched workload)
  d  freshness: produce → queryable as finalized through the HTTP API, at a fixed offered rate
  e  read latency over real HTTP with a large store (trace by id, query, stats, analyze)
  f  worker peak RSS with many active traces
  g  Zipkin's server draining the same spans (Zipkin v2 JSON), and our worker on that same input
  h  Jaeger v2 (built from the Go module proxy) draining the same spans (OTLP protobuf), and our worker on
     that same input
  i  storage: bytes a span on disk after a drain as (c)'s, per store (SQLite, PostgreSQL, Cassandra) and
     workload (c's two and the realistic one), beside the same spans as JSON lines, zstd JSON lines and
     zstd Parquet; and Jaeger v2 on its embedded persistent store (Badger) and on the same Cassandra node
  j  the archive behind S3Proxy: spans/s one worker's archiver moves, bytes a span of its blocks (demo and
     realistic workloads), and trace by id and one-hour searches over HTTP with 10M archived spans

Prints the machine and the date above the table, and writes it as markdown to bench/results/latest.md.
Needs a Kafka broker (TRACING_KAFKA_BOOTSTRAP, default 127.0.0.1:9092). Every process it starts is
stopped before it exits, and the topics it created are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from bench import archive_scale, cassandra, drain, freshness, jaeger, memory, reads, storage, workload, zipkin
from bench.common import (
    ROOT,
    Postgres,
    Processes,
    Row,
    Skipped,
    delete_topics,
    log,
    machine,
    mib,
    ms,
    percentile,
    rate,
    render_report,
)
from bench.jaeger import JaegerServer
from bench.workload import TRACE_SIZE, Filled, WireFormat
from shared.kafka import ensure_topics
from shared.settings import Settings

PARTS = "abcdefghij"
DEFAULT_OUT = ROOT / "bench" / "results" / "latest.md"


@dataclass
class Workload:
    """A pre-filled topic that (a) reads raw and (c) drains: its rows' ratios are to its own (a)."""

    name: str  # "" for the batched demo traces, else how the rows name it
    wire: WireFormat
    topic: str
    filled: Filled | None = None
    raw: drain.RawResult | None = None

    def label(self, store: str) -> str:
        return f"{store}, {self.name}" if self.name else store

    def shape(self) -> str:
        f = self.filled
        assert f is not None
        if self.wire == "native-span":
            return (
                f"one span each, {TRACE_SIZE}-span traces, keyed by trace id, in the order the spans end, as "
                f"the seed's HTTP writes send them; {f.value_bytes / f.messages:.0f} B each"
            )
        return f"one per trace, {f.spans / f.messages:.1f} spans, {f.value_bytes / f.messages / 1024:.1f} KiB each"


@dataclass
class Stored:
    """What row (i) measured so far, for its ratios."""

    parquet: dict[str, int] = field(default_factory=dict)  # bytes of the zstd Parquet file, by workload wire
    ours_sqlite: tuple[float, float] | None = None  # batched on SQLite: bytes a span, spans/s finalized
    ours_cassandra: tuple[float, float] | None = None  # the same on the Cassandra node


@dataclass(frozen=True)
class Sizes:
    spans: int  # a, b, c, g, h, i: the pre-filled topics
    read_spans: int  # e: spans in the store
    active_traces: int  # f
    fresh_rate: float  # d: offered spans/s
    fresh_seconds: float  # d: how long
    requests: int  # e: per request kind
    archive_spans: int  # j: spans archived for the reads
    archive_move_spans: int  # j: spans a workload the archiver moves


FULL = Sizes(
    spans=200_000,
    read_spans=1_000_000,
    active_traces=100_000,
    fresh_rate=10_000,
    fresh_seconds=20,
    requests=200,
    archive_spans=10_000_000,
    archive_move_spans=200_000,
)
QUICK = Sizes(
    spans=5_000,
    read_spans=20_000,
    active_traces=2_000,
    fresh_rate=1000,
    fresh_seconds=3,
    requests=30,
    archive_spans=100_000,
    archive_move_spans=10_000,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (the CI smoke run, < 60 s); Zipkin only if cached"
    )
    parser.add_argument("--only", default="", help="comma-separated rows to run, e.g. a,b,c (default: all)")
    parser.add_argument(
        "--stores",
        default="sqlite,postgres,badger,cassandra",
        help="row i's stores, comma-separated: sqlite, postgres, badger (Jaeger), cassandra (ours and Jaeger's)",
    )
    parser.add_argument("--spans", type=int, help=f"spans drained in a, c, g, h (default {FULL.spans:,})")
    parser.add_argument("--read-spans", type=int, help=f"spans in the store for e (default {FULL.read_spans:,})")
    parser.add_argument("--active-traces", type=int, help=f"open traces for f (default {FULL.active_traces:,})")
    parser.add_argument("--rate", type=float, help=f"offered spans/s for d (default {FULL.fresh_rate:,.0f})")
    parser.add_argument("--seconds", type=float, help=f"how long d produces (default {FULL.fresh_seconds:.0f})")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="how often d polls the API")
    parser.add_argument("--requests", type=int, help=f"requests per kind in e and j (default {FULL.requests})")
    parser.add_argument(
        "--archive-spans", type=int, help=f"spans archived for j's reads (default {FULL.archive_spans:,})"
    )
    parser.add_argument(
        "--archive-move-spans",
        type=int,
        help=f"spans a workload j's archiver moves (default {FULL.archive_move_spans:,})",
    )
    parser.add_argument("--grace-ms", type=int, default=100, help="grace window of the workers in c and g")
    parser.add_argument("--partitions", type=int, default=12, help="partitions of every topic the bench creates")
    parser.add_argument("--batch-max", type=int, default=Settings().batch_max, help="the workers' getmany max_records")
    parser.add_argument(
        "--finalize-inline",
        action="store_true",
        help="the workers finalize in-process (TRACING_FINALIZE_PROCESS=false), as before the finalizer process",
    )
    parser.add_argument("--zipkin-heap", default="2g", help="-Xmx of Zipkin's JVM")
    parser.add_argument(
        "--jaeger-cassandra-s", type=float, default=120.0, help="how long (i) times Jaeger writing to Cassandra"
    )
    parser.add_argument("--bootstrap", default=os.environ.get("TRACING_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown copy of the table")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()] or list(PARTS)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        parser.error(f"--only: unknown rows {unknown}; choose from {','.join(PARTS)}")
    base = QUICK if args.quick else FULL
    args.sizes = Sizes(
        spans=args.spans or base.spans,
        read_spans=args.read_spans or base.read_spans,
        active_traces=args.active_traces or base.active_traces,
        fresh_rate=args.rate or base.fresh_rate,
        fresh_seconds=args.seconds or base.fresh_seconds,
        requests=args.requests or base.requests,
        archive_spans=args.archive_spans or base.archive_spans,
        archive_move_spans=args.archive_move_spans or base.archive_move_spans,
    )
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.sizes: Sizes = args.sizes
        self.workdir = workdir
        self.processes = Processes(workdir)
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.base = Settings.from_env(
            {},
            kafka_bootstrap=args.bootstrap,
            partitions=args.partitions,
            batch_max=args.batch_max,
            finalize_process=not args.finalize_inline,
            **self.names("base"),
        )
        self.rows: list[Row] = []
        self.failed = False
        self.batched = Workload("", "native", f"{self.prefix}-native")
        self.single = Workload("one span per message", "native-span", f"{self.prefix}-native-span")
        self.workloads = (self.batched, self.single)
        self.realistic = Workload("realistic", "realistic", f"{self.prefix}-realistic")
        self.stored = Stored()
        self.ours_sqlite: float | None = None  # (c) every trace finalized, SQLite, batched
        self.zipkin_topic = f"{self.prefix}-zipkin"
        self.zipkin_server: zipkin.ZipkinServer | None = None
        self.otlp_topic = f"{self.prefix}-otlp-in"
        self.otlp: Filled | None = None
        self.jaeger_rate: float | None = None  # (h) Jaeger's spans/s

    def names(self, part: str) -> dict[str, str]:
        """Topic and group names of one part: nothing it reads or writes is shared with another part."""
        p = f"{self.prefix}-{part}"
        return {
            "topic": f"{p}-spans",
            "otlp_topic": f"{p}-otlp",
            "zipkin_topic": f"{p}-zipkin",
            "jaeger_topic": f"{p}-jaeger",
            "group": p,
        }

    def settings(self, part: str, **overrides: object) -> Settings:
        return msgspec.structs.replace(self.base, **{**self.names(part), **overrides})

    async def part(self, key: str, measure: str, body: Callable[[], Awaitable[list[Row]]]) -> None:
        """Run one part; its rows get the wall time. A skip or a failure becomes the row's result."""
        log(f"({key}) {measure} ...")
        started = time.monotonic()
        try:
            rows = await body()
        except Skipped as exc:
            rows = [Row(key, measure, f"n/a ({exc})")]
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self.failed = True
            reason = (str(exc).splitlines() or [""])[0][:160]
            rows = [Row(key, measure, f"failed: {type(exc).__name__}: {reason}", failed=True)]
        took = time.monotonic() - started
        for row in rows:
            row.seconds = took if row.seconds is None else row.seconds
            log(f"({row.key}) {row.measure}: {row.result} {row.ratio}")
        self.rows.extend(rows)

    # -- the parts ------------------------------------------------------------------------------------

    async def fill(self, w: Workload) -> list[Row]:
        """The pre-filled topic of one workload for a, c (b decodes a sample of the batched one)."""
        w.filled = f = await workload.fill(self.base, w.topic, self.sizes.spans, w.wire, keep=5000)
        log(f"filled {w.topic}: {f.spans:,} spans in {f.messages:,} messages, {f.seconds:.1f} s")
        return []

    async def raw_consume(self, w: Workload) -> list[Row]:
        f = w.filled
        if f is None:
            raise Skipped("the topic was not filled")
        w.raw = await drain.raw_consume(
            self.settings("a"), w.topic, f.messages, f.spans, min_seconds=1.0 if self.args.quick else 3.0
        )
        measure = "raw aiokafka consume-only (getmany, no processing)"
        return [
            Row(
                "a",
                f"{measure}, {w.name}" if w.name else measure,
                f"{rate(w.raw.spans_per_s)}; {rate(w.raw.messages_per_s, 'msgs/s')}",
                "1.00",
                f"{f.spans:,} spans in {f.messages:,} messages ({w.shape()}) on {self.base.partitions} partitions; "
                f"{w.raw.passes} pass(es) in {w.raw.seconds:.1f} s from the partition assignment",
            )
        ]

    async def decode(self) -> list[Row]:
        f = self.batched.filled
        sample = (
            f.sample
            if f is not None
            else [workload.native_message(t) for t in workload.demo_traces(min(self.sizes.spans, 65_000))]
        )
        result = drain.decode_rate(sample, min_seconds=0.3 if self.args.quick else 2.0)
        raw = self.batched.raw
        ratio = f"{result.spans_per_s / raw.spans_per_s:.2f} × (a)" if raw else ""
        return [
            Row(
                "b",
                "decode only (native JSON → spans, one core)",
                f"{rate(result.spans_per_s)}; {rate(result.messages_per_s, 'msgs/s')}",
                ratio,
                f"{len(sample):,} messages decoded repeatedly with shared.codecs.native; with the worker's "
                f"default tag redaction too: {rate(result.redacted_spans_per_s)}",
            )
        ]

    async def drain_store(self, w: Workload, store: str, store_url: str) -> list[Row]:
        f = w.filled
        if f is None:
            raise Skipped("the topic was not filled")
        slug = f"c-{store}-{w.wire}".lower()
        s = self.settings(slug, topic=w.topic, store_url=store_url, grace_ms=self.args.grace_ms)
        result = await drain.worker_drain(s, f.spans, f.traces)
        if store == "SQLite" and w is self.batched:
            self.ours_sqlite = result.finalized_per_s
        return drain.drain_rows("c", w.label(store), result, w.raw, s.grace_ms)

    async def drain_sqlite(self, w: Workload) -> list[Row]:
        return await self.drain_store(w, "SQLite", f"sqlite:///{self.workdir / f'drain-{w.wire}.db'}")

    async def drain_postgres(self, w: Workload) -> list[Row]:
        """Into a fresh PostgreSQL cluster of its own, stopped and deleted afterwards."""
        postgres = Postgres(self.workdir, self.processes)
        try:
            url = postgres.up()
            return await self.drain_store(w, "PostgreSQL", url)
        finally:
            postgres.down()

    async def drain_cassandra(self, nodes: int) -> list[Row]:
        w = self.batched
        f = w.filled
        if f is None:
            raise Skipped("the topic was not filled")
        if self.args.quick:
            raise Skipped("quick run: starting Cassandra nodes takes longer than the whole quick run")
        s = self.settings(f"c-cassandra-{nodes}", topic=w.topic, grace_ms=self.args.grace_ms)
        drain_cluster = cassandra.one_worker if nodes == 1 else cassandra.two_workers
        return await drain_cluster(s, self.workdir, self.processes, f.spans, f.traces, w.raw)

    async def freshness(self) -> list[Row]:
        z = self.sizes
        s = self.settings("d")
        r = await freshness.freshness(
            s,
            self.processes,
            self.workdir,
            spans_per_s=z.fresh_rate,
            seconds=z.fresh_seconds,
            poll_s=self.args.poll_ms / 1000,
        )
        if not r.latencies_ms:
            raise RuntimeError(f"no trace became queryable ({r.traces} produced)")
        p50, p99 = (percentile(r.latencies_ms, q) for q in (0.5, 0.99))
        grace = r.grace_ms
        missing = (
            f"; {r.missing:,} not seen within {r.drain_timeout_s:.0f} s after the last send (the percentiles are "
            f"of the {len(r.latencies_ms):,} seen: lower bounds)"
            if r.missing
            else ""
        )
        worker_side = (
            f"; of which produce → finalizedAt (the worker's clock, {len(r.finalized_ms)} traces sampled): p50 "
            f"{ms(percentile(r.finalized_ms, 0.5))}, p99 {ms(percentile(r.finalized_ms, 0.99))}"
            if r.finalized_ms
            else ""
        )
        lookups = (
            f", {r.lookups:,} look-ups by id of traces still unseen when ones sent "
            f"{freshness.STRAGGLER_AFTER_S:.0f} s later were seen"
            if r.lookups
            else ""
        )
        backed_off = f", backing off to {ms(r.max_interval_ms)}" if r.max_interval_ms > r.poll_ms * 1.5 else ""
        return [
            Row(
                "d",
                "freshness: produced → finalized and queryable over HTTP",
                f"p50 {ms(p50)}, p99 {ms(p99)}",
                f"minus the {grace} ms grace: p50 {ms(p50 - grace)}, p99 {ms(p99 - grace)}",
                f"offered {rate(r.offered_spans_per_s)} for {z.fresh_seconds:.0f} s (achieved "
                f"{rate(r.achieved_spans_per_s)}; the producer a process of its own, at worst {ms(r.behind_ms)} "
                f"behind its schedule), {r.traces:,} traces; one worker and the API as processes on SQLite, "
                f"default settings; polled every {r.poll_ms:.0f} ms{backed_off} ({r.polls:,} searches listing "
                f"{r.listed:,} summaries{lookups}); max {ms(max(r.latencies_ms))}{missing}{worker_side}",
            )
        ]

    async def reads(self) -> list[Row]:
        """Each read kind at ``--read-spans``, and first at a tenth of it (full runs): the ratio column says
        how much the p99 grew with a store ten times larger (rollup reads must stay flat)."""
        z = self.sizes
        sizes = [z.read_spans] if self.args.quick else [z.read_spans // 10, z.read_spans]
        results = []
        for n in sizes:  # one store at a time: the smaller one's file is gone before the larger one fills
            results.append(await reads.read_latency(self.settings("e"), self.processes, self.workdir, n, z.requests))
        r, small = results[-1], (results[0] if len(results) > 1 else None)
        rows = []
        for name, (p50, p99) in r.latency_ms.items():
            ratio = ""
            if small is not None:
                p99_small = small.latency_ms[name][1]
                ratio = f"p99 {ms(p99_small)} at {small.spans:,} spans ({p99 / p99_small:.1f}x)"
            rows.append(Row("e", f"read {name}", f"p50 {ms(p50)}, p99 {ms(p99)}", ratio, ""))
        rows[0].notes = (
            f"{r.spans:,} spans / {r.traces:,} traces in SQLite over the last day (filled in {r.fill_seconds:.0f} s "
            f"through the store API); the API as its own process; {z.requests} sequential requests per kind; "
            "the ratio column: the same request on a store a tenth the size"
        )
        return rows

    async def archive(self) -> list[Row]:
        z = self.sizes
        result = await archive_scale.measure(
            self.settings("j"),
            self.processes,
            self.workdir,
            spans=z.archive_spans,
            move_spans=z.archive_move_spans,
            days=archive_scale.DAYS,
            requests=z.requests,
            jobs=os.cpu_count() or 1,
        )
        return archive_scale.rows(result, z.requests, archive_scale.DAYS)

    async def memory(self) -> list[Row]:
        z = self.sizes
        s = self.settings("f")
        r = await memory.peak_memory(s, self.processes, self.workdir, traces=z.active_traces)
        ok = "" if r.active_traces == r.traces else f"; the store reports {r.active_traces:,} active (expected all)"
        return [
            Row(
                "f",
                f"worker peak RSS with {r.traces:,} active traces",
                f"{mib(r.peak_rss)} (VmHWM)",
                f"{mib(r.baseline_rss)} after start-up",
                f"the worker and its finalizer process ({mib(r.finalizer_rss)}) together; "
                f"{r.spans:,} spans, roots never finished (idle timeout 1 day), SQLite; produced and drained in "
                f"{r.drain_seconds:.0f} s ({rate(r.spans / r.drain_seconds)}){ok}",
            )
        ]

    def start_zipkin(self) -> zipkin.ZipkinServer:
        self.zipkin_server = zipkin.ZipkinServer(
            self.base,
            self.processes,
            topic=self.zipkin_topic,
            group=f"{self.prefix}-g-zipkin",
            max_spans=self.sizes.spans * 2,
            heap=self.args.zipkin_heap,
        )
        self.zipkin_server.start()
        return self.zipkin_server

    async def start_zipkin_early(self) -> None:
        """Quick runs only: the JVM starts (on an empty topic) while the other parts run, so that its start-up
        (10-40 s on two cores) does not add to the run. Full runs never overlap it with a measurement."""
        if not zipkin.jar_path().is_file():
            return
        await ensure_topics(self.base, [self.zipkin_topic])
        self.start_zipkin()

    async def zipkin(self) -> list[Row]:
        if self.args.quick and not zipkin.jar_path().is_file():
            raise Skipped("quick run and the Zipkin jar is not cached")
        n = self.sizes.spans
        server = self.zipkin_server
        try:
            if server is None:  # full run: fill first, then start: Zipkin drains a pre-filled topic, like (c)
                filled = await workload.fill(self.base, self.zipkin_topic, n, "zipkin")
                server = self.start_zipkin()
            else:  # quick run: the server is up already; it drains while the topic fills
                await server.ready()
                filled = await workload.fill(self.base, self.zipkin_topic, n, "zipkin")
            log(f"filled {self.zipkin_topic} (Zipkin v2 JSON): {filled.messages:,} messages, {filled.seconds:.1f} s")
            z = await server.drain(filled.spans)
        finally:
            if server is not None:
                server.stop()
        ours = self.ours_sqlite
        ratio = f"ours (c, SQLite, finalized) / Zipkin = {ours / z.spans_per_s:.2f}" if ours and z.spans_per_s else ""
        rows = [
            Row(
                "g",
                f"Zipkin {zipkin.VERSION} server: Kafka collector (1 stream) → in-memory storage",
                rate(z.spans_per_s),
                ratio,
                f"the same {filled.spans:,} spans as Zipkin v2 JSON lists, one message per trace; {z.seconds:.1f} s "
                f"from the first span counted; JVM start-up {z.startup_s:.0f} s; peak RSS {mib(z.peak_rss)}; "
                f"{z.dropped} dropped",
            )
        ]
        topic = {"zipkin_topic": self.zipkin_topic}
        rows.append(
            await self.ours_on("g", "Zipkin JSON", "Zipkin", z.spans_per_s, filled.spans, filled.messages, topic)
        )
        return rows

    async def ours_on(
        self, row: str, wire: str, peer: str, peer_rate: float | None, spans: int, messages: int, topic: dict[str, str]
    ) -> Row:
        """Our worker (SQLite) on the peer's own topic of ``row`` (``topic``: its setting): every trace
        finalized, and the ratio to the peer's rate."""
        db = self.workdir / f"{row}-ours.db"
        s = self.settings(f"{row}-ours", store_url=f"sqlite:///{db}", grace_ms=self.args.grace_ms, **topic)
        result = await drain.worker_drain(s, spans, messages)
        return Row(
            row,
            f"our worker on that same {wire} topic (SQLite): every trace finalized",
            rate(result.finalized_per_s),
            f"ours / {peer} = {result.finalized_per_s / peer_rate:.2f}" if peer_rate else "",
            f"every span stored at {rate(result.stored_per_s)}; {result.finalized_s:.1f} s from the "
            f"partition assignment",
        )

    async def fill_otlp(self) -> Filled:
        """The OTLP topic of h (filled once, for Jaeger and our worker)."""
        if self.otlp is None:
            self.otlp = await workload.fill(self.base, self.otlp_topic, self.sizes.spans, "otlp")
            f = self.otlp
            log(f"filled {self.otlp_topic} (OTLP protobuf): {f.messages:,} messages, {f.seconds:.1f} s")
        return self.otlp

    async def jaeger(self) -> list[Row]:
        binary = jaeger.binary_path()
        built = ""
        if not binary.is_file():
            if self.args.quick:
                raise Skipped("quick run and the Jaeger binary is not cached: python bench/jaeger.py --build")
            started = time.monotonic()
            jaeger.build_binary()  # nothing else runs meanwhile: the build would skew any measurement
            built = f"; built in this run ({time.monotonic() - started:.0f} s, not counted)"
        server = jaeger.JaegerServer(
            self.base,
            self.processes,
            self.workdir,
            topic=self.otlp_topic,
            group=f"{self.prefix}-g-jaeger",
            max_traces=max(self.sizes.spans, 100_000),
        )
        try:
            if self.args.quick:  # tiny topic: Jaeger drains it while it fills, or it would be gone in one poll
                await ensure_topics(self.base, [self.otlp_topic])
                server.start()
                await server.ready()
                expected = sum(len(t) for t in workload.demo_traces(self.sizes.spans))  # what the fill sends
                draining = asyncio.create_task(server.drain(expected))
                try:
                    filled = await self.fill_otlp()
                except BaseException:
                    draining.cancel()
                    raise
                j = await draining
            else:  # fill first, then start: Jaeger drains a pre-filled topic, like (c)
                filled = await self.fill_otlp()
                server.start()
                j = await server.drain(filled.spans)
        finally:
            server.stop()
        self.jaeger_rate = j.spans_per_s if math.isfinite(j.spans_per_s) else None
        ours = self.ours_sqlite
        jr = self.jaeger_rate
        ratio = f"ours (c, SQLite, finalized) / Jaeger = {ours / jr:.2f}" if ours and jr else ""
        return [
            Row(
                "h",
                f"Jaeger {jaeger.RELEASE} (Go module {jaeger.VERSION}): kafka receiver → batch → memory store",
                rate(j.spans_per_s) if jr else "too few spans to time (all counted by one poll)",
                ratio,
                f"the same {filled.spans:,} spans as OTLP protobuf, one ExportTraceServiceRequest per trace "
                f"({filled.value_bytes / filled.messages / 1024:.1f} KiB each, no key); {j.seconds:.1f} s from the "
                f"first span counted (otelcol_exporter_sent_spans); {j.accepted:,} accepted, {j.failed} failed; "
                f"{j.services} services; start-up {j.startup_s:.1f} s, first span counted after "
                f"{j.first_span_s:.1f} s (group join); peak RSS {mib(j.peak_rss)}; "
                f"{jaeger.version_of(binary)}{built}",
            )
        ]

    async def ours_otlp(self) -> list[Row]:
        filled = await self.fill_otlp()
        topic = {"otlp_topic": self.otlp_topic}
        return [await self.ours_on("h", "OTLP", "Jaeger", self.jaeger_rate, filled.spans, filled.traces, topic)]

    # -- (i) storage ------------------------------------------------------------------------------------

    @property
    def stored_workloads(self) -> tuple[Workload, ...]:
        return (self.batched, self.single, self.realistic)

    async def filled(self, w: Workload) -> Filled:
        if w.filled is None:
            await self.fill(w)
        assert w.filled is not None
        return w.filled

    async def storage_references(self) -> list[Row]:
        """The same spans as each workload's topic in the reference formats, built in memory."""
        rows = []
        for w in self.stored_workloads:
            traces = workload.traces_of(w.wire, self.sizes.spans)
            spans, sizes = storage.references(s for t in traces for s in t)
            parquet = self.stored.parquet[w.wire] = list(sizes.values())[-1]
            for name, size in sizes.items():
                rows.append(
                    Row(
                        "i",
                        f"bytes a span, {w.label(name)}",
                        storage.per_span(size, spans),
                        f"{size / parquet:.1f} × zstd Parquet",
                        f"{spans:,} spans, {size / 1024:,.0f} KiB",
                    )
                )
        return rows

    @staticmethod
    def sizes_of(w: Workload) -> int:
        """Spans in the topic of ``w``."""
        assert w.filled is not None
        return w.filled.spans

    async def storage_drain(self, w: Workload, store: str, url: str) -> drain.DrainResult:
        f = await self.filled(w)
        s = self.settings(f"i-{store}-{w.wire}".lower(), topic=w.topic, store_url=url, grace_ms=self.args.grace_ms)
        return await drain.worker_drain(s, f.spans, f.traces)

    def storage_row(self, w: Workload, store: str, footprint: storage.Footprint, result: drain.DrainResult) -> Row:
        spans = self.sizes_of(w)
        parquet = self.stored.parquet.get(w.wire)
        return Row(
            "i",
            f"bytes a span, {w.label(store)}",
            storage.per_span(footprint.total, spans),
            f"{footprint.total / parquet:.1f} × zstd Parquet" if parquet else "",
            f"{footprint.total / 2**20:,.1f} MiB for {spans:,} spans, drained at {rate(result.finalized_per_s)} "
            f"(every trace finalized); B/span by table: {footprint.breakdown(spans)}",
        )

    async def storage_sqlite(self) -> list[Row]:
        rows = []
        for w in self.stored_workloads:
            db = self.workdir / f"i-{w.wire}.db"
            result = await self.storage_drain(w, "SQLite", f"sqlite:///{db}")
            footprint = storage.sqlite_footprint(db)
            if w is self.batched:
                self.stored.ours_sqlite = (footprint.per_span(self.sizes_of(w)), result.finalized_per_s)
            rows.append(self.storage_row(w, "SQLite", footprint, result))
            for path in self.workdir.glob(f"{db.name}*"):
                path.unlink()
        return rows

    async def storage_postgres(self) -> list[Row]:
        """One fresh cluster, a database per workload."""
        postgres = Postgres(self.workdir, self.processes)
        try:
            url = postgres.up()
            rows = []
            for w in self.stored_workloads:
                db_url = await storage.postgres_database(url, f"i_{w.wire.replace('-', '_')}")
                result = await self.storage_drain(w, "PostgreSQL", db_url)
                rows.append(self.storage_row(w, "PostgreSQL", await storage.postgres_footprint(db_url), result))
            return rows
        finally:
            postgres.down()

    async def storage_cassandra(self, cluster: cassandra.Cluster) -> list[Row]:
        """One fresh node, a keyspace per workload."""
        if self.args.quick:
            raise Skipped("quick run: starting a Cassandra node takes longer than the whole quick run")
        url = cluster.up()
        rows = []
        for w in self.stored_workloads:
            keyspace = f"i_{w.wire.replace('-', '_')}"
            result = await self.storage_drain(w, "Cassandra", storage.with_path(url, keyspace))
            footprint = storage.cassandra_footprint([cluster.data_dir(1)], [cluster.jmx_port], keyspace)
            if w is self.batched:
                self.stored.ours_cassandra = (footprint.per_span(self.sizes_of(w)), result.finalized_per_s)
            rows.append(self.storage_row(w, "Cassandra (1 node)", footprint, result))
        return rows

    async def jaeger_cassandra(self, cluster: cassandra.Cluster) -> list[Row]:
        """Jaeger writes a span and its index rows one query at a time: too slow to drain the topic within a
        run, so it is timed over ``--jaeger-cassandra-s`` and its bytes a span are of the spans it wrote."""
        if not cluster.port:
            raise Skipped("no Cassandra node (see the row above)")
        keyspace = "i_jaeger"
        disk = functools.partial(storage.cassandra_footprint, [cluster.data_dir(1)], [cluster.jmx_port], keyspace)
        window = self.args.jaeger_cassandra_s

        async def timed(server: jaeger.JaegerServer, spans: int) -> tuple[float, int, str]:
            server.stall_s = 600.0  # its first span written can take minutes: the schema, then a batch
            j = await jaeger.sample(server, jaeger.spans_inserted, spans, window)
            return (
                j.spans_per_s,
                j.spans,
                (
                    f"{j.spans:,} of the {spans:,} demo spans (the OTLP topic of h) written in {j.seconds:.0f} s "
                    "from the first counted (its traces table's inserts), then killed"
                ),
            )

        ours = ("Cassandra", self.stored.ours_cassandra)
        backend = jaeger.cassandra(cluster.port, keyspace)
        return [await self.jaeger_stored("Cassandra (the same node)", backend, timed, disk, ours)]

    async def jaeger_badger(self) -> list[Row]:
        dirs = {name: self.workdir / "jaeger-badger" / name for name in ("keys", "values")}

        async def drained(server: jaeger.JaegerServer, spans: int) -> tuple[float, int, str]:
            try:
                j = await server.drain(spans)
            finally:
                server.stop()  # SIGTERM: Badger flushes its memtables and closes its files
            return (
                j.spans_per_s,
                spans,
                (
                    f"the same {spans:,} demo spans as OTLP (the topic of h); {j.accepted:,} accepted, {j.failed} "
                    f"failed; drained in {j.seconds:.1f} s from the first span counted (otelcol_exporter_sent_spans)"
                ),
            )

        disk = functools.partial(storage.directory_footprint, dirs)
        ours = ("SQLite", self.stored.ours_sqlite)
        try:
            return [await self.jaeger_stored("Badger", jaeger.badger(**dirs), drained, disk, ours)]
        finally:
            shutil.rmtree(self.workdir / "jaeger-badger", ignore_errors=True)

    async def jaeger_stored(
        self,
        name: str,
        backend: dict[str, object],
        run: Callable[[JaegerServer, int], Awaitable[tuple[float, int, str]]],
        disk: Callable[[], storage.Footprint],
        ours: tuple[str, tuple[float, float] | None],
    ) -> Row:
        """Jaeger on the OTLP topic of (h) into ``backend``: ``run`` (spans/s, spans written, how) stops it;
        then bytes a span on ``disk()``; the ratio to ``ours``: (the store, (bytes a span, spans/s finalized)
        of the batched workload on it)."""
        if self.args.quick and not jaeger.binary_path().is_file():
            raise Skipped("quick run and the Jaeger binary is not cached: python bench/jaeger.py --build")
        filled = await self.fill_otlp()
        group = f"{self.prefix}-g-jaeger-{name.split()[0].lower()}"
        server = jaeger.JaegerServer(
            self.base, self.processes, self.workdir, topic=self.otlp_topic, group=group, backend=backend
        )
        try:
            server.start()
            speed, spans, how = await run(server, filled.spans)
        finally:
            server.stop()
        footprint = disk()
        timed = math.isfinite(speed)
        ratio = ""
        store, figures = ours
        if figures is not None:
            (size, our_speed), theirs = figures, footprint.per_span(spans)
            ratio = f"ours on {store} (batched): {size:,.0f} B/span ({size / theirs:.2f}x)"
            ratio += f", {rate(our_speed)} ({our_speed / speed:.2f}x)" if timed else ""
        return Row(
            "i",
            f"Jaeger {jaeger.RELEASE} on {name}: bytes a span; spans/s",
            f"{storage.per_span(footprint.total, spans)}; " + (rate(speed) if timed else "too few spans to time"),
            ratio,
            f"{how}; {footprint.total / 2**20:,.1f} MiB on disk once stopped, B/span: {footprint.breakdown(spans)}",
        )

    async def storage(self) -> None:
        stores = set(self.args.stores.split(","))
        await self.part("i", "storage: reference formats", self.storage_references)
        if "sqlite" in stores:
            await self.part("i", "storage: SQLite", self.storage_sqlite)
        if "postgres" in stores:
            await self.part("i", "storage: PostgreSQL", self.storage_postgres)
        if "badger" in stores:
            await self.part("i", "storage: Jaeger v2 on Badger", self.jaeger_badger)
        if "cassandra" not in stores:
            return
        cluster = cassandra.Cluster(self.workdir, self.processes, 1)
        try:
            await self.part("i", "storage: Cassandra (1 node)", functools.partial(self.storage_cassandra, cluster))
            await self.part("i", "storage: Jaeger v2 on Cassandra", functools.partial(self.jaeger_cassandra, cluster))
        finally:
            cluster.down()

    async def run(self) -> None:
        parts = set(self.args.parts)
        if self.args.quick and "g" in parts:
            await self.start_zipkin_early()
        if parts & set("abc"):
            for w in self.workloads:
                await self.part("a", f"fill the topic {w.topic}", functools.partial(self.fill, w))
        if "a" in parts:
            for w in self.workloads:
                await self.part("a", "raw aiokafka consume-only", functools.partial(self.raw_consume, w))
        if "b" in parts:
            await self.part("b", "decode only", self.decode)
        if "c" in parts:
            for name, store in (("SQLite", self.drain_sqlite), ("PostgreSQL", self.drain_postgres)):
                for w in self.workloads:
                    await self.part("c", f"one worker, {w.label(name)}", functools.partial(store, w))
        if "d" in parts:
            await self.part("d", "freshness", self.freshness)
        if "e" in parts:
            await self.part("e", "read latency", self.reads)
        if "f" in parts:
            await self.part("f", "worker peak RSS", self.memory)
        if "g" in parts:
            await self.part("g", "Zipkin server", self.zipkin)
        if "h" in parts:
            await self.part("h", "Jaeger v2", self.jaeger)
            await self.part("h", "our worker on the OTLP topic", self.ours_otlp)
        if "c" in parts:
            # Last: a cluster's shutdown and the deletion of its data load the disk and both cores for a
            # while after the part ends, which showed as up to 1 s more in the freshness of (d) after it.
            await self.part("c", "one worker, Cassandra (1 node)", lambda: self.drain_cassandra(1))
            await self.part("c", "two workers, Cassandra (3 nodes)", lambda: self.drain_cassandra(3))
        if "i" in parts:
            await self.storage()  # last too: its Cassandra node
        if "j" in parts:
            await self.part("j", "the archive behind S3Proxy", self.archive)

    def footnotes(self) -> list[str]:
        z = self.sizes
        notes = [
            f"sizes: --spans {z.spans:,} (a, b, c, g, h, i; per workload), --read-spans {z.read_spans:,} (e), "
            f"--active-traces {z.active_traces:,} (f), --rate {z.fresh_rate:,.0f} spans/s for "
            f"{z.fresh_seconds:.0f} s (d), --archive-spans {z.archive_spans:,} and --archive-move-spans "
            f"{z.archive_move_spans:,} (j)"
            + (" (--quick: figures too small to mean anything)" if self.args.quick else ""),
            f"c, g, h: one worker in the bench process (the real ingest.worker.Worker), batch_max "
            f"{self.base.batch_max}, grace {self.args.grace_ms} ms, tag redaction on, finalizing "
            + ("in the worker (--finalize-inline)" if self.args.finalize_inline else "in its finalizer process")
            + f"; d, f: `python -m ingest` processes; every topic has {self.base.partitions} partitions",
            "ratios: (b) and (c) to (a) of the same topic from this run; (g) and (h) ours to Zipkin's and "
            "Jaeger's, each draining the same spans",
        ]
        if "i" in self.args.parts:
            notes.append(
                "i: a store's bytes (after its checkpoint, VACUUM or flush and compaction) over the spans of the "
                "topic drained into it; the ratio column to the same spans as the zstd Parquet file; Jaeger's "
                "rows: ours (batched, this run) against Jaeger's figures, ours / Jaeger"
            )
        if self.args.quick and self.zipkin_server is not None:
            notes.append("quick run: Zipkin's JVM started at the beginning, alongside the other parts")
        return notes

    async def cleanup(self) -> None:
        self.processes.stop_all()
        try:
            await delete_topics(self.base, self.prefix)
        except Exception as exc:
            log(f"could not delete the topics {self.prefix}-*: {exc}")


async def main_async(args: argparse.Namespace) -> int:
    info = machine(args.bootstrap)
    log("; ".join(f"{name}: {value}" for name, value in info.items()))
    workdir = Path(tempfile.mkdtemp(prefix="tracing-bench-"))
    bench = Bench(args, workdir)
    started = time.monotonic()
    try:
        await bench.run()
    finally:
        await bench.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    info["total time"] = f"{time.monotonic() - started:.0f} s"
    report = render_report(info, sorted(bench.rows, key=lambda row: row.key), bench.footnotes())  # by row, stable
    print(report, end="", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    log(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 1 if bench.failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # aiokafka logs transient errors (e.g. no leader yet for a topic created a moment ago) that it retries.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # SIGTERM unwinds like Ctrl-C, so every finally block runs and no child process is left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
