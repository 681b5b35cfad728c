"""W3C Trace Context ``traceparent`` helpers, and new W3C ids for code that starts traces itself.

``traceparent`` is ``{version}-{trace-id}-{parent-id}-{trace-flags}``: 2, 32, 16 and 2 hex characters,
e.g. ``00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01``. Parsing follows the specification's
rules for receivers: version ``ff`` is invalid; version ``00`` has exactly those four fields; a higher
version may append more fields after a ``-``, which are ignored; all-zero ids are invalid; the ``sampled``
flag is bit 0 of trace-flags. One leniency: uppercase hex (which senders must not use) is accepted and
lowercased; surrounding whitespace is ignored.
"""

from __future__ import annotations

import re
import secrets
from typing import Final

VERSION: Final = "00"
_TRACEPARENT: Final = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<span_id>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})"
    r"(?P<rest>-.*)?",
    re.DOTALL,
)
_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
_SPAN_ID: Final = re.compile(r"[0-9a-f]{16}")
_SAMPLED: Final = 0x01


def parse_traceparent(value: str | bytes | None) -> tuple[str, str, bool] | None:
    """``(trace_id, parent_span_id, sampled)`` from a ``traceparent`` header value, or ``None`` if invalid."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _TRACEPARENT.fullmatch(value.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.group("version", "trace_id", "span_id", "flags", "rest")
    if version == "ff" or (version == VERSION and rest is not None):
        return None
    if not trace_id.strip("0") or not span_id.strip("0"):
        return None
    return trace_id, span_id, bool(int(flags, 16) & _SAMPLED)


def format_traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    """The version-00 ``traceparent`` for a span; raises ``ValueError`` for ids that W3C does not allow."""
    trace_id, span_id = trace_id.lower(), span_id.lower()
    if not _TRACE_ID.fullmatch(trace_id) or not trace_id.strip("0"):
        raise ValueError(f"trace id must be 32 hex characters, not all zeros: {trace_id!r}")
    if not _SPAN_ID.fullmatch(span_id) or not span_id.strip("0"):
        raise ValueError(f"span id must be 16 hex characters, not all zeros: {span_id!r}")
    return f"{VERSION}-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def new_trace_id() -> str:
    """A random W3C trace id: 32 lowercase hex characters, never all zeros."""
    while True:
        trace_id = secrets.token_hex(16)
        if trace_id.strip("0"):
            return trace_id


def new_span_id() -> str:
    """A random W3C span id: 16 lowercase hex characters, never all zeros."""
    while True:
        span_id = secrets.token_hex(8)
        if span_id.strip("0"):
            return span_id
