"""The errors of the Jaeger-compatible APIs, and how each API answers them.

Views raise :class:`ParamError` (one bad parameter) or :class:`Failure` (any other answer than 200); the
store's ``QueryError`` may come too. The app's one error middleware answers them, on each API's routes,
with that API's :data:`ErrorAnswer` (Jaeger's envelope for the classic API, the gRPC gateway's error for
v3).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from shared.store.base import QueryError


class ParamError(ValueError):
    """A query or path parameter that cannot be used; ``param`` is its name as the client sent it."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


class Failure(Exception):
    """An answer other than 200 that is not about one parameter (404, a 400 about several)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


ErrorAnswer = Callable[[ParamError | Failure | QueryError], web.Response]
"""How one API answers a bad parameter, a failure or an invalid query (the error middleware calls it)."""


def error_answer(answer: Callable[[int, str], web.Response], word_param: Callable[[ParamError], str]) -> ErrorAnswer:
    """An API's :data:`ErrorAnswer`: its error shape (``answer``) and its own wording of a bad parameter."""

    def respond(exc: ParamError | Failure | QueryError) -> web.Response:
        if isinstance(exc, ParamError):
            return answer(400, word_param(exc))
        if isinstance(exc, Failure):
            return answer(exc.status, exc.message)
        return answer(400, str(exc))

    return respond
