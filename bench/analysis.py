"""What a trace's finalization costs per span in Python: the analysis and the rollup contribution.

    python bench/analysis.py [--traces 1000] [--repeat 3]

Columns: *before*, the implementations from before the rewrite (frozen in tests/unit/*_oracle.py); *now,
Python*, the core run from its source (as when no C compiler built it, or the build is stale); *now,
compiled*, the mypyc build (``n/a`` when there is none, or it is stale). Rows: ``analyze``,
``contribution`` (which includes ``trace_contexts``, the critical path's calling contexts) and
``trace_contexts`` alone. Figures are µs per span: the least CPU time of this process over ``--repeat``
runs (CPU time, so that other processes on the machine count less), on ``--traces`` demo traces (13 spans
each on average) and on one 10,000-span trace (a batch root over 750 demo requests). Runs in seconds.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from shared import analysis, compiled, critical_paths
from shared.demo import make_trace
from shared.models import Span
from shared.store import rollups
from tests.unit import analysis_oracle, finalizing_oracle

T0 = 1_732_500_000_000_000
CORE = "shared.analysis_core"

Step = Callable[[list[list[Span]], list[analysis.TraceAnalysis]], object]
STEPS: dict[str, tuple[Step, Step]] = {
    # name: (before, now)
    "analyze": (
        lambda traces, _: [analysis_oracle.analyze(t[0].trace_id, t) for t in traces],
        lambda traces, _: [analysis.analyze(t[0].trace_id, t) for t in traces],
    ),
    "contribution": (
        lambda traces, results: [finalizing_oracle.contribution(a, t) for t, a in zip(traces, results, strict=True)],
        lambda traces, results: [rollups.contribution(a, t) for t, a in zip(traces, results, strict=True)],
    ),
    "  of which trace_contexts": (
        lambda traces, results: [finalizing_oracle.trace_contexts(a, t) for t, a in zip(traces, results, strict=True)],
        lambda traces, results: [critical_paths.trace_contexts(a, t) for t, a in zip(traces, results, strict=True)],
    ),
}


def demo_traces(count: int) -> list[list[Span]]:
    rng = random.Random(1)
    return [make_trace(rng, T0 + i * 1000) for i in range(count)]


def big_trace(spans: int = 10_000) -> list[Span]:
    """One trace of about ``spans`` spans: a batch root whose children are whole demo requests, in turn."""
    rng = random.Random(2)
    root = Span(trace_id="big", span_id="batch", service_name="batch", operation_name="run", start_time_us=T0)
    out = [root]
    cursor = T0 + 100
    while len(out) < spans:
        request = make_trace(rng, cursor)
        first = request[0]
        out.append(msgspec.structs.replace(first, parent_span_id=root.span_id))
        out.extend(request[1:])
        cursor = first.start_time_us + (first.duration_us or 0) + 50
    out[0] = msgspec.structs.replace(root, duration_us=cursor - T0)
    return [msgspec.structs.replace(span, trace_id="big") for span in out]


def cpu_seconds(step: Step, traces: list[list[Span]], results: list[analysis.TraceAnalysis]) -> float:
    gc.collect()
    started = time.process_time()
    step(traces, results)
    return time.process_time() - started


@contextmanager
def core_from(module: ModuleType) -> Iterator[None]:
    """Run the modules that use the analysis core with ``module`` instead (its source, say)."""
    users = (analysis, rollups, critical_paths)
    saved = [user.core for user in users]
    for user in users:
        setattr(user, "core", module)  # noqa: B010 - mypy types `core` as the one module it imports
    try:
        yield
    finally:
        for user, module_before in zip(users, saved, strict=True):
            setattr(user, "core", module_before)  # noqa: B010


def measure(traces: list[list[Span]], repeat: int) -> list[tuple[str, float, float, float | None]]:
    """(step, before, now in Python, now compiled or None) in µs per span. The variants of a step take
    turns within each repeat, so that a change in the machine's load affects them alike."""
    source = compiled.load_source(CORE, compiled.source_path(analysis.core))
    fresh_build = compiled.loaded.get(CORE) == "compiled"
    results = [analysis.analyze(t[0].trace_id, t) for t in traces]
    spans = sum(len(trace) for trace in traces)
    rows = []
    for name, (before, now) in STEPS.items():
        best = [math.inf, math.inf, math.inf]
        for _ in range(repeat):
            best[0] = min(best[0], cpu_seconds(before, traces, results))
            with core_from(source):
                best[1] = min(best[1], cpu_seconds(now, traces, results))
            if fresh_build:
                best[2] = min(best[2], cpu_seconds(now, traces, results))
        old, python, built = (seconds / spans * 1e6 for seconds in best)
        rows.append((name, old, python, built if fresh_build else None))
    return rows


def table(title: str, rows: Sequence[tuple[str, float, float, float | None]]) -> str:
    lines = [
        f"{title}",
        f"| {'µs per span':<26} | {'before':>7} | {'now, Python':>11} | {'now, compiled':>13} | {'before/now':>10} |",
        f"|{'-' * 28}|{'-' * 9}|{'-' * 13}|{'-' * 15}|{'-' * 12}|",
    ]
    for name, old, python, built in rows:
        now = built if built is not None else python
        shown = f"{built:13.2f}" if built is not None else f"{'n/a':>13}"
        lines.append(f"| {name:<26} | {old:7.2f} | {python:11.2f} | {shown} | {old / now:9.1f}x |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--traces", type=int, default=1000, help="demo traces (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, the fastest counts (default 3)")
    args = parser.parse_args(argv)
    status = compiled.loaded.get(CORE, "not loaded")
    print(f"analysis core: {status}; Python {sys.version.split()[0]}")
    demo = demo_traces(args.traces)
    spans = sum(len(trace) for trace in demo)
    print(table(f"{args.traces} demo traces ({spans / args.traces:.1f} spans each)", measure(demo, args.repeat)))
    print(table("one 10,000-span trace", measure([big_trace()], args.repeat)))


if __name__ == "__main__":
    main()
