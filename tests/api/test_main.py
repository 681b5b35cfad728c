"""``python -m query_api``: reads the TRACING_* settings, serves, logs one line per request, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import aiohttp
import pytest

from shared.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.kafka


async def test_serves_on_the_configured_address_and_stops_on_sigterm(settings: Settings) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TRACING_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TRACING_TOPIC": settings.topic,
        "TRACING_PARTITIONS": str(settings.partitions),
        "TRACING_STORE_URL": settings.store_url,
        "TRACING_API_BIND": f"127.0.0.1:{port}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "query_api", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(url + "/healthz") as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline, "the API did not start"
                    assert process.returncode is None, "the API exited"
                    await asyncio.sleep(0.1)
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
