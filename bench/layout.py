"""Bytes a span on disk, per table: a store filled through the store API (``write_batch`` + ``finalize``,
as :func:`bench.reads.fill` does), then measured.

* SQLite: the file after a ``wal_checkpoint(TRUNCATE)``, split by table with the ``dbstat`` virtual table
  (a table's indexes count with it), as row (i) of ``make bench`` measures (:mod:`bench.storage`);
* PostgreSQL (``--postgres URL``): ``pg_total_relation_size`` of every table after ``VACUUM``, in a fresh
  schema dropped afterwards.

Row (i) drains Kafka into each store; this fills the store directly, in seconds, for a layout change.

Two workloads: the demo traces (``shared.demo``) and :func:`bench.workload.realistic_trace` (ids in URLs,
SQL statements, logs), so that nothing is tuned to the demo generator.

    python -m bench.layout [--spans 200000] [--workload demo|realistic|both] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.storage import Footprint, postgres_footprint, sqlite_footprint
from bench.workload import realistic_trace
from shared.demo import make_trace
from shared.models import Span
from shared.settings import Settings
from shared.store import TraceStore, open_store

MakeTrace = Callable[[random.Random, int], list[Span]]
WORKLOADS: dict[str, MakeTrace] = {"demo": make_trace, "realistic": realistic_trace}
SPREAD_US = 86_400_000_000
BATCH_TRACES = 500


async def fill(store: TraceStore, make: MakeTrace, spans_wanted: int, *, seed: int = 3) -> int:
    """Traces of ``make`` spread over the last day, written and finalized ``BATCH_TRACES`` at a time;
    the spans written."""
    rng = random.Random(seed)
    start = time.time_ns() // 1000 - SPREAD_US
    gap = max(1, SPREAD_US * 13 // max(1, spans_wanted))
    written = traces = 0
    while written < spans_wanted:
        batch = [make(rng, start + (traces + i) * gap) for i in range(BATCH_TRACES)]
        traces += len(batch)
        spans = [s for t in batch for s in t]
        written += len(spans)
        trace_ids = [t[0].trace_id for t in batch]
        await store.write_batch(spans, [], shards=dict.fromkeys(trace_ids, "bench/0"), now_us=0, grace_us=0, idle_us=0)
        await store.finalize(trace_ids, now_us=1)
    return written


def _sizes(footprint: Footprint) -> dict[str, int]:
    return {**footprint.parts, "total": footprint.total}


async def measure_sqlite(make: MakeTrace, spans_wanted: int, workdir: Path) -> tuple[int, dict[str, int]]:
    path = workdir / f"layout-{uuid.uuid4().hex}.db"
    store = await open_store(Settings.from_env({}, store_url=f"sqlite:///{path}"), writer=True)
    try:
        spans = await fill(store, make, spans_wanted)
    finally:
        await store.close()
    return spans, _sizes(sqlite_footprint(path))


async def measure_postgres(make: MakeTrace, spans_wanted: int, base: str) -> tuple[int, dict[str, int]]:
    import asyncpg

    schema = f"layout_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        url = f"{base}{'&' if '?' in base else '?'}search_path={schema}"
        try:
            store = await open_store(Settings.from_env({}, store_url=url), writer=True)
            try:
                spans = await fill(store, make, spans_wanted)
            finally:
                await store.close()
            return spans, _sizes(await postgres_footprint(url))
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


def table_rows(label: str, spans: int, sizes: dict[str, int]) -> list[list[str]]:
    """One row per table (largest first), then the total: bytes a span."""
    tables = sorted((t for t in sizes if t != "total"), key=lambda t: -sizes[t])
    rows = [[label, t, f"{sizes[t] / spans:.1f}"] for t in tables if sizes[t] / spans >= 0.5]
    return [*rows, [label, "total", f"{sizes['total'] / spans:.1f}"]]


def render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join([lines[0], "-+-".join("-" * w for w in widths), *lines[1:]])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--workload", choices=[*WORKLOADS, "both"], default="both")
    parser.add_argument("--postgres", metavar="URL", help="also measure PostgreSQL (a schema in this database)")
    args = parser.parse_args()
    names = list(WORKLOADS) if args.workload == "both" else [args.workload]
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="layout-") as workdir:
        for name in names:
            spans, sizes = await measure_sqlite(WORKLOADS[name], args.spans, Path(workdir))
            rows += table_rows(f"sqlite {name}", spans, sizes)
            if args.postgres:
                spans, sizes = await measure_postgres(WORKLOADS[name], args.spans, args.postgres)
                rows += table_rows(f"postgres {name}", spans, sizes)
    print(render(["store / workload", "table", "bytes/span"], rows))


if __name__ == "__main__":
    asyncio.run(main())
