"""The API's domain errors. Views and services raise them; one middleware turns them into JSON answers.

Every error answer is ``{"error": "<message>"}``; a 400 names the bad parameter or body field first
(``"minDuration: must be a number"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar

import msgspec


class ApiError(Exception):
    """An error with an HTTP status; ``message`` is what the client reads."""

    status: ClassVar[int] = 500

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: Mapping[str, str] = headers or {}


class BadRequest(ApiError):
    """A bad query parameter, path parameter or body field; ``param`` names it."""

    status = 400

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


class Unauthorized(ApiError):
    """No bearer token where one is required."""

    status = 401


class Forbidden(ApiError):
    """A bearer token that is not in the accepted set."""

    status = 403


class NotFound(ApiError):
    """An unknown trace or span."""

    status = 404


class Unavailable(ApiError):
    """A dependency (store, Kafka) cannot answer right now."""

    status = 503


ID_MESSAGE = "must be 1..64 characters of [A-Za-z0-9._:-]"
PATTERN_MESSAGES: dict[str, str] = {
    "traceId": ID_MESSAGE,
    "spanId": ID_MESSAGE,
    "parentSpanId": ID_MESSAGE,
    "traceparent": "not a valid W3C traceparent",
}
"""Plain words for fields whose pattern (or length) msgspec would quote back as a regular expression."""

_AT_PATH = re.compile(r"^(?P<reason>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")


def body_error(exc: msgspec.DecodeError) -> BadRequest:
    """A body that msgspec rejected, as a 400 naming the field.

    ``Expected `str`, got `int` - at `$.tags.cache``` becomes ``tags.cache: Expected `str`, got `int```;
    ``Object missing required field `serviceName``` becomes ``serviceName: required field is missing``;
    malformed JSON becomes ``body: invalid JSON: ...``.
    """
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return BadRequest("body", f"invalid JSON: {text}")
    reason, path = text, ""
    match = _AT_PATH.match(text)
    if match:
        reason, path = match["reason"], match["path"].replace("[...]", "").lstrip(".")
    missing = _MISSING.search(reason)
    if missing:
        field = missing["field"]
        return BadRequest(f"{path}.{field}" if path else field, "required field is missing")
    if not path:
        return BadRequest("body", reason)
    if path in PATTERN_MESSAGES and reason.startswith(("Expected `str` matching regex", "Expected `str` of length")):
        return BadRequest(path, PATTERN_MESSAGES[path])
    return BadRequest(path, reason)
