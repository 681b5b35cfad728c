"""Wire-format codecs. Each turns one Kafka message value into native events, or raises DecodeError.

Every decoder has the shape ``decode(value: bytes) -> list[Event]``; :func:`decoder_for` picks one by name,
and :func:`format_of` names the format of one message, first from its ``content-type`` header, then from
its first bytes, then by its topic's configured format:

1. ``content-type`` (parameters ignored), when it names a format the topic can carry:

   ======================================  ================================================================
   content-type                            format
   ======================================  ================================================================
   ``application/vnd.tracing.span+json``   ``native``, on any topic (it can only mean the native format)
   ``application/x-protobuf``              ``otlp_proto`` on an OTLP topic, ``zipkin_proto`` on a Zipkin one,
                                           ``jaeger_proto`` on a Jaeger one
   ``application/json``                    ``otlp_json`` on an OTLP topic, ``zipkin_json`` on a Zipkin one,
                                           ``jaeger_json`` on a Jaeger one
   ======================================  ================================================================

   ``application/json`` and ``application/x-protobuf`` name an encoding, not a schema: they pick between
   the two encodings of the topic's schema, and change nothing on the native topic.

2. The payload (:func:`detect`), on OTLP, Zipkin and Jaeger topics: producers such as the OpenTelemetry
   Collector's Kafka exporter set no content-type header, whatever their encoding.

   On the Jaeger topic (one ``jaeger.api_v2.Span`` per message): JSON when the first byte after JSON
   whitespace is ``{``; else protobuf when the whole value is well-formed protobuf fields. A protobuf span
   starts with its 16-byte trace id (``0x0A 0x10``), which JSON text never does. On the other topics:

   * protobuf, when the whole value is a sequence of field 1, wire type 2 records (tag byte ``0x0A``, a
     length, that many bytes) ending exactly at its end: the only field of both an OTLP
     ``ExportTraceServiceRequest`` (``resource_spans``) and a Zipkin ``ListOfSpans`` (``spans``); an empty
     value is an empty request;
   * else JSON, when the first byte after JSON whitespace is ``{`` (an OTLP request, a Zipkin span) or
     ``[`` (a Zipkin list).

   ``0x0A`` is also a newline, so a JSON value may start like protobuf (``\n{`` reads as a record of 123
   bytes). When a value reads both ways, protobuf must hold one level deeper too: every record's payload
   must itself be well-formed protobuf fields (valid wire types, lengths ending exactly), which JSON text
   never is in practice (it ends in ``}`` or ``]``, neither of which can end a protobuf field); otherwise
   it is JSON.

3. Otherwise the topic's format (``TRACING_OTLP_FORMAT`` on the OTLP topic, ``zipkin_json`` on the Zipkin
   topic, ``jaeger_proto`` on the Jaeger topic), whose decoder then says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

from shared.codecs.errors import DecodeError
from shared.codecs.jaeger import decode_jaeger_json, decode_jaeger_proto
from shared.codecs.native import decode_native
from shared.codecs.otlp import decode_otlp_json, decode_otlp_proto
from shared.codecs.zipkin import decode_zipkin_json, decode_zipkin_proto
from shared.models import Event

Format = Literal["native", "otlp_proto", "otlp_json", "zipkin_json", "zipkin_proto", "jaeger_proto", "jaeger_json"]
Decoder = Callable[[bytes], list[Event]]

DECODERS: dict[str, Decoder] = {
    "native": decode_native,
    "otlp_proto": decode_otlp_proto,
    "otlp_json": decode_otlp_json,
    "zipkin_json": decode_zipkin_json,
    "zipkin_proto": decode_zipkin_proto,
    "jaeger_proto": decode_jaeger_proto,
    "jaeger_json": decode_jaeger_json,
}

NATIVE_CONTENT_TYPE: Final = "application/vnd.tracing.span+json"
PROTOBUF_CONTENT_TYPE: Final = "application/x-protobuf"
JSON_CONTENT_TYPE: Final = "application/json"

ENCODINGS: Final[dict[str, tuple[str, str]]] = {
    "otlp_proto": ("otlp_proto", "otlp_json"),
    "otlp_json": ("otlp_proto", "otlp_json"),
    "zipkin_json": ("zipkin_proto", "zipkin_json"),
    "zipkin_proto": ("zipkin_proto", "zipkin_json"),
    "jaeger_proto": ("jaeger_proto", "jaeger_json"),
    "jaeger_json": ("jaeger_proto", "jaeger_json"),
}
"""A topic format → the (protobuf, JSON) formats of its schema: what a content type or the payload picks
between. The native format has one encoding and is not here."""

_JSON_WHITESPACE: Final = b" \t\n\r"
_LENGTH_DELIMITED_FIELD_1: Final = 0x0A


def format_of(content_type: str | None, default: str, value: bytes | None = None) -> str:
    """The format of one message: named by its ``content-type`` header value (parameters ignored), else
    detected from ``value`` (:func:`detect`), else ``default``, the topic's format. See the module's rules."""
    if content_type:
        base = content_type.split(";", 1)[0].strip().lower()
        if base == NATIVE_CONTENT_TYPE:
            return "native"
        encodings = ENCODINGS.get(default)
        if encodings is not None and base in (PROTOBUF_CONTENT_TYPE, JSON_CONTENT_TYPE):
            return encodings[base == JSON_CONTENT_TYPE]
    if value is not None:
        return detect(value, default) or default
    return default


def detect(value: bytes, default: str) -> str | None:
    """The encoding of ``value`` among those of ``default``'s schema (see the module's rule 2), or ``None``
    when it looks like neither, or the topic has one encoding only. Never raises; reads the record headers
    of a protobuf value (O(resource spans)), and their fields' headers only when it also reads as JSON."""
    encodings = ENCODINGS.get(default)
    if encodings is None:
        return None
    start = value.lstrip(_JSON_WHITESPACE)[:1]
    if encodings[0] == "jaeger_proto":  # one span, not a list: no field-1 records
        if start == b"{":
            return encodings[1]
        return encodings[0] if value and _is_fields(value, 0, len(value)) else None
    looks_like_json = start == b"{" or start == b"["
    records = _field_1_records(value)
    if records is not None and (not looks_like_json or all(_is_fields(value, *record) for record in records)):
        return encodings[0]
    return encodings[1] if looks_like_json else None


def _varint(value: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """The base-128 varint at ``pos`` (at most 10 bytes, before ``end``) and the position after it."""
    result = shift = 0
    while pos < end and shift <= 63:
        byte = value[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    return None


def _field_1_records(value: bytes) -> list[tuple[int, int]] | None:
    """The (start, end) of each payload when ``value`` is zero or more records of field 1, wire type 2, back
    to back, ending at its end; else ``None``."""
    records: list[tuple[int, int]] = []
    pos, end = 0, len(value)
    while pos < end:
        if value[pos] != _LENGTH_DELIMITED_FIELD_1:
            return None
        read = _varint(value, pos + 1, end)
        if read is None:
            return None
        length, pos = read
        records.append((pos, pos + length))
        pos += length
    return records if pos == end else None


def _is_fields(value: bytes, pos: int, end: int) -> bool:
    """``value[pos:end]`` is a sequence of well-formed protobuf fields (payloads not looked into)."""
    while pos < end:
        tag = _varint(value, pos, end)
        if tag is None or tag[0] >> 3 == 0:
            return False
        key, pos = tag
        wire_type = key & 7
        if wire_type == 0:
            read = _varint(value, pos, end)
            if read is None:
                return False
            pos = read[1]
        elif wire_type == 1 or wire_type == 5:
            pos += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            read = _varint(value, pos, end)
            if read is None:
                return False
            pos = read[1] + read[0]
        else:  # groups (3, 4) are not used by these messages; 6 and 7 do not exist
            return False
    return pos == end


def decoder_for(fmt: str) -> Decoder:
    try:
        return DECODERS[fmt]
    except KeyError:
        raise DecodeError(f"unknown format {fmt!r}") from None


__all__ = [
    "DECODERS",
    "ENCODINGS",
    "DecodeError",
    "Decoder",
    "Format",
    "decoder_for",
    "detect",
    "format_of",
]
