"""The ``s3://`` object store, on obstore (Rust's ``object_store`` crate; MIT; one wheel, no Python
dependencies; native asyncio).

Chosen by ``bench/archive_clients.py`` against S3Proxy (median ms, 15 rounds, on a 2-core machine): a
128 KiB ranged GET (what a trace read fetches) 1.0 with obstore, 4.1 with pyarrow's ``S3FileSystem`` and
7.1 with aiobotocore; GET of an 8 MB block 20 / 95 / 35; PUT of 1 MB 19 / 119 / 35 (pyarrow's PUT of 8 MB
was faster, 78 against 146 and 142: it uploads the parts of a multipart upload in parallel); a listing of
200 objects 33 / 51 / 95. pyarrow (already needed for the blocks) is synchronous, so every call takes a
thread; aiobotocore brings botocore (31 MB) and is the slowest reader. docs/adr/0016-archive-blocks.md.

A PUT is one request: S3 makes the object visible whole or not at all. Errors reach the caller as
``OSError`` (:class:`~shared.archive.objects.ObjectMissing` for a missing object) once obstore's own
retries of transient failures (with backoff) are spent: 3 attempts within :data:`RETRY_TIMEOUT_S`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore.store import S3Config  # a typing-only name (not importable at run time)

from shared.archive.location import ArchiveLocation
from shared.archive.objects import ObjectInfo, ObjectMissing

RETRY_TIMEOUT_S: Final = 30
COALESCE: Final = 1
"""Ranges that touch (a search's neighbouring row groups) are fetched in one GET; no byte between two
ranges is fetched."""
CONNECT_TIMEOUT: Final = "5s"
REQUEST_TIMEOUT: Final = "60s"


class S3ObjectStore:
    """Objects under ``location``'s bucket and prefix (see :class:`~shared.archive.objects.ObjectStore`)."""

    def __init__(self, location: ArchiveLocation) -> None:
        options: S3Config = {"region": location.region, "skip_signature": location.access_key_id is None}
        if location.endpoint is not None:
            options["endpoint"] = location.endpoint
        if location.access_key_id is not None:
            options["access_key_id"] = location.access_key_id
            options["secret_access_key"] = location.secret_access_key or ""
        if location.session_token is not None:
            options["session_token"] = location.session_token
        self._store = S3Store(
            location.bucket,
            prefix=location.prefix.rstrip("/") or None,
            config=options,
            client_options={
                "allow_http": True,
                "connect_timeout": CONNECT_TIMEOUT,
                "timeout": REQUEST_TIMEOUT,
            },
            retry_config={"max_retries": 3, "retry_timeout": _seconds(RETRY_TIMEOUT_S)},
        )

    async def put(self, name: str, data: bytes) -> None:
        await _call(name, obstore.put_async(self._store, name, data, use_multipart=False))

    async def get(self, name: str) -> bytes:
        result = await _call(name, obstore.get_async(self._store, name))
        return bytes(await _call(name, result.bytes_async()))

    async def get_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        starts = [start for start, _ in ranges]
        ends = [end for _, end in ranges]
        found = await _call(
            name, obstore.get_ranges_async(self._store, name, starts=starts, ends=ends, coalesce=COALESCE)
        )
        return [bytes(part) for part in found]

    async def list(self, folder: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        try:
            async for chunk in obstore.list(self._store, folder.strip("/") or None, chunk_size=1000):
                found.extend(
                    ObjectInfo(
                        name=meta["path"],
                        size=meta["size"],
                        modified_us=int(meta["last_modified"].timestamp() * 1_000_000),
                    )
                    for meta in chunk
                )
        except (BaseError, OSError) as exc:
            raise OSError(f"archive: listing {folder!r}: {_first_line(exc)}") from None
        return sorted(found, key=lambda info: info.name)

    async def delete(self, name: str) -> None:
        try:
            await _call(name, obstore.delete_async(self._store, name))
        except ObjectMissing:
            return

    async def close(self) -> None:
        return None


async def _call(name: str, pending: Any) -> Any:
    """``pending`` awaited, its errors as the interface's: :class:`ObjectMissing`, else ``OSError`` with the
    first line of obstore's message (the rest is a debug dump)."""
    try:
        return await pending
    except (NotFoundError, FileNotFoundError):
        raise ObjectMissing(name) from None
    except (BaseError, OSError) as exc:
        raise OSError(f"archive: {name}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _seconds(value: int) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)
