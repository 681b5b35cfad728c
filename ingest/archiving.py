"""The mover: each shard's owner moves its finalized traces older than ``TRACING_ARCHIVE_AFTER_H`` from the
hot store into blocks of the archive, every ``TRACING_ARCHIVE_CHECK_S``, and deletes the blocks older than
``TRACING_ARCHIVE_RETENTION_D`` (docs/archive.md).

A block's move is three steps, in this order, which is what keeps every trace readable exactly once
whatever fails or crashes between them:

1. its traces are read from the hot store and written into one block (pyarrow: on a thread of its own);
2. the block is PUT whole in the object store (atomic): a crash after this leaves an object no one
   registered, never read (garbage, deleted later: below);
3. the block is registered in the hot store and its traces' hot rows removed, in one transaction on the
   SQL stores (:meth:`~shared.store.base.ArchiveRegistry.register_block`).

A round holds :attr:`Ownership.finalizing`, as a finalize round does: a worker whose shard is revoked ends
its block before the next owner starts moving the same traces.

Archive retention deletes whole blocks whose traces all started before the retention bound: unregistered
first, then their objects (a crash between leaves garbage, never a registered block without its object). A
block holding a pinned trace (Jaeger's archive button) is kept.

Garbage: an object named as a block of an owned shard that no registered block names, and older than
:data:`GARBAGE_GRACE_S` (what a crash between a PUT and its registration, or between a block's
unregistration and its delete, leaves), is deleted by the shard's owner, at most every
:data:`GARBAGE_EVERY_S`. The grace is far longer than a move can take: a move whose registration would
start more than :data:`MOVE_DEADLINE_S` after its PUT began gives its block up unregistered, so an object a
move is still going to register (this worker's, or a previous owner's of the shard) is never collected.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Sequence
from typing import Final

from ingest.ownership import Ownership
from shared.archive.block import (
    BLOCKS,
    Block,
    BlockMeta,
    block_name,
    block_shard,
    decode_meta,
    encode_meta,
    holding_groups,
    id_key,
    write_block,
)
from shared.archive.objects import ObjectStore
from shared.archive.reader import BlockReader
from shared.clock import now_us
from shared.lifecycle import sleep_unless_stopped
from shared.settings import Settings
from shared.store import ArchivedBlock, TraceStore

log = logging.getLogger("ingest.worker")

BLOCK_TRACES: Final = 2000
"""Traces a block holds at most (a round writes blocks of this many while more are due): about 60,000
realistic spans, a few MB of Parquet, under a second to write."""
MOVE_DEADLINE_S: Final = 600.0
"""A move whose PUT began longer ago than this does not register its block (the round fails; the block's
object is garbage, its traces stay hot and move in a later round)."""
GARBAGE_GRACE_S: Final = 3600.0
"""How old an unregistered object must be before it is deleted as garbage: the move's deadline
(:data:`MOVE_DEADLINE_S`) with 50 minutes to spare for its registration's transaction, and for clocks (the
object store's and the worker's) that disagree by minutes."""
GARBAGE_EVERY_S: Final = GARBAGE_GRACE_S / 6
"""How often the owned shards' objects are listed to find garbage (a listing of every block): a sixth of the
grace."""
HOUR_US: Final = 3_600_000_000
DAY_US: Final = 24 * HOUR_US


def shard_number(shard: str) -> int:
    """The partition number of a shard named ``"<topic>/<partition>"`` (what a block's name carries); 0 for
    a shard named otherwise."""
    _, _, number = shard.rpartition("/")
    return int(number) if number.isdecimal() else 0


async def publish_block(
    objects: ObjectStore,
    store: TraceStore,
    shard: str,
    block: Block,
    trace_ids: Sequence[str],
    *,
    created_us: int,
    deadline_s: float = MOVE_DEADLINE_S,
) -> str:
    """Steps 2 and 3 of a move: PUT ``block`` (written from ``shard``'s traces read at ``created_us``) whole,
    then register it and remove the hot rows of ``trace_ids`` in one transaction; the block's object name.
    A PUT that took more than ``deadline_s`` leaves its object unregistered (garbage to collect) and raises:
    the traces move again."""
    meta = block.meta
    name = block_name(shard_number(shard), meta.start_us, uuid.uuid4().hex)
    put_at = time.monotonic()
    await objects.put(name, block.data)
    took = time.monotonic() - put_at
    if took > deadline_s:
        raise TimeoutError(
            f"the PUT of {name} took {took:.0f}s, more than {deadline_s:.0f}s: left unregistered (garbage), its"
            " traces move again"
        )
    registered = ArchivedBlock(
        name=name,
        shard=shard,
        start_us=meta.start_us,
        end_us=meta.end_us,
        created_us=created_us,
        meta=encode_meta(meta),
    )
    await store.register_block(registered, trace_ids)
    return name


class Archiver:
    """Moves the due traces of the shards this worker owns into the archive, and ages blocks out."""

    def __init__(
        self,
        settings: Settings,
        store: TraceStore,
        ownership: Ownership,
        objects: ObjectStore,
        *,
        block_traces: int = BLOCK_TRACES,
        garbage_grace_s: float = GARBAGE_GRACE_S,
        move_deadline_s: float = MOVE_DEADLINE_S,
    ) -> None:
        if move_deadline_s >= garbage_grace_s:
            raise ValueError("the garbage grace must be longer than a move's deadline")
        self._store = store
        self._ownership = ownership
        self._objects = objects
        self._reader = BlockReader(objects)
        self._after_us = int(settings.archive_after_h * HOUR_US)
        self._retention_us = int(settings.archive_retention_d * DAY_US)
        self._check_s = settings.archive_check_s
        self._block_traces = block_traces
        self._garbage_grace_s = garbage_grace_s
        self._move_deadline_s = move_deadline_s
        self._garbage_every_s = garbage_grace_s * GARBAGE_EVERY_S / GARBAGE_GRACE_S
        self._garbage_at: float | None = None
        self._caught_up = False
        self._failing = False

    def caught_up(self) -> bool:
        """Whether the last round succeeded (so every trace due then moved): the hot purge waits until it
        did (:class:`ingest.retention.Retention`), so that no trace due for the archive is purged unmoved."""
        return self._caught_up

    async def move_due(self) -> int:
        """Move every due trace of the owned shards, a block at a time; how many traces moved."""
        moved = 0
        for shard in sorted(self._ownership.shards):
            while True:
                count, full = await self._move_block(shard)
                moved += count
                if not full:
                    break
        return moved

    async def _move_block(self, shard: str) -> tuple[int, bool]:
        """Move one block of ``shard``'s due traces, if the shard is still this worker's: (traces moved,
        whether more may be due)."""
        async with self._ownership.finalizing:
            if shard not in self._ownership.shards:
                return 0, False
            read_us = now_us()
            traces = await self._store.archive_due(read_us - self._after_us, shard=shard, limit=self._block_traces)
            if not traces:
                return 0, False
            block = await asyncio.to_thread(write_block, traces)
            name = await publish_block(
                self._objects,
                self._store,
                shard,
                block,
                [t.trace_id for t in traces],
                created_us=read_us,
                deadline_s=self._move_deadline_s,
            )
        meta = block.meta
        log.info(
            "archive: moved %d traces (%d spans, %d bytes) of %s into %s",
            meta.trace_count,
            meta.span_count,
            meta.size,
            shard,
            name,
        )
        return len(traces), len(traces) == self._block_traces

    async def expire_blocks(self) -> int:
        """Delete the blocks of the owned shards whose traces all started before the retention bound, but
        those holding a pinned trace; how many."""
        bound = now_us() - self._retention_us
        shards = set(self._ownership.shards)
        old = [b for b in await self._store.archived_blocks(end_us=bound) if b.end_us < bound and b.shard in shards]
        if not old:
            return 0
        pinned = await self._store.pinned_traces()
        expired = [b.name for b in old if not await self._holds_pinned(b.name, decode_meta(b.meta), pinned)]
        if expired:
            await self._store.drop_blocks(expired)
            for name in expired:
                await self._objects.delete(name)
            log.info("archive retention: deleted %d blocks whose traces started before %d", len(expired), bound)
        return len(expired)

    async def collect_garbage(self) -> int:
        """Delete the objects named as blocks of the owned shards that no registered block names and that are
        older than the garbage grace; how many. Listed before the registered blocks are read, so a block
        registered meanwhile is seen registered."""
        numbers = {shard_number(shard) for shard in self._ownership.shards}
        if not numbers:
            return 0
        bound_us = now_us() - int(self._garbage_grace_s * 1_000_000)
        old = [
            o.name
            for o in await self._objects.list(BLOCKS)
            if o.modified_us < bound_us and block_shard(o.name) in numbers
        ]
        if not old:
            return 0
        registered = {b.name for b in await self._store.archived_blocks()}
        garbage = [name for name in old if name not in registered]
        for name in garbage:
            await self._objects.delete(name)
        if garbage:
            log.info(
                "archive: deleted %d objects no registered block names (older than %.0fs)",
                len(garbage),
                self._garbage_grace_s,
            )
        return len(garbage)

    async def _holds_pinned(self, name: str, meta: BlockMeta, pinned: set[str]) -> bool:
        """Whether the block holds one of the ``pinned`` traces (read only when a row group's id range
        may hold one)."""
        for trace_id in pinned:
            if not holding_groups(meta, id_key(trace_id)[0]):
                continue
            if await self._reader.get_trace(name, meta, trace_id) is not None:
                return True
        return False

    async def round(self) -> None:
        """One round: move what is due, then age blocks out. A failure (the object store or the hot store
        away) is logged once until a round succeeds again; what it left is done by a later round."""
        try:
            await self.move_due()
            await self.expire_blocks()
            now = time.monotonic()
            if self._garbage_at is None or now - self._garbage_at >= self._garbage_every_s:
                await self.collect_garbage()
                self._garbage_at = now
        except Exception as exc:
            self._caught_up = False
            if not self._failing:
                log.warning(
                    "archive: a round failed (%s: %s); retried every %.0fs", type(exc).__name__, exc, self._check_s
                )
            self._failing = True
            return
        self._caught_up = True
        if self._failing:
            log.info("archive: rounds succeed again")
            self._failing = False

    async def close(self) -> None:
        await self._objects.close()

    async def run(self, stop: asyncio.Event) -> None:
        """A round every check interval until ``stop`` is set, the first after a random delay (the workers
        of a group do not all start at once)."""
        delay = random.uniform(0.0, self._check_s)
        while not await sleep_unless_stopped(stop, delay):
            await self.round()
            delay = self._check_s
