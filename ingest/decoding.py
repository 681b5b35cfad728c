"""From fetched Kafka messages to span events: each message decoded by its format's codec, a poison
message (one that does not decode) sent to its topic's dead-letter topic instead."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, Final

from aiokafka import ConsumerRecord, TopicPartition

from ingest.clients import KafkaClients
from ingest.metrics import WorkerCounters
from ingest.ownership import shard_of
from shared.codecs import DecodeError, decoder_for, format_of
from shared.codecs.native import decode_native_many
from shared.kafka import CONTENT_TYPE_HEADER
from shared.models import SPAN_CONTENT_TYPE, Event

log = logging.getLogger("ingest.worker")

DeadLetter = Coroutine[Any, Any, asyncio.Future[object]]
"""A poison message queued to the dead-letter producer: awaiting it hands the message to the producer
and gives the future of its delivery."""

_SPAN_CONTENT_TYPE: Final = SPAN_CONTENT_TYPE.encode("latin-1")


def content_type_header(message: ConsumerRecord[bytes, bytes]) -> bytes | None:
    """The value of the message's first content-type header, if it has one. A plain loop: it runs per
    message."""
    headers: Sequence[tuple[str, bytes]] = message.headers
    for key, value in headers:
        if key == CONTENT_TYPE_HEADER:
            return value
    return None


def content_type(message: ConsumerRecord[bytes, bytes]) -> str | None:
    """The message's first content-type header as text (latin-1), if it has one."""
    header = content_type_header(message)
    return None if header is None else header.decode("latin-1")


def all_native(messages: Sequence[ConsumerRecord[bytes, bytes]]) -> bool:
    """Whether no message's content type names anything but the native span type."""
    for message in messages:
        header = content_type_header(message)
        if header is not None and header != _SPAN_CONTENT_TYPE:
            return False
    return True


class DeadLetters:
    """Sends poison messages to ``<topic><dlq_suffix>`` with the reason and their origin in headers, on the
    producer of ``clients``."""

    def __init__(self, clients: KafkaClients, dlq_suffix: str, counters: WorkerCounters) -> None:
        self._clients = clients
        self._suffix = dlq_suffix
        self._counters = counters

    async def send(
        self, tp: TopicPartition, message: ConsumerRecord[bytes, bytes], reason: str
    ) -> asyncio.Future[object]:
        """Queue ``message`` (of ``tp``) to the dead-letter topic; returns the future of its delivery (the
        worker awaits it before committing the message's offset)."""
        producer = self._clients.producer
        assert producer is not None
        self._counters.dead_lettered += 1
        headers = [
            *message.headers,
            ("error", reason.encode()[:4096]),
            ("source-topic", tp.topic.encode()),
            ("source-partition", str(tp.partition).encode()),
            ("source-offset", str(message.offset).encode()),
        ]
        log.warning("dead-lettered %s offset %s: %s", shard_of(tp), message.offset, reason)
        future: asyncio.Future[object] = await producer.send(
            tp.topic + self._suffix, message.value or b"", key=message.key, headers=headers
        )
        return future


class Decoder:
    """Decodes one partition's fetch with the format of its topic (``formats``: topic → format name, see
    :func:`shared.codecs.format_of`); what does not decode goes to :class:`DeadLetters`."""

    def __init__(self, formats: Mapping[str, str], dead_letters: DeadLetters) -> None:
        self._formats = formats
        self._dead_letters = dead_letters

    def decode(
        self, tp: TopicPartition, messages: Sequence[ConsumerRecord[bytes, bytes]], dead: list[DeadLetter]
    ) -> list[Event]:
        """The events of every good message of one partition's fetch, in order; a poison message is added
        to ``dead`` (to be awaited) instead. Native messages are decoded together in one msgspec call
        when every one of them is good (the common case), else one by one."""
        fmt = self._formats[tp.topic]
        if fmt == "native" and len(messages) > 1 and all_native(messages):
            together = decode_native_many([m.value or b"" for m in messages])
            if together is not None:
                return together
        events: list[Event] = []
        for message in messages:
            value = message.value
            try:
                if value is None:
                    raise DecodeError("empty message")
                events.extend(decoder_for(format_of(content_type(message), fmt, value))(value))
            except DecodeError as exc:
                dead.append(self._dead_letters.send(tp, message, str(exc)))
        return events
