"""Wire-format codecs. Each turns one Kafka message value into native events, or raises DecodeError.

Every decoder has the shape ``decode(value: bytes) -> list[Event]``; :func:`decoder_for` picks one by name,
and :func:`format_of` names the format of a message from its ``content-type`` header and its topic's
configured format:

======================================  ==================  ============================================
content-type (parameters ignored)       format              applies on
======================================  ==================  ============================================
``application/vnd.tracing.span+json``   ``native``          any topic (it can only mean the native format)
``application/x-protobuf``              ``otlp_proto``      topics whose format is OTLP
``application/json``                    ``otlp_json``       topics whose format is OTLP
absent or anything else                 the topic's format
======================================  ==================  ============================================

``application/json`` and ``application/x-protobuf`` name an encoding, not a schema: they only pick between
OTLP's two encodings on the OTLP topic. On any other topic they keep the topic's format, so Zipkin JSON
sent as ``application/json`` stays ``zipkin_json``, and native JSON stays ``native``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

from shared.codecs.errors import DecodeError
from shared.codecs.native import decode_native
from shared.codecs.otlp import decode_otlp_json, decode_otlp_proto
from shared.codecs.zipkin import decode_zipkin_json
from shared.models import Event

Format = Literal["native", "otlp_proto", "otlp_json", "zipkin_json"]
Decoder = Callable[[bytes], list[Event]]

DECODERS: dict[str, Decoder] = {
    "native": decode_native,
    "otlp_proto": decode_otlp_proto,
    "otlp_json": decode_otlp_json,
    "zipkin_json": decode_zipkin_json,
}

CONTENT_TYPES: dict[str, str] = {
    "application/vnd.tracing.span+json": "native",
    "application/x-protobuf": "otlp_proto",
    "application/json": "otlp_json",
}

OTLP_FORMATS: Final = frozenset({"otlp_proto", "otlp_json"})
"""Formats that the generic content types (``application/json``, ``application/x-protobuf``) choose
between; they apply only where the topic's format is one of these."""


def format_of(content_type: str | None, default: str) -> str:
    """The format named by a ``content-type`` header value (parameters ignored), else ``default``.

    An OTLP content type applies only when ``default`` is an OTLP format (see the module's table).
    """
    if content_type:
        base = content_type.split(";", 1)[0].strip().lower()
        found = CONTENT_TYPES.get(base)
        if found is not None and (found not in OTLP_FORMATS or default in OTLP_FORMATS):
            return found
    return default


def decoder_for(fmt: str) -> Decoder:
    try:
        return DECODERS[fmt]
    except KeyError:
        raise DecodeError(f"unknown format {fmt!r}") from None


__all__ = ["CONTENT_TYPES", "DECODERS", "DecodeError", "Decoder", "Format", "decoder_for", "format_of"]
