"""What ``make run`` shows a newcomer, on the pipeline's pieces: the demo traffic (``tracing loadgen``'s
generator) through the real broker into a worker, read back through the query API as the Jaeger UI reads
it. Every demo service must have server spans in the Monitor tab's metrics (``/api/metrics/*``, default
span kind ``server``) and its process's resource tags in ``/api/traces/{id}`` (span detail's "Process")."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from query_api import create_app
from shared.demo import INSTANCES, SERVICES
from shared.loadgen import generate
from shared.settings import Settings
from tests.api.support import serve
from tests.e2e.helpers import reader, running_worker, wait_for

pytestmark = pytest.mark.kafka

TRACES = 120
RESOURCE_KEYS = {"host.name", "service.version", "service.instance.id"}


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, f"{url}: {response.status} {await response.text()}"
        return await response.json()


async def test_every_demo_service_has_server_metrics_and_resource_tags(settings: Settings) -> None:
    async with running_worker(settings) as worker:
        await wait_for(lambda: bool(worker.shards), timeout_s=30, what="partitions assigned")
        report = await generate(settings, traces=TRACES, rate=None, seed=7, progress=False)
        assert report.traces == TRACES

        async def all_finalized() -> bool:
            async with reader(settings) as store:
                stats = await store.stats()
            return stats.total_traces == TRACES and stats.active_traces == 0

        await wait_for(all_finalized, timeout_s=90, what=f"{TRACES} demo traces finalized")
        assert worker.counters.dead_lettered == 0

    async with (
        reader(settings) as store,
        serve(create_app(settings, store=store)) as base,
        aiohttp.ClientSession() as http,
    ):
        services = (await _get(http, f"{base}/api/services"))["data"]
        assert sorted(services) == sorted(SERVICES)
        # the points are per minute, each over the minutes before it: as the Monitor tab shows it a minute on
        end_ms = time.time_ns() // 1_000_000 + 60_000
        window = f"endTs={end_ms}&lookback=3600000&step=60000&ratePer=600000"
        for service in services:
            calls = await _get(http, f"{base}/api/metrics/calls?service={service}&spanKind=server&{window}")
            assert calls["metrics"], f"{service} has no server spans in /api/metrics/calls"
            assert calls["metrics"][0]["labels"] == [{"name": "service_name", "value": service}]
            assert calls["metrics"][0]["metricPoints"][-1]["gaugeValue"]["doubleValue"] > 0
            found = (await _get(http, f"{base}/api/traces?service={service}&limit=1&lookback=2h"))["data"]
            assert found, f"no trace of {service}"
            trace = (await _get(http, f"{base}/api/traces/{found[0]['traceID']}"))["data"][0]
            for process in trace["processes"].values():
                tags = {tag["key"]: tag["value"] for tag in process["tags"]}
                assert set(tags) >= RESOURCE_KEYS, f"process {process['serviceName']}: {tags}"
                assert {key: tags[key] for key in RESOURCE_KEYS} in [
                    {key: resource[key] for key in RESOURCE_KEYS} for resource in INSTANCES[process["serviceName"]]
                ]
            kinds = {
                tag["value"] for span in trace["spans"] for tag in span["tags"] if tag["key"] == "span.kind"
            }  # fmt: skip
            assert {"server", "client"} <= kinds
