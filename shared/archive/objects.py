"""Object storage as the archive uses it: whole objects written at once, read whole or by byte range,
listed by prefix, deleted. :func:`open_object_store` picks the backend of an :class:`ArchiveLocation`.

Object names are ``/``-separated paths relative to the archive's root (the URL's folder or bucket and
prefix), e.g. ``blocks/2026-12-07/13/...parquet``.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from shared.archive.location import ArchiveLocation


class ObjectMissing(LookupError):
    """No object of that name."""


class ObjectInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    size: int
    modified_us: int
    """When it was written (µs since the epoch, by the store's clock): what the garbage collection of
    objects no registered block names goes by (:mod:`ingest.archiving`)."""


class ObjectStore(Protocol):
    """An object store. Every method may raise ``OSError`` when the store is away or refuses."""

    async def put(self, name: str, data: bytes) -> None:
        """Write the object whole: a reader sees either the previous object or all of ``data``, never a
        part (an S3 PUT; a file written aside and renamed). Replaces an object of that name."""
        ...

    async def get(self, name: str) -> bytes:
        """The whole object; :class:`ObjectMissing` if there is none."""
        ...

    async def get_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes ``[start, end)`` of each range, fetched concurrently (ranged GETs, never the whole
        object); :class:`ObjectMissing` if there is none."""
        ...

    async def list(self, folder: str) -> list[ObjectInfo]:
        """The objects below ``folder`` (``""``: all; ``blocks/2026-12-07``: in that folder and the folders
        below it, whole path segments), sorted by name."""
        ...

    async def delete(self, name: str) -> None:
        """Remove the object; no error if there is none."""
        ...

    async def close(self) -> None: ...


def open_object_store(location: ArchiveLocation) -> ObjectStore:
    """The object store of ``location`` (``file://`` or ``s3://``)."""
    if location.scheme == "file":
        return FileObjectStore(Path(location.bucket))
    from shared.archive.s3 import S3ObjectStore

    return S3ObjectStore(location)


class FileObjectStore:
    """Objects as files below a folder; a put writes a temporary file beside the object (fsynced) and
    renames it over the name, so readers never see a part of one. Blocking file calls run in threads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"not an object name: {name!r}")
        return self.root / name

    async def put(self, name: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self._path(name), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".put-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise

    async def get(self, name: str) -> bytes:
        path = self._path(name)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ObjectMissing(name) from None

    async def get_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return await asyncio.to_thread(self._ranges, self._path(name), list(ranges))

    @staticmethod
    def _ranges(path: Path, ranges: list[tuple[int, int]]) -> list[bytes]:
        try:
            with path.open("rb") as f:
                return [os.pread(f.fileno(), end - start, start) for start, end in ranges]
        except FileNotFoundError:
            raise ObjectMissing(str(path)) from None

    async def list(self, folder: str) -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, folder.strip("/"))

    def _list(self, folder: str) -> builtins.list[ObjectInfo]:
        top = self._path(folder) if folder else self.root
        found = []
        for below, _, files in os.walk(top):
            for file in files:
                if not file.startswith(".put-"):  # a put under way
                    path = Path(below, file)
                    try:
                        stat = path.stat()
                    except FileNotFoundError:  # deleted since the walk saw it
                        continue
                    name = path.relative_to(self.root).as_posix()
                    found.append(ObjectInfo(name=name, size=stat.st_size, modified_us=stat.st_mtime_ns // 1000))
        return sorted(found, key=lambda info: info.name)

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._path(name).unlink, missing_ok=True)

    async def close(self) -> None:
        return None
