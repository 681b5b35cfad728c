"""Cassandra backend (acsylla): the store for clusters that outgrow one PostgreSQL.

``TRACING_STORE_URL=cassandra://host1,host2:9042/keyspace?replication_factor=3`` (options:
:mod:`.config`). The layout is storage layout v2 laid out for Cassandra
(:mod:`.schema`); the planning is every backend's (:mod:`shared.store.writing`,
:mod:`shared.store.finalizing`, :mod:`shared.store.rollups`, :mod:`shared.store.search`). What differs
is how concurrency is made safe without transactions, lightweight transactions, logged batches or
counters:

* **one owner per trace**: every worker names the same owner shard for a trace, and one process holds a
  shard at a time (the consumer group), so only that process finalizes the trace and writes the rollup
  slices of its shard (:mod:`.finalizer`, :mod:`.aggregates`);
* **writers only add**: a chunk and its trace's columns are one statement; the trace's state is derived
  from its chunk set and the set its last finalization used (:mod:`.rows`), so a chunk that races a
  finalization re-opens the trace whatever the clocks (:mod:`.writer`);
* **every read and write at the URL's consistency level**, QUORUM by default: with replication factor 3
  a QUORUM read sees every acknowledged QUORUM write (2 + 2 > 3) while one replica is down.

In one process every shard is owned, so ``finalize`` writes the rollups before it returns (the contract
suite runs unchanged). The writer's trace cache is used from the event loop only; a state is out of the
cache while a call uses it and goes back only once the call's writes are acknowledged. Why this data
model: docs/adr/0007-cassandra-data-model.md; why the owner finalizes: docs/adr/0002-owner-partition-finalizes.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from typing import Final

import msgspec

from shared.analysis import TraceAnalysis
from shared.sampling import Sampler
from shared.store.backend import Backend
from shared.store.base import ArchivedBlock, Heartbeat, StoredTrace, WriteResult
from shared.store.cache import TraceCache
from shared.store.cassandra.aggregates import Aggregates
from shared.store.cassandra.archive import Registry, pinned
from shared.store.cassandra.config import CassandraConfig
from shared.store.cassandra.due import DueIndex
from shared.store.cassandra.finalizer import Owner
from shared.store.cassandra.reader import Reader
from shared.store.cassandra.rows import StoredRow
from shared.store.cassandra.schema import Cql, create_tables
from shared.store.cassandra.session import CassandraSession
from shared.store.cassandra.writer import HourLists, write_batch
from shared.store.rollups import Contribution
from shared.store.writing import WriteBatch

DEFAULT_RETENTION_H: Final = 168.0
MAX_TTL_S: Final = 630_720_000  # Cassandra's limit (20 years)
HEARTBEAT: Final = "INSERT INTO heartbeats (ns, worker_id, updated_us, body) VALUES (?, ?, ?, ?) USING TTL ?"

_json: Final = msgspec.json.Encoder()

__all__ = ["CassandraStore"]


def ttl_for(retention_h: float) -> int:
    """Every row's time to live: twice the retention (at least an hour), the purge's safety net."""
    return min(MAX_TTL_S, max(3600, int(2 * retention_h * 3600)))


class CassandraStore(Backend, Reader):
    """The distributed store: any number of worker and API processes on one cluster. Its reads are
    :class:`~.reader.Reader`'s."""

    shared_by_processes = False
    """Finalization stays in the worker: the owner of a shard finalizes from its own due index
    (docs/adr/0002-owner-partition-finalizes.md)."""
    concurrent_finalizes = 1
    purge_by_owner = True
    """A shard's rollup rows have one writer, its owner: the purge corrects them under the owner's lock."""

    def __init__(self, session: CassandraSession, *, cache_bytes: int = 0, ttl_s: int) -> None:
        self._session = session
        self.cql = Cql(session, ttl_s=ttl_s)
        self.cache = TraceCache(cache_bytes) if cache_bytes > 0 else None
        self._due = DueIndex(self.cql)
        self._hour_lists = HourLists(self.cql)
        self._aggregates = Aggregates(self.cql)
        self._owner = Owner(self.cql, self._aggregates, self._hour_lists)
        self._registry = Registry(self.cql)
        self._rounds = asyncio.Lock()
        """Finalizations and purges, one at a time (each is a round of its shards' rollups)."""
        self._scanned: dict[str, StoredRow] = {}
        """The rows of the traces the last due scan returned, for the finalization that follows it."""

    @classmethod
    async def open(cls, url: str, *, cache_bytes: int = 0, retention_h: float = DEFAULT_RETENTION_H) -> CassandraStore:
        """Connect, creating the keyspace and the tables that are missing. ``cache_bytes`` > 0 keeps the
        writer's copy of recent traces (workers); ``retention_h`` sets the rows' TTL (twice it)."""
        session = await CassandraSession.connect(CassandraConfig.from_url(url))
        try:
            await create_tables(session)
        except BaseException:
            await session.close()
            raise
        return cls(session, cache_bytes=cache_bytes, ttl_s=ttl_for(retention_h))

    async def check(self) -> None:
        await self._session.execute("SELECT release_version FROM system.local")

    async def close(self) -> None:
        await self._session.close()

    # -- writes ---------------------------------------------------------------------------------------

    async def _write(self, batch: WriteBatch) -> WriteResult:
        done = await write_batch(self.cql, self._due, self._hour_lists, self.cache, batch)
        if self.cache is not None:  # written: the states are the stored ones now
            for trace_id, state in done.states.items():
                self.cache.put(trace_id, done.keys[trace_id], state)
        return done.plan.result

    async def due_traces(self, shards: Collection[str], now_us: int, limit: int) -> list[str]:
        if not shards:
            return []
        self._aggregates.keep_only(shards)
        self._registry.keep_only(shards)
        async with self._rounds:
            # A shard is adopted at its owner's next scan, not at its next round with traces: a round that
            # failed after its trace rows leaves its rollup slices pending, and when no trace of the shard
            # is due again no round would ever finish them. Every scan finishes what is pending, adopted or
            # not: the shard may have been another process's since the last scan.
            busy = await self._aggregates.adopt(shards, recheck=True)
        due, self._scanned = await self._due.scan([s for s in shards if s not in busy], now_us, limit)
        return due

    async def _finalize(
        self, trace_ids: Sequence[str], now_us: int, sampler: Sampler | None
    ) -> tuple[list[TraceAnalysis], list[Contribution]]:
        async with self._rounds:
            scanned, self._scanned = self._scanned, {}
            try:
                done = await self._owner.finalize(
                    self.cache, trace_ids, now_us=now_us, sampler=sampler, scanned=scanned
                )
            except BaseException:
                self._registry.forget()  # some traces may be finalized: the next due scans read every hour
                raise
            if done.analyses:
                self._registry.finalized(min(a.start_us for a in done.analyses))
        if self.cache is not None:
            for trace_id, (key, state) in done.states.items():
                self.cache.put(trace_id, key, state)
        return done.analyses, done.first

    async def purge(self, before_us: int, *, shards: Collection[str] | None = None) -> int:
        cache = self.cache
        async with self._rounds:
            self._scanned = {}
            return await self._owner.purge(
                before_us, shards, on_purged=cache.discard if cache is not None else lambda _: None
            )

    # -- archive (:mod:`.archive`) ---------------------------------------------------------------------

    async def archive_due(self, before_us: int, *, shard: str, limit: int) -> list[StoredTrace]:
        async with self._rounds:  # no finalization of this process meanwhile (it may lower the scan's floor)
            return await self._registry.due(before_us, shard, limit, self.get_trace)

    async def register_block(self, block: ArchivedBlock, trace_ids: Sequence[str]) -> None:
        cache = self.cache
        async with self._rounds:
            self._scanned = {}
            await self._registry.register(block, trace_ids, cache.discard if cache is not None else lambda _: None)

    async def archived_blocks(self, *, start_us: int | None = None, end_us: int | None = None) -> list[ArchivedBlock]:
        return await self._registry.blocks(start_us, end_us)

    async def drop_blocks(self, names: Sequence[str]) -> None:
        if names:
            await self._registry.drop(names)

    async def pin_trace(self, trace_id: str) -> None:
        await self._registry.pin(trace_id, time.time_ns() // 1000)

    async def pinned_traces(self) -> set[str]:
        return await pinned(self.cql)

    async def record_heartbeat(self, heartbeat: Heartbeat) -> None:
        cql = self.cql
        body = _json.encode(heartbeat).decode()
        await cql.partitions([[(HEARTBEAT, (cql.ns, heartbeat.worker_id, heartbeat.updated_at_us, body, cql.ttl_s))]])
