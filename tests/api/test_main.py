"""``python -m query_api``: reads the TRACING_* settings, serves, logs one line per request, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer

from shared.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.kafka


async def _start_api(settings: Settings, port: int, bootstrap: str) -> asyncio.subprocess.Process:
    """``python -m query_api`` on ``port`` with ``settings``' topic and store, its stderr piped."""
    env = {
        **os.environ,
        "TRACING_KAFKA_BOOTSTRAP": bootstrap,
        "TRACING_TOPIC": settings.topic,
        "TRACING_PARTITIONS": str(settings.partitions),
        "TRACING_STORE_URL": settings.store_url,
        "TRACING_API_BIND": f"127.0.0.1:{port}",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "query_api", env=env, stderr=asyncio.subprocess.PIPE
    )


async def _wait_serving(http: aiohttp.ClientSession, url: str, process: asyncio.subprocess.Process) -> None:
    """Until ``url`` answers 200 (30 s at most, and the API still running)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            async with http.get(url) as response:
                assert response.status == 200
                return
        except aiohttp.ClientConnectionError:
            assert time.monotonic() < deadline, "the API did not start"
            assert process.returncode is None, "the API exited"
            await asyncio.sleep(0.1)


async def test_serves_on_the_configured_address_and_stops_on_sigterm(settings: Settings) -> None:
    port = free_port()
    process = await _start_api(settings, port, settings.kafka_bootstrap)
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await _wait_serving(http, url + "/healthz", process)
            async with http.get(url + "/traces/query?limit=1") as response:
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = err.decode()
    assert process.returncode == 0, log
    assert "method=GET path=/healthz status=200 ms=" in log
    assert "method=GET path=/traces/query status=200 ms=" in log
    assert log.rstrip().endswith("stopped")


async def test_a_bad_setting_fails_fast_naming_it() -> None:
    env = {**os.environ, "TRACING_API_BIND": "nowhere"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "query_api", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 2
    assert "TRACING_API_BIND" in err.decode()


async def _relay(upstream: str, port: int) -> asyncio.Server:
    """A TCP relay on ``port`` to the broker at ``upstream``: a bootstrap address that appears when it starts
    (the broker's metadata then names the broker's own address)."""
    host, _, upstream_port = upstream.rpartition(":")

    async def pipe(source: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                out.write(data)
                await out.drain()
        except ConnectionError:
            pass
        finally:
            out.close()

    async def serve(client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        broker, to_broker = await asyncio.open_connection(host, int(upstream_port))
        await asyncio.gather(pipe(client, to_broker), pipe(broker, to_client))

    return await asyncio.start_server(serve, "127.0.0.1", port)


async def test_without_a_broker_it_serves_reads_and_takes_writes_once_one_is_there(settings: Settings) -> None:
    port, kafka_port = free_port(), free_port()
    process = await _start_api(settings, port, f"127.0.0.1:{kafka_port}")  # nothing there yet
    relay: asyncio.Server | None = None
    body = {"serviceName": "checkout", "operationName": "GET /cart"}
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await _wait_serving(http, url + "/traces/query?limit=1", process)
            async with http.post(url + "/traces/start", json=body) as response:
                assert response.status == 503
                assert "TRACING_KAFKA_BOOTSTRAP" in (await response.json())["error"]
                assert int(response.headers["Retry-After"]) > 0

            relay = await _relay(settings.kafka_bootstrap, kafka_port)
            deadline = time.monotonic() + 60
            while True:
                async with http.post(url + "/traces/start", json=body) as response:
                    if response.status == 201:
                        trace_id = (await response.json())["traceId"]
                        break
                    assert response.status == 503
                assert time.monotonic() < deadline, "writes were still refused a minute after the broker came"
                await asyncio.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if relay is not None:
            relay.close()
    log = err.decode()
    assert process.returncode == 0, log
    assert "ERROR" not in log and "Traceback" not in log, log
    assert log.count("kafka not reachable") == 1, log  # said once, not per attempt
    assert "writes accepted" in log
    keys = await _keys(settings, settings.topic)
    assert trace_id.encode() in keys


async def _keys(settings: Settings, topic: str) -> set[bytes]:
    """The keys of every message on ``topic`` (all sent before this is called)."""
    consumer = AIOKafkaConsumer(
        topic, **settings.kafka_options(), group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.assignment() or set()
        while not partitions:
            await asyncio.sleep(0.05)
            partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))
        keys: set[bytes] = set()
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batches = await consumer.getmany(timeout_ms=1000)
            keys |= {message.key for messages in batches.values() for message in messages if message.key is not None}
        return keys
    finally:
        await consumer.stop()
