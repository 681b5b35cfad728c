"""``tracing``: the one console script, and the only module that sees both ``ingest`` and ``query_api``.

Subcommands: ``dev`` (broker + worker + API + demo traffic, Ctrl-C stops all), ``ingest``, ``api``,
``kafka up|down|status|fetch``, ``loadgen``, ``bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.settings import Settings

ROOT = Path(__file__).resolve().parent
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"


def _kafka(action: str) -> int:
    return subprocess.call(["bash", str(KAFKA_SH), action])


def _wait_http(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  # a local URL we built
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def dev_archive_url(store_url: str) -> str | None:
    """The archive ``tracing dev`` uses: the folder ``archive`` beside its SQLite file (``None`` for another
    store, or an in-memory one)."""
    from shared.store.sqlite import sqlite_path

    if not store_url.startswith("sqlite:"):
        return None
    path = sqlite_path(store_url)
    if path == ":memory:":
        return None
    return (Path(path).resolve().parent / "archive").as_uri()


def dev(args: argparse.Namespace) -> int:
    """The whole pipeline on this machine: local broker, one worker, the API on SQLite, demo traffic; traces
    older than ``TRACING_ARCHIVE_AFTER_H`` move to an archive folder beside the SQLite file, unless
    ``TRACING_ARCHIVE_URL`` says otherwise."""
    from shared.settings import Settings

    archive = dev_archive_url(Settings.from_env().store_url)
    if "TRACING_ARCHIVE_URL" not in os.environ and archive is not None:
        os.environ["TRACING_ARCHIVE_URL"] = archive
    settings = Settings.from_env()
    ours = subprocess.call(["bash", str(KAFKA_SH), "status"], stdout=subprocess.DEVNULL) != 0
    if _kafka("up") != 0:
        return 1
    children: list[subprocess.Popen[bytes]] = []

    def stop_all(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if ours and not args.keep_kafka:  # a broker that was already running is left running
            _kafka("down")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        env = dict(os.environ)
        for module in ("ingest", "query_api"):
            # Own session: a terminal's Ctrl-C reaches only this process, which stops the children in order.
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", module], env=env, stdin=subprocess.DEVNULL, start_new_session=True
                )
            )
        host, port = settings.api_host_port
        base = f"http://{host}:{port}"
        if not _wait_http(f"{base}/healthz", 60):
            print("tracing dev: the API did not come up", file=sys.stderr)
            return 1
        from shared.loadgen import generate

        report = asyncio.run(generate(settings, traces=args.traces, rate=args.rate))
        print(f"sent {report.traces} demo traces ({report.spans} spans)")
        print(
            f"\nThe pipeline is running.\n"
            f"  web UI:      {base}/ui/\n"
            f"  stats:       curl {base}/stats\n"
            f"  search:      curl '{base}/traces/query?serviceName=user-service&limit=5'\n"
            f"  slow traces: curl '{base}/traces/query?minDuration=100'\n"
            f"  API docs:    {base}/openapi.json\n"
            f"Demo traffic goes on at {args.follow_rate:g} traces/s. Ctrl-C stops the worker, the API and the broker."
        )
        asyncio.run(_trickle(settings, children, args.follow_rate))
        print("tracing dev: a process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all()


async def _trickle(settings: Settings, children: list[subprocess.Popen[bytes]], rate: float) -> None:
    """Keep a little live traffic flowing while every child runs (returns when one exits)."""
    import random

    from shared.demo import make_trace
    from shared.kafka import SpanProducer

    rng = random.Random()
    async with SpanProducer(settings) as producer:
        while all(child.poll() is None for child in children):
            if rate > 0:
                await producer.publish(make_trace(rng, time.time_ns() // 1000, error_rate=0.01))
            await asyncio.sleep(1 / rate if rate > 0 else 0.5)


def loadgen(args: argparse.Namespace) -> int:
    from shared.loadgen import generate
    from shared.settings import Settings

    report = asyncio.run(generate(Settings.from_env(), traces=args.traces, rate=args.rate, seed=args.seed))
    print(
        f"{report.traces} traces, {report.spans} spans in {report.seconds:.2f}s "
        f"({report.spans_per_second:,.0f} spans/s)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dev", help="broker + worker + API + demo traffic")
    p.add_argument("--traces", type=int, default=200)
    p.add_argument("--rate", type=float, default=100.0, help="demo traces per second")
    p.add_argument("--follow-rate", type=float, default=2.0, help="live traces per second after the burst")
    p.add_argument("--keep-kafka", action="store_true", help="leave the broker running on exit")
    sub.add_parser("ingest", help="run one ingest worker (python -m ingest)")
    sub.add_parser("api", help="run the query API (python -m query_api)")
    p = sub.add_parser("kafka", help="the local broker")
    p.add_argument("action", choices=["up", "down", "status", "fetch"])
    p = sub.add_parser("loadgen", help="publish realistic traces")
    p.add_argument("--traces", type=int, default=1000)
    p.add_argument("--rate", type=float, default=None, help="traces per second (default: unthrottled)")
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("bench", help="run the benchmarks (bench/run.py)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.command == "dev":
        return dev(args)
    if args.command == "ingest":
        from ingest.__main__ import main as ingest_main

        return ingest_main()
    if args.command == "api":
        from query_api.__main__ import main as api_main

        api_main()
        return 0
    if args.command == "kafka":
        return _kafka(args.action)
    if args.command == "loadgen":
        return loadgen(args)
    if args.command == "bench":
        return subprocess.call([sys.executable, str(ROOT / "bench" / "run.py"), *args.rest])
    return 2


if __name__ == "__main__":
    sys.exit(main())
