"""(g) Zipkin's server as the peer: the same spans, as Zipkin v2 JSON lists (one message per trace), on a
pre-filled topic of their own, drained by Zipkin's Kafka collector (one stream) into its in-memory storage.

The jar (``io.zipkin:zipkin-server:<version>:jar:exec``: the Spring Boot jar with the Kafka collector) is
fetched with Maven into ``$TRACING_CACHE_DIR/zipkin`` (default ``~/.cache/tracing/zipkin``), outside the
repository. Progress is read from Zipkin's own ``/prometheus`` counter ``zipkin_collector_spans_total``;
the clock starts at the first poll that sees a span counted, as for our worker's first fetch.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.common import CACHE_DIR, PeerServer, Processes, Skipped, free_port, log
from shared.settings import Settings

VERSION = "3.6.1"
ARTIFACT = f"io.zipkin:zipkin-server:{VERSION}:jar:exec"


def jar_path() -> Path:
    return CACHE_DIR / "zipkin" / f"zipkin-server-{VERSION}-exec.jar"


def fetch_jar() -> Path:
    """The cached jar, downloaded from Maven Central first if missing."""
    jar = jar_path()
    if jar.is_file():
        return jar
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise Skipped(f"{tool} is not installed")
    log(f"fetching {ARTIFACT} with Maven")
    jar.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy",
            f"-Dartifact={ARTIFACT}",
            f"-DoutputDirectory={jar.parent}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0 or not jar.is_file():
        raise Skipped(f"Maven could not fetch {ARTIFACT}: {(result.stdout + result.stderr).strip()[-300:]}")
    return jar


_COUNTER = re.compile(
    r'^(zipkin_collector_(?:spans|spans_dropped|messages)_total)\{transport="kafka",?\}\s+(\S+)', re.M
)


def kafka_counters(prometheus_text: str) -> dict[str, float]:
    """Zipkin's Kafka collector counters from its ``/prometheus`` page (name without ``_total`` → value)."""
    return {
        m.group(1).removeprefix("zipkin_collector_").removesuffix("_total"): float(m.group(2))
        for m in _COUNTER.finditer(prometheus_text)
    }


def _spans_counted(prometheus_text: str) -> float:
    return kafka_counters(prometheus_text).get("spans", 0.0)


@dataclass
class ZipkinResult:
    spans_per_s: float
    seconds: float
    spans: int
    startup_s: float
    peak_rss: int
    dropped: int
    services: int


class ZipkinServer(PeerServer):
    """Zipkin (in-memory storage, Kafka collector with one stream) on ``topic``, which must exist: Zipkin
    does not create it, and broker auto-creation would make a single partition."""

    name = "zipkin"

    def __init__(
        self, settings: Settings, processes: Processes, *, topic: str, group: str, max_spans: int, heap: str = "2g"
    ) -> None:
        super().__init__(settings, processes, topic=topic, group=group)
        self._max_spans = max_spans
        self._heap = heap
        self.base = ""

    def start(self) -> None:
        jar = fetch_jar()
        port = free_port()
        env = {
            "STORAGE_TYPE": "mem",
            "MEM_MAX_SPANS": str(max(self._max_spans, 500_000)),
            "QUERY_PORT": str(port),
            "KAFKA_BOOTSTRAP_SERVERS": self._settings.kafka_bootstrap,
            "KAFKA_TOPIC": self._topic,
            "KAFKA_GROUP_ID": self._group,
            "KAFKA_STREAMS": "1",
        }
        self.base = f"http://127.0.0.1:{port}"
        self._launch(["java", f"-Xmx{self._heap}", "-jar", str(jar)], env)

    async def ready(self) -> None:
        """Until ``/health`` answers 200; notes the start-up time."""
        await self._answering((f"{self.base}/health", 240))

    async def drain(self, spans: int, *, poll_s: float = 0.05) -> ZipkinResult:
        """Until Zipkin counted ``spans`` spans (``zipkin_collector_spans_total``); timed as
        :func:`~bench.common.drain_by_counter` says."""
        await self.ready()
        drained, services, hwm = await self._drained(
            f"{self.base}/prometheus", _spans_counted, spans, f"{self.base}/api/v2/services", poll_s
        )
        assert self.startup_s is not None
        dropped = int(kafka_counters(drained.page).get("spans_dropped", 0))
        return ZipkinResult(
            drained.spans_per_s, drained.seconds, int(drained.count), self.startup_s, hwm, dropped, len(services)
        )
