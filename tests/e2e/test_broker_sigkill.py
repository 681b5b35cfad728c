"""The broker SIGKILLed mid-stream and started again on the same data and ports.

The broker is this test's own (``deploy/kafka/kafka.sh up`` on free ports in the test's temp dir, stopped
after): its JVM gets SIGKILL (no flush, no controlled shutdown, no leaving the group) while two
``python -m ingest`` workers consume and spans are produced; then ``kafka.sh up`` starts it on the same
dir. The producer sends again what the dead broker did not acknowledge, and the workers reconnect by
themselves: every span ends up stored exactly once, every trace finalized.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from shared.kafka import ensure_topics
from shared.settings import Settings
from shared.store import open_store
from tests.conftest import KAFKA_SH, free_port
from tests.e2e.faults import (
    assert_stored_exactly_once,
    consuming,
    produce_steadily,
    wait_until_drained,
)
from tests.e2e.helpers import demo_traces, finalized_counts, wait_for
from tests.e2e.workers import WorkerProcess, stop_all
from tests.prerequisites import missing

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL_SPANS = 6000


class Broker:
    """A broker of ``deploy/kafka/kafka.sh`` in ``state``, on fixed ports."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = free_port()
        self.controller_port = free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> subprocess.CompletedProcess[str]:
        ports = ["--port", str(self.port), "--controller-port", str(self.controller_port)]
        return subprocess.run(
            ["bash", str(KAFKA_SH), "up", *ports, "--dir", str(self.state)], capture_output=True, text=True, timeout=300
        )

    def down(self) -> None:
        subprocess.run(["bash", str(KAFKA_SH), "down", "--dir", str(self.state)], capture_output=True, timeout=120)

    def kill(self) -> None:
        """SIGKILL the JVM; returns once its port is closed. The pid file is removed as an operator would:
        the process it names is gone (or a zombie nobody reaped yet, which ``kafka.sh`` would take for
        alive)."""
        pid_file = self.state / "kafka.pid"
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        pid_file.unlink()

    def listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test's own, stopped after."""
    own = Broker(tmp_path / "kafka")
    try:
        started = own.up()
        if started.returncode != 0:
            missing(f"no Kafka broker: kafka.sh up failed:\n{started.stderr[-3000:]}")
        yield own
    finally:
        own.down()


async def test_broker_sigkilled_mid_stream_and_started_again(
    settings: Settings, broker: Broker, tmp_path: Path
) -> None:
    settings = msgspec.structs.replace(settings, kafka_bootstrap=broker.bootstrap)
    traces = demo_traces(random.Random(57), TOTAL_SPANS, time.time_ns() // 1000 - 5_000_000)
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    store = await open_store(settings)
    workers = [WorkerProcess(settings, tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        await consuming(workers, settings.topic)
        producing = asyncio.create_task(produce_steadily(settings, traces, seconds=12))

        async def progressed() -> bool:
            return (await finalized_counts(store))[1] >= len(traces) // 10

        await wait_for(progressed, timeout_s=90, what="a tenth of the traces finalized")
        broker.kill()
        await wait_for(lambda: not broker.listening(), timeout_s=30, what="the killed broker's port closed")
        assert not producing.done()
        restarted = await asyncio.to_thread(broker.up)
        assert restarted.returncode == 0, restarted.stderr[-3000:]
        await producing
        await wait_until_drained(store, traces, timeout_s=120)
        assert all(w.alive() for w in workers), "\n".join(w.output()[-2000:] for w in workers)
    finally:
        codes = stop_all(workers)
    try:
        assert codes == [0, 0], "\n".join(w.output()[-3000:] for w in workers)
        await assert_stored_exactly_once(store, traces)
    finally:
        await store.close()
