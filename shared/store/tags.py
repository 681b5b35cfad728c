"""How tag values are indexed for search: one string form per value, the same in every backend."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from shared.models import Span, TagValue


def tag_text(value: TagValue) -> str:
    """``true``/``false`` for booleans (as Jaeger and Zipkin print them), ``str`` otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def tag_rows(trace_id: str, spans: Sequence[Span]) -> Iterable[tuple[str, str, str]]:
    """Distinct (key, value text, trace_id) rows over every span's tags, for the tag index."""
    seen: set[tuple[str, str]] = set()
    for span in spans:
        for key, value in span.tags.items():
            seen.add((key, value if type(value) is str else tag_text(value)))  # strings: no call
    return ((k, v, trace_id) for k, v in seen)
