"""Starting beside a brand-new broker (as ``make run`` does) logs no ERROR or retry warning: the broker
has no group coordinator until it created its offsets topic, and the worker waits for one quietly
(:func:`shared.kafka_access.wait_for_coordinator`) instead of letting the consumer log each refusal; a
new topic's leaders take requests a moment after they are listed, and ``ensure_topics`` waits for that."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.kafka import SpanProducer, ensure_topics
from shared.settings import Settings
from tests.conftest import KAFKA_SH, free_port, unique_settings
from tests.e2e.helpers import gateway_trace, reader, wait_for
from tests.e2e.workers import WorkerProcess

pytestmark = pytest.mark.kafka


@pytest.fixture
def new_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of this test's own, just started on an empty data dir."""
    state = tmp_path / "kafka"
    port = free_port()
    args = ["--port", str(port), "--controller-port", str(free_port()), "--dir", str(state)]
    result = subprocess.run(["bash", str(KAFKA_SH), "up", *args], capture_output=True, text=True, timeout=600)
    try:
        assert result.returncode == 0, f"the broker did not start:\n{result.stderr[-3000:]}"
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(KAFKA_SH), "down", "--dir", str(state)], capture_output=True, timeout=60)


async def test_a_worker_on_a_brand_new_broker_logs_no_error(new_broker: str, tmp_path: Path) -> None:
    settings = unique_settings(new_broker, tmp_path / "traces.db", partitions=2, grace_ms=200)
    await ensure_topics(settings, [settings.topic])
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await admin.start()
    try:
        assert "__consumer_offsets" not in await admin.list_topics()  # no group coordinator yet
    finally:
        await admin.close()
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        trace = gateway_trace(f"quiet-{uuid.uuid4().hex[:10]}", time.time_ns() // 1000)
        async with SpanProducer(settings) as producer:
            await producer.publish(trace)

        async def finalized() -> bool:
            assert worker.alive(), worker.output()
            async with reader(settings) as store:
                stored = await store.get_trace(trace[0].trace_id)
                return stored is not None and stored.state == "finalized"

        await wait_for(finalized, timeout_s=90, what="the trace finalized")
    finally:
        code = worker.stop()
    output = worker.output()
    assert code == 0, output[-3000:]
    assert "partitions assigned" in output
    errors = [line for line in output.splitlines() if " ERROR " in line or "Traceback" in line]
    assert errors == [], output[-3000:]


async def test_a_topic_just_created_elsewhere_takes_messages_on_every_partition(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """As on ``make run``, where the API creates the span topic and the demo traffic starts at once:
    ``ensure_topics`` finds the topic listed, and returns only once its leaders take requests, so a
    producer is not refused (``NotLeaderForPartitionError``, retried and logged as a warning)."""
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.topic, num_partitions=12, replication_factor=1)])
        await wait_for(lambda: _listed(admin, settings.topic), timeout_s=10, what="the topic listed")
    finally:
        await admin.close()
    with caplog.at_level(logging.WARNING, logger="aiokafka"):
        await ensure_topics(settings, [settings.topic])
        producer = AIOKafkaProducer(**settings.kafka_options())
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(settings.topic, b"[]", partition=p) for p in range(12)])
        finally:
            await producer.stop()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiokafka")] == []


async def _listed(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic in await admin.list_topics()
