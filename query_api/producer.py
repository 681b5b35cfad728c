"""The API's Kafka producer, for the write endpoints only: reads never wait for the broker.

At start the API creates its topic and starts the producer once. A broker that refuses this client
(:class:`~shared.kafka_access.KafkaAccessError`: credentials, certificates, ACLs) stops the API with one
line, as retrying could not help. A broker that is not there yet does not stop it: the API serves reads,
answers the writes 503 naming ``TRACING_KAFKA_BOOTSTRAP``, and connects in the background (backing off
up to 10 s between attempts), saying so once at WARNING when it starts waiting and once at INFO when the
writes are accepted again. A broker lost later fails the writes in flight (a 503 too, see the middleware);
aiokafka reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from aiokafka.errors import KafkaError

from shared.kafka import SpanProducer, ensure_topics
from shared.kafka_access import KafkaAccessError
from shared.lifecycle import Backoff
from shared.settings import PREFIX, Settings

from .errors import Unavailable

log = logging.getLogger("query_api")

RETRY_AFTER_S: Final = 5


class Producer:
    """The API's :class:`SpanProducer`, or the reason there is none yet (:attr:`span_producer` raises it as
    a 503)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: SpanProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._refused: str | None = None

    @property
    def span_producer(self) -> SpanProducer:
        """The connected producer; :class:`Unavailable` (503) while the broker is away."""
        if self._producer is not None:
            return self._producer
        if self._refused is not None:
            raise Unavailable(f"writes are refused: {self._refused}")
        raise Unavailable(
            f"kafka: no broker reachable at {self._settings.kafka_bootstrap} ({PREFIX}KAFKA_BOOTSTRAP) yet; "
            "writes are accepted once it is",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    async def open(self) -> None:
        """Connect, or start connecting in the background if no broker answers. Raises
        :class:`KafkaAccessError` when a broker refuses this client."""
        try:
            await self._connect()
        except KafkaError as exc:
            log.warning(
                "kafka not reachable at %s (%s): serving reads; writes answer 503 until it is",
                self._settings.kafka_bootstrap,
                exc,
            )
            self._connecting = asyncio.create_task(self._keep_connecting(), name="kafka-producer")

    async def _connect(self) -> None:
        await ensure_topics(self._settings, [self._settings.topic])
        producer = SpanProducer(self._settings)
        await producer.start()
        self._producer = producer

    async def _keep_connecting(self) -> None:
        backoff = Backoff()
        while True:
            await asyncio.sleep(backoff.next())
            try:
                await self._connect()
            except KafkaAccessError as exc:
                self._refused = str(exc)
                log.error("%s", exc)
                return
            except KafkaError:
                continue
            log.info("kafka reachable at %s: writes accepted", self._settings.kafka_bootstrap)
            return

    async def close(self) -> None:
        """Stop connecting; flush and stop the producer if it started."""
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._producer is not None:
            await self._producer.close()
