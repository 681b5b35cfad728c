"""Remote sampling over gRPC with the real Java client: OpenTelemetry Java's Jaeger remote sampler
(``io.opentelemetry:opentelemetry-sdk-extension-jaeger-remote-sampler``) in the SDK, polling the API's
``jaeger.api_v2.SamplingManager/GetSamplingStrategy`` on ``TRACING_REMOTE_SAMPLING_GRPC_BIND``, gets the
per-operation strategy that ``GET /api/sampling`` answers, and samples by it.

Read (opentelemetry-java v1.65.0): ``JaegerRemoteSamplerBuilder.java`` (the method
``jaeger.api_v2.SamplingManager/GetSamplingStrategy`` on the endpoint, polled every interval, the initial
sampler until the first answer), ``JaegerRemoteSampler.java`` (a per-operation strategy becomes
``ParentBased(PerOperationSampler)``, each operation ``TraceIdRatioBased``, others the default probability),
and the OkHttp gRPC sender it uses (``exporters/sender/okhttp``: for an ``http://`` endpoint, HTTP/2 with
prior knowledge, i.e. cleartext h2c, which grpc serves; the path is the endpoint resolved with
``/<service>/<method>``).

The client (``jaeger_remote_java/``) is built with Maven once per source version into
:data:`JAVA_CACHE` (never in the repository; the first build downloads about 28 MB into the cache's own
local repository: under 20 s here, most of it the download).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import aiohttp
import msgspec
import pytest

from query_api import create_app
from shared.settings import Settings
from tests.api.support import LiveApi, load_sampled_traffic, serve, strategy_rates
from tests.conftest import free_port
from tests.e2e.helpers import reader
from tests.prerequisites import missing

pytestmark = pytest.mark.kafka

CLIENT = Path(__file__).parent / "jaeger_remote_java"
JAVA_CACHE = Path.home() / ".cache" / "tracing" / "java"
MAIN_CLASS = "tracing.JaegerRemoteClient"
INTERVAL_S = 20
POLL_MS = 500
STRATEGY_TIMEOUT_S = 60
SPANS = 20_000
UNKNOWN = "GET /unknown"
"""An operation the strategy does not name: sampled at the default probability."""


@pytest.fixture(scope="session")
def java_client() -> list[str]:
    """The command that runs the client (``java -cp ... tracing.JaegerRemoteClient``), built once per source
    version with ``mvn compile`` into :data:`JAVA_CACHE` (classes and runtime jars; Maven's local repository
    ``JAVA_CACHE/m2``), built in a temporary directory and renamed into place when complete."""
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        missing("no Java toolchain (java and mvn) on PATH")
    sources = sorted(path for path in CLIENT.rglob("*") if path.is_file())
    digest = hashlib.sha256()
    for path in sources:
        digest.update(str(path.relative_to(CLIENT)).encode() + b"\0" + path.read_bytes())
    build = JAVA_CACHE / f"jaeger-remote-{digest.hexdigest()[:16]}"
    if not build.exists():
        JAVA_CACHE.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="build-", dir=JAVA_CACHE))
        command = [mvn, "-q", "-B", "-f", str(CLIENT / "pom.xml"), f"-Dmaven.repo.local={JAVA_CACHE / 'm2'}"]
        result = subprocess.run(
            [*command, f"-Dbuild.dir={staging}", "compile"], capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, f"mvn compile failed:\n{(result.stdout + result.stderr)[-3000:]}"
        try:
            staging.rename(build)
        except OSError:  # built meanwhile by another run
            shutil.rmtree(staging, ignore_errors=True)
    classpath = os.pathsep.join([str(build / "classes"), str(build / "dependency" / "*")])
    return [java, "-cp", classpath, MAIN_CLASS]


async def _run_client(command: list[str], bind: str, operations: list[str]) -> list[dict[str, object]]:
    """The client's JSON lines, once it has printed them and exited (it waits for the strategy for up to
    :data:`STRATEGY_TIMEOUT_S`)."""
    args = [f"http://{bind}", "shop", str(POLL_MS), str(STRATEGY_TIMEOUT_S), str(SPANS), *operations]
    process = await asyncio.create_subprocess_exec(
        *command, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=STRATEGY_TIMEOUT_S + 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-3000:]
    return [json.loads(line) for line in out.decode().splitlines()]


def _assert_sampled_at(decisions: dict[str, object], probability: float) -> None:
    """The spans sampled of an operation: all at probability 1, else within five standard deviations."""
    spans, sampled = decisions["spans"], decisions["sampled"]
    assert isinstance(spans, int) and isinstance(sampled, int)
    if probability == 1.0:
        assert sampled == spans, decisions
        return
    sd = math.sqrt(spans * probability * (1 - probability))
    assert abs(sampled - spans * probability) <= 5 * sd + 1, (decisions, probability)


@pytest.mark.timeout(900)  # the first build downloads the dependencies and compiles on 2 shared cores
async def test_the_java_sdk_sampler_gets_the_per_operation_strategy_over_grpc(
    settings: Settings, java_client: list[str]
) -> None:
    bind = f"127.0.0.1:{free_port()}"
    settings = msgspec.structs.replace(settings, remote_sampling_interval_s=INTERVAL_S, remote_sampling_grpc_bind=bind)
    async with reader(settings) as store, serve(create_app(settings, store=store)) as url:
        async with aiohttp.ClientSession() as http:
            api = LiveApi(url=url, http=http, store=store, settings=settings)
            await load_sampled_traffic(api, INTERVAL_S)
            expected = (await api.get("/api/sampling?service=shop")).json
        rates = strategy_rates(expected)
        assert sorted(rates.values()) == pytest.approx([1 / 20, 1 / 2, 1.0]), rates  # three known probabilities
        default = expected["operationSampling"]["defaultSamplingProbability"]
        lines = await _run_client(java_client, bind, [*rates, UNKNOWN])
    strategy, decisions = lines[0], {line["operation"]: line for line in lines[1:]}
    assert strategy["kind"] == "strategy", lines
    # the description prints probabilities to six decimals
    assert strategy["operations"] == pytest.approx(rates, abs=5e-7), strategy["description"]
    assert strategy["default"] == pytest.approx(default, abs=5e-7), strategy["description"]
    assert set(decisions) == {*rates, UNKNOWN}
    for operation, probability in rates.items():
        _assert_sampled_at(decisions[operation], probability)
    _assert_sampled_at(decisions[UNKNOWN], default)
