"""Kafka security end to end, on a local broker that demands it (:mod:`tests.e2e.secure_kafka`: SASL_SSL
with SCRAM, mutual TLS, the standard authorizer's ACLs; one broker for the module).

With the right credentials the worker, the API's write endpoints, topic creation and the dead-letter
topics all work; with the wrong ones (a password, an untrusted or rejected certificate, a missing ACL)
``python -m ingest`` and ``python -m query_api`` stop at once with one line naming the cause and the
setting, and no secret shows in their output."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from shared.kafka import SpanProducer, ensure_topics
from shared.settings import Settings
from tests.conftest import free_port, unique_settings
from tests.e2e.helpers import dead_letters, gateway_trace, reader, running_worker, wait_for
from tests.e2e.secure_kafka import SecureBroker, start_secure_broker, stop
from tests.e2e.workers import WorkerProcess

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecureBroker]:
    d = tmp_path_factory.mktemp("secure-kafka")
    broker = start_secure_broker(d, (free_port(), free_port(), free_port()))
    try:
        for principal in ("User:tracer", "User:tracer256", "User:CN=tracer-tls"):
            await broker.allow(principal)
        yield broker
    finally:
        stop(d)


@pytest.fixture
def base(secure: SecureBroker, tmp_path: Path) -> Settings:
    """Names of the test's own, which the ACLs cover; a SQLite store in its temp dir."""
    return unique_settings(
        secure.sasl_bootstrap, tmp_path / "traces.db", label="sec", partitions=2, grace_ms=200, idle_timeout_s=3.0,
        heartbeat_s=0.5,
    )  # fmt: skip


def secrets_of(secure: SecureBroker) -> list[str]:
    return [*secure.passwords.values(), secure.pki.key_password, secure.pki.store_password]


def assert_clean(output: str, secure: SecureBroker) -> None:
    """No ERROR line, no traceback, no secret."""
    assert " ERROR " not in output and "Traceback" not in output, output[-3000:]
    for secret in secrets_of(secure):
        assert secret not in output


async def test_worker_and_api_over_sasl_ssl_with_scram_sha_512(secure: SecureBroker, base: Settings) -> None:
    """``python -m ingest`` and ``python -m query_api`` as user ``tracer``: the worker creates its topics
    and their dead-letter topics, the write endpoints publish, the trace is stored and finalized, and a
    poison message lands on the dead-letter topic."""
    settings = secure.scram(base, "tracer", api_bind=f"127.0.0.1:{free_port()}")
    log_dir = Path(settings.store_url.removeprefix("sqlite:///")).parent
    worker = WorkerProcess(settings, log_dir / "worker.log")
    api = WorkerProcess(settings, log_dir / "api.log", module="query_api")
    url = f"http://{settings.api_bind}"
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                assert api.alive() and worker.alive(), api.output() + worker.output()
                try:
                    async with http.get(url + "/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, timeout_s=90, what="the API answering /healthz")
            async with http.post(url + "/traces/start", json={"serviceName": "shop", "operationName": "buy"}) as r:
                assert r.status == 201, await r.text()
                started = await r.json()
            child = {"traceId": started["traceId"], "parentSpanId": started["spanId"], "serviceName": "db",
                     "operationName": "INSERT", "duration": 5}  # fmt: skip
            async with http.post(url + "/traces/span", json=child) as r:
                assert r.status == 201, await r.text()
            async with http.post(url + "/traces/span/finish", json={"spanId": started["spanId"]}) as r:
                assert r.status == 201, await r.text()

            async def finalized() -> bool:
                async with http.get(f"{url}/traces/{started['traceId']}") as response:
                    body = await response.json() if response.status == 200 else {}
                return body.get("status") == "completed" and body.get("serviceCalls") == 2

            await wait_for(finalized, timeout_s=60, what="the trace written through the API finalized")
        async with SpanProducer(settings) as producer:
            await producer.send_raw(b"{not a span", key=b"poison")
        assert [value for value, _ in await dead_letters(settings, settings.topic, 1)] == [b"{not a span"]
    finally:
        codes = (api.stop(), worker.stop())
    assert codes == (0, 0), api.output()[-3000:] + worker.output()[-3000:]
    for process in (worker, api):
        assert_clean(process.output(), secure)


async def test_worker_over_mutual_tls_with_an_encrypted_key(secure: SecureBroker, base: Settings) -> None:
    """The Worker with a client certificate (``User:CN=tracer-tls``) whose key needs its password: every
    trace stored and finalized, the poison message on the dead-letter topic."""
    settings = secure.mtls(base)
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    now_us = time.time_ns() // 1000
    traces = [gateway_trace(f"mtls-{i}-{uuid.uuid4().hex[:6]}", now_us + i) for i in range(20)]
    async with SpanProducer(settings) as producer, running_worker(settings) as worker:
        for spans in traces:
            await producer.send(spans)
        await producer.send_raw(b"[1, 2", key=b"poison")
        await producer.flush()

        async def all_finalized() -> bool:
            async with reader(settings) as store:
                for spans in traces:
                    trace = await store.get_trace(spans[0].trace_id)
                    if trace is None or trace.state != "finalized" or len(trace.spans) != 2:
                        return False
            return True

        await wait_for(all_finalized, timeout_s=60, what="every trace finalized")
        await wait_for(lambda: worker.counters.dead_lettered == 1, timeout_s=30, what="the poison dead-lettered")
    assert [value for value, _ in await dead_letters(settings, settings.topic, 1)] == [b"[1, 2"]


async def test_scram_sha_256(secure: SecureBroker, base: Settings) -> None:
    """The other SCRAM mechanism, as user ``tracer256``: a worker stores and finalizes a trace."""
    settings = secure.scram(base, "tracer256", mechanism="SCRAM-SHA-256")
    trace = gateway_trace(f"sha256-{uuid.uuid4().hex[:8]}", time.time_ns() // 1000)
    async with running_worker(settings), SpanProducer(settings) as producer:
        await producer.publish(trace)

        async def finalized() -> bool:
            async with reader(settings) as store:
                stored = await store.get_trace(trace[0].trace_id)
                return stored is not None and stored.state == "finalized"

        await wait_for(finalized, timeout_s=60, what="the trace finalized")


Case = Callable[[SecureBroker, Settings], Settings]

REFUSALS: dict[str, tuple[Case, str, str]] = {
    "wrong password": (
        lambda b, s: b.scram(s, "tracer", kafka_sasl_password="not-" + b.passwords["tracer"]),
        "authentication failed for user 'tracer' (SASL/SCRAM-SHA-512)",
        "TRACING_KAFKA_SASL_PASSWORD",
    ),
    "untrusted broker certificate": (
        lambda b, s: b.scram(s, "tracer", kafka_ssl_cafile=str(b.pki.rogue_ca)),
        "certificate at 127.0.0.1:",
        "TRACING_KAFKA_SSL_CAFILE",
    ),
    "client certificate rejected": (
        lambda b, s: b.mtls(
            s, kafka_ssl_certfile=str(b.pki.cert("rogue-client")), kafka_ssl_keyfile=str(b.pki.key("rogue-client"))
        ),
        "rejected the client certificate",
        "TRACING_KAFKA_SSL_CERTFILE",
    ),
    "no topic ACL": (
        lambda b, s: b.scram(s, "noacl"),
        "user 'noacl' (TRACING_KAFKA_SASL_USERNAME) may not create or describe topic",
        "TOPIC_AUTHORIZATION_FAILED",
    ),
    "no group ACL": (
        lambda b, s: b.scram(s, "tracer", group=f"other-{uuid.uuid4().hex[:8]}"),
        "may not use consumer group 'other-",
        "TRACING_GROUP",
    ),
}


@pytest.mark.parametrize(
    ("module", "case"),
    [("ingest", case) for case in REFUSALS] + [("query_api", case) for case in REFUSALS if "group" not in case],
)
async def test_a_refusal_stops_the_process_with_one_line(
    secure: SecureBroker, base: Settings, tmp_path: Path, module: str, case: str
) -> None:
    make, cause, setting = REFUSALS[case]
    settings = make(secure, base)
    process = WorkerProcess(settings, tmp_path / f"{module}.log", module=module)
    started = time.monotonic()
    try:
        process.proc.wait(timeout=120)
    finally:
        code = process.stop()
    output = process.output()
    lines = [line for line in output.splitlines() if "kafka:" in line]
    assert code == 1, output[-3000:]
    assert len(lines) == 1, output[-3000:]
    assert cause in lines[0] and setting in lines[0], lines[0]
    assert lines[0].startswith(f"{module}: kafka: ")
    assert "retrying" not in output
    assert_clean(output, secure)
    assert time.monotonic() - started < 60
