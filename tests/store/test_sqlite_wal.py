"""The embedded store keeps its write-ahead log bounded while readers overlap.

A PASSIVE checkpoint copies frames into the database but never lets the log start over while some
reader always holds a snapshot (the API, a finalizer process planning its rounds): the log then grew
with everything ever written. The checkpointer empties it when it passes ``wal_limit_bytes``."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from pathlib import Path

from shared.models import Span
from shared.store.sqlite import Checkpoints, SqliteStore, file_size
from tests.e2e.helpers import wait_for

T0 = 1_732_500_000_000_000
LIMIT = 1 << 20
SPANS_PER_BATCH = 500
_NOISE = random.Random(7)


def _batch(n: int) -> list[Span]:
    spans = []
    for i in range(SPANS_PER_BATCH):
        trace = f"{n:08x}{i // 10:04x}"
        spans.append(
            Span(
                trace_id=trace,
                span_id=f"{n:06x}{i:06x}",
                parent_span_id=None if i % 10 == 0 else f"{n:06x}{i - i % 10:06x}",
                service_name=f"svc-{i % 7}",
                operation_name=f"op-{i % 13}",
                start_time_us=T0 + n * 1000 + i,
                duration_us=1000 + i,
                # random bytes as text: what the chunks compress to stays over 200 bytes a span
                tags={
                    "http.route": f"/r/{i % 17}",
                    "seq": str(n * SPANS_PER_BATCH + i),
                    "noise": _NOISE.randbytes(200).hex(),
                },
            )
        )
    return spans


def _reader(path: Path, stop: threading.Event, started: threading.Event) -> None:
    """Hold read transactions back to back, each for a while, as a busy API does."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        while not stop.is_set():
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM traces").fetchone()
            started.set()
            stop.wait(0.03)
            conn.execute("COMMIT")
    finally:
        conn.close()


async def _write(store: SqliteStore, n: int) -> None:
    spans = _batch(n)
    shards = {span.trace_id: "spans/0" for span in spans}
    await store.write_batch(spans, [], shards=shards, now_us=T0, grace_us=0, idle_us=60_000_000)


async def test_the_log_stays_bounded_while_readers_always_hold_a_snapshot(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    wal = Path(str(db) + "-wal")
    store = await SqliteStore.open(str(db), checkpoints=Checkpoints(interval_s=0.02, wal_limit_bytes=LIMIT))
    stop = threading.Event()
    readers = []
    try:
        await _write(store, 0)
        for _ in range(2):  # two, started apart: one of them always holds a snapshot
            started = threading.Event()
            thread = threading.Thread(target=_reader, args=(db, stop, started), daemon=True)
            thread.start()
            assert started.wait(10)
            readers.append(thread)
            await asyncio.sleep(0.015)

        peak = 0
        for n in range(1, 481):
            await _write(store, n)
            peak = max(peak, file_size(wal))
        # everything written went through the log: about 60 MiB, kept whole without the limit
        assert file_size(db) > 40 * LIMIT
        assert peak < 24 * LIMIT, f"the log reached {peak >> 20} MiB beside a {file_size(db) >> 20} MiB database"

        await wait_for(lambda: file_size(wal) <= LIMIT, timeout_s=10, what="the log to empty once writes stopped")
    finally:
        stop.set()
        for thread in readers:
            thread.join()
        await store.close()
