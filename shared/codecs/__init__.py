"""Wire-format codecs. Each turns one Kafka message value into native events, or raises DecodeError.

Every decoder has the shape ``decode(value: bytes) -> list[Event]``; :func:`decoder_for` picks one by the
message's content-type header, falling back to the topic's configured format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from shared.codecs.errors import DecodeError
from shared.codecs.native import decode_native
from shared.models import Event

Format = Literal["native"]
Decoder = Callable[[bytes], list[Event]]

DECODERS: dict[str, Decoder] = {"native": decode_native}

CONTENT_TYPES: dict[str, str] = {
    "application/vnd.tracing.span+json": "native",
}


def format_of(content_type: str | None, default: str) -> str:
    """The format named by a ``content-type`` header value (parameters ignored), else ``default``."""
    if content_type:
        base = content_type.split(";", 1)[0].strip().lower()
        found = CONTENT_TYPES.get(base)
        if found is not None:
            return found
    return default


def decoder_for(fmt: str) -> Decoder:
    try:
        return DECODERS[fmt]
    except KeyError:
        raise DecodeError(f"unknown format {fmt!r}") from None


__all__ = ["CONTENT_TYPES", "DECODERS", "DecodeError", "Decoder", "decoder_for", "format_of"]
