"""The CPU of the finalizer's rollup writes: drain-shaped traces (one millisecond apart, as row (c)'s topic
holds them) written and finalized on SQLite through the store API, 500 a round (the finalize batch), and
the thread CPU seconds of every round's ``apply_rollups`` (building the upsert rows of every grain and
running them, SQLite calling ``sketch_add`` on each row that exists) beside the CPU of the finalize calls.

    python bench/rollup_writes.py [--spans 100000] [--workload demo|realistic|both] [--root DIR ...]
        [--profile]

``--root``: the project checkouts to measure (default this one), each run in a process of its own with
that checkout first on the path, in turn, so one table compares revisions (a ``git worktree`` of each;
its compiled modules built or copied, else the analysis runs as Python, which the finalize column shows
but ``apply_rollups`` does not use). ``--profile``: cProfile of ``apply_rollups`` (its thread), the 20
costliest functions by own time, printed after each run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
ROUND_TRACES = 500


async def _measure(workload: str, spans_wanted: int, profile: bool) -> dict[str, Any]:
    """One run in this process: the spans written, the CPU seconds of the finalize calls (the process's) and
    of ``apply_rollups`` (its thread's), and the profile's text."""
    from bench.workload import realistic_trace
    from shared.demo import make_trace
    from shared.settings import Settings
    from shared.store import open_store
    from shared.store.sqlite.driver import SqliteDriver

    profiler = cProfile.Profile()
    applied = [0.0]
    original = SqliteDriver.apply_rollups

    async def timed(self: SqliteDriver, delta: Any) -> None:
        started = time.thread_time()
        if profile:
            profiler.enable()
        try:
            await original(self, delta)
        finally:
            if profile:
                profiler.disable()
            applied[0] += time.thread_time() - started

    SqliteDriver.apply_rollups = timed  # type: ignore[method-assign]
    make = {"demo": make_trace, "realistic": realistic_trace}[workload]
    with tempfile.TemporaryDirectory(prefix="rollup-writes-") as workdir:
        store = await open_store(Settings(store_url=f"sqlite:///{workdir}/store.db"))
        rng = random.Random(3)
        start = time.time_ns() // 1000
        written = traces = 0
        finalize_s = 0.0
        while written < spans_wanted:
            batch = [make(rng, start + (traces + i) * 1000) for i in range(ROUND_TRACES)]
            traces += len(batch)
            spans = [s for t in batch for s in t]
            written += len(spans)
            ids = [t[0].trace_id for t in batch]
            shards = dict.fromkeys(ids, "bench/0")
            await store.write_batch(spans, [], shards=shards, now_us=0, grace_us=0, idle_us=0)
            started = time.process_time()
            await store.finalize(ids, now_us=1)
            finalize_s += time.process_time() - started
        await store.close()
    text = ""
    if profile:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
        text = out.getvalue()
    return {"spans": written, "finalize_s": finalize_s, "apply_s": applied[0], "profile": text}


def _run(root: Path, workload: str, spans: int, profile: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    args = [sys.executable, str(Path(__file__).resolve()), "--child", str(root), workload, str(spans)]
    done = subprocess.run(
        [*args, *(["--profile"] if profile else [])], env=env, cwd=root, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"a run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--child":
        sys.path.insert(0, argv[1])
        print(json.dumps(asyncio.run(_measure(argv[2], int(argv[3]), "--profile" in argv))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--workload", choices=["demo", "realistic", "both"], default="both")
    parser.add_argument("--root", type=Path, nargs="*", default=[HERE])
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    workloads = ["demo", "realistic"] if args.workload == "both" else [args.workload]
    print("| workload | checkout | spans | finalize CPU s | apply_rollups CPU s | load |")
    print("|---|---|---|---|---|---|")
    for workload in workloads:
        for root in args.root:
            got = _run(root.resolve(), workload, args.spans, args.profile)
            load = os.getloadavg()[0]
            name = root.resolve().name
            print(
                f"| {workload} | {name} | {got['spans']:,} | {got['finalize_s']:.2f} | {got['apply_s']:.2f}"
                f" | {load:.1f} |",
                flush=True,
            )
            if got["profile"]:
                print(got["profile"], flush=True)


if __name__ == "__main__":
    main()
