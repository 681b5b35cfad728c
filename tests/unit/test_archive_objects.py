"""The archive's folder object store (shared/archive/objects.py): whole objects replaced atomically, ranged
reads, listings by whole path segments, deletes, and names that would leave the folder refused. The S3
store does the same against S3Proxy in tests/e2e/test_archive_s3.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from shared.archive.location import ArchiveLocation
from shared.archive.objects import FileObjectStore, ObjectInfo, ObjectMissing, open_object_store


def test_a_folder_store_puts_whole_objects_reads_ranges_lists_and_deletes(tmp_path: Path) -> None:
    store = open_object_store(ArchiveLocation.parse(f"file://{tmp_path}/archive"))
    assert isinstance(store, FileObjectStore)

    async def run() -> None:
        data = bytes(range(256)) * 40
        await store.put("blocks/2026-12-07/a.parquet", b"old")
        await store.put("blocks/2026-12-07/a.parquet", data)  # replaced whole
        await store.put("blocks/2026-12-08/b.parquet", b"b")
        await store.put("blocks-other/c", b"c")
        assert await store.get("blocks/2026-12-07/a.parquet") == data
        assert await store.get_ranges("blocks/2026-12-07/a.parquet", [(0, 3), (300, 310), (10_230, 10_240)]) == [
            data[0:3],
            data[300:310],
            data[10_230:10_240],
        ]
        listed = await store.list("blocks")
        assert [msgspec.structs.replace(i, modified_us=0) for i in listed] == [
            ObjectInfo(name="blocks/2026-12-07/a.parquet", size=len(data), modified_us=0),
            ObjectInfo(name="blocks/2026-12-08/b.parquet", size=1, modified_us=0),
        ]
        assert all(abs(i.modified_us - time.time_ns() // 1000) < 60_000_000 for i in listed)
        assert [i.name for i in await store.list("")] == [
            "blocks-other/c",
            "blocks/2026-12-07/a.parquet",
            "blocks/2026-12-08/b.parquet",
        ]
        assert await store.list("nothing/here") == []
        await store.delete("blocks/2026-12-07/a.parquet")
        await store.delete("blocks/2026-12-07/a.parquet")
        with pytest.raises(ObjectMissing):
            await store.get("blocks/2026-12-07/a.parquet")
        with pytest.raises(ObjectMissing):
            await store.get_ranges("blocks/2026-12-07/a.parquet", [(0, 1)])
        for bad in ("", "/etc/passwd", "blocks/../../x"):
            with pytest.raises(ValueError, match="not an object name"):
                await store.put(bad, b"x")
        assert sorted(p.name for p in (tmp_path / "archive").rglob("*")) == sorted(
            ["blocks", "blocks-other", "2026-12-07", "2026-12-08", "b.parquet", "c"]
        )  # no temporary file left behind

    asyncio.run(run())
