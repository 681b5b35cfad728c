"""The worker's Kafka clients: its consumer in the group and its dead-letter producer, started together
(retried while the broker is unreachable) and stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from shared.kafka import ensure_topics
from shared.kafka_access import wait_for_coordinator
from shared.lifecycle import Backoff, sleep_unless_stopped
from shared.settings import Settings

log = logging.getLogger("ingest.worker")


class KafkaClients:
    """The clients of worker ``client_id``, consuming ``topics``; :attr:`consumer` and :attr:`producer` are
    ``None`` until :meth:`connect` succeeded and after :meth:`stop`."""

    def __init__(
        self, settings: Settings, client_id: str, topics: Sequence[str], listener: ConsumerRebalanceListener
    ) -> None:
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._settings = settings
        self._client_id = client_id
        self._topics = list(topics)
        self._listener = listener

    async def connect(self, stop: asyncio.Event) -> bool:
        """Create the topics (and their dead-letter topics) and start the dead-letter producer and the
        consumer, retrying the whole while the broker is unreachable (a worker may start before it, or
        during a broker restart, also between the topics and the clients). False when ``stop`` was set
        first."""
        s = self._settings
        backoff = Backoff()
        while not stop.is_set():
            try:
                await ensure_topics(s, [*self._topics, *(t + s.dlq_suffix for t in self._topics)])
                await wait_for_coordinator(s, s.group)  # quietly, where the consumer would log ERRORs
                await self._start()
                return True
            except KafkaError as exc:
                await self.stop()
                delay = backoff.next()
                log.warning("kafka not reachable at %s (%s); retrying in %.1fs", s.kafka_bootstrap, exc, delay)
            except BaseException:
                await self.stop()
                raise
            await sleep_unless_stopped(stop, delay)
        return False

    async def _start(self) -> None:
        s = self._settings
        producer = self.producer = AIOKafkaProducer(**s.kafka_options(), acks="all", linger_ms=5)
        consumer = self.consumer = AIOKafkaConsumer(
            **s.kafka_options(),
            group_id=s.group,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=s.fetch_max_bytes,
            max_partition_fetch_bytes=min(s.fetch_max_bytes, 4 * 1024 * 1024),
            max_poll_interval_ms=300_000,
        )
        consumer.subscribe(self._topics, listener=self._listener)
        await producer.start()
        await consumer.start()

    async def stop(self) -> None:
        """Stop the consumer (leaving the group: its partitions move at once), then the dead-letter
        producer; either may be half started. A failure to stop one is logged and the other still stops."""
        for client in (self.consumer, self.producer):
            if client is not None:
                try:
                    await client.stop()
                except Exception:
                    log.warning("stopping %s failed", type(client).__name__, exc_info=True)
        self.consumer = self.producer = None
