"""Tag redaction applied at ingest: keys matching a pattern, or string values matching one, become
``[REDACTED]``, in a span's tags, its log fields and its resource attributes alike. Decisions per key are
cached (keys repeat across spans); values are searched only when they are strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from shared.models import Event, Span, Tags

REDACTED = "[REDACTED]"


class Redactor:
    def __init__(self, key_pattern: str, value_pattern: str) -> None:
        self._key = re.compile(key_pattern) if key_pattern else None
        self._value = re.compile(value_pattern) if value_pattern else None
        self._key_hits: dict[str, bool] = {}

    def _redact_key(self, key: str) -> bool:
        hit = self._key_hits.get(key)
        if hit is None:
            hit = bool(self._key and self._key.search(key))
            if len(self._key_hits) < 100_000:
                self._key_hits[key] = hit
        return hit

    def tags(self, tags: Tags) -> Tags | None:
        """The redacted copy of ``tags``, or ``None`` when nothing needed redacting (the common case)."""
        out: Tags | None = None
        value_re = self._value
        for key, value in tags.items():
            if value == REDACTED:
                continue
            if self._redact_key(key) or (value_re is not None and isinstance(value, str) and value_re.search(value)):
                if out is None:
                    out = dict(tags)
                out[key] = REDACTED
        return out

    def events(self, events: Sequence[Event]) -> list[Event]:
        """``events`` with their tags, span log fields and span resources redacted; unchanged events are not
        copied. A resource dict shared by many spans (one OTLP resource) is redacted once, and its
        redacted copy shared by the same spans."""
        result: list[Event] = []
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
                    event = msgspec.structs.replace(event, logs=logs)
            result.append(event)
        return result
