"""Where one worker's time goes: py-spy samples a ``python -m ingest`` process while it drains a
pre-filled topic (the workload of row (c)) until every trace is finalized.

    python bench/profiling.py [--spans 200000] [--store sqlite|postgresql] [--wire native|native-span]
        [--rate 100] [--top 25] [--raw FILE] [--gil] [--native]
    python bench/profiling.py --summarize FILE      # summarize an existing `py-spy record -f raw` file

Prints the share of samples per thread (of the worker and of its finalizer process), the hottest lines
(self time) and the functions with the most inclusive time. Idle threads are not sampled (py-spy's
default), so the shares are of CPU-busy samples. ``--native`` adds the C frames (SQLite's, msgspec's, the
interpreter's own), but then a thread waiting inside C (a thread pool's queue, ``epoll_wait``) is not seen
as idle: read its per-thread shares with that in mind.
Needs py-spy (``pip install py-spy``) and permission to ptrace the worker, and a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from bench.common import ROOT, Child, Postgres, Processes, delete_topics, log, prefixed_settings, settings_env
from bench.workload import fill
from shared.settings import Settings
from shared.store import open_store

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_TRIM = (
    re.compile(r"^.*/site-packages/"),
    re.compile(r"^.*/lib/python3\.\d+/"),
    re.compile("^" + re.escape(str(ROOT)) + "/"),
)
PROJECT = ("shared/", "ingest/", "query_api/", "bench/")


def _short(path: str) -> str:
    """A file name without this machine's directories: ``shared/store/sqlite.py``, ``asyncio/events.py``."""
    if not path.startswith("/"):
        return path  # py-spy already shortened it
    for pattern in _TRIM:
        trimmed = pattern.sub("", path)
        if trimmed != path:
            return trimmed
    return path.rsplit("/", 1)[-1]


def summarize(lines: Iterable[str], top: int = 25) -> str:
    """A text summary of py-spy's raw (collapsed stack) output: ``frame;frame;... count`` per line."""
    threads: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        thread = "?"
        process = ""
        frames: list[tuple[str, str]] = []  # (function, file:line)
        for raw in stack.split(";"):
            if raw.startswith("process "):
                process = "finalizer process: " if "ingest.finalizer" in raw else ""
                continue
            if raw.startswith("thread "):
                name = raw.partition(": ")[2]
                thread = name or "(unnamed)"
                continue
            match = _FRAME.match(raw)
            if match is None:
                frames.append((raw, ""))
                continue
            where = _short(match["file"])
            frames.append((f"{match['func']} ({where})", f"{where}:{match['line'] or '?'}"))
        threads[process + re.sub(r"_\d+$", "", thread)] += count
        if frames:
            func, where = frames[-1]
            self_time[f"{where} {func.split(' (')[0]}"] += count
        for func in {f for f, _ in frames}:
            inclusive[func] += count
    if total == 0:
        return "no samples\n"

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    out = [f"{total} samples", "", "threads (share of busy samples):"]
    out += [f"  {pct(n)}  {name}" for name, n in threads.most_common()]
    out += ["", f"self time, top {top} lines:"]
    out += [f"  {pct(n)}  {name}" for name, n in self_time.most_common(top)]
    out += ["", f"inclusive time, top {top} functions of the project:"]
    project = [(f, n) for f, n in inclusive.most_common() if any(f"({p}" in f for p in PROJECT)]
    out += [f"  {pct(n)}  {name}" for name, n in project[:top]]
    return "\n".join(out) + "\n"


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.access(found, os.X_OK):
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


async def _until_finalized(settings: Settings, worker: Child, traces: int, timeout_s: float) -> float:
    """Seconds until the store counts ``traces`` finalized traces (the worker must stay up meanwhile)."""
    store = await open_store(settings)
    started = time.monotonic()
    try:
        while True:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited:\n{worker.tail()}")
            stats = await store.stats(slowest=1)
            if stats.completed_traces + stats.failed_traces >= traces:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"not drained within {timeout_s} s")
            await asyncio.sleep(0.5)
    finally:
        await store.close()


async def profile(args: argparse.Namespace) -> str:
    py_spy = _py_spy()
    workdir = Path(tempfile.mkdtemp(prefix="tracing-profile-"))
    processes = Processes(workdir)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings = prefixed_settings(
        prefix,
        args.bootstrap,
        store_url=f"sqlite:///{workdir / 'traces.db'}",
        grace_ms=args.grace_ms,
        heartbeat_s=0.5,
        log_level="WARNING",
    )
    out = Path(args.raw) if args.raw else workdir / "profile.txt"
    postgres = Postgres(workdir, processes)
    try:
        if args.store == "postgresql":
            settings = msgspec.structs.replace(settings, store_url=postgres.up())
        filled = await fill(settings, settings.topic, args.spans, args.wire)
        log(f"filled {settings.topic}: {filled.spans:,} spans in {filled.messages:,} messages")
        worker = processes.start("worker", [sys.executable, "-m", "ingest"], settings_env(settings))
        spy = processes.start(
            "py-spy",
            [
                py_spy,
                "record",
                "-f",
                "raw",
                "--threads",
                "--subprocesses",  # the worker's finalizer process
                "-r",
                str(args.rate),
                "-o",
                str(out),
                "--pid",
                str(worker.pid),
                *(["--gil"] if args.gil else []),
                *(["--native"] if args.native else []),
            ],
        )
        elapsed = await _until_finalized(settings, worker, filled.traces, args.timeout)
        log(f"drained and finalized in {elapsed:.1f} s (including the worker's start-up)")
        spy.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        processes.stop(spy)
        processes.stop(worker)
        return summarize(out.read_text().splitlines(), args.top)
    finally:
        processes.stop_all()
        await delete_topics(settings, prefix)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--wire",
        choices=["native", "native-span"],
        default="native",
        help="the workload of (c): one message per trace (native) or one span per message (native-span)",
    )
    parser.add_argument("--grace-ms", type=int, default=100)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the interpreter lock (py-spy --gil), not C code running without it",
    )
    parser.add_argument(
        "--native", action="store_true", help="sample C frames too (py-spy --native): SQLite's and msgspec's time"
    )
    parser.add_argument("--raw", help="keep py-spy's raw output in this file")
    parser.add_argument("--summarize", metavar="FILE", help="only summarize an existing raw file")
    parser.add_argument("--bootstrap", default=os.environ.get("TRACING_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    args = parser.parse_args()
    if args.summarize:
        print(summarize(Path(args.summarize).read_text().splitlines(), args.top), end="")
        return
    print(asyncio.run(profile(args)), end="")


if __name__ == "__main__":
    main()
