"""The metrics pages before and after prometheus-client (docs/adr/0009-prometheus-client.md), in one run.

The old side is the hand-written registry as it was at ``--old`` (``shared/prometheus.py``,
``ingest/metrics.py`` and ``query_api/metrics.py`` read from git, loaded beside the tree's own); the new
side is the tree. Both are filled with the same observations (a worker with 3 topics, 12 partitions and
the span metrics of 76 label sets; an API with ``--routes`` routes), then:

- the two pages are parsed with prometheus-client's parser and compared: every family with its type and
  help, every sample with its labels and value (the page is a contract; number formatting and label
  order are not part of it);
- the calls the worker makes per batch, per finalize round and per heartbeat, the API's per request,
  and a scrape of each page are timed in CPU time (best of ``--repeat``, each run long enough to time),
  printed as a table.

    python bench/metrics.py [--routes 40] [--repeat 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import timeit
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import metrics as new_worker
from ingest.metrics import SpanSum, WorkerCounters
from query_api import metrics as new_api
from shared.demo import SERVICES

ROOT = Path(__file__).resolve().parents[1]
OLD = "b0eb14c"
"""The last commit with the hand-written registry."""
TOPICS = ("spans", "otlp_spans", "zipkin")
PARTITIONS = [f"spans/{n}" for n in range(12)]


def git_module(rev: str, path: str, name: str) -> types.ModuleType:
    """The module at ``path`` as it was at ``rev``, loaded as ``name``."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True).stdout
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102  # the project's own history
    return module


def old_modules(rev: str) -> tuple[Any, Any]:
    """The worker's and the API's metrics modules at ``rev``, on the registry of that commit."""
    old_prometheus = git_module(rev, "shared/prometheus.py", "old_shared_prometheus")
    tree_prometheus = sys.modules["shared.prometheus"]
    sys.modules["shared.prometheus"] = old_prometheus  # what their `from shared.prometheus import` finds
    try:
        return git_module(rev, "ingest/metrics.py", "old_ingest_metrics"), git_module(
            rev, "query_api/metrics.py", "old_query_api_metrics"
        )
    finally:
        sys.modules["shared.prometheus"] = tree_prometheus


def span_sums() -> list[SpanSum]:
    """A round's span metrics: every (service, operation) of the demo as server and client, ok and error."""
    return [
        (service, operation, kind, status, 10, 10 * 4_000, {3: 4, 5: 5, 9: 1})
        for service, operations in SERVICES.items()
        for operation in operations
        for kind in ("SPAN_KIND_SERVER", "SPAN_KIND_CLIENT")
        for status in ("STATUS_CODE_UNSET", "STATUS_CODE_ERROR")
    ]


class Side:
    """One implementation's worker and API metrics, with the calls the processes make, as they make them."""

    def __init__(self, worker_module: Any, api_module: Any, new: bool, routes: int) -> None:
        counters = WorkerCounters(spans=1_000, finishes=5, spans_changed=990, dead_lettered=2, traces_finalized=77)
        self.worker = worker_module.WorkerMetrics(counters)
        self.api = api_module.RequestMetrics()
        self.new = new
        self.sums = span_sums()
        self.routes = [f"/api/route{n}/{{id}}" for n in range(routes)]

    def batch(self) -> None:
        """Per batch: messages by topic, the batch's time."""
        m = self.worker
        if self.new:
            m.consumed("spans", 5000)
        else:
            m.messages.inc(5000, "spans")
        m.batch_seconds.observe(0.042)

    def finalize_round(self) -> None:
        """Per finalize round: the span metrics of its first finalizations, the round's time."""
        self.worker.spans.add(self.sums)
        self.worker.finalize_seconds.observe(0.08)

    def heartbeat(self) -> None:
        """Per heartbeat: the lag of every partition."""
        lag = {partition: n * 10 for n, partition in enumerate(PARTITIONS)}
        if self.new:
            self.worker.readings.lag = lag
        else:
            self.worker.lag.values.clear()
            for partition, behind in lag.items():
                self.worker.lag.set(behind, partition)

    def request(self, n: int = 0) -> None:
        self.api.observe("GET", self.routes[n % len(self.routes)], (200, 404, 400)[n % 3], 0.0031)

    def fill(self) -> None:
        for n, topic in enumerate(TOPICS):
            for _ in range(n + 1):
                if self.new:
                    self.worker.consumed(topic, 100)
                else:
                    self.worker.messages.inc(100, topic)
        for _ in range(50):
            self.batch()
            self.finalize_round()
        self.heartbeat()
        for n in range(2_000):
            self.request(n)


def families(text: str) -> dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]:
    """A page parsed: family name -> (type, help, {(sample name, sorted labels): value})."""
    return {
        f.name: (f.type, f.documentation, {(s.name, tuple(sorted(s.labels.items()))): s.value for s in f.samples})
        for f in text_string_to_metric_families(text)
    }


def compare(old: str, new: str) -> list[str]:
    """How two pages differ in families, types, help texts, samples, labels or values (empty: they agree)."""
    a, b = families(old), families(new)
    out = [f"family only in the old page: {n}" for n in sorted(a.keys() - b.keys())]
    out += [f"family only in the new page: {n}" for n in sorted(b.keys() - a.keys())]
    for name in sorted(a.keys() & b.keys()):
        (type_a, help_a, samples_a), (type_b, help_b, samples_b) = a[name], b[name]
        if (type_a, help_a) != (type_b, help_b):
            out.append(f"{name}: {type_a} {help_a!r} became {type_b} {help_b!r}")
        for key in sorted(samples_a.keys() ^ samples_b.keys()):
            out.append(f"{name}: sample {key} only in the {'old' if key in samples_a else 'new'} page")
        out += [f"{name}: {k} {samples_a[k]} -> {samples_b[k]}" for k in samples_a.keys() & samples_b.keys()
                if samples_a[k] != samples_b[k]]  # fmt: skip
    return out


def best_us(call: Callable[[], object], repeat: int) -> float:
    """CPU µs per call (the process's CPU time: on a shared host the wall clock also counts the time spent
    waiting for a core), the best of ``repeat`` runs of as many calls as take 0.2 s (the least disturbed)."""
    timer = timeit.Timer(call, timer=time.process_time)
    number, _ = timer.autorange()
    return min(timer.repeat(number=number, repeat=repeat)) / number * 1e6


def timings(old: Side, new: Side, repeat: int) -> Iterator[tuple[str, float, float]]:
    calls: list[tuple[str, Callable[[Side], Callable[[], object]]]] = [
        ("worker, per batch (messages, batch seconds)", lambda s: s.batch),
        (f"worker, per finalize round ({len(old.sums)} label sets)", lambda s: s.finalize_round),
        (f"worker, per heartbeat ({len(PARTITIONS)} partitions)", lambda s: s.heartbeat),
        ("API, per request (count, latency)", lambda s: s.request),
        ("scrape of the worker's page", lambda s: s.worker.render),
        (f"scrape of the API's page ({len(old.routes)} routes)", lambda s: s.api.render),
    ]
    for name, call in calls:
        yield name, best_us(call(old), repeat), best_us(call(new), repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default=OLD, help="the commit of the hand-written registry")
    parser.add_argument("--routes", type=int, default=40, help="the API's routes (3 statuses each)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    old_worker, old_api = old_modules(args.old)
    old = Side(old_worker, old_api, new=False, routes=args.routes)
    new = Side(new_worker, new_api, new=True, routes=args.routes)
    old.fill()
    new.fill()
    differences = compare(old.worker.render(), new.worker.render()) + compare(old.api.render(), new.api.render())
    for line in differences:
        print(f"DIFFERS  {line}")
    print(f"pages: {len(families(new.worker.render()))} worker and {len(families(new.api.render()))} API "
          f"families, {'the same' if not differences else 'NOT the same'} names, types, help, labels and values "
          f"on both sides\n")  # fmt: skip
    print(f"| call (CPU time, best of {args.repeat}) | hand-written µs | prometheus-client µs | new / old |")
    print("|---|---:|---:|---:|")
    for name, before, after in timings(old, new, args.repeat):
        print(f"| {name} | {before:,.2f} | {after:,.2f} | {after / before:.2f} |")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
