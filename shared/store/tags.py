"""How tag values are indexed for search: one string form per value, the same in every backend."""

from __future__ import annotations

from shared.models import TagValue


def tag_text(value: TagValue) -> str:
    """``true``/``false`` for booleans (as Jaeger and Zipkin print them), ``str`` otherwise."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value if type(value) is str else str(value)
