"""The native span event format: JSON, one event object or an array of events per message.

See docs/architecture.md, "Wire formats and topics". Content-type ``application/vnd.tracing.span+json;v=1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from shared.codecs.errors import DecodeError
from shared.models import Event, Span, SpanFinish, invalid_id

_decoder = msgspec.json.Decoder(Span | SpanFinish | list[Span | SpanFinish])
_many_decoder = msgspec.json.Decoder(list[Span | SpanFinish | list[Span | SpanFinish]])
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


def decode_native_many(values: Sequence[bytes]) -> list[Event] | None:
    """Decode many message values in ONE msgspec call (their JSON joined into one array): the events of
    all of them in order, or ``None`` when any of them is not valid (then decode them one by one with
    :func:`decode_native` to tell which, and why). Many small messages (a span each) cost a fraction of
    as many calls."""
    try:
        decoded = _many_decoder.decode(b"[" + b",".join(values) + b"]")
    except msgspec.DecodeError:
        return None
    if len(decoded) != len(values):  # a value that was itself several JSON texts: decide one by one
        return None
    events: list[Event] = []
    for item in decoded:
        if isinstance(item, list):
            events.extend(item)
        else:
            events.append(item)
    return None if invalid_id(events) is not None else events
