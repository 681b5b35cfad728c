"""Two worker configurations (or two checkouts) drained side by side: interleaved pairs of row (c)'s drain.

    python bench/pairs.py [--pairs 6] [--spans 200000] [--wire native|native-span|zipkin|otlp|realistic]
        [--a KEY=VALUE ...] [--b KEY=VALUE ...] [--a-root DIR] [--b-root DIR]
        [--store sqlite|postgresql://...] [--grace-ms 500]

On this kind of machine two runs of the same drain minutes apart can differ by 1.5x, so a change is only
seen in pairs run back to back, the order flipped every pair (A B, B A, ...). The topic is filled once;
each drain is a process of its own (the real ``Worker`` and its finalizer process, ``bench.drain
.worker_drain``) into a fresh store. ``--a``/``--b``: settings of that side (``finalize_batch=2000`` or
``TRACING_FINALIZE_BATCH=2000``). ``--a-root``/``--b-root``: the project checkout that side runs (default
this one), e.g. a ``git worktree`` of another commit; build its compiled modules there first
(``python setup.py build_ext --inplace``), or that side runs them as Python (the table says which).
``--store postgresql://...``: each drain gets a database of its own on that server, dropped afterwards.

Prints per pair both sides' finalized and stored spans/s, B / A, and the CPU seconds of the worker
process and of its finalizer process(es); then the median of B / A. Needs a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


@dataclass
class Drained:
    finalized_per_s: float
    stored_per_s: float
    worker_cpu_s: float
    finalizer_cpu_s: float
    compiled: bool


def side_env(assignments: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` settings as ``TRACING_*`` variables (the prefix is optional, the key any case)."""
    env = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--a/--b take KEY=VALUE, not {item!r}")
        key = key.upper()
        env[key if key.startswith("TRACING_") else "TRACING_" + key] = value
    return env


def _drain_here(root: Path, spans: int, traces: int) -> None:
    """The child: one drain with the settings in the environment, the project imported from ``root``;
    prints a JSON line."""
    sys.path.insert(0, str(root))
    from bench.drain import worker_drain
    from shared import analysis
    from shared.compiled import is_compiled
    from shared.settings import Settings

    settings = Settings.from_env()
    started = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(worker_drain(settings, spans, traces))
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the finalizer processes, waited for at stop
    print(
        json.dumps(
            {
                "finalized_per_s": result.finalized_per_s,
                "stored_per_s": result.stored_per_s,
                "worker_cpu_s": own.ru_utime + own.ru_stime - started.ru_utime - started.ru_stime,
                "finalizer_cpu_s": children.ru_utime + children.ru_stime,
                "compiled": is_compiled(analysis.core),
            }
        )
    )


async def _fresh_database(server_url: str) -> tuple[str, str]:
    from bench.common import postgres_execute

    name = f"pairs_{uuid.uuid4().hex[:10]}"
    await postgres_execute(server_url, f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name, name


async def _drop_database(server_url: str, name: str) -> None:
    from bench.common import postgres_execute

    await postgres_execute(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def drain_once(root: Path, env: dict[str, str], spans: int, traces: int, store: str, workdir: Path) -> Drained:
    database: str | None = None
    if store.startswith("postgresql://"):
        url, database = asyncio.run(_fresh_database(store))
    else:
        url = f"sqlite:///{workdir / f'{uuid.uuid4().hex[:8]}.db'}"
    try:
        child_env = {**os.environ, **env, "TRACING_STORE_URL": url}
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--drain-child", str(root), str(spans), str(traces)],
            env=child_env,
            cwd=root,  # a module run with -m (the finalizer process) is found in the side's checkout first
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            raise SystemExit(f"a drain failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return Drained(**json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        if database is not None:
            asyncio.run(_drop_database(store, database))
        for f in workdir.glob("*.db*"):
            f.unlink()


def _cell(d: Drained) -> str:
    return f"{d.finalized_per_s:,.0f} ({d.stored_per_s:,.0f})"


def _cpu(d: Drained) -> str:
    return f"{d.worker_cpu_s:.1f} + {d.finalizer_cpu_s:.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 4 and argv[0] == "--drain-child":
        _drain_here(Path(argv[1]), int(argv[2]), int(argv[3]))
        return
    args = _parser().parse_args(argv)
    sys.path.insert(0, str(HERE))
    from bench.common import delete_topics, log, prefixed_settings
    from bench.workload import fill

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings = prefixed_settings(prefix, args.bootstrap)
    topic = {"zipkin": settings.zipkin_topic, "otlp": settings.otlp_topic}.get(args.wire, settings.topic)
    common = {
        "TRACING_KAFKA_BOOTSTRAP": args.bootstrap,
        "TRACING_TOPIC": settings.topic,
        "TRACING_OTLP_TOPIC": settings.otlp_topic,
        "TRACING_ZIPKIN_TOPIC": settings.zipkin_topic,
        "TRACING_JAEGER_TOPIC": settings.jaeger_topic,
        "TRACING_GRACE_MS": str(args.grace_ms),
    }
    sides = {
        "A": (args.a_root.resolve(), {**common, **side_env(args.a)}),
        "B": (args.b_root.resolve(), {**common, **side_env(args.b)}),
    }
    workdir = Path(tempfile.mkdtemp(prefix="tracing-pairs-"))
    rows: list[tuple[int, Drained, Drained]] = []
    try:
        filled = asyncio.run(fill(settings, topic, args.spans, args.wire))
        log(f"filled {topic}: {filled.spans:,} spans of {filled.traces:,} traces in {filled.messages:,} messages")
        for i in range(args.pairs):
            order = ("A", "B") if i % 2 == 0 else ("B", "A")
            got: dict[str, Drained] = {}
            for name in order:
                root, env = sides[name]
                env = {**env, "TRACING_GROUP": f"{prefix}-{i}-{name}"}
                started = time.monotonic()
                got[name] = drain_once(root, env, filled.spans, filled.traces, args.store, workdir)
                log(f"pair {i + 1} {name}: {_cell(got[name])} spans/s in {time.monotonic() - started:.1f} s")
            rows.append((i + 1, got["A"], got["B"]))
    finally:
        asyncio.run(delete_topics(settings, prefix))
        shutil.rmtree(workdir, ignore_errors=True)
    _print_table(args, sides, rows, filled.spans)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--spans", type=int, default=200_000)
    wires = ["native", "native-span", "zipkin", "otlp", "realistic"]
    parser.add_argument("--wire", choices=wires, default="native-span")
    parser.add_argument("--a", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--b", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--a-root", type=Path, default=HERE)
    parser.add_argument("--b-root", type=Path, default=HERE)
    parser.add_argument("--store", default="sqlite", help="sqlite (a fresh file per drain) or a PostgreSQL URL")
    parser.add_argument("--grace-ms", type=int, default=500)
    parser.add_argument("--bootstrap", default=os.environ.get("TRACING_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    return parser


def _print_table(
    args: argparse.Namespace,
    sides: dict[str, tuple[Path, dict[str, str]]],
    rows: list[tuple[int, Drained, Drained]],
    spans: int,
) -> None:
    describe = {name: " ".join(args.a if name == "A" else args.b) or "defaults" for name in sides}
    for name, (root, _) in sides.items():
        compiled = "compiled" if all((a if name == "A" else b).compiled for _, a, b in rows) else "NOT compiled"
        where = "this checkout" if root == HERE else root.name
        print(f"{name}: {describe[name]}; {where}; analysis core {compiled}")
    store = (
        "PostgreSQL (a database per drain)" if args.store.startswith("postgresql://") else "SQLite (a file per drain)"
    )
    print(f"{spans:,} spans ({args.wire}), {store}, grace {args.grace_ms} ms; order flipped every pair\n")
    print(
        "| pair | A finalized (stored) spans/s | B finalized (stored) spans/s | B / A | CPU s A (worker + finalizer) "
        "| CPU s B |"
    )
    print("|---|---|---|---|---|---|")
    ratios = []
    for n, a, b in rows:
        ratios.append(b.finalized_per_s / a.finalized_per_s)
        print(f"| {n} | {_cell(a)} | {_cell(b)} | {ratios[-1]:.2f} | {_cpu(a)} | {_cpu(b)} |")
    print(f"\nB / A finalized: median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
