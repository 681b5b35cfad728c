"""The native span event format: JSON, one event object or an array of events per message.

See the design page, "Wire format". Content-type ``application/vnd.tracing.span+json;v=1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from shared.codecs.errors import DecodeError
from shared.models import Event, Span, SpanFinish, invalid_id

_decoder = msgspec.json.Decoder(Span | SpanFinish | list[Span | SpanFinish])
_encoder = msgspec.json.Encoder()


def decode_native(value: bytes) -> list[Event]:
    """Decode one message value. Raises :class:`DecodeError` with msgspec's reason (it names the field)."""
    try:
        decoded = _decoder.decode(value)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass: both carry a precise reason
        raise DecodeError(str(exc)) from None
    events: list[Event] = decoded if isinstance(decoded, list) else [decoded]
    bad = invalid_id(events)
    if bad is not None:
        index, field, bad_id = bad
        where = f"$[{index}].{field}" if isinstance(decoded, list) else f"$.{field}"
        raise DecodeError(f"invalid id {bad_id!r}: expected 1..64 of [A-Za-z0-9._:-] - at `{where}`")
    return events


def encode_native(events: Event | Sequence[Event]) -> bytes:
    """Encode one event, or a batch of events as a JSON array (the cheapest way to send many)."""
    return _encoder.encode(events)
