"""Row (j)'s archived reads, two checkouts of the code against one archive, interleaved: an A/B of the read
path under the same host conditions (bench/README.md, row j).

    python -m bench.archive_ab fill  --dir D --url s3://... --spans 2000000
    python -m bench.archive_ab reads --dir D --url s3://... A=path/to/checkout B=path/to/other [--requests N]

``fill`` archives demo spans into the archive at ``--url`` and a SQLite registry in ``--dir`` exactly as
:mod:`bench.archive_scale` fills them (its :func:`~bench.archive_scale.fill`), and keeps the sample of
archived ids and the time range in ``D/filled.json``, so that ``reads`` can be run again and again on the
same archive. ``reads`` starts ``python -m query_api`` of each checkout (its own ``.venv``, run from its
own folder) on that registry and archive, then for each read kind of row (j) sends the same random
requests to every API in turn (the order rotating from one request to the next), checks that every API
gave the same answer (the same JSON, field for field), and prints p50 / p99 per kind and API. Needs the
Kafka broker the API opens its producer on (``TRACING_KAFKA_BOOTSTRAP``) and the S3 credentials of the
archive in the environment (scripts/s3.sh's defaults when unset).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import msgspec

from bench.archive_scale import DAYS, S3_KEYS, SHARDS, Filled, fill, read_kinds
from bench.common import free_port, log, percentile, settings_env, wait_http
from bench.workload import demo_traces
from shared.settings import Settings


def _settings(workdir: Path, url: str) -> Settings:
    return msgspec.structs.replace(
        Settings.from_env(), store_url=f"sqlite:///{workdir / 'archive.db'}", archive_url=url, log_level="WARNING"
    )


async def do_fill(workdir: Path, url: str, spans: int, days: float, jobs: int) -> Filled:
    filled = await fill(_settings(workdir, url), spans, days, SHARDS, jobs)
    log(f"archived {filled.spans:,} spans / {filled.traces:,} traces in {filled.blocks} blocks, {filled.seconds:.0f} s")
    return filled


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[float, object]:
    started = time.perf_counter()
    async with session.get(url) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {response.status}: {body[:200]!r}")
    return (time.perf_counter() - started) * 1000, msgspec.json.decode(body)


async def do_reads(
    workdir: Path, filled: Filled, url: str, checkouts: dict[str, Path], requests: int, warmup: int
) -> None:
    services = sorted({sp.service_name for t in demo_traces(20_000, start_us=0) for sp in t})
    settings = _settings(workdir, url)
    bases: dict[str, str] = {}
    children: list[subprocess.Popen[bytes]] = []
    try:
        for label, checkout in checkouts.items():
            port = free_port()
            api = msgspec.structs.replace(settings, api_bind=f"127.0.0.1:{port}")
            children.append(
                _api(checkout, {**os.environ, **S3_KEYS, **settings_env(api)}, workdir / f"api-{label}.log")
            )
            bases[label] = f"http://127.0.0.1:{port}"
            await wait_http(f"{bases[label]}/healthz", 60)
        labels = list(bases)
        table: list[tuple[str, str, float, float]] = []
        async with aiohttp.ClientSession() as session:
            for name, (path, check) in read_kinds(filled, services, random.Random(9)).items():
                samples: dict[str, list[float]] = {label: [] for label in labels}
                differ = 0
                for i in range(warmup + requests):
                    target = path()
                    answers = []
                    turn = labels[i % len(labels) :] + labels[: i % len(labels)]
                    for label in turn:
                        took, answer = await _get(session, bases[label] + target)
                        check(answer)
                        answers.append(answer)
                        if i >= warmup:
                            samples[label].append(took)
                    differ += any(a != answers[0] for a in answers[1:])
                for label in labels:
                    p50, p99 = percentile(samples[label], 0.5), percentile(samples[label], 0.99)
                    table.append((name, label, p50, p99))
                    log(f"{name} {label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
                if differ:
                    log(f"{name}: {differ} of {warmup + requests} answers differ between the APIs")
                    table.append((name, "DIFFERENT ANSWERS", float(differ), 0.0))
        print(f"| read | API | p50 ms | p99 ms |\n|---|---|---|---|  ({requests} requests a kind and API, interleaved)")
        for name, label, p50, p99 in table:
            print(f"| {name} | {label} | {p50:.1f} | {p99:.1f} |")
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=30)


def _api(checkout: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m query_api`` of ``checkout`` (its own virtualenv, run from its folder)."""
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [str(checkout / ".venv" / "bin" / "python"), "-m", "query_api"],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["fill", "reads"])
    parser.add_argument("checkouts", nargs="*", help="LABEL=checkout for reads (each with its own .venv)")
    parser.add_argument("--dir", type=Path, required=True, help="the registry and filled.json")
    parser.add_argument("--url", required=True, help="the archive (TRACING_ARCHIVE_URL)")
    parser.add_argument("--spans", type=int, default=2_000_000)
    parser.add_argument("--days", type=float, default=DAYS)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--requests", type=int, default=100, help="timed requests a kind and API")
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_intermixed_args()
    for key, value in S3_KEYS.items():
        os.environ.setdefault(key, value)
    if args.what == "fill":
        args.dir.mkdir(parents=True, exist_ok=True)
        filled = asyncio.run(do_fill(args.dir, args.url, args.spans, args.days, args.jobs))
        (args.dir / "filled.json").write_text(json.dumps(filled.__dict__))
        return
    checkouts = {label: Path(path).resolve() for label, _, path in (c.partition("=") for c in args.checkouts)}
    if not checkouts:
        parser.error("reads needs LABEL=checkout arguments")
    filled = Filled(**json.loads((args.dir / "filled.json").read_text()))
    asyncio.run(do_reads(args.dir, filled, args.url, checkouts, args.requests, args.warmup))


if __name__ == "__main__":
    main()
