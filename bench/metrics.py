"""What the Prometheus metrics cost: the API's per-request update, the worker's per-batch updates, and a
scrape of each registry filled as a busy process fills it. Through the metric classes' own interfaces
(``RequestMetrics.observe``/``render``, ``WorkerMetrics``), so two checkouts compare side by side:

    python bench/metrics.py [--routes 40] [--repeat 5]
    python bench/metrics.py --root <other checkout>     # the same table from another checkout's code
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


def best_us(fn: Any, number: int, repeat: int) -> float:
    """The best of ``repeat`` runs of ``number`` calls, µs per call (the least disturbed by the host)."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def measure(routes: int, repeat: int) -> list[tuple[str, float]]:
    from ingest.metrics import WorkerCounters, WorkerMetrics
    from query_api.metrics import RequestMetrics

    api = RequestMetrics()
    names = [f"/route{i}/{{id}}" for i in range(routes)]
    for name in names:
        for status in (200, 400, 404):
            api.observe("GET", name, status, 0.003)
    worker = WorkerMetrics(WorkerCounters())
    for partition in range(12):
        worker.messages.inc(100, f"spans-{partition}")
        worker.batch_seconds.observe(0.02)
    return [
        (
            "API: one request observed (µs)",
            best_us(lambda: api.observe("GET", names[len(names) // 2], 200, 0.0042), 20_000, repeat),
        ),
        (f"API: a scrape, {routes * 3} request series (µs)", best_us(api.render, 50, repeat)),
        ("worker: one batch observed (µs)", best_us(lambda: worker.batch_seconds.observe(0.02), 20_000, repeat)),
        ("worker: a scrape (µs)", best_us(worker.render, 200, repeat)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--root", type=Path, default=HERE, help="the checkout whose code is measured")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.root.resolve()))
    rows = measure(args.routes, args.repeat)
    print(f"| measure ({args.root.resolve().name}) | best of {args.repeat} |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:,.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
