"""The SQLite store on a filesystem that fills up: a write that does not fit raises SQLite's own disk-full
error (SQLite rolled the transaction back itself; no "cannot rollback" hides it), stores nothing of its
batch, and once space is freed the same store writes again."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from pathlib import Path

from shared.demo import make_trace
from shared.store.faults import SQLITE_FULL, disk_full
from shared.store.sqlite import SqliteStore
from tests.conftest import mounted_tmpfs


async def test_a_write_that_does_not_fit_raises_disk_full_and_the_next_fits_once_space_is_freed(
    tmp_path: Path,
) -> None:
    with mounted_tmpfs(tmp_path / "fs", 4 << 20) as fs:
        store = await SqliteStore.open(str(fs / "traces.db"), cache_bytes=16 << 20, page_cache_kib=64)
        try:
            ballast = fs / "ballast"
            stat = os.statvfs(fs)
            with ballast.open("wb") as f:
                os.posix_fallocate(f.fileno(), 0, stat.f_bavail * stat.f_frsize - (512 << 10))
            rng = random.Random(7)
            now = time.time_ns() // 1000
            written: list[str] = []
            for _ in range(200):
                traces = [make_trace(rng, now) for _ in range(20)]
                spans = [s for t in traces for s in t]
                shards = {t[0].trace_id: "spans/0" for t in traces}
                try:
                    await store.write_batch(spans, [], shards=shards, now_us=now, grace_us=1, idle_us=1)
                except sqlite3.OperationalError as exc:
                    failed = exc
                    break
                written += shards
            else:
                raise AssertionError("the filesystem never filled up")
            assert written, "not even the first batch fit"
            assert failed.sqlite_errorcode == SQLITE_FULL, failed
            assert disk_full(failed)
            lost = next(iter(shards))
            assert await store.get_trace(lost) is None  # nothing of the failed batch
            assert await store.get_trace(written[-1]) is not None

            ballast.unlink()
            await store.write_batch(spans, [], shards=shards, now_us=now, grace_us=1, idle_us=1)
            stored = await store.get_trace(lost)
            assert stored is not None and len(stored.spans) == len(traces[0])
        finally:
            await store.close()
        with contextlib.closing(sqlite3.connect(fs / "traces.db")) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
