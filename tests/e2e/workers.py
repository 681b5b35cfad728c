"""Worker processes as they run in production (``python -m ingest``), for crash and scale tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``TRACING_*`` environment that makes a subprocess use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACING_")}
    env.update(
        TRACING_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        TRACING_TOPIC=settings.topic,
        TRACING_OTLP_TOPIC=settings.otlp_topic,
        TRACING_ZIPKIN_TOPIC=settings.zipkin_topic,
        TRACING_JAEGER_TOPIC=settings.jaeger_topic,
        TRACING_GROUP=settings.group,
        TRACING_PARTITIONS=str(settings.partitions),
        TRACING_STORE_URL=settings.store_url,
        TRACING_GRACE_MS=str(settings.grace_ms),
        TRACING_IDLE_TIMEOUT_S=str(settings.idle_timeout_s),
        TRACING_HEARTBEAT_S=str(settings.heartbeat_s),
        TRACING_API_BIND=settings.api_bind,
        TRACING_READ_TOKENS=",".join(settings.read_tokens),
        TRACING_WRITE_TOKENS=",".join(settings.write_tokens),
        PYTHONPATH=str(ROOT),
    )
    for name in Settings.__struct_fields__:  # the connection's security and the archive, when it has any
        if name.startswith(("kafka_security", "kafka_sasl", "kafka_ssl", "archive_")) and getattr(settings, name):
            env[f"TRACING_{name.upper()}"] = str(getattr(settings, name))
    return env


class WorkerProcess:
    """One ``python -m ingest`` child; its output goes to a log file (never to the test's stdout)."""

    def __init__(self, settings: Settings, log_path: Path, module: str = "ingest") -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115  # closed in stop()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            env=settings_env(settings),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._terminated = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no leaving the group."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        self.terminate()
        return self.wait(timeout_s)

    def terminate(self) -> None:
        """SIGTERM (once): the worker starts its clean exit; :meth:`wait` for it."""
        if self.proc.poll() is None and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def wait(self, timeout_s: float = 30) -> int:
        """Wait for the exit (SIGKILL after ``timeout_s``); returns the exit code."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def stop_all(workers: list[WorkerProcess], timeout_s: float = 30) -> list[int]:
    """SIGTERM every worker at once, then wait for each (their clean exits overlap); the exit codes."""
    for worker in workers:
        worker.terminate()
    return [worker.wait(timeout_s) for worker in workers]
