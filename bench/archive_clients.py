"""The archive's S3 client, chosen by measurement: pyarrow's ``S3FileSystem``, obstore and aiobotocore against
a real S3-compatible server (S3Proxy of ``scripts/s3.sh``), on what the archive does: PUT a block of 1 and
8 MB, GET it whole, ranged GETs of a row group (128 KiB, the size of a demo block's row group), and a
listing of 200 objects. Each operation is timed ``--rounds`` times; the table shows the median and p95 in
ms (and MB/s for the whole-object ones).

    bash scripts/s3.sh up            # prints the URL; export the AWS_* line it prints too
    python -m bench.archive_clients "s3://tracing/?endpoint=http://127.0.0.1:9000&region=us-east-1"

The clients not installed are left out of the table (``pip install obstore aiobotocore``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from shared.archive.location import ArchiveLocation

Op = Callable[[int], Awaitable[Any]]
RANGE = 128 * 1024


async def _pyarrow(loc: ArchiveLocation, stack: AsyncExitStack) -> dict[str, Callable[..., Awaitable[Any]]]:
    from pyarrow import fs

    endpoint = _endpoint(loc)
    s3 = fs.S3FileSystem(
        access_key=loc.access_key_id,
        secret_key=loc.secret_access_key,
        endpoint_override=endpoint[1] if endpoint else None,
        scheme=endpoint[0] if endpoint else "https",
        region=loc.region,
    )

    def put(key: str, data: bytes) -> None:
        with s3.open_output_stream(f"{loc.bucket}/{key}") as out:
            out.write(data)

    def get(key: str) -> bytes:
        with s3.open_input_stream(f"{loc.bucket}/{key}") as stream:
            return bytes(stream.read())

    def get_range(key: str, start: int, end: int) -> bytes:
        with s3.open_input_file(f"{loc.bucket}/{key}") as f:
            return bytes(f.read_at(end - start, start))

    def listing(prefix: str) -> int:
        return len(s3.get_file_info(fs.FileSelector(f"{loc.bucket}/{prefix}", recursive=True)))

    return {name: _threaded(fn) for name, fn in (("put", put), ("get", get), ("range", get_range), ("list", listing))}


def _threaded(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def call(*args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    return call


async def _obstore(loc: ArchiveLocation, stack: AsyncExitStack) -> dict[str, Callable[..., Awaitable[Any]]]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        loc.bucket,
        endpoint=loc.endpoint,
        region=loc.region,
        access_key_id=loc.access_key_id,
        secret_access_key=loc.secret_access_key,
        client_options={"allow_http": True},
    )

    async def get(key: str) -> bytes:
        return bytes(await (await obstore.get_async(store, key)).bytes_async())

    async def get_range(key: str, start: int, end: int) -> bytes:
        return bytes(await obstore.get_range_async(store, key, start=start, end=end))

    async def listing(prefix: str) -> int:
        return len(await obstore.list(store, prefix).collect_async())

    async def put(key: str, data: bytes) -> None:
        await obstore.put_async(store, key, data)

    return {"put": put, "get": get, "range": get_range, "list": listing}


async def _aiobotocore(loc: ArchiveLocation, stack: AsyncExitStack) -> dict[str, Callable[..., Awaitable[Any]]]:
    from aiobotocore.session import get_session

    client = await stack.enter_async_context(
        get_session().create_client(
            "s3",
            endpoint_url=loc.endpoint,
            region_name=loc.region,
            aws_access_key_id=loc.access_key_id,
            aws_secret_access_key=loc.secret_access_key,
        )
    )

    async def put(key: str, data: bytes) -> None:
        await client.put_object(Bucket=loc.bucket, Key=key, Body=data)

    async def get(key: str) -> bytes:
        answer = await client.get_object(Bucket=loc.bucket, Key=key)
        async with answer["Body"] as body:
            return bytes(await body.read())

    async def get_range(key: str, start: int, end: int) -> bytes:
        answer = await client.get_object(Bucket=loc.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        async with answer["Body"] as body:
            return bytes(await body.read())

    async def listing(prefix: str) -> int:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
        return sum([len(page.get("Contents", [])) async for page in pages])

    return {"put": put, "get": get, "range": get_range, "list": listing}


CLIENTS = {"pyarrow": _pyarrow, "obstore": _obstore, "aiobotocore": _aiobotocore}


def _endpoint(loc: ArchiveLocation) -> tuple[str, str] | None:
    if loc.endpoint is None:
        return None
    scheme, _, rest = loc.endpoint.partition("://")
    return scheme, rest.rstrip("/")


async def _timed(rounds: int, op: Callable[[int], Awaitable[Any]]) -> list[float]:
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        await op(i)
        times.append((time.perf_counter() - start) * 1000)
    return times


async def measure(name: str, loc: ArchiveLocation, rounds: int) -> list[tuple[str, list[float], int]]:
    """(operation, times in ms, bytes an operation) of one client."""
    rng = random.Random(30)
    run = f"bench-clients/{name}-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        ops = await CLIENTS[name](loc, stack)
        put, get, get_range, listing = ops["put"], ops["get"], ops["range"], ops["list"]
        rows: list[tuple[str, list[float], int]] = []
        for mb in (1, 8):
            data = rng.randbytes(mb << 20)
            key = f"{run}/block-{mb}mb"

            def put_one(i: int, k: str = key, d: bytes = data) -> Awaitable[Any]:
                return put(f"{k}-{i}", d)

            def get_one(i: int, k: str = key) -> Awaitable[Any]:
                return get(f"{k}-{i}")

            rows.append((f"put {mb} MB", await _timed(rounds, put_one), len(data)))
            rows.append((f"get {mb} MB", await _timed(rounds, get_one), len(data)))
            assert await get(f"{key}-0") == data
        offsets = [rng.randrange(0, (8 << 20) - RANGE) for _ in range(rounds)]
        big = f"{run}/block-8mb-0"
        rows.append(
            ("range 128 KiB", await _timed(rounds, lambda i: get_range(big, offsets[i], offsets[i] + RANGE)), 0)
        )
        await asyncio.gather(*(put(f"{run}/many/{i:04}", b"x") for i in range(200)))
        listed = await listing(f"{run}/many/")
        assert listed == 200, listed
        rows.append(("list 200", await _timed(rounds, lambda i: listing(f"{run}/many/")), 0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="an s3:// archive URL (scripts/s3.sh url)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    args = parser.parse_args()
    loc = ArchiveLocation.parse(args.url, os.environ)
    results: dict[str, list[tuple[str, list[float], int]]] = {}
    for name in args.clients.split(","):
        try:
            results[name] = asyncio.run(measure(name, loc, args.rounds))
        except ModuleNotFoundError as exc:
            print(f"{name}: not installed ({exc.name})")
    names = list(results)
    print(f"{'operation (ms: median / p95)':<28}" + "".join(f"{n:>22}" for n in names))
    for row in range(len(next(iter(results.values())))):
        label = results[names[0]][row][0]
        cells = []
        for n in names:
            _, times, size = results[n][row]
            median = statistics.median(times)
            p95 = sorted(times)[int(0.95 * (len(times) - 1))]
            rate = f" {size / median / 1000:5.0f}MB/s" if size else ""
            cells.append(f"{median:7.1f} / {p95:6.1f}{rate}")
        print(f"{label:<28}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
