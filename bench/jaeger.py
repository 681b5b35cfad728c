"""(h) Jaeger v2 as the peer: the same spans as OTLP protobuf (one ``ExportTraceServiceRequest`` per trace,
no key, as the OpenTelemetry Collector's Kafka exporter writes them), on a pre-filled topic of their own,
drained by Jaeger's ``kafka`` receiver → ``batch`` processor → ``jaeger_storage_exporter`` into its
``memory`` backend.

Jaeger v2.12.0, the Go module ``github.com/jaegertracing/jaeger@v1.75.0``: the package registry's approved
release of that module (the proxy also serves v1.76.0, which is not an approved release). ``go install``
refuses it (its go.mod has replace directives), so :func:`build_binary` builds it as a tool of a throwaway
module (``go mod init``, ``go get -tool``, ``go build``), nice'd, into ``$TRACING_CACHE_DIR/jaeger`` (default
``~/.cache/tracing/jaeger``), outside the repository: hundreds of MB of modules and 5-15 minutes on two
cores the first time (``python bench/jaeger.py --build`` does it ahead of a run).

Progress is read from the Collector's own internal telemetry (Prometheus, on a port of its own):
``otelcol_exporter_sent_spans`` of the storage exporter (spans written to the memory store), the clock
starting at the first poll that sees one, as for Zipkin (g).

    python bench/jaeger.py --build      # build (or find) the binary; prints its path, size and version
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE_DIR, Child, PeerServer, Processes, Skipped, free_port, log, mib
from shared.settings import Settings

MODULE = "github.com/jaegertracing/jaeger"
PACKAGE = f"{MODULE}/cmd/jaeger"
VERSION = "v1.75.0"
"""The Go module version (the approved release); Jaeger calls the same release v2.12.0."""
RELEASE = "v2.12.0"
STAMP = f"-X {MODULE}/internal/version.latestVersion={RELEASE}"
"""The version stamp Jaeger's own release build sets (``jaeger version`` reads "" without it)."""
BUILD_TIMEOUT_S = 45 * 60.0
STORE = "bench_memory"


def binary_path() -> Path:
    return CACHE_DIR / "jaeger" / f"jaeger-{VERSION}"


def _run_step(args: Sequence[str], cwd: Path, log_file: Path, deadline: float) -> None:
    """Run one build step nice'd in a process group of its own (``go`` starts compilers), appending its
    output to ``log_file``; the whole group is killed if the step fails to finish by ``deadline`` or the
    bench is interrupted."""
    with log_file.open("ab") as out:
        out.write(f"$ {' '.join(args)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            ["nice", "-n", "10", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GOWORK": "off"},  # the throwaway module alone, whatever the caller's workspace
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise Skipped(f"the Jaeger build did not finish within {BUILD_TIMEOUT_S / 60:.0f} min") from None
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    if code != 0:
        tail = " ".join(log_file.read_text(errors="replace").splitlines()[-3:])
        raise Skipped(f"`{' '.join(args[:3])}` failed ({code}): {tail[-240:]}")


def build_binary() -> Path:
    """The cached Jaeger binary, built from the Go module proxy first if missing (nice'd, blocking; the
    log goes to ``build.log`` beside it). Raises :class:`Skipped` with the reason when Go is missing or the
    build fails; a half-built binary is never left under the final name."""
    binary = binary_path()
    if binary.is_file():
        return binary
    if shutil.which("go") is None:
        raise Skipped("go is not installed (Jaeger is built from the Go module proxy)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    log_file = binary.parent / "build.log"
    log_file.write_bytes(b"")
    log(f"building Jaeger {VERSION} ({RELEASE}) from the Go module proxy: 5-15 min the first time; log in {log_file}")
    started = time.monotonic()
    deadline = started + BUILD_TIMEOUT_S
    partial = binary.with_name(binary.name + ".partial")
    try:
        with tempfile.TemporaryDirectory(dir=binary.parent, prefix="module-") as module:
            for step in (
                ["go", "mod", "init", "local/jaegertool"],
                ["go", "get", "-tool", f"{PACKAGE}@{VERSION}"],
                ["go", "build", "-ldflags", STAMP, "-o", str(partial), PACKAGE],
            ):
                _run_step(step, Path(module), log_file, deadline)
        os.replace(partial, binary)
    finally:
        partial.unlink(missing_ok=True)
    log(f"built {binary} in {time.monotonic() - started:.0f} s ({mib(binary.stat().st_size)})")
    return binary


def version_of(binary: Path) -> str:
    """What the binary says it is: ``jaeger version``'s ``gitVersion`` (stamped by :func:`build_binary`)
    and the module version Go recorded in it (``go version -m``)."""
    said = module = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError, msgspec.DecodeError, AttributeError):
        out = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30).stdout
        said = str(msgspec.json.decode(out[out.find("{") : out.rfind("}") + 1]).get("gitVersion", ""))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info = subprocess.run(["go", "version", "-m", str(binary)], capture_output=True, text=True, timeout=30)
        found = re.search(rf"^\s+mod\s+{re.escape(MODULE)}\s+(\S+)", info.stdout, re.M)
        module = found.group(1) if found else ""
    return f"`jaeger version`: {said or 'no version'}; Go module {module or 'unknown'}"


_SPAN_COUNTER = re.compile(
    r"^otelcol_(receiver_accepted|receiver_refused|exporter_sent|exporter_send_failed)_spans(?:_total)?"
    r"(?:\{[^}]*\})?\s+(\S+)",
    re.M,
)


def span_counters(prometheus_text: str) -> dict[str, float]:
    """The Collector's span counters from its internal telemetry page, summed over label sets:
    ``receiver_accepted``, ``receiver_refused``, ``exporter_sent``, ``exporter_send_failed`` (names with or
    without the ``_total`` suffix Prometheus adds to counters)."""
    out: dict[str, float] = {}
    for m in _SPAN_COUNTER.finditer(prometheus_text):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


_TRACES_INSERTS = re.compile(r'^jaeger_storage_inserts(?:_total)?\{[^}]*table="traces"[^}]*\}\s+(\S+)', re.M)


def spans_inserted(prometheus_text: str) -> float:
    """Rows Jaeger's Cassandra writer inserted into its ``traces`` table: one a span, counted as each is
    written (its exporter counts a batch only once every span of it and their index rows are written)."""
    return sum(float(m.group(1)) for m in _TRACES_INSERTS.finditer(prometheus_text))


def _spans_sent(prometheus_text: str) -> float:
    """Spans the storage exporter sent to the memory store."""
    return span_counters(prometheus_text).get("exporter_sent", 0.0)


def badger(keys: Path, values: Path) -> dict[str, object]:
    """The storage backend of Jaeger's embedded persistent store, in ``keys`` and ``values``."""
    return {"badger": {"directories": {"keys": str(keys), "values": str(values)}, "ephemeral": False}}


def cassandra(port: int, keyspace: str) -> dict[str, object]:
    """Jaeger's Cassandra storage on the node at 127.0.0.1:``port``, creating its schema (its
    ``schema.create`` option: the keyspace with replication factor 1 and Jaeger's tables) at start-up."""
    return {
        "cassandra": {
            "schema": {"keyspace": keyspace, "create": True, "replication_factor": 1},
            "connection": {"servers": ["127.0.0.1"], "port": port, "tls": {"insecure": True}},
        }
    }


def config(
    *,
    brokers: str,
    topic: str,
    group: str,
    backend: Mapping[str, object],
    query_port: int,
    grpc_port: int,
    metrics_port: int,
) -> bytes:
    """The Collector configuration (JSON, which is YAML): kafka receiver (OTLP protobuf, from the earliest
    offset) → batch → jaeger_storage_exporter into ``backend`` (e.g. ``{"memory": {"max_traces": N}}``,
    :func:`badger`, :func:`cassandra`); the query API on ``query_port`` (gRPC on ``grpc_port``, not tracing
    itself) and the internal telemetry on ``metrics_port``, all on 127.0.0.1."""
    document = {
        "extensions": {
            "jaeger_storage": {"backends": {STORE: dict(backend)}},
            "jaeger_query": {
                "storage": {"traces": STORE},
                "enable_tracing": False,  # on by default: it traces itself to 127.0.0.1:4317, and waits 10 s at exit
                "http": {"endpoint": f"127.0.0.1:{query_port}"},
                "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
            },
        },
        "receivers": {
            "kafka": {
                "brokers": [b.strip() for b in brokers.split(",") if b.strip()],
                "traces": {"topic": topic, "encoding": "otlp_proto"},
                "group_id": group,
                "initial_offset": "earliest",
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": STORE}},
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {"receivers": ["kafka"], "processors": ["batch"], "exporters": ["jaeger_storage_exporter"]}
            },
            "telemetry": {
                "metrics": {
                    "level": "detailed",
                    "readers": [{"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": metrics_port}}}}],
                },
                "logs": {"level": "warn"},
            },
        },
    }
    return msgspec.json.encode(document)


@dataclass
class JaegerResult:
    spans_per_s: float
    seconds: float
    spans: int
    accepted: int  # by the kafka receiver
    failed: int  # refused by the receiver or failed in the exporter
    startup_s: float  # until the query API answered
    first_span_s: float  # from the start until the first span was counted (the consumer group join)
    peak_rss: int
    services: int


class JaegerServer(PeerServer):
    """Jaeger v2 (kafka receiver → batch → storage ``backend``, by default a memory store of
    ``max_traces``) on ``topic``, which must exist (created with the bench's partitions; broker
    auto-creation would make one)."""

    name = "jaeger"

    def __init__(
        self,
        settings: Settings,
        processes: Processes,
        workdir: Path,
        *,
        topic: str,
        group: str,
        max_traces: int = 100_000,
        backend: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(settings, processes, topic=topic, group=group)
        self._workdir = workdir
        self._backend = backend or {"memory": {"max_traces": max_traces}}
        self.query = ""
        self.metrics = ""

    def start(self) -> None:
        binary = build_binary()
        query_port, metrics_port = free_port(), free_port()
        path = self._workdir / "jaeger-config.yaml"
        path.write_bytes(
            config(
                brokers=self._settings.kafka_bootstrap,
                topic=self._topic,
                group=self._group,
                backend=self._backend,
                query_port=query_port,
                grpc_port=free_port(),
                metrics_port=metrics_port,
            )
        )
        self.query = f"http://127.0.0.1:{query_port}"
        self.metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        self._launch([str(binary), f"--config={path}"])

    @property
    def child(self) -> Child:
        assert self._child is not None, "not started"
        return self._child

    async def ready(self) -> None:
        """Until the query API answers (the storage extension is up; the pipeline starts with it)."""
        await self._answering((f"{self.query}/api/services", 120), (self.metrics, 30))

    async def drain(self, spans: int, *, poll_s: float = 0.05) -> JaegerResult:
        """Until the storage exporter sent ``spans`` spans to the memory store; timed as
        :func:`~bench.common.drain_by_counter` says."""
        await self.ready()
        drained, services, hwm = await self._drained(
            self.metrics, _spans_sent, spans, f"{self.query}/api/services", poll_s
        )
        assert self.startup_s is not None
        counters = span_counters(drained.page)
        return JaegerResult(
            drained.spans_per_s,
            drained.seconds,
            int(drained.count),
            int(counters.get("receiver_accepted", 0)),
            int(counters.get("receiver_refused", 0) + counters.get("exporter_send_failed", 0)),
            self.startup_s,
            drained.first_at - self._started,
            hwm,
            len(services.get("data") or []),
        )


@dataclass
class Sampled:
    spans_per_s: float  # between the first count seen and the last
    spans: int  # counted at the last poll, before the kill
    seconds: float


async def sample(server: JaegerServer, count_of: Callable[[str], float], spans: int, window_s: float) -> Sampled:
    """Count ``count_of`` on the server's metrics page from the first poll that sees a span, for
    ``window_s`` or until ``spans``, then SIGKILL it: nothing more is written after the last count but the
    rows of the spans in flight (a few). For a store too slow to drain the whole topic within a run."""
    await server.ready()
    child = server.child
    first: tuple[float, float] | None = None
    deadline = time.monotonic() + server.stall_s
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(server.metrics) as response:
                page = await response.text()
            now, count = time.perf_counter(), count_of(page)
            if first is None and count > 0:
                first = (now, count)
            if first is None and time.monotonic() > deadline:
                raise TimeoutError(f"jaeger counted no span in {server.stall_s:.0f} s:\n{child.tail()}")
            if first is not None and (now - first[0] >= window_s or count >= spans):
                break
            if child.process.poll() is not None:
                raise RuntimeError(f"jaeger exited ({child.process.returncode}):\n{child.tail()}")
            await asyncio.sleep(0.2)
    child.process.kill()
    server.stop()
    seconds = now - first[0]
    return Sampled((count - first[1]) / seconds if seconds else math.nan, int(count), seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="store_true", help="build the binary if it is missing, then describe it")
    args = parser.parse_args(argv)
    if not args.build:
        parser.print_help()
        return 2
    try:
        binary = build_binary()
    except Skipped as exc:
        print(f"n/a ({exc})", file=sys.stderr)
        return 1
    print(f"{binary}: {mib(binary.stat().st_size)}, {version_of(binary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
