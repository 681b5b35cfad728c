"""Shared fixtures.

``kafka_bootstrap`` (session): a real Kafka broker, from the first source that answers:
1. ``TRACING_KAFKA_BOOTSTRAP`` (the setting the product itself reads; ``make test`` sets it);
2. a testcontainers Kafka container (KRaft) when a Docker engine answers;
3. the project's own local broker (``deploy/kafka/kafka.sh``) on free ports in a temp dir.
With ``CI=true`` a missing broker fails the run; it is never a skip.

``cassandra_url`` (session): a real Cassandra, from ``TRACING_TEST_CASSANDRA_URL`` (``make test`` sets it)
or else one node started with ``scripts/cassandra.sh`` on free ports in a temp dir (11-60 s here),
stopped and removed after the session. ``cassandra_keyspace_url`` (function): that URL with a keyspace of
the test's own (``test_<hex>``), dropped afterwards. ``cassandra_store_keyspace`` (session): that URL with
a keyspace for the whole session's stores (each test takes a namespace of its own in it:
:func:`cassandra_namespace_url`), dropped at the end. With ``CI=true`` a missing Cassandra or driver (the
``cassandra`` extra) fails the run; it is never a skip.

``settings`` (function): settings pointing at that broker with topic and group names unique to the test,
so tests never see each other's messages, and a SQLite store in the test's temp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.settings import Settings
from tests.prerequisites import missing, require_cassandra_driver

pytest_plugins = ["tests.leaks"]

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
CASSANDRA_SH = ROOT / "scripts" / "cassandra.sh"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cassandra_ports(nodes: int) -> list[str]:
    """``--port``, ``--storage-port`` and ``--jmx-port`` arguments of ``scripts/cassandra.sh up --nodes N``.

    Node i listens on 127.0.0.i with the same CQL and storage ports, but its JMX port is J + i - 1 on
    127.0.0.1: so one run of ``nodes + 2`` consecutive ports, each checked bindable, taken below the
    kernel's ephemeral range (32768 and up here), where no outgoing connection can take one meanwhile."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - nodes - 2)
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + nodes + 2):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return ["--port", str(base), "--storage-port", str(base + 1), "--jmx-port", str(base + 2)]
    raise RuntimeError(f"no {nodes + 2} consecutive free ports in 20000-32000")


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class KafkaControl:
    """Restarts the test broker when this test run owns it (fault tests); ``None`` dir means it can't."""

    def __init__(self, state_dir: str | None) -> None:
        self.state_dir = state_dir

    def restart(self) -> None:
        if self.state_dir is None:
            raise RuntimeError("this broker is not ours to restart (set TRACING_TEST_KAFKA_DIR)")
        subprocess.run(["bash", str(KAFKA_SH), "restart", "--dir", self.state_dir], check=True, timeout=300)


_kafka_dir: list[str | None] = [None]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from_env = os.environ.get("TRACING_KAFKA_BOOTSTRAP")
    if from_env:
        _kafka_dir[0] = os.environ.get("TRACING_TEST_KAFKA_DIR")
        yield from_env
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    state = tmp_path_factory.mktemp("kafka")
    args = ["--port", str(free_port()), "--controller-port", str(free_port()), "--dir", str(state)]
    result = subprocess.run(["bash", str(KAFKA_SH), "up", *args], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        missing(f"no Kafka broker: local launcher failed:\n{result.stderr[-3000:]}")
    _kafka_dir[0] = str(state)
    try:
        yield f"127.0.0.1:{args[1]}"
    finally:
        subprocess.run(["bash", str(KAFKA_SH), "down", "--dir", str(state)], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def cassandra_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_cassandra_driver()
    from_env = os.environ.get("TRACING_TEST_CASSANDRA_URL")
    if from_env:
        yield from_env
        return
    state = tmp_path_factory.mktemp("cassandra")
    up = [str(CASSANDRA_SH), "up", "--dir", str(state), *cassandra_ports(1)]
    result = subprocess.run(["bash", *up], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        subprocess.run(["bash", str(CASSANDRA_SH), "down", "--dir", str(state)], capture_output=True, timeout=120)
        missing(f"no Cassandra: scripts/cassandra.sh up failed:\n{result.stderr[-3000:]}")
    try:
        yield result.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            ["bash", str(CASSANDRA_SH), "down", "--dir", str(state), "--purge"], capture_output=True, timeout=120
        )


@pytest.fixture
async def cassandra_keyspace_url(cassandra_url: str) -> AsyncIterator[str]:
    """``cassandra_url`` with a new keyspace name (not created: the code under test creates it), dropped
    after the test. Replication and every other option stay those of ``cassandra_url``."""
    from shared.store.cassandra.config import CassandraConfig
    from shared.store.cassandra.session import CassandraSession

    base = CassandraConfig.from_url(cassandra_url)
    keyspace = f"test_{uuid.uuid4().hex[:20]}"
    yield msgspec.structs.replace(base, keyspace=keyspace).url(with_password=True)
    config = msgspec.structs.replace(base, keyspace="system", request_timeout_s=120.0)  # 23 tables to drop
    admin = await CassandraSession.connect(config, create_keyspace=False)
    try:
        await admin.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def cassandra_store_keyspace(cassandra_url: str) -> Iterator[str]:
    """``cassandra_url`` with a keyspace of this session's own (created by the first store opened on it,
    dropped when the session ends)."""
    from shared.store.cassandra.config import CassandraConfig
    from shared.store.cassandra.session import CassandraSession

    base = CassandraConfig.from_url(cassandra_url)
    keyspace = f"test_{uuid.uuid4().hex[:20]}"
    yield msgspec.structs.replace(base, keyspace=keyspace).url(with_password=True)

    async def drop() -> None:
        config = msgspec.structs.replace(base, keyspace="system", request_timeout_s=120.0)  # 23 tables to drop
        admin = await CassandraSession.connect(config, create_keyspace=False)
        try:
            await admin.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        finally:
            await admin.close()

    asyncio.run(drop())


def cassandra_namespace_url(keyspace_url: str) -> str:
    """The session keyspace's URL with a new namespace: an empty store."""
    return f"{keyspace_url}&namespace=t{uuid.uuid4().hex}"


@pytest.fixture
def kafka_control(kafka_bootstrap: str) -> KafkaControl:
    """Control over the session broker; a test that needs it fails in CI if the broker isn't ours."""
    control = KafkaControl(_kafka_dir[0])
    if control.state_dir is None:
        missing("the broker is external: CI must run one this test run can restart (TRACING_TEST_KAFKA_DIR)")
    return control


@pytest.fixture
async def kafka_ready(kafka_bootstrap: str) -> str:
    """The bootstrap address, after an admin client listed the broker's topics (proves it answers)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()
    return kafka_bootstrap


def unique_settings(kafka_bootstrap: str, db: Path, *, label: str = "", **overrides: Any) -> Settings:
    """Settings on that broker whose topics and group no other test uses (``<name>-<label>-<hex>``), and
    a SQLite store in the file ``db``."""
    suffix = f"{label}-{uuid.uuid4().hex[:10]}" if label else uuid.uuid4().hex[:10]
    return Settings.from_env(
        {},
        kafka_bootstrap=kafka_bootstrap,
        topic=f"spans-{suffix}",
        otlp_topic=f"otlp-{suffix}",
        zipkin_topic=f"zipkin-{suffix}",
        jaeger_topic=f"jaeger-{suffix}",
        group=f"ingest-{suffix}",
        store_url=f"sqlite:///{db}",
        **overrides,
    )


@pytest.fixture
def settings(kafka_ready: str, tmp_path: Path) -> Settings:
    return unique_settings(
        kafka_ready, tmp_path / "traces.db", partitions=4, grace_ms=200, idle_timeout_s=3.0, heartbeat_s=0.5
    )


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``mount_point`` (created), unmounted after: a small filesystem
    that fills up. Mounting needs root: without it the test skips, or fails under ``CI=true``."""
    mount_point.mkdir(parents=True, exist_ok=True)
    options = f"size={size_bytes}"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        missing(f"cannot mount a tmpfs (needs root): {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)  # still busy: detach it now
