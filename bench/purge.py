"""Retention's purge on SQLite, A/B: this checkout against another revision (``main`` by default), in one
run on the same machine and data.

Each side runs in a process of its own, importing the store from its own checkout (the other revision is
checked out in a temporary ``git worktree``, removed afterwards): it fills a fresh SQLite store with
``--traces`` realistic traces (:func:`bench.workload.realistic_traces`) started an hour ago, finalizes them
(kept: their shares derived back from their chunks at purge, as a worker's are) and purges all of them,
alone; then again on a second store filled alike, while two writers go on committing one new trace per
batch, back to back: one on the purging store (the
worker's own write batches) and one on a second connection to the file (the finalizer process's commits;
a thread here). Prints traces purged per second and the writers' commit waits during the purge (p50, p99,
max), with the ratio of the two sides; each side runs ``--repeat`` times, alternated, pooled (the purge's
process CPU time beside its wall time: the machine's load comes and goes).

    python bench/purge.py                       # 5,000 traces, against main
    python bench/purge.py --traces 5000 --base HEAD~3
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOUR_US = 3_600_000_000
SPANS_PER_TRACE_MAX = 100
"""More than a realistic trace has (``spans_wanted`` for enough traces)."""


# -- one side (a child process, the store imported from ``--side``) --------------------------------------


async def _writer(store: Any, stop: asyncio.Event, waits: list[float], name: str, start_us: int) -> None:
    """Write one new trace per batch, back to back, until ``stop``; each batch's wait in ``waits``."""
    from bench.workload import realistic_traces

    n = 0
    while not stop.is_set():
        for spans in realistic_traces(1, seed=n, start_us=start_us):
            for s in spans:
                s.trace_id = f"{name}{n:011x}{s.trace_id[12:]}"
            began = time.perf_counter()
            await store.write_batch(
                spans, [], shards={spans[0].trace_id: "0"}, now_us=start_us, grace_us=HOUR_US, idle_us=HOUR_US
            )
            waits.append(time.perf_counter() - began)
        n += 1


async def _fill(store: Any, traces: int, start_us: int, now_us: int) -> None:
    """Write ``traces`` realistic traces, 200 a batch, and finalize them, 500 a round."""
    from bench.workload import realistic_traces

    made = list(itertools.islice(realistic_traces(traces * SPANS_PER_TRACE_MAX, start_us=start_us), traces))
    for at in range(0, len(made), 200):
        batch = [s for spans in made[at : at + 200] for s in spans]
        shards = {s.trace_id: "0" for s in batch}
        await store.write_batch(batch, [], shards=shards, now_us=now_us, grace_us=HOUR_US, idle_us=HOUR_US)
    ids = [spans[0].trace_id for spans in made]
    for at in range(0, len(ids), 500):
        await store.finalize(ids[at : at + 500], now_us=now_us)


async def _purge(traces: int, *, writers: bool) -> dict[str, Any]:
    """Fill a fresh store and purge it all, with the two writers going on or alone."""
    from shared.settings import Settings
    from shared.store import open_store

    now_us = time.time_ns() // 1000
    own: list[float] = []
    second: list[float] = []
    with tempfile.TemporaryDirectory(prefix="purge-bench-") as tmp:
        settings = Settings.from_env({}, store_url=f"sqlite:///{Path(tmp) / 'store.db'}")
        store = await open_store(settings, writer=True)
        other = await open_store(settings)
        try:
            await _fill(store, traces, now_us - HOUR_US, now_us)
            stop = asyncio.Event()
            pairs = ((store, own, "a"), (other, second, "b")) if writers else ()
            tasks = [asyncio.create_task(_writer(s, stop, waits, name, now_us)) for s, waits, name in pairs]
            await asyncio.sleep(0.5)
            own.clear()
            second.clear()
            began, cpu = time.perf_counter(), time.process_time()
            purged = await store.purge(now_us - HOUR_US // 2)
            took, cpu = time.perf_counter() - began, time.process_time() - cpu
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            await other.close()
            await store.close()
    return {"purged": purged, "seconds": took, "cpu": cpu, "own": own, "second": second}


async def _side(traces: int) -> dict[str, Any]:
    from shared.analysis import core

    compiled = not str(core.__file__).endswith(".py")
    alone, busy = await _purge(traces, writers=False), await _purge(traces, writers=True)
    return {"alone": alone, "busy": busy, "compiled": compiled}


# -- the run --------------------------------------------------------------------------------------------


def _run_side(code: Path, traces: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, str(Path(__file__).resolve()), "--side", str(code), "--traces", str(traces)]
    out = subprocess.run(command, cwd=code, env=env, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one side as one: purged, seconds and CPU summed, waits pooled."""
    return {
        phase: {
            "purged": sum(r[phase]["purged"] for r in runs),
            "seconds": sum(r[phase]["seconds"] for r in runs),
            "cpu": sum(r[phase]["cpu"] for r in runs),
            "own": [w for r in runs for w in r[phase]["own"]],
            "second": [w for r in runs for w in r[phase]["second"]],
        }
        for phase in ("alone", "busy")
    } | {"compiled": all(r["compiled"] for r in runs)}


def _waits(samples: list[float]) -> str:
    from bench.common import percentile

    if not samples:
        return "none committed"
    return " / ".join(f"{percentile(samples, q) * 1000:,.0f}" for q in (0.5, 0.99, 1.0)) + f" ms ({len(samples)})"


def _table(base: str, results: dict[str, dict[str, Any]], repeat: int) -> str:
    from bench.common import Row, percentile, render_table

    rows = []
    for key, name in (("alone", "alone"), ("busy", "with the writers")):
        a, b = results[base][key], results["this"][key]
        rate_a, rate_b = a["purged"] / a["seconds"], b["purged"] / b["seconds"]
        notes = f"{b['purged']:,} traces in {a['seconds']:.2f} s -> {b['seconds']:.2f} s"
        if key == "alone":  # with the writers, the process's CPU is theirs too
            notes += f", CPU {a['cpu']:.2f} s -> {b['cpu']:.2f} s ({a['cpu'] / b['cpu']:.2f}x less)"
        rows.append(
            Row("p", f"purge {name}: traces/s", f"{rate_a:,.0f} -> {rate_b:,.0f}", f"{rate_b / rate_a:.2f}x", notes)
        )
    a, b = results[base]["busy"], results["this"]["busy"]
    for key, name in (("own", "the purging store's writes"), ("second", "a second connection's writes")):
        p99_a, p99_b = percentile(a[key], 0.99), percentile(b[key], 0.99)
        max_a, max_b = max(a[key], default=0.0), max(b[key], default=0.0)
        rows.append(
            Row(
                "w" if key == "own" else "f",
                f"{name} meanwhile: p50 / p99 / max (batches)",
                f"{_waits(a[key])} -> {_waits(b[key])}",
                f"p99 {p99_a / p99_b:.1f}x, max {max_a / max_b:.1f}x lower" if p99_b and max_b else "",
            )
        )
    core = {side: "compiled" if r["compiled"] else "pure Python" for side, r in results.items()}
    title = f"{base} -> this checkout ({repeat} runs of each, pooled; analysis core: {core[base]} -> {core['this']})"
    return title + "\n\n" + render_table(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=5_000)
    parser.add_argument("--base", default="main", help="the revision to compare with (a git ref)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side, alternated (pooled)")
    parser.add_argument("--side", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side is not None:  # a child: the store of that checkout
        sys.path.insert(0, str(args.side))
        print(json.dumps(asyncio.run(_side(args.traces))))
        return 0
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="purge-base-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), args.base], check=True)
        try:
            runs: dict[str, list[dict[str, Any]]] = {args.base: [], "this": []}
            for _ in range(args.repeat):  # alternated: a load that comes and goes hits both sides alike
                runs[args.base].append(_run_side(base, args.traces))
                runs["this"].append(_run_side(ROOT, args.traces))
            results = {side: _pooled(found) for side, found in runs.items()}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=True)
    print(_table(args.base, results, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
