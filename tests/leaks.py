"""Where an unclosed unix socket came from.

CI once failed on ``ResourceWarning: unclosed <socket.socket fd=18, family=1, type=1, proto=0>``, raised
while the session's event loop closed its selector, so with no hint of which test or library made it. This
plugin remembers a short creation stack for every ``AF_UNIX`` socket of the test process (a handful: the
event loops' self-pipes and whatever a library opens), and when one is finalized still open it closes it
and names its origin in the terminal summary instead of failing an unrelated test's teardown.
"""

from __future__ import annotations

import _socket
import socket
import traceback
from typing import Any

import pytest

_origins: dict[int, str] = {}
_leaks: list[str] = []
_current = ["(no test yet)"]
_init = socket.socket.__init__
_real_close = socket.socket._real_close  # type: ignore[attr-defined]
_detach = socket.socket.detach


def _tracked_init(self: socket.socket, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    if self.family == socket.AF_UNIX:
        frames = traceback.format_stack(limit=40)[:-1]
        stack = "".join([f for f in frames if "/_pytest/" not in f and "/pluggy/" not in f][-12:])
        _origins[id(self)] = f"made during {_current[0]}:\n{stack}"


def _tracked_close(self: socket.socket, *args: Any) -> None:
    _origins.pop(id(self), None)
    _real_close(self, *args)


def _tracked_detach(self: socket.socket) -> int:
    _origins.pop(id(self), None)
    return _detach(self)


def _finalize(self: socket.socket) -> None:
    origin = _origins.pop(id(self), None)
    if origin is not None and self.fileno() != -1:
        _leaks.append(f"{self!r}, finalized open during {_current[0]}, {origin}")
        self.close()
    _socket.socket.__del__(self)  # type: ignore[attr-defined]  # the usual finalizer: warns about any other


socket.socket.__init__ = _tracked_init  # type: ignore[method-assign]
socket.socket._real_close = _tracked_close  # type: ignore[attr-defined]
socket.socket.detach = _tracked_detach  # type: ignore[method-assign,assignment]
socket.socket.__del__ = _finalize  # type: ignore[attr-defined]


def pytest_runtest_setup(item: pytest.Item) -> None:
    _current[0] = item.nodeid


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _leaks:
        terminalreporter.section("unix sockets left open (closed by tests/leaks.py)", yellow=True)
        for leak in _leaks:
            terminalreporter.write_line(leak)
