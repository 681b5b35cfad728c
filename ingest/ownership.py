"""Which traces this worker finalizes: the shards (topic partitions) assigned to it, and the owner shard of
each trace it writes (docs/adr/0002-owner-partition-finalizes.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2

from shared.models import Event

log = logging.getLogger("ingest.worker")


def shard_of(tp: TopicPartition) -> str:
    """A topic partition's shard name: ``"<topic>/<partition>"``."""
    return f"{tp.topic}/{tp.partition}"


def owner_shard(topic: str, partitions: int, trace_id: str) -> str:
    """The shard that owns a trace whose spans came unkeyed (or keyed by something else): the partition
    the trace id hashes to, as Kafka's default partitioner would place it keyed (murmur2). Every worker
    names the same owner for a trace whichever partitions its spans arrived on, so exactly one worker
    finalizes it; keyed by trace id, that is the partition the spans arrived on."""
    return f"{topic}/{(murmur2(trace_id.encode()) & 0x7FFFFFFF) % partitions}"


def assign_owners(
    tp: TopicPartition,
    partitions: int,
    messages: Sequence[ConsumerRecord[bytes, bytes]],
    events: Sequence[Event],
    owners: dict[str, str],
) -> None:
    """Add the owner shard of each trace of ``events`` (decoded from ``messages`` of ``tp``, a topic of
    ``partitions`` partitions) not yet in ``owners``: a trace keyed by its id is owned by the partition
    its spans arrive on, any other by the partition its id hashes to (:func:`owner_shard`)."""
    shard = shard_of(tp)
    keys = {m.key for m in messages}
    for event in events:
        trace_id = event.trace_id
        if trace_id not in owners:
            keyed = trace_id.encode() in keys
            owners[trace_id] = shard if keyed else owner_shard(tp.topic, partitions, trace_id)


class Ownership:
    """The shards this worker owns now, and the lock that keeps a revoked worker's finalize round (or
    retention purge) from running beside the next owner's."""

    def __init__(self) -> None:
        self.shards: set[str] = set()
        """Updated in place by :class:`RebalanceListener` (never replaced)."""
        self.finalizing = asyncio.Lock()
        """Held by a finalize round, and by a retention purge on a store that purges by owner."""


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    """Keeps :attr:`Ownership.shards` to the consumer's assignment."""

    def __init__(self, ownership: Ownership) -> None:
        self._ownership = ownership

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Every batch is written and committed before the next fetch, so there is no buffer to flush:
        # dropping the shards stops this worker finalizing traces it no longer owns. Then wait for a
        # finalize round in flight to end, so the next owner never finalizes alongside this worker (the
        # round never waits on the fetch loop, which is what is calling this).
        self._ownership.shards.difference_update(shard_of(tp) for tp in revoked)
        async with self._ownership.finalizing:
            pass
        log.info("partitions revoked: %s", sorted(shard_of(tp) for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # The due finalizations of these partitions are in the store; the finalizer finds them.
        self._ownership.shards.update(shard_of(tp) for tp in assigned)
        log.info("partitions assigned: %s", sorted(shard_of(tp) for tp in assigned))
