"""What a store's failure means to its caller, whatever the backend: the store is away for now (the API
answers 503, a worker retries) or it ran out of space (a worker pauses until space is freed).

Both look at the whole chain of an exception (``__cause__``/``__context__``), and at the text of errors
that crossed a process boundary as text (the finalizer process's answers). Neither imports a driver: a
PostgreSQL error is known by its SQLSTATE (``sqlstate``, as asyncpg sets it), a SQLite one by its result
code (``sqlite_errorcode``).
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from typing import Final
from urllib.parse import urlsplit

SQLITE_FULL: Final = 13
SQLITE_AWAY: Final = frozenset({5, 6, 10, SQLITE_FULL, 14})
"""SQLite result codes of a store that cannot answer now: BUSY, LOCKED, IOERR, FULL, CANTOPEN."""
SQLSTATE_AWAY: Final = ("08", "53", "57P")
"""PostgreSQL SQLSTATE prefixes of a server that cannot answer now: connection exceptions, insufficient
resources (disk full, too many connections), the server shutting down or starting up."""
SQLSTATE_DISK_FULL: Final = "53100"
NETWORK_ERRNOS: Final = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EPIPE}
)
DISK_FULL_TEXTS: Final = ("database or disk is full", "No space left on device", "DiskFullError")
"""How a disk-full error reads once it is only text."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _sqlite_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    return code & 0xFF if isinstance(code, int) else None  # the primary code of an extended one


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the store has no space left (SQLITE_FULL, ENOSPC, PostgreSQL's 53100)."""
    for e in _chain(exc):
        if _sqlite_code(e) == SQLITE_FULL or getattr(e, "sqlstate", None) == SQLSTATE_DISK_FULL:
            return True
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if any(text in str(e) for text in DISK_FULL_TEXTS):
            return True
    return False


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store cannot answer now but may later: the connection refused, reset or
    lost, the server shutting down or starting, a timeout, a file locked or out of space."""
    for e in _chain(exc):
        if isinstance(e, ConnectionError | TimeoutError):
            return True
        if isinstance(e, OSError) and (e.errno in NETWORK_ERRNOS or (e.errno is None and "Connect call" in str(e))):
            return True  # errno None: asyncio's "Multiple exceptions" of a host with several addresses
        sqlstate = getattr(e, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(SQLSTATE_AWAY):
            return True
        if _sqlite_code(e) in SQLITE_AWAY:
            return True
        if type(e).__module__.startswith("asyncpg") and "connection" in str(e).lower():
            return True  # asyncpg's InterfaceError about a closed or lost connection
    return False


def reason(exc: BaseException) -> str:
    """One line for a log or an error answer: the exception's class and message (never a URL or secret:
    drivers name the host at most)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def location(store_url: str) -> str:
    """Where the store is, for a log line: a SQLite file's path, else the URL without its credentials and
    query (``postgresql://db.internal:5432/tracing``)."""
    if store_url.startswith("sqlite:///"):
        return f"SQLite file {store_url[len('sqlite:///') :] or ':memory:'}"
    parts = urlsplit(store_url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"
