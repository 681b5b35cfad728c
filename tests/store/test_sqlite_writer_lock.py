"""Writers of one SQLite file queue on its writer lock (``flock`` on ``<file>-lock``), which the kernel
hands over at the holder's commit, rather than polling SQLite's own lock with sleeps of up to 25 ms.

The test holds the lock through a file description of its own, as another writer process would."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared.models import Span
from shared.store.sqlite import SqliteStore, writer_lock_path
from tests.e2e.helpers import wait_for

T0 = 1_732_500_000_000_000


def _span(trace_id: str) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=trace_id[:16],
        service_name="svc",
        operation_name="op",
        start_time_us=T0,
        duration_us=1000,
    )


async def _write(store: SqliteStore, trace_id: str) -> None:
    await store.write_batch(
        [_span(trace_id)], [], shards={trace_id: "spans/0"}, now_us=T0, grace_us=0, idle_us=60_000_000
    )


@contextmanager
def _descriptor(path: str) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR)
    try:
        yield fd
    finally:
        os.close(fd)


def _is_free(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


async def test_a_write_waits_for_the_writer_holding_the_lock_and_goes_on_at_its_release(tmp_path: Path) -> None:
    db = str(tmp_path / "traces.db")
    store = await SqliteStore.open(db)
    try:
        with _descriptor(writer_lock_path(db)) as other:
            fcntl.flock(other, fcntl.LOCK_EX)  # another writer's transaction is open
            write = asyncio.create_task(_write(store, "a" * 32))
            done, _ = await asyncio.wait([write], timeout=0.5)
            assert not done, "the write went ahead while another writer held the lock"
            fcntl.flock(other, fcntl.LOCK_UN)
            await asyncio.wait_for(write, timeout=10)
        stored = await store.get_trace("a" * 32)
        assert stored is not None and len(stored.spans) == 1
    finally:
        await store.close()


async def test_the_lock_is_held_for_exactly_the_transaction(tmp_path: Path) -> None:
    db = str(tmp_path / "traces.db")
    store = await SqliteStore.open(db)
    inside, leave = threading.Event(), threading.Event()

    def transaction(conn: object) -> None:
        inside.set()
        assert leave.wait(10)

    try:
        with _descriptor(writer_lock_path(db)) as other:
            assert _is_free(other)
            held = asyncio.create_task(store._run(store._tx, transaction))
            await wait_for(inside.is_set, timeout_s=10, what="the transaction to start")
            assert not _is_free(other)
            leave.set()
            await held
            assert _is_free(other)
            await _write(store, "b" * 32)  # and the store goes on writing
            assert _is_free(other)
    finally:
        leave.set()
        await store.close()


async def test_an_in_memory_store_has_no_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where a ":memory:-lock" would appear
    store = await SqliteStore.open(":memory:")
    try:
        await _write(store, "c" * 32)
        assert await store.get_trace("c" * 32) is not None
    finally:
        await store.close()
    assert not os.listdir(tmp_path)
