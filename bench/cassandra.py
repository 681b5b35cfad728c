"""Row (c) on Cassandra: one worker on one Cassandra node, beside SQLite and PostgreSQL; and two workers
(``python -m ingest`` processes) on a 3-node cluster (replication factor 3, QUORUM).

Part of ``bench/run.py`` (row c). The clusters are throwaway ones from ``scripts/cassandra.sh`` in the
bench's work dir, stopped and deleted when the part ends (also when it fails). Without Java, Maven (for
the first fetch of the jars) or the ``cassandra`` extra, the rows say ``n/a`` and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from bench.common import Processes, Row, Skipped, free_port, script_down, script_up, settings_env
from bench.drain import STALL_S, DrainResult, RawResult, drain_rows, worker_drain
from shared.settings import Settings
from shared.store import TraceStore, open_store

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "cassandra.sh"


class Cluster:
    """A throwaway cluster of ``nodes`` nodes, stopped and deleted by :meth:`down` (or at the bench's exit)."""

    def __init__(self, workdir: Path, processes: Processes, nodes: int) -> None:
        self.dir = workdir / f"cassandra-{nodes}"
        self.nodes = nodes
        self.port = self.jmx_port = 0  # CQL, and JMX of node 1 (node I: jmx_port + I - 1), once up
        self._up = False
        processes.on_exit(self.down)

    def data_dir(self, node: int) -> Path:
        """Where node ``node`` (1..nodes) keeps its SSTables: ``<keyspace>/<table>-<id>/`` below."""
        return self.dir / f"node{node}" / "data"

    def up(self) -> str:
        try:
            import acsylla  # noqa: F401  # the Cassandra backend's driver
        except ImportError:
            raise Skipped("acsylla is not installed (pip install -e '.[cassandra]')") from None
        if shutil.which("java") is None:
            raise Skipped("no java (Cassandra runs on Java 17)")
        self._up = True
        self.port, self.jmx_port = free_port(), free_port()
        ports = ["--port", str(self.port), "--storage-port", str(free_port()), "--jmx-port", str(self.jmx_port)]
        args = ["--nodes", str(self.nodes), "--dir", str(self.dir), *ports]
        return script_up(SCRIPT, args, "cassandra://", 900, f"scripts/cassandra.sh up --nodes {self.nodes}")

    def down(self) -> None:
        if self._up:
            self._up = False
            script_down(SCRIPT, self.dir, 180)

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """The cluster's URL while inside; stopped and deleted after."""
        try:
            yield self.up()
        finally:
            self.down()


async def one_worker(
    settings: Settings, workdir: Path, processes: Processes, spans: int, traces: int, raw: RawResult | None
) -> list[Row]:
    """One in-process worker (as for SQLite and PostgreSQL) on one node."""
    with Cluster(workdir, processes, 1).running() as url:
        result = await worker_drain(msgspec.structs.replace(settings, store_url=url), spans, traces)
    return drain_rows("c", "Cassandra (1 node)", result, raw, settings.grace_ms)


async def two_workers(
    settings: Settings, workdir: Path, processes: Processes, spans: int, traces: int, raw: RawResult | None
) -> list[Row]:
    """Two ``python -m ingest`` processes on a 3-node cluster, progress read from their heartbeats."""
    with Cluster(workdir, processes, 3).running() as url:
        s = msgspec.structs.replace(settings, store_url=url, heartbeat_s=0.2, log_level="WARNING")
        store = await open_store(s)  # creates the schema before the workers start
        try:
            result = await _drain_processes(s, store, processes, spans, traces, workers=2)
        finally:
            await store.close()
    rows = drain_rows("c", "Cassandra (3 nodes, RF 3)", result, raw, settings.grace_ms)
    for row in rows:
        row.measure = row.measure.replace("one worker", "two workers")
        row.notes += "; two python -m ingest processes, QUORUM reads and writes"
    return rows


async def _drain_processes(
    settings: Settings, store: TraceStore, processes: Processes, spans: int, traces: int, *, workers: int
) -> DrainResult:
    """Start ``workers`` worker processes and time them from the first heartbeat that shows partitions
    until their heartbeats add up to every span stored and every trace finalized (within a heartbeat)."""
    env = settings_env(settings)
    children = [processes.start(f"worker-cassandra-{i}", [sys.executable, "-m", "ingest"], env) for i in range(workers)]
    assigned_at: float | None = None
    stored_at: float | None = None
    last, last_change = (-1, -1), time.monotonic()
    try:
        while True:
            await asyncio.sleep(0.1)
            for child in children:
                if child.process.poll() is not None:
                    raise RuntimeError(f"a worker exited with {child.process.returncode}: see {child.log_path}")
            beats = await store.heartbeats()
            if assigned_at is None and any(b.partitions for b in beats):
                assigned_at = time.perf_counter()
            stored = sum(b.spans_total for b in beats)
            finalized = sum(b.traces_finalized for b in beats)
            if stored_at is None and stored >= spans:
                stored_at = time.perf_counter()
            if stored >= spans and finalized >= traces:
                finalized_at = time.perf_counter()
                break
            if (stored, finalized) != last:
                last, last_change = (stored, finalized), time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                raise TimeoutError(f"workers stalled: {stored}/{spans} spans, {finalized}/{traces} traces")
    finally:
        for child in children:
            processes.stop(child)
    assert assigned_at is not None and stored_at is not None
    stored_s, finalized_s = stored_at - assigned_at, finalized_at - assigned_at
    return DrainResult(spans / stored_s, spans / finalized_s, stored_s, finalized_s, 0, late_spans=0)
