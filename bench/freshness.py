"""(d) Freshness: how long after a trace is produced it is queryable through the HTTP API as finalized.

One worker (``python -m ingest``) and the API (``python -m query_api``) run as their own processes on one
SQLite store. Demo traces (one message per trace) come from a producer process of its own
(``python -m bench.freshness produce``), which encodes them all first and then sends each at its start
time, noting the moment just before it handed the trace to its Kafka client. The bench polls
``GET /traces/query?start=<the oldest trace not seen yet>`` (finalized traces only, newest first, paged)
every ``poll_s`` (less often when polls list many traces: :data:`LISTED_PER_S`) and notes for each trace the
arrival of the first response listing it. Latency = that arrival minus the producer's moment: both read
``CLOCK_MONOTONIC`` (``time.monotonic``), one clock for every process on the machine. It includes the
configured grace window (finalization waits that long after the root span arrives), the finalizer's tick
and, as a measuring error of up to one interval, the poll interval.

Polling stays cheap at any rate: traces finalize roughly in the order they were produced, so a query from
the oldest trace not seen yet returns little more than the traces finalized since the previous poll. A
trace still unseen when traces sent :data:`STRAGGLER_AFTER_S` after it have been seen (so never while the
worker is merely behind) stops holding that window back: from then on it is looked up by id
(``GET /traces/{id}``, finalized once its status is no longer ``active``), each straggler about once a
second, a few per poll.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import random
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Child, Processes, free_port, get_json, settings_env, wait_http
from shared.codecs.native import encode_native
from shared.demo import make_trace
from shared.gc_tuning import tuned_gc
from shared.kafka import SpanProducer, ensure_topics
from shared.models import Span
from shared.settings import Settings

PAGE = 1000
SAMPLE = 200
STRAGGLER_AFTER_S = 10.0
"""A trace still unseen when one sent this much later was seen no longer holds the poll window back: a
safety net for a trace that never finalizes, which would make every poll list all the traces after it.
Measured from what the polls saw, not from the clock, so a worker that is merely behind makes none."""
LISTED_PER_S = 2_000
"""Polls start every ``poll_s``, but no more often than lets them list this many trace summaries (or look
up this many stragglers) per second: a lagging worker finalizes out of order, and then each poll re-lists
traces seen before; this keeps the API's (and the bench's) work bounded however far the worker falls
behind (at 10k spans/s a worker that keeps up costs about 800 summaries/s)."""
STRAGGLER_EVERY_S = 1.0
STRAGGLERS_PER_POLL = 10
SEED = 11
DONE = "#done"


@dataclass
class FreshnessResult:
    traces: int
    spans: int
    offered_spans_per_s: float
    achieved_spans_per_s: float
    behind_ms: float  # how far the producer fell behind its schedule at worst
    grace_ms: int
    poll_ms: float
    polls: int  # search requests
    listed: int  # trace summaries the polls received, seen before or not
    lookups: int = 0  # stragglers looked up by id
    max_interval_ms: float = 0.0  # the longest interval the polls were given (see LISTED_PER_S)
    drain_timeout_s: float = 0.0  # how long the polls went on after the last send, at most
    latencies_ms: list[float] = field(default_factory=list)  # in the order the traces were produced
    finalized_ms: list[float] = field(default_factory=list)  # produce → finalizedAt, a sample (ms resolution)
    missing: int = 0


# -- the producer process ---------------------------------------------------------------------------------


def schedule(spans_per_s: float, seconds: float, start_us: int, *, seed: int = SEED) -> Iterator[list[Span]]:
    """Demo traces for a run: trace ``n`` starts at ``start_us`` plus the time its predecessors' spans take
    at ``spans_per_s``, until ``seconds`` are filled. The same traces (ids, shapes) for a seed."""
    rng = random.Random(seed)
    spans = 0
    while (offset_s := spans / spans_per_s) < seconds:
        trace = make_trace(rng, start_us + int(offset_s * 1_000_000))
        spans += len(trace)
        yield trace


async def produce(settings: Settings, *, spans_per_s: float, seconds: float, out: IO[str], seed: int = SEED) -> None:
    """Publish demo traces (one message per trace, keyed by trace id) to ``settings.topic`` at
    ``spans_per_s`` for ``seconds``, each when its start time (:func:`schedule`) comes, and write one line
    per trace to ``out``: ``<trace id> <start µs> <monotonic s> <spans> <wall-clock µs>`` (both clocks read
    just before the send); then, once every message is acknowledged, ``#done <spans> <traces> <seconds>
    <worst lag behind the schedule, s>``.

    Every message is generated and encoded before the first is sent (about 0.3 KiB of memory per span),
    so that the producer spends the run sending, not generating: its start time is set that far ahead."""
    probe = random.Random(seed + 1)
    started = time.perf_counter()
    probe_spans = sum(len(make_trace(probe, 0)) for _ in range(50))
    per_span_s = (time.perf_counter() - started) / probe_spans
    lead_s = 0.5 + 2 * per_span_s * spans_per_s * seconds  # generous: a late start only shows as lag
    start_wall_us = time.time_ns() // 1000 + int(lead_s * 1_000_000)
    planned = [
        (trace[0].trace_id, trace[0].start_time_us, len(trace), encode_native(trace))
        for trace in schedule(spans_per_s, seconds, start_wall_us, seed=seed)
    ]
    start_mono = time.monotonic() + (start_wall_us - time.time_ns() // 1000) / 1_000_000
    spans = 0
    behind = 0.0
    async with SpanProducer(settings) as producer:
        for trace_id, start_us, n_spans, value in planned:
            due = start_mono + (start_us - start_wall_us) / 1_000_000
            ahead = due - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            else:
                behind = max(behind, -ahead)
            sent, sent_wall_us = time.monotonic(), time.time_ns() // 1000
            await producer.send_raw(value, key=trace_id.encode())
            out.write(f"{trace_id} {start_us} {sent:.6f} {n_spans} {sent_wall_us}\n")
            spans += n_spans
        await producer.flush()
        elapsed = time.monotonic() - start_mono
    out.write(f"{DONE} {spans} {len(planned)} {elapsed:.6f} {behind:.6f}\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the producer process of (d); settings from TRACING_*")
    parser.add_argument("command", choices=["produce"])
    parser.add_argument("--rate", type=float, required=True, help="offered spans/s")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the file of sent traces (appended, line-buffered)")
    args = parser.parse_args(argv)
    with args.out.open("a", buffering=1) as out:
        asyncio.run(produce(Settings.from_env(), spans_per_s=args.rate, seconds=args.seconds, out=out))
    return 0


# -- the measurement --------------------------------------------------------------------------------------


class SentLog:
    """Follows the producer's file of sent traces as it grows (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._rest = b""
        self.sent: dict[str, tuple[float, int, int]] = {}  # trace id -> (monotonic s, spans, wall µs) at the send
        self.order: list[str] = []  # trace ids in the order they were produced
        self.unseen: list[tuple[int, str]] = []  # heap of (start µs, trace id), seen ones removed lazily
        self.stragglers: deque[tuple[float, str]] = deque()  # (monotonic s of the next look-up, trace id)
        self.latest_start_us: int | None = None
        self.newest_seen_s = -math.inf  # the latest send (monotonic s) of a trace seen so far
        self.done: tuple[int, int, float, float] | None = None  # spans, traces, seconds, worst lag (s)

    def read(self) -> None:
        try:
            with self._path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        for line in lines:
            fields = line.decode().split()
            if fields[0] == DONE:
                self.done = (int(fields[1]), int(fields[2]), float(fields[3]), float(fields[4]))
                continue
            trace_id, start_us = fields[0], int(fields[1])
            self.sent[trace_id] = (float(fields[2]), int(fields[3]), int(fields[4]))
            self.order.append(trace_id)
            heapq.heappush(self.unseen, (start_us, trace_id))
            self.latest_start_us = start_us

    def mark_seen(self, trace_ids: Iterable[str]) -> None:
        """Note traces seen for the first time (for :meth:`window_start_ms`'s straggler rule)."""
        for trace_id in trace_ids:
            sent = self.sent.get(trace_id)
            if sent is not None:
                self.newest_seen_s = max(self.newest_seen_s, sent[0])

    def window_start_ms(self, seen: dict[str, float], now: float) -> int | None:
        """Where the next poll starts: the oldest trace neither seen nor a straggler (which it becomes
        here, due for a look-up at ``now``), else the newest known trace (those produced after it started
        later); ``None`` before the first trace."""
        while self.unseen:
            trace_id = self.unseen[0][1]
            if trace_id in seen:
                heapq.heappop(self.unseen)
            elif self.newest_seen_s - self.sent[trace_id][0] > STRAGGLER_AFTER_S:
                heapq.heappop(self.unseen)
                self.stragglers.append((now, trace_id))
            else:
                return self.unseen[0][0] // 1000
        return None if self.latest_start_us is None else self.latest_start_us // 1000


async def freshness(
    settings: Settings,
    processes: Processes,
    workdir: Path,
    *,
    spans_per_s: float,
    seconds: float,
    poll_s: float = 0.02,
    drain_timeout_s: float = 60.0,
) -> FreshnessResult:
    port = free_port()
    s = msgspec.structs.replace(
        settings, store_url=f"sqlite:///{workdir / 'freshness.db'}", api_bind=f"127.0.0.1:{port}", heartbeat_s=0.5
    )
    s = msgspec.structs.replace(s, log_level="WARNING")
    await ensure_topics(s, [s.topic])
    env = settings_env(s)
    sent_path = workdir / "freshness-sent.txt"
    worker = processes.start("worker-freshness", [sys.executable, "-m", "ingest"], env)
    api = processes.start("api-freshness", [sys.executable, "-m", "query_api"], env)
    producer: Child | None = None
    base = f"http://127.0.0.1:{port}"
    result = FreshnessResult(0, 0, spans_per_s, 0.0, 0.0, s.grace_ms, poll_s * 1000, 0, 0)
    result.drain_timeout_s = drain_timeout_s + s.grace_ms / 1000
    sent = SentLog(sent_path)
    seen: dict[str, float] = {}  # trace id -> arrival of the first response listing it
    try:
        await wait_http(f"{base}/healthz", 60, api)
        await wait_worker_assigned(base, worker)
        producer = processes.start(
            "producer-freshness",
            [
                *(sys.executable, "-m", "bench.freshness", "produce"),
                *("--rate", str(spans_per_s), "--seconds", str(seconds), "--out", str(sent_path)),
            ],
            env,
        )
        # The polls run with the collector tuned as the worker's: after other parts of `make bench`, one
        # full collection of what they left in this process paused them for 578 ms, which showed as a p99
        # of 458-705 ms beyond the grace while the worker's own clock said 91 ms.
        with tuned_gc():
            async with aiohttp.ClientSession() as session:
                await _poll_until_seen(session, base, producer, sent, seen, result, poll_s=poll_s)
                result.finalized_ms = await finalized_latencies(session, base, sent, seen)
        for child in (worker, api):
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited ({child.process.returncode}):\n{child.tail()}")
    finally:
        for started in (producer, api, worker):
            if started is not None:
                processes.stop(started)
    assert sent.done is not None
    result.spans, result.traces, elapsed, behind = sent.done
    result.achieved_spans_per_s = result.spans / elapsed
    result.behind_ms = behind * 1000
    result.latencies_ms = [(seen[t] - sent.sent[t][0]) * 1000 for t in sent.order if t in seen]
    result.missing = len(sent.sent) - len(result.latencies_ms)
    return result


async def _poll_until_seen(
    session: aiohttp.ClientSession,
    base: str,
    producer: Child,
    sent: SentLog,
    seen: dict[str, float],
    result: FreshnessResult,
    *,
    poll_s: float,
) -> None:
    """Poll the API for the traces the producer logs until every one was seen, or the drain deadline
    (``result.drain_timeout_s`` after the producer is done) passed."""
    deadline: float | None = None
    while True:
        exited = producer.process.poll()
        sent.read()
        now = time.monotonic()
        if sent.done is not None:
            deadline = deadline or now + result.drain_timeout_s
            if len(seen) >= len(sent.sent) or now > deadline:  # seen holds only traces of this run
                break
        elif exited is not None:
            raise RuntimeError(f"the producer exited ({exited}) before it was done:\n{producer.tail()}")
        since_ms = sent.window_start_ms(seen, now)
        work = result.listed + result.lookups
        if since_ms is not None:
            url = f"{base}/traces/query?start={since_ms}&limit={PAGE}"
            sent.mark_seen(await poll_once(session, url, seen, result))
        sent.mark_seen(await look_up_stragglers(session, base, sent.stragglers, seen, result))
        interval = max(poll_s, (result.listed + result.lookups - work) / LISTED_PER_S)
        result.max_interval_ms = max(result.max_interval_ms, interval * 1000)
        await asyncio.sleep(max(0.0, now + interval - time.monotonic()))


async def finalized_latencies(
    session: aiohttp.ClientSession, base: str, sent: SentLog, seen: dict[str, float]
) -> list[float]:
    """For up to :data:`SAMPLE` seen traces, spread over the run: their ``finalizedAt`` (the worker's
    wall clock, ms) minus the producer's wall clock before the send: the worker's share of the latency,
    without the polling. Asked after the measurement, so it costs the measurement nothing."""
    seen_ids = [t for t in sent.order if t in seen]
    step = max(1, len(seen_ids) // SAMPLE)
    out = []
    for trace_id in seen_ids[::step][:SAMPLE]:
        trace = await get_json(session, f"{base}/traces/{trace_id}")
        if trace.get("finalizedAt") is not None:
            out.append(trace["finalizedAt"] - sent.sent[trace_id][2] / 1000)
    return out


async def poll_once(
    session: aiohttp.ClientSession, url: str, seen: dict[str, float], result: FreshnessResult
) -> list[str]:
    """One poll, paged: notes the arrival of each response for the traces it lists first; returns those."""
    offset = 0
    new: list[str] = []
    while True:
        async with session.get(f"{url}&offset={offset}") as response:
            body = await response.read()
            arrived = time.monotonic()
            if response.status != 200:
                raise RuntimeError(f"GET {url}: HTTP {response.status}: {body[:200]!r}")
        page = msgspec.json.decode(body)
        result.polls += 1
        result.listed += len(page)
        for item in page:
            if item["traceId"] not in seen:
                seen[item["traceId"]] = arrived
                new.append(item["traceId"])
        if len(page) < PAGE:
            return new
        offset += PAGE


async def look_up_stragglers(
    session: aiohttp.ClientSession,
    base: str,
    stragglers: deque[tuple[float, str]],
    seen: dict[str, float],
    result: FreshnessResult,
) -> list[str]:
    """Look up to :data:`STRAGGLERS_PER_POLL` due stragglers by id; one found finalized is seen at that
    response's arrival (returned), the others are due again :data:`STRAGGLER_EVERY_S` later."""
    new: list[str] = []
    for _ in range(min(STRAGGLERS_PER_POLL, len(stragglers))):
        due, trace_id = stragglers[0]
        if due > time.monotonic():
            break
        stragglers.popleft()
        if trace_id in seen:
            continue
        async with session.get(f"{base}/traces/{trace_id}") as response:
            body = await response.read()
            arrived = time.monotonic()
        result.lookups += 1
        if response.status == 200 and msgspec.json.decode(body).get("status") != "active":
            seen[trace_id] = arrived
            new.append(trace_id)
        elif response.status in (200, 404):
            stragglers.append((arrived + STRAGGLER_EVERY_S, trace_id))
        else:
            raise RuntimeError(f"GET /traces/{trace_id}: HTTP {response.status}: {body[:200]!r}")
    return new


async def wait_worker_assigned(base: str, worker: Child, timeout_s: float = 90.0) -> None:
    """Until ``/stats`` shows a worker heartbeat with partitions assigned."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited ({worker.process.returncode}):\n{worker.tail()}")
            stats = await get_json(session, f"{base}/stats")
            if any(w.get("partitions") for w in stats.get("pipeline", {}).get("workers", [])):
                return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"no worker got partitions within {timeout_s:.0f} s:\n{worker.tail()}")


if __name__ == "__main__":
    sys.exit(main())
