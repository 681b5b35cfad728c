"""Which Python driver for the Cassandra store: the candidates on PyPI measured on one real node.

    .venv/bin/python bench/cassandra_drivers.py                      # starts a node, runs every driver here
    .venv/bin/python bench/cassandra_drivers.py --url cassandra://127.0.0.1:9042/bench
    .venv/bin/python bench/cassandra_drivers.py --python /other/venv/bin/python   # + that venv's driver

Candidates: ``cassandra-driver`` (Apache/DataStax, Cython on libev), ``scylla-driver`` (ScyllaDB's fork of
it: same ``cassandra`` import name, so it can only live in another virtualenv, passed with ``--python``)
and ``acsylla`` (asyncio bindings to ScyllaDB's C++ driver). Each runs, from asyncio, with prepared
statements, at consistency QUORUM, on rows shaped like trace chunks (partition key ``trace_id text``,
clustering key ``seq int``, ``value blob`` of ``--value-bytes``, ``--chunks`` rows per trace):

* ``insert``: ``--rows`` single-row inserts, at most ``--concurrency`` in flight;
* ``read``: every trace's partition read back with one single-partition ``SELECT`` (rows/s counts rows);
* ``batch``: the same rows as unlogged batches, one batch per trace (a single mutation per partition);
* ``in 500``: 500 traces read by one ``WHERE trace_id IN (...)`` query, ``--rounds`` times;
* ``gather 500``: the same 500 traces read by 500 concurrent single-partition reads, ``--rounds`` times.

Latency percentiles are per request (per round for the two 500-key cases). CPU is this process's CPU time
(every thread, the driver's I/O threads included) per 1,000 rows; ``server`` is the node's JVM CPU time
per 1,000 rows when its pid is known (a node this script started, or ``--server-pid``). Each driver gets
fresh tables. Without ``--url`` a node is started with ``scripts/cassandra.sh`` on free ports in a temp
dir, and stopped at the end. Uses only the standard library besides the driver, so it runs in any venv.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
CASSANDRA_SH = ROOT / "scripts" / "cassandra.sh"
DRIVERS = ("cassandra-driver", "scylla-driver", "acsylla")
IN_KEYS = 500


@dataclass
class Result:
    """One line of the table: a driver on one case."""

    driver: str
    case: str
    rows: int
    seconds: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float
    server_cpu_s: float | None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


class Session(Protocol):
    """What the cases need from a driver: DDL, prepared statements, awaitable execution, batches."""

    name: str

    async def execute_ddl(self, cql: str) -> None: ...

    async def prepare(self, cql: str) -> object: ...

    async def run(self, prepared: object, values: Sequence[object]) -> list[tuple[Any, ...]]: ...

    async def batch(self, prepared: object, rows: Sequence[Sequence[object]]) -> None: ...

    async def close(self) -> None: ...


# -- the drivers ------------------------------------------------------------------------------------------


class DatastaxSession:
    """cassandra-driver or scylla-driver (one API): futures completed on the libev thread, handed to asyncio."""

    def __init__(self, name: str, hosts: list[str], port: int, keyspace: str) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
        from cassandra.query import tuple_factory

        self.name = name
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=ConsistencyLevel.QUORUM,
            row_factory=tuple_factory,
            request_timeout=30,
        )
        self._cluster = Cluster(hosts, port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        self._session = self._cluster.connect()
        self._keyspace = keyspace
        self._loop = asyncio.get_running_loop()

    def _await(self, response_future: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()

        def done(result: Any) -> None:
            if not future.done():
                future.set_result(result)

        def failed(exc: BaseException) -> None:
            if not future.done():
                future.set_exception(exc)

        response_future.add_callbacks(
            lambda rows: self._loop.call_soon_threadsafe(done, rows),
            errback=lambda exc: self._loop.call_soon_threadsafe(failed, exc),
        )
        return future

    async def execute_ddl(self, cql: str) -> None:
        await self._await(self._session.execute_async(cql, timeout=120))

    async def prepare(self, cql: str) -> object:
        # prepare() blocks on the driver's thread: fine once per statement, never per request
        return await asyncio.to_thread(self._session.prepare, cql.replace("{ks}", self._keyspace))

    async def run(self, prepared: object, values: Sequence[object]) -> list[tuple[Any, ...]]:
        rows = await self._await(self._session.execute_async(prepared, values))
        return list(rows or ())

    async def batch(self, prepared: object, rows: Sequence[Sequence[object]]) -> None:
        from cassandra.query import BatchStatement, BatchType

        statement = BatchStatement(batch_type=BatchType.UNLOGGED)
        for values in rows:
            statement.add(prepared, values)
        await self._await(self._session.execute_async(statement))

    async def close(self) -> None:
        await asyncio.to_thread(self._cluster.shutdown)


class AcsyllaSession:
    """acsylla: the C++ driver's own I/O thread, results delivered to the asyncio loop by the binding."""

    name = "acsylla"

    def __init__(self, session: Any, keyspace: str) -> None:
        self._session = session
        self._keyspace = keyspace

    @classmethod
    async def open(cls, hosts: list[str], port: int, keyspace: str) -> AcsyllaSession:
        import acsylla

        cluster = acsylla.create_cluster(
            hosts, port=port, consistency=acsylla.Consistency.QUORUM, request_timeout=30, log_level="error"
        )
        return cls(await cluster.create_session(), keyspace)

    async def execute_ddl(self, cql: str) -> None:
        import acsylla

        statement = acsylla.create_statement(cql, timeout=120)
        await self._session.execute(statement)

    async def prepare(self, cql: str) -> object:
        return await self._session.create_prepared(cql.replace("{ks}", self._keyspace))

    async def run(self, prepared: object, values: Sequence[object]) -> list[tuple[Any, ...]]:
        statement = prepared.bind()  # type: ignore[attr-defined]
        statement.bind_list(list(values))
        result = await self._session.execute(statement)
        return [row.as_tuple() for row in result.all()]

    async def batch(self, prepared: object, rows: Sequence[Sequence[object]]) -> None:
        import acsylla

        batch = acsylla.create_batch_unlogged()
        for values in rows:
            statement = prepared.bind()  # type: ignore[attr-defined]
            statement.bind_list(list(values))
            batch.add_statement(statement)
        batch.set_consistency(acsylla.Consistency.QUORUM)
        await self._session.execute_batch(batch)

    async def close(self) -> None:
        await self._session.close()


def installed_drivers() -> list[str]:
    """The candidates importable in this interpreter (the ``cassandra`` package is one of two distributions)."""
    from importlib import metadata

    found = []
    for name in DRIVERS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


async def open_session(driver: str, hosts: list[str], port: int, keyspace: str) -> Session:
    if driver == "acsylla":
        return await AcsyllaSession.open(hosts, port, keyspace)
    return DatastaxSession(driver, hosts, port, keyspace)


# -- measuring --------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bounded(jobs: Iterable[Callable[[], Awaitable[object]]], concurrency: int) -> list[float]:
    """Run the jobs with at most ``concurrency`` in flight; each job's latency in ms, in completion order."""
    iterator = iter(jobs)
    latencies: list[float] = []

    async def lane() -> None:
        for job in iterator:  # lanes share one iterator: each job runs once
            started = time.perf_counter()
            await job()
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return latencies


class Bench:
    def __init__(self, args: argparse.Namespace, server_pid: int | None) -> None:
        self.args = args
        self.server_pid = server_pid
        self.value = os.urandom(args.value_bytes)
        self.traces = [uuid.uuid4().hex for _ in range(args.rows // args.chunks)]

    async def measure(
        self,
        driver: str,
        case: str,
        rows: int,
        body: Callable[[], Awaitable[list[float]]],
    ) -> Result:
        server_before = process_cpu_s(self.server_pid) if self.server_pid else None
        cpu_before = time.process_time()
        started = time.perf_counter()
        latencies = sorted(await body())
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - cpu_before
        server_cpu = None if server_before is None else process_cpu_s(self.server_pid or 0) - server_before
        return Result(
            driver,
            case,
            rows,
            seconds,
            percentile(latencies, 0.50),
            percentile(latencies, 0.99),
            client_cpu,
            server_cpu,
        )

    async def run_driver(self, driver: str, hosts: list[str], port: int, keyspace: str) -> list[Result]:
        """One pass of every case on fresh tables; the rows are named ``<driver> <version>``."""
        from importlib import metadata

        args = self.args
        session = await open_session(driver, hosts, port, keyspace)
        label = f"{driver} {metadata.version(driver)}"
        try:
            table = await self._fresh_tables(session, driver, keyspace)
            insert = await session.prepare(f"INSERT INTO {table} (trace_id, seq, value) VALUES (?, ?, ?)")
            insert_b = await session.prepare(f"INSERT INTO {table}_batch (trace_id, seq, value) VALUES (?, ?, ?)")
            select = await session.prepare(f"SELECT seq, value FROM {table} WHERE trace_id = ?")
            marks = ", ".join("?" * IN_KEYS)
            select_in = await session.prepare(f"SELECT trace_id, seq, value FROM {table} WHERE trace_id IN ({marks})")
            value, chunks, concurrency = self.value, args.chunks, args.concurrency
            # warm-up: connections, prepared ids, JIT on the server
            await bounded([partial(session.run, insert, ("warm-up", i, value)) for i in range(200)], concurrency)

            def inserts() -> Iterable[Callable[[], Awaitable[object]]]:
                for trace in self.traces:
                    for seq in range(chunks):
                        yield partial(session.run, insert, (trace, seq, value))

            results = [
                await self.measure(label, "insert", len(self.traces) * chunks, lambda: bounded(inserts(), concurrency))
            ]

            read_rows = 0

            async def read_one(trace: str) -> None:
                nonlocal read_rows
                rows = await session.run(select, (trace,))
                assert len(rows) == chunks and rows[0][1] == value, f"trace {trace}: {len(rows)} rows"
                read_rows += len(rows)

            reads = [partial(read_one, trace) for trace in self.traces]
            results.append(
                await self.measure(label, "read", len(self.traces) * chunks, lambda: bounded(reads, concurrency))
            )
            assert read_rows == len(self.traces) * chunks

            def batches() -> Iterable[Callable[[], Awaitable[object]]]:
                for trace in self.traces:
                    rows = [(trace, seq, value) for seq in range(chunks)]
                    yield partial(session.batch, insert_b, rows)

            results.append(
                await self.measure(label, "batch", len(self.traces) * chunks, lambda: bounded(batches(), concurrency))
            )

            results.extend(await self._key_rounds(session, label, select_in, read_one))
            for suffix in ("", "_batch"):
                await session.execute_ddl(f"DROP TABLE IF EXISTS {table}{suffix}")
            return results
        finally:
            await session.close()

    async def _fresh_tables(self, session: Session, driver: str, keyspace: str) -> str:
        """The keyspace, and the driver's two tables created afresh; the first one's name."""
        await session.execute_ddl(
            f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {self.args.replication_factor}}}"
        )
        table = f"{keyspace}.chunks_{driver.replace('-', '_')}"
        for suffix in ("", "_batch"):
            await session.execute_ddl(f"DROP TABLE IF EXISTS {table}{suffix}")
            await session.execute_ddl(
                f"CREATE TABLE {table}{suffix} (trace_id text, seq int, value blob, PRIMARY KEY (trace_id, seq))"
            )
        return table

    async def _key_rounds(
        self, session: Session, label: str, select_in: object, read_one: Callable[[str], Awaitable[None]]
    ) -> list[Result]:
        """Rounds of IN_KEYS traces: one ``IN`` query each, and as many reads at once."""
        chunks, concurrency = self.args.chunks, self.args.concurrency
        groups = [self.traces[i * IN_KEYS : (i + 1) * IN_KEYS] for i in range(self.args.rounds)]
        groups = [g for g in groups if len(g) == IN_KEYS]

        async def by_in() -> list[float]:
            latencies = []
            for keys in groups:
                started = time.perf_counter()
                rows = await session.run(select_in, keys)
                assert len(rows) == IN_KEYS * chunks, f"IN read {len(rows)} rows"
                latencies.append((time.perf_counter() - started) * 1000)
            return latencies

        async def by_gather() -> list[float]:
            latencies = []
            for keys in groups:
                started = time.perf_counter()
                await bounded([partial(read_one, trace) for trace in keys], concurrency)
                latencies.append((time.perf_counter() - started) * 1000)
            return latencies

        n = len(groups) * IN_KEYS * chunks
        return [
            await self.measure(label, f"in {IN_KEYS}", n, by_in),
            await self.measure(label, f"gather {IN_KEYS}", n, by_gather),
        ]


# -- the node, the table, main -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def parse_url(url: str) -> tuple[list[str], int, str]:
    """hosts, port and keyspace of ``cassandra://h1,h2:port/keyspace?...`` (this script's own light parse)."""
    parts = urlsplit(url)
    hosts_part, _, port = parts.netloc.rpartition(":")
    if parts.scheme != "cassandra" or not hosts_part or not port.isdigit():
        raise SystemExit(f"--url: expected cassandra://host[,host]:port/keyspace, got {url!r}")
    return hosts_part.split(","), int(port), parts.path.strip("/") or "bench"


def render(results: Sequence[Result]) -> str:
    header = ["driver", "case", "rows", "rows/s", "p50 ms", "p99 ms", "client CPU s/1k rows", "server CPU s/1k rows"]
    lines = [
        [
            r.driver,
            r.case,
            f"{r.rows:,}",
            f"{r.rows_per_s:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.client_cpu_s / r.rows * 1000:.3f}",
            "n/a" if r.server_cpu_s is None else f"{r.server_cpu_s / r.rows * 1000:.3f}",
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in lines]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="cassandra://host[,host]:port/keyspace (default: start a node)")
    parser.add_argument("--driver", action="append", choices=DRIVERS, help="only these (default: all installed)")
    parser.add_argument("--python", action="append", default=[], help="also run the drivers of this interpreter")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--chunks", type=int, default=4, help="rows per trace (partition)")
    parser.add_argument("--value-bytes", type=int, default=3584)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8, help="500-key reads per case")
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="passes over every driver; the median is shown")
    parser.add_argument("--server-pid", type=int, help="the node's JVM pid, for the server CPU column")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (used for --python)")
    return parser.parse_args(argv)


def run_other(python: str, args: argparse.Namespace, url: str, server_pid: int | None) -> list[Result]:
    """One pass of the drivers installed in another interpreter (its own copy of this script, ``--json``)."""
    forwarded = [
        f"--rows={args.rows}",
        f"--chunks={args.chunks}",
        f"--value-bytes={args.value_bytes}",
        f"--concurrency={args.concurrency}",
        f"--rounds={args.rounds}",
        f"--replication-factor={args.replication_factor}",
        "--repeat=1",
    ]
    if server_pid:
        forwarded.append(f"--server-pid={server_pid}")
    out = subprocess.run(
        [python, __file__, "--url", url, "--json", *forwarded], check=True, capture_output=True, text=True
    ).stdout
    return [Result(**item) for item in json.loads(out)]


def median_runs(results: Sequence[Result]) -> list[Result]:
    """Per (driver, case), the run with the median rows/s (the lower middle one for an even count)."""
    by_key: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        by_key.setdefault((r.driver, r.case), []).append(r)
    chosen = []
    for runs in by_key.values():
        runs.sort(key=lambda r: r.rows_per_s)
        chosen.append(runs[(len(runs) - 1) // 2])
    return chosen


def run_all(args: argparse.Namespace, url: str, server_pid: int | None) -> list[Result]:
    """Every driver here and in ``--python`` interpreters, ``--repeat`` times, the order reversed every
    other pass so that no driver always meets a cold (or a tired) server."""
    local = args.driver or installed_drivers()
    for driver in local:
        if driver not in installed_drivers():
            raise SystemExit(f"{driver} is not installed in {sys.executable}")
    hosts, port, keyspace = parse_url(url)
    units: list[tuple[str, str]] = [("driver", d) for d in local] + [("python", p) for p in args.python]
    results: list[Result] = []
    for n in range(args.repeat):
        for kind, name in units if n % 2 == 0 else reversed(units):
            if kind == "driver":
                bench = Bench(args, server_pid)
                results += asyncio.run(bench.run_driver(name, hosts, port, keyspace))
            else:
                results += run_other(name, args, url, server_pid)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rows < args.chunks * IN_KEYS:
        raise SystemExit(f"--rows must be at least {args.chunks * IN_KEYS} (one {IN_KEYS}-key read)")
    with tempfile.TemporaryDirectory(prefix="cassandra-bench-") as tmp:
        started_dir = None
        url = args.url
        server_pid = args.server_pid
        try:  # a node this script starts is stopped on every way out, a failed `up` included
            if url is None:
                started_dir = Path(tmp) / "cluster"
                ports = ["--port", str(free_port()), "--storage-port", str(free_port()), "--jmx-port", str(free_port())]
                up = subprocess.run(
                    ["bash", str(CASSANDRA_SH), "up", "--dir", str(started_dir), "--keyspace", "bench", *ports],
                    check=True,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                url = up.stdout.strip().splitlines()[-1]
                server_pid = int((started_dir / "node1" / "pid").read_text())
            results = run_all(args, url, server_pid)
        finally:
            if started_dir is not None:
                subprocess.run(["bash", str(CASSANDRA_SH), "down", "--dir", str(started_dir)], check=False)
    if args.json:
        print(json.dumps([asdict(r) for r in results]))
        return 0
    print(
        f"{args.rows:,} rows of {args.value_bytes:,} B, {args.chunks} per partition, "
        f"{args.concurrency} in flight, consistency QUORUM, prepared statements; {url}; "
        f"median of {args.repeat} runs; load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(render(median_runs(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
