"""What every benchmark part shares: the result table, the machine description, child processes that are
always stopped, settings passed to child processes, percentiles, and Kafka topic cleanup."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import datetime as dt
import glob
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import msgspec
from aiokafka.admin import AIOKafkaAdminClient

from shared.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("TRACING_CACHE_DIR") or Path.home() / ".cache" / "tracing")


class Skipped(Exception):
    """A part cannot run here (no PostgreSQL, no Zipkin jar in a quick run): its row says ``n/a (why)``."""


# -- the table ----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the result table."""

    key: str  # "a", "c1", ...
    measure: str
    result: str
    ratio: str = ""
    notes: str = ""
    seconds: float | None = None  # wall time of the part that produced the row
    failed: bool = False


def rate(value: float, unit: str = "spans/s") -> str:
    return f"{value:,.0f} {unit}"


def ms(value: float) -> str:
    return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 1024 / 1024:,.0f} MiB"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(rows: Sequence[Row]) -> str:
    """The rows as one aligned markdown table (readable as is in a terminal)."""
    header = ["", "measure", "result", "ratio", "notes", "took"]
    body = [
        [
            r.key,
            r.measure,
            r.result,
            r.ratio,
            r.notes,
            "" if r.seconds is None else f"{r.seconds:,.1f} s",
        ]
        for r in rows
    ]
    cells = [[_cell(c) for c in line] for line in [header, *body]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    out = []
    for n, line in enumerate(cells):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def render_report(machine: Mapping[str, str], rows: Sequence[Row], footnotes: Sequence[str] = ()) -> str:
    lines = ["# Benchmark", ""]
    lines += [f"- {name}: {value}" for name, value in machine.items()]
    lines += ["", render_table(rows)]
    if footnotes:
        lines += [""] + [f"- {note}" for note in footnotes]
    return "\n".join(lines) + "\n"


# -- statistics -----------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of unsorted ``samples``."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- the machine ------------------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return platform.processor() or platform.machine()


def ram_bytes() -> int:
    match = re.search(r"^MemTotal:\s+(\d+) kB", _read("/proc/meminfo"), re.M)
    return int(match.group(1)) * 1024 if match else 0


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in _read(table).splitlines()[1:]:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return inodes


def _pid_with_socket(inodes: set[str]) -> int | None:
    targets = {f"socket:[{i}]" for i in inodes}
    for pid_dir in glob.glob("/proc/[0-9]*"):
        try:
            for fd in os.listdir(f"{pid_dir}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{pid_dir}/fd/{fd}") in targets:
                        return int(pid_dir.rsplit("/", 1)[1])
        except OSError:
            continue
    return None


def kafka_version(bootstrap: str) -> str:
    """The broker's version, from the jars of the local process listening on the bootstrap port.

    The Kafka protocol does not carry the broker's version, so a remote broker reads "unknown".
    """
    host, _, port_text = bootstrap.split(",")[0].strip().rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port_text.isdigit():
        return "unknown (remote broker)"
    pid = _pid_with_socket(_listening_inodes(int(port_text)))
    if pid is None:
        return "unknown (broker process not visible)"
    args = _read(f"/proc/{pid}/cmdline").split("\0")
    classpath = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-cp", "-classpath")), "")
    for entry in classpath.split(":"):
        for jar in glob.glob(entry) if "*" in entry else [entry]:
            found = re.search(r"(?:kafka-server|kafka_2\.\d+)-(\d[\w.-]*?)\.jar$", jar)
            if found:
                return f"Apache Kafka {found.group(1)} (KRaft, local)"
    return "unknown (no Kafka jar on the broker's classpath)"


def machine(bootstrap: str) -> dict[str, str]:
    load1, load5, _ = os.getloadavg()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {ram_bytes() / 2**30:.0f} GiB RAM, {cpu_model()}",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kafka": kafka_version(bootstrap),
        "load average at start": f"{load1:.2f} (1 min), {load5:.2f} (5 min)",
    }


# -- child processes ------------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, n: int = 30) -> str:
        self.log_file.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


@dataclass
class Processes:
    """Every process the bench starts. :meth:`stop_all` runs in ``finally`` blocks and at exit; children
    also get SIGTERM if the bench itself dies (PR_SET_PDEATHSIG)."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        atexit.register(self.stop_all)

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            list(args),
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=_die_with_parent,  # only a prctl call between fork and exec
        )
        child = Child(name, process, log_path, log_file)
        self.children.append(child)
        return child

    def stop(self, child: Child, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        process = child.process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        child.log_file.close()
        if child in self.children:
            self.children.remove(child)
        return process.returncode

    def on_exit(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` in :meth:`stop_all` (e.g. stop a detached server that is not our child)."""
        self.cleanups.append(cleanup)

    def stop_all(self) -> None:
        for child in list(self.children):
            with contextlib.suppress(Exception):
                self.stop(child)
        while self.cleanups:
            with contextlib.suppress(Exception):
                self.cleanups.pop()()


def peak_rss(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of ``pid`` in bytes, from /proc/<pid>/status."""
    status = _read(f"/proc/{pid}/status")
    values = {}
    for key in ("VmHWM", "VmRSS"):
        match = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
        values[key] = int(match.group(1)) * 1024 if match else 0
    return values["VmHWM"], values["VmRSS"]


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started that are still running (``/proc/<pid>/task/*/children``)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in children.read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return found


def tree_peak_rss(pid: int) -> tuple[int, int]:
    """(VmHWM of ``pid``, the sum of its running children's VmHWM) in bytes: a worker and its finalizer
    process."""
    own, _ = peak_rss(pid)
    children = 0
    for child in child_pids(pid):
        try:
            children += peak_rss(child)[0]
        except OSError:
            continue  # ended meanwhile
    return own, children


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def prefixed_settings(prefix: str, bootstrap: str, **overrides: Any) -> Settings:
    """Settings of a bench run whose topics and consumer group are named after ``prefix`` (so that
    :func:`delete_topics` finds them): ``{prefix}-native``, ``-otlp``, ``-zipkin``, ``-jaeger``, group ``-worker``."""
    names: dict[str, Any] = {
        "topic": f"{prefix}-native",
        "otlp_topic": f"{prefix}-otlp",
        "zipkin_topic": f"{prefix}-zipkin",
        "jaeger_topic": f"{prefix}-jaeger",
        "group": f"{prefix}-worker",
    }
    return Settings.from_env({}, kafka_bootstrap=bootstrap, **(names | overrides))


def settings_env(settings: Settings) -> dict[str, str]:
    """``TRACING_*`` variables reproducing ``settings`` in a child process (only the non-defaults)."""
    defaults = Settings()
    env = {}
    for name in Settings.__struct_fields__:
        value: Any = getattr(settings, name)
        if value == getattr(defaults, name):
            continue
        if isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[PREFIX + name.upper()] = text
    return env


async def wait_http(url: str, timeout_s: float, child: Child | None = None) -> None:
    """Until ``url`` answers 200; raises with the child's log tail if it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child is not None and child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited ({child.process.returncode}):\n{child.tail()}")
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    tail = f":\n{child.tail()}" if child is not None else ""
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s{tail}")


@dataclass
class CounterDrain:
    """A peer's drain, timed from its own span counter."""

    spans_per_s: float  # nan when every span was counted by the first poll: too small to time
    seconds: float  # between the first poll that saw a span and the one that saw them all
    count: float  # the counter at the end (>= the spans asked for)
    page: str  # the last metrics page, for the peer's other counters
    first_at: float  # time.monotonic() of the first poll that saw a span


async def drain_by_counter(
    url: str,
    count_of: Callable[[str], float],
    spans: int,
    child: Child,
    *,
    poll_s: float = 0.05,
    stall_s: float = 120.0,
) -> CounterDrain:
    """Poll the metrics page ``url`` of the peer running as ``child`` until ``count_of(page)`` reaches
    ``spans``. Rate = the spans counted between the first poll that sees any and the poll that sees them
    all, over the time between those polls (so the peer's start-up and group join are left out, as for
    our worker's partition assignment). Raises if the peer exits or its count stops moving for
    ``stall_s``."""
    first: tuple[float, float] | None = None
    first_at = 0.0
    last_count, last_change = -1.0, time.monotonic()
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as response:
                page = await response.text()
            now = time.perf_counter()
            count = count_of(page)
            if first is None and count > 0:
                first, first_at = (now, count), time.monotonic()
            if count >= spans:
                break
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > stall_s:
                raise TimeoutError(f"{child.name} stalled at {count:.0f}/{spans} spans:\n{child.tail()}")
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited ({child.process.returncode}):\n{child.tail()}")
            await asyncio.sleep(poll_s)
    assert first is not None
    if now > first[0]:
        return CounterDrain((count - first[1]) / (now - first[0]), now - first[0], count, page, first_at)
    return CounterDrain(math.nan, 0.0, count, page, first_at)


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {response.status}: {body[:200]!r}")
        return msgspec.json.decode(body)


class PeerServer:
    """A peer (Zipkin, Jaeger) run as a child process that drains ``topic`` as consumer group ``group``:
    started, timed from its start until it answers, drained by its own span counter, stopped."""

    name = "peer"
    stall_s = 120.0

    def __init__(self, settings: Settings, processes: Processes, *, topic: str, group: str) -> None:
        self._settings = settings
        self._processes = processes
        self._topic = topic
        self._group = group
        self._child: Child | None = None
        self._started = 0.0
        self.startup_s: float | None = None

    def _launch(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self._started = time.monotonic()
        self._child = self._processes.start(self.name, args, env)

    async def _answering(self, *urls: tuple[str, float]) -> Child:
        """Until each (url, timeout in s) answers 200; notes the start-up time; the child."""
        assert self._child is not None
        for url, timeout_s in urls:
            await wait_http(url, timeout_s, self._child)
        if self.startup_s is None:
            self.startup_s = time.monotonic() - self._started
        return self._child

    async def _drained(
        self, metrics: str, count_of: Callable[[str], float], spans: int, services: str, poll_s: float
    ) -> tuple[CounterDrain, Any, int]:
        """Drain ``spans`` as :func:`drain_by_counter` times it (failing after :attr:`stall_s` without
        progress); (the drain, the JSON at ``services``, the peer's peak RSS)."""
        child = self._child
        assert child is not None and self.startup_s is not None
        drained = await drain_by_counter(metrics, count_of, spans, child, poll_s=poll_s, stall_s=self.stall_s)
        async with aiohttp.ClientSession() as session:
            found = await get_json(session, services)
        hwm, _ = peak_rss(child.pid)
        return drained, found, hwm

    def stop(self) -> None:
        if self._child is not None:
            self._processes.stop(self._child)
            self._child = None


async def delete_topics(settings: Settings, prefix: str) -> None:
    """Delete every topic whose name starts with ``prefix`` (the run's own topics)."""
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


def log(message: str) -> None:
    """Progress, to stderr (stdout carries the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def script_up(script: Path, args: Sequence[str], scheme: str, timeout_s: float, what: str) -> str:
    """Run ``script up *args`` (a launcher of the project's: PostgreSQL, Cassandra) and return the URL it
    prints (the word starting with ``scheme``); :class:`Skipped` with its last error line if it fails."""
    result = subprocess.run(["bash", str(script), "up", *args], capture_output=True, text=True, timeout=timeout_s)
    url = next((x for x in result.stdout.split() if x.startswith(scheme)), None)
    if result.returncode != 0 or url is None:
        reason = (result.stderr.strip().splitlines() or ["no URL printed"])[-1]
        raise Skipped(f"{what} failed: {reason}")
    return url


def script_down(script: Path, state: Path, timeout_s: float) -> None:
    """``script down`` of the service whose state is in ``state``, its data deleted."""
    subprocess.run(
        ["bash", str(script), "down", "--dir", str(state), "--purge"], capture_output=True, timeout=timeout_s
    )


async def postgres_execute(url: str, statement: str) -> None:
    """Run one statement on a connection of its own to ``url`` (e.g. ``CREATE DATABASE``, which no
    transaction may hold)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class Postgres:
    """A throwaway PostgreSQL cluster from scripts/postgres.sh, stopped and deleted by :meth:`down`."""

    def __init__(self, workdir: Path, processes: Processes) -> None:
        self.dir = workdir / "postgres"
        self._up = False
        processes.on_exit(self.down)

    def up(self) -> str:
        script = ROOT / "scripts" / "postgres.sh"
        if not script.is_file():
            raise Skipped("scripts/postgres.sh is missing")
        try:
            import asyncpg  # noqa: F401  # the PostgreSQL backend's driver
        except ImportError:
            raise Skipped("asyncpg is not installed (pip install -e '.[postgres]')") from None
        self._up = True
        args = ["--port", str(free_port()), "--dir", str(self.dir)]
        return script_up(script, args, "postgresql://", 300, "scripts/postgres.sh up")

    def down(self) -> None:
        if self._up:
            self._up = False
            script_down(ROOT / "scripts" / "postgres.sh", self.dir, 120)
