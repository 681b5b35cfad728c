"""What a store failure means (:mod:`shared.store.faults`) and how a worker reports a full store
(:mod:`ingest.store_full`): real SQLite and asyncpg errors where one can be had without a server."""

from __future__ import annotations

import contextlib
import logging
import socket
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from ingest.finalizer.client import FinalizerError
from ingest.store_full import StoreFull, log_failure
from shared.store.base import QueryError
from shared.store.faults import disk_full, location, reason, unavailable


def _locked_error(path: Path) -> sqlite3.OperationalError:
    """The error of a write to a SQLite file another connection holds the write lock of."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        with contextlib.closing(other), pytest.raises(sqlite3.OperationalError) as caught:
            other.execute("BEGIN IMMEDIATE")
        holder.execute("ROLLBACK")
    return caught.value


async def _refused_error() -> BaseException:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nobody listens once it is closed
    with pytest.raises(OSError, match="Connect call failed") as caught:
        await asyncpg.connect(f"postgresql://tracing@127.0.0.1:{port}/tracing", timeout=10)
    return caught.value


async def test_a_store_that_cannot_answer_now_is_unavailable(tmp_path: Path) -> None:
    locked = _locked_error(tmp_path / "t.db")
    assert locked.sqlite_errorcode == 5  # SQLITE_BUSY
    refused = await _refused_error()
    for exc in (
        locked,
        refused,
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        asyncpg.exceptions.DiskFullError("could not extend file"),
        TimeoutError(),
    ):
        assert unavailable(exc), exc
    chained = RuntimeError("the round failed")
    chained.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert unavailable(chained)  # by its cause


def test_errors_of_the_request_or_the_code_are_not_unavailability(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "t.db")) as db, pytest.raises(sqlite3.Error) as syntax:
        db.execute("SELEC 1")
    for exc in (
        syntax.value,
        QueryError("limit", "must be between 1 and 1000"),
        ValueError("bad"),
        KeyError("x"),
        asyncpg.exceptions.UndefinedTableError('relation "traces" does not exist'),
        FileNotFoundError(2, "No such file or directory"),
    ):
        assert not unavailable(exc), exc
        assert not disk_full(exc), exc


def test_disk_full_is_known_by_code_errno_sqlstate_and_relayed_text() -> None:
    sqlite_full = sqlite3.OperationalError("database or disk is full")
    sqlite_full.sqlite_errorcode = 13
    for exc in (
        sqlite_full,
        OSError(28, "No space left on device"),
        asyncpg.exceptions.DiskFullError("could not extend file"),
        FinalizerError("OperationalError: database or disk is full"),  # the finalizer process's answer
    ):
        assert disk_full(exc), exc
    assert not disk_full(asyncpg.exceptions.CannotConnectNowError("starting up"))


def test_location_and_reason_carry_no_secret() -> None:
    url = "postgresql://tracer:s3cret@db.internal:5432/tracing?sslmode=require&password=x"
    assert location(url) == "postgresql://db.internal:5432/tracing"
    assert location("sqlite:////var/lib/tracing/traces.db") == "SQLite file /var/lib/tracing/traces.db"
    assert reason(ConnectionRefusedError(111, "Connect call failed")) == (
        "ConnectionRefusedError: [Errno 111] Connect call failed"
    )
    assert reason(TimeoutError()) == "TimeoutError"


def test_a_full_store_is_said_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    full = StoreFull("sqlite:////data/traces.db")
    enospc = OSError(28, "No space left on device")
    with caplog.at_level(logging.INFO, logger="ingest.worker"):
        assert full.failed("batch", enospc)
        log_failure("finalize", FinalizerError("OperationalError: database or disk is full"), full)
        assert full.failed("batch", enospc)
        full.succeeded("batch")  # a batch fits again, but finalize rounds still fail: the episode goes on
        assert full.active()
        full.succeeded("finalize")
        assert not full.active()
        assert not full.failed("batch", ValueError("not about space"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    said, resumed = messages
    assert said.startswith("store full: SQLite file /data/traces.db has no space left (OSError: ")
    assert "free space on its filesystem" in said and "resumes by itself" in said
    assert [r.levelname for r in caplog.records] == ["ERROR", "INFO"]
    assert "ingest resumed" in resumed


def test_other_background_failures_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    full = StoreFull("sqlite:////data/traces.db")
    with caplog.at_level(logging.INFO, logger="ingest.worker"):
        try:
            raise KeyError("bug")
        except KeyError as exc:
            log_failure("heartbeat", exc, full)
    (record,) = caplog.records
    assert record.getMessage() == "heartbeat failed; will retry" and record.exc_info is not None
    assert not full.active()
