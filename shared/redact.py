"""Tag redaction applied at ingest: keys matching a pattern, or string values matching one, become
``[REDACTED]``, in a span's tags, its log fields and its resource attributes alike.

Each pattern is compiled once. Decisions are cached per key and per string value (both repeat across
spans: ``GET``, ``postgresql``, a statement text), up to a bound; a value shorter than the shortest text the
value pattern can match is never searched (with the default pattern, most tag values). The value pattern's
top-level alternatives are searched one by one (:func:`branches`): a branch that starts with a literal (the
default's ``@``) is then found by a fast scan for it, where the alternation tried every branch at every
position (7.5 µs a realistic value against 1.7).
"""

from __future__ import annotations

import re
import re._parser as sre_parse  # type: ignore[import-not-found]  # CPython's regex parser, not in typeshed
from collections.abc import Sequence
from typing import Final, TypeVar

import msgspec

from shared.models import Event, Span, SpanFinish, Tags

REDACTED = "[REDACTED]"
E = TypeVar("E", Span, SpanFinish, Event)


CACHE_ENTRIES: Final = 100_000
"""Decisions remembered per cache (keys; string values): beyond it, new ones are computed each time."""
CACHED_VALUE_CHARS: Final = 256
"""Only values up to this long are remembered (keys are at most 256 by the model): at most ~50 MB."""


def branches(pattern: str) -> list[str]:
    """The top-level alternatives of ``pattern`` (``a|b(c|d)`` -> ``a``, ``b(c|d)``): a text is matched by
    ``pattern`` somewhere iff one of them matches it somewhere. ``[pattern]`` where splitting could change
    the meaning (global inline flags, or a branch that does not compile alone)."""
    parts, depth, start, i = [], 0, 0, 0
    class_from = -1  # inside a [...] class: where its members start (a "]" there is one of them)
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if class_from >= 0:
            if c == "]" and i > class_from:
                class_from = -1
        elif c == "[":
            class_from = i + 2 if pattern[i + 1 : i + 2] == "^" else i + 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    if len(parts) == 1 or (pattern.startswith("(?") and pattern[2:3].isalpha()):
        return [pattern]
    try:
        flags = re.compile(pattern).flags
        if any(re.compile(part).flags != flags for part in parts):
            return [pattern]
    except re.error:
        return [pattern]
    return parts


def _shortest_match(pattern: re.Pattern[str]) -> int:
    """The fewest characters a match of ``pattern`` can have (0 when it cannot be told)."""
    try:
        low, _ = sre_parse.parse(pattern.pattern, pattern.flags).getwidth()
    except Exception:  # an internal module: when it cannot tell, every value is searched
        return 0
    return int(low)


class Redactor:
    def __init__(self, key_pattern: str, value_pattern: str) -> None:
        self._key = re.compile(key_pattern) if key_pattern else None
        self._values = [
            (p, _shortest_match(p)) for p in map(re.compile, branches(value_pattern) if value_pattern else [])
        ]
        self._key_hits: dict[str, bool] = {}
        self._value_hits: dict[str, bool] = {}

    def _learn_key(self, key: str) -> bool:
        hit = bool(self._key and self._key.search(key))
        if len(self._key_hits) < CACHE_ENTRIES:
            self._key_hits[key] = hit
        return hit

    def _learn_value(self, value: str) -> bool:
        hit = any(len(value) >= shortest and p.search(value) is not None for p, shortest in self._values)
        if len(self._value_hits) < CACHE_ENTRIES and len(value) <= CACHED_VALUE_CHARS:
            self._value_hits[value] = hit
        return hit

    def tags(self, tags: Tags) -> Tags | None:
        """The redacted copy of ``tags``, or ``None`` when nothing needed redacting (the common case)."""
        out: Tags | None = None
        key_hits = self._key_hits
        value_hits = self._value_hits
        for key, value in tags.items():
            hit = key_hits.get(key)
            if hit is None:
                hit = self._learn_key(key)
            if not hit and type(value) is str:
                found = value_hits.get(value)
                hit = self._learn_value(value) if found is None else found
            if hit and value != REDACTED:
                if out is None:
                    out = dict(tags)
                out[key] = REDACTED
        return out

    def events(self, events: Sequence[E]) -> list[E]:
        """``events`` with their tags, span log fields and span resources redacted; unchanged events are not
        copied. A resource dict shared by many spans (one OTLP resource) is redacted once, and its
        redacted copy shared by the same spans."""
        result: list[E] = []
        resources: dict[int, Tags | None] = {}  # id of a resource dict → its redacted copy (None: unchanged)
        for event in events:
            if event.tags:
                redacted = self.tags(event.tags)
                if redacted is not None:
                    event = msgspec.structs.replace(event, tags=redacted)
            if isinstance(event, Span):
                if event.resource:
                    key = id(event.resource)
                    if key not in resources:
                        resources[key] = self.tags(event.resource)
                    resource = resources[key]
                    if resource is not None:
                        event = msgspec.structs.replace(event, resource=resource)
                if event.logs:
                    logs = tuple(
                        msgspec.structs.replace(log, fields=fields)
                        if (fields := self.tags(log.fields)) is not None
                        else log
                        for log in event.logs
                    )
                    if any(new is not old for new, old in zip(logs, event.logs, strict=True)):
                        event = msgspec.structs.replace(event, logs=logs)
            result.append(event)
        return result
