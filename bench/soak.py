"""Soak: one worker process (``python -m ingest``) and the API under a steady offered load for a fixed
time, sampling the worker's and the API's resident memory and the SQLite files (the database, its
write-ahead log); prints a table and whether memory stayed flat.

    python bench/soak.py --minutes 10 --rate 1000        # spans/s offered (realistic traces)

Needs a running broker (``make kafka-up``); uses a fresh SQLite store in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO

import aiohttp

from shared.demo import make_trace
from shared.kafka import SpanProducer, ensure_topics
from shared.settings import Settings
from shared.store.sqlite import file_size

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(module: str, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        cwd=ROOT,
    )  # fmt: skip


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered spans per second")
    parser.add_argument("--bootstrap", default=os.environ.get("TRACING_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--sample-s", type=float, default=30.0)
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="soak-")
    port = _free_port()
    settings = Settings.from_env(
        {}, kafka_bootstrap=args.bootstrap, topic=f"soak-{suffix}", group=f"soak-{suffix}",
        store_url=f"sqlite:///{tmp}/traces.db", api_bind=f"127.0.0.1:{port}",
    )  # fmt: skip
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACING_")}
    env.update(
        TRACING_KAFKA_BOOTSTRAP=args.bootstrap, TRACING_TOPIC=settings.topic, TRACING_GROUP=settings.group,
        TRACING_STORE_URL=settings.store_url, TRACING_API_BIND=settings.api_bind, PYTHONPATH=str(ROOT),
        TRACING_LOG_LEVEL="WARNING",
    )  # fmt: skip
    logs = open(Path(tmp) / "processes.log", "ab")  # noqa: SIM115, ASYNC230  # closed below
    procs = {name: _start(name, env, logs) for name in ("ingest", "query_api")}
    rng = random.Random(7)
    db = Path(tmp) / "traces.db"
    wal = Path(f"{db}-wal")
    samples: list[tuple[float, float, float, int, int, float, float]] = []
    sent_spans = 0
    started = time.monotonic()
    deadline = started + args.minutes * 60
    next_sample = started + 5.0
    try:
        async with SpanProducer(settings) as producer, aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                trace = make_trace(rng, time.time_ns() // 1000)
                await producer.send(trace)
                sent_spans += len(trace)
                ahead = started + sent_spans / args.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                if time.monotonic() >= next_sample:
                    next_sample += args.sample_s
                    for proc in procs.values():
                        if proc.poll() is not None:
                            raise RuntimeError(f"a process exited: see {tmp}/processes.log")
                    async with http.get(f"http://127.0.0.1:{port}/stats") as r:
                        stats = await r.json()
                    samples.append((
                        time.monotonic() - started, rss_mb(procs["ingest"].pid), rss_mb(procs["query_api"].pid),
                        sent_spans, stats["totalTraces"], file_size(db) / 2**20, file_size(wal) / 2**20,
                    ))  # fmt: skip
                    print(f"  {samples[-1][0]:6.0f}s worker {samples[-1][1]:6.1f} MB  api {samples[-1][2]:6.1f} MB"
                          f"  sent {sent_spans:>9,} spans  stored traces {stats['totalTraces']:>7,}"
                          f"  db {samples[-1][5]:,.0f} MB  log {samples[-1][6]:,.0f} MB",
                          file=sys.stderr, flush=True)  # fmt: skip
            await producer.flush()
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()
    if len(samples) < 3:
        print("too few samples for a verdict")
        return 1
    warm = samples[len(samples) // 3 :]  # after warm-up (SQLite cache, allocator arenas)
    worker_growth = warm[-1][1] - warm[0][1]
    api_growth = warm[-1][2] - warm[0][2]
    print(f"{'elapsed s':>10} {'worker RSS MB':>14} {'API RSS MB':>11} {'spans sent':>11} {'traces stored':>14}"
          f" {'db MB':>8} {'log MB':>7}")  # fmt: skip
    for t, w, a, n, traces, db_mb, wal_mb in samples:
        print(f"{t:>10.0f} {w:>14.1f} {a:>11.1f} {n:>11,} {traces:>14,} {db_mb:>8,.0f} {wal_mb:>7,.0f}")
    print(f"offered {args.rate:,.0f} spans/s for {args.minutes:g} min; after warm-up the worker's RSS moved "
          f"{worker_growth:+.1f} MB and the API's {api_growth:+.1f} MB; the write-ahead log peaked at "
          f"{max(sample[6] for sample in samples):,.0f} MB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
