"""The wire between a worker and its finalizer process, over the child's stdin and stdout.

Each message is a frame: a 4-byte big-endian length, then that many bytes of msgpack. The worker sends
:class:`Start` once, then :class:`Round` after :class:`Round`; the child answers :class:`Ready` once, then
one :class:`RoundDone` per round, in order.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Final

import msgspec

from ingest.metrics import SpanSum
from shared.settings import Settings

_LENGTH: Final = struct.Struct(">I")


class Start(msgspec.Struct, tag=True):
    """The worker's first message: the settings the child opens the store with."""

    settings: Settings


class Ready(msgspec.Struct, tag=True):
    """The child's first answer: the store is open (``error`` ``None``), or why it could not be."""

    error: str | None = None


class Round(msgspec.Struct, tag=True):
    """Finalize up to ``limit`` traces of ``shards`` that are due now."""

    shards: list[str]
    limit: int


class RoundDone(msgspec.Struct, tag=True):
    """The answer to one :class:`Round`."""

    due: int
    """Traces found due (at most the round's limit)."""
    finalized: int
    span_sums: list[SpanSum] = []
    """The span metrics of the traces finalized for the first time (see :func:`ingest.metrics.span_sums`)."""
    error: str | None = None
    """The store failed: nothing was finalized, or (a round of several transactions) only ``finalized``
    traces; the others stay due."""


Message = Start | Ready | Round | RoundDone
_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Message)


def frame(message: Message) -> bytes:
    """``message`` as one frame, ready to write."""
    body = _encoder.encode(message)
    return _LENGTH.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> Message | None:
    """The next message of ``reader``, or ``None`` at the end of the stream (the other side closed it or
    is gone, also mid-frame). Both sides read with it: the worker the child's stdout, the child its stdin.
    A frame whose body is not a message raises :class:`msgspec.DecodeError` (a bug, not an input)."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None
    return _decoder.decode(body)
