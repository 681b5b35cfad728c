"""The archive registry on Cassandra: the traces due to move, a block's registration with its traces' hot
rows removed, the registered blocks, the pinned traces (the SQL stores': :mod:`shared.store.sql.archive`).

Tables (created with the others, :mod:`.schema`), each partitioned by what its reads ask for:

* ``archive_blocks ((ns, day), start_us, name)``: the registered blocks by the UTC day of their earliest
  trace start, a block's time range, shard, ``created_us`` and metadata blob in its row. The reads ask for
  the blocks overlapping a time window (all of them, every few seconds, for the API's catalog): the days
  up to the window's end, a slice of each;
* ``archive_days ((ns), day)``: the days that have blocks (a row a day, never deleted: a day emptied by
  retention costs one empty read);
* ``archive_names ((ns, name))``: where each block's row is, for a drop by name;
* ``archive_pins ((ns), trace_id)``: the pinned traces, a small set read whole.

No TTL on these: a block is registered as long as its object lives, a pin is forever. No lightweight
transaction: a block is registered by the one owner of its shard under a name no other block has (a
retry writes the same values again), and a pin is the same row whoever writes it.

A registration writes the block's rows first (day, name, block: in this order, each acknowledged before
the next), and only then removes its traces' hot rows: a reader finds the block once its traces can be
gone from the hot store, and a trace in both answers from the hot store (:mod:`shared.archive.tiered`). A
trace is removed when its row is finalized and was last finalized at or before the block's ``created_us``
(when its spans were read); its partition first, then its retention row (``by_start``): a failure between
leaves a retention row without a trace, which the scans skip and the purge deletes. Search index rows are
left to their TTL, as the purge leaves them: every search checks its candidates against the trace row.
The contributions stay: the rollups keep counting a moved trace. As for the purge, a late span written
between the read of a trace's row and the delete of its partition (one round trip) goes with it; a later
one makes the trace anew, in the hot store.

A pinned trace is kept by the hot purge (its retention row too, so that it still moves into a block, which
archive retention keeps); its rows still carry their TTL (twice the hot retention): on Cassandra the
archive, not the hot store, keeps a pinned trace beyond it.

The due scan walks the retention index (``by_start``, partitioned by start hour, clustered by shard then
start) from a per-shard floor: the start below which the last scan of this process found nothing due (the
first due trace's start, so the next scan begins with the block the last one answered). Moved traces leave
tombstones behind them, which a scan from the oldest hour would read again every round. The floor only
goes down when this process finalizes a trace (its start may be older: a late trace, or one finalized again
after its block read it); it is forgotten for a shard this process stops owning or when a finalization
fails part way, and ignored once an hour (:data:`RESCAN_S`: a full scan), so that a trace another owner
finalized in between is found too.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Final

from shared.store.base import ArchivedBlock, StoredTrace
from shared.store.cassandra.indexes import retention_row
from shared.store.cassandra.rows import StoredRow, read_rows
from shared.store.cassandra.schema import Cql
from shared.store.rollups import HOUR_US

DAY_US: Final = 24 * HOUR_US
FOREVER: Final = 2**62
RESCAN_S: Final = 3600.0
"""How often a shard's due scan ignores its floor and walks every hour again."""
CHECKED_AT_ONCE: Final = 500
"""Due candidates whose trace rows are read at once."""

START_HOURS: Final = "SELECT hour FROM index_hours WHERE ns = ? AND kind = 'start' AND hour >= ? AND hour <= ?"
DUE_OF: Final = (
    "SELECT start_us, trace_id FROM by_start WHERE ns = ? AND hour = ? AND shard = ? AND start_us >= ? AND start_us < ?"
)
ADD_DAY: Final = "INSERT INTO archive_days (ns, day) VALUES (?, ?)"
ADD_NAME: Final = "INSERT INTO archive_names (ns, name, day, start_us) VALUES (?, ?, ?, ?)"
ADD_BLOCK: Final = (
    "INSERT INTO archive_blocks (ns, day, start_us, name, shard, end_us, created_us, meta)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
DAYS: Final = "SELECT day FROM archive_days WHERE ns = ? AND day <= ?"
BLOCKS_OF: Final = (
    "SELECT name, shard, start_us, end_us, created_us, meta FROM archive_blocks WHERE ns = ? AND day = ?"
    " AND start_us <= ?"
)
WHERE_IS: Final = "SELECT day, start_us FROM archive_names WHERE ns = ? AND name = ?"
DROP_BLOCK: Final = "DELETE FROM archive_blocks WHERE ns = ? AND day = ? AND start_us = ? AND name = ?"
DROP_NAME: Final = "DELETE FROM archive_names WHERE ns = ? AND name = ?"
PIN: Final = "INSERT INTO archive_pins (ns, trace_id, pinned_us) VALUES (?, ?, ?)"
PINS: Final = "SELECT trace_id FROM archive_pins WHERE ns = ?"
DELETE_TRACE: Final = "DELETE FROM traces WHERE ns = ? AND trace_id = ?"


async def pinned(cql: Cql) -> set[str]:
    """The pinned trace ids."""
    return {str(r[0]) for r in await cql.rows(PINS, (cql.ns,))}


class Registry:
    """The archive registry of one store, and the due scans' floors (see the module docstring)."""

    def __init__(self, cql: Cql, *, rescan_s: float = RESCAN_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.cql = cql
        self._rescan_s = rescan_s
        self._clock = clock
        self._floors: dict[str, tuple[int, float]] = {}
        """shard -> (the start its next due scan reads from, when its last full scan began)."""

    # -- the due scan's floors ------------------------------------------------------------------------

    def keep_only(self, shards: Collection[str]) -> None:
        """Forget the floors of the shards this process does not own (another owner may finalize their
        traces meanwhile)."""
        for shard in [s for s in self._floors if s not in shards]:
            del self._floors[shard]

    def finalized(self, start_us: int) -> None:
        """This process finalized a trace that started at ``start_us``: no floor stays above it."""
        for shard, (floor, full_at) in self._floors.items():
            if start_us < floor:
                self._floors[shard] = (start_us, full_at)

    def forget(self) -> None:
        """A finalization failed part way (some of its traces may be finalized now): scan everything."""
        self._floors.clear()

    # -- due traces -----------------------------------------------------------------------------------

    async def due(
        self,
        before_us: int,
        shard: str,
        limit: int,
        read: Callable[[str], Awaitable[StoredTrace | None]],
    ) -> list[StoredTrace]:
        """Up to ``limit`` finalized traces of ``shard`` that started before ``before_us``, oldest first (by
        start, then trace id), each as ``read`` (the store's ``get_trace``) answers it. The caller holds the
        store's round lock: no finalization of this process runs meanwhile."""
        cql = self.cql
        now = self._clock()
        floor, full_at = self._floors.get(shard, (0, now))
        if now - full_at >= self._rescan_s:
            floor, full_at = 0, now
        if limit <= 0 or before_us <= floor:
            return []
        hours = sorted(
            r[0] for r in await cql.rows(START_HOURS, (cql.ns, floor // HOUR_US, (before_us - 1) // HOUR_US))
        )
        found: list[tuple[int, StoredTrace]] = []
        batch: list[tuple[int, str]] = []
        for hour in hours:
            async for page in cql.pages(DUE_OF, (cql.ns, hour, shard, floor, before_us), CHECKED_AT_ONCE):
                batch.extend((int(start), str(trace_id)) for start, trace_id in page)
                if len(batch) >= CHECKED_AT_ONCE:
                    found.extend(await self._due_of(batch, shard, limit - len(found), read))
                    batch = []
                    if len(found) >= limit:
                        break
            if len(found) >= limit:
                break
        else:
            found.extend(await self._due_of(batch, shard, limit - len(found), read))
        # Nothing before the first trace returned is due (before ``before_us`` when none is), and becomes due
        # only by a finalization, which lowers the floor. The traces returned may not move: a scan answers
        # what is due, the caller decides.
        resume = found[0][0] if found else before_us
        self._floors[shard] = (max(floor, resume), full_at)
        return [trace for _, trace in found]

    async def _due_of(
        self,
        candidates: Sequence[tuple[int, str]],
        shard: str,
        room: int,
        read: Callable[[str], Awaitable[StoredTrace | None]],
    ) -> list[tuple[int, StoredTrace]]:
        """The first ``room`` candidates (in order) that are finalized traces of ``shard`` indexed at their
        start, read: (start, trace)."""
        if not candidates or room <= 0:
            return []
        rows = await read_rows(self.cql, [t for _, t in candidates])
        due = [(start, t) for start, t in candidates if _due(rows[t], shard, start)][:room]
        traces: list[StoredTrace | None] = [None] * len(due)

        async def job(index: int) -> None:
            traces[index] = await read(due[index][1])

        await self.cql.each(len(due), job)
        return [
            (start, t)
            for (start, _), t in zip(due, traces, strict=True)
            if t is not None and t.state == "finalized" and t.spans
        ]

    # -- blocks ---------------------------------------------------------------------------------------

    async def register(
        self, block: ArchivedBlock, trace_ids: Sequence[str], on_removed: Callable[[Sequence[str]], None]
    ) -> list[str]:
        """Register ``block``, then remove the hot rows of those of ``trace_ids`` it may take (finalized,
        last at or before ``block.created_us``); the ids removed."""
        cql = self.cql
        ns = cql.ns
        day = block.start_us // DAY_US
        session = cql.session
        await session.execute(await session.prepare(ADD_DAY), (ns, day))
        await session.execute(await session.prepare(ADD_NAME), (ns, block.name, day, block.start_us))
        values = (ns, day, block.start_us, block.name, block.shard, block.end_us, block.created_us, block.meta)
        await session.execute(await session.prepare(ADD_BLOCK), values)
        if not trace_ids:
            return []
        rows = await read_rows(cql, trace_ids)
        moved = [
            row
            for row in rows.values()
            if row.exists
            and row.state == "finalized"
            and row.finalized_at_us is not None
            and row.finalized_at_us <= block.created_us
        ]
        await cql.partitions([[(DELETE_TRACE, (ns, row.trace_id))] for row in moved])
        on_removed([row.trace_id for row in moved])
        retention = [
            retention_row(ns, row.trace_id, row.shard, row.start_us)
            for row in moved
            if row.start_us is not None and row.shard is not None
        ]
        await cql.partitions([[(r.table.delete_cql, r.key)] for r in retention])
        return [row.trace_id for row in moved]

    async def blocks(self, start_us: int | None, end_us: int | None) -> list[ArchivedBlock]:
        """The registered blocks overlapping [start_us, end_us] (either bound ``None``: open), by start."""
        cql = self.cql
        high = FOREVER if end_us is None else end_us
        days = [r[0] for r in await cql.rows(DAYS, (cql.ns, high // DAY_US))]
        results = await cql.many(BLOCKS_OF, [(cql.ns, day, high) for day in days])
        found = [
            ArchivedBlock(
                name=str(name), shard=str(shard), start_us=start, end_us=end, created_us=created, meta=bytes(meta)
            )
            for part in results
            for name, shard, start, end, created, meta in part
            if start_us is None or end >= start_us
        ]
        return sorted(found, key=lambda b: (b.start_us, b.name))

    async def drop(self, names: Sequence[str]) -> None:
        """Unregister these blocks (unknown names are no error): the block's row, then its name's."""
        cql = self.cql
        ns = cql.ns
        wanted = list(dict.fromkeys(names))
        places = await cql.many(WHERE_IS, [(ns, name) for name in wanted])
        found = [(name, part[0]) for name, part in zip(wanted, places, strict=True) if part]
        await cql.partitions([[(DROP_BLOCK, (ns, day, start, name))] for name, (day, start) in found])
        await cql.partitions([[(DROP_NAME, (ns, name))] for name, _ in found])

    async def pin(self, trace_id: str, now_us: int) -> None:
        cql = self.cql
        await cql.partitions([[(PIN, (cql.ns, trace_id, now_us))]])


def _due(row: StoredRow, shard: str, start_us: int) -> bool:
    """Whether the trace row is a finalized trace of ``shard`` indexed at ``start_us`` (an index row of a
    moved or purged trace, or of an earlier finalization, is not)."""
    return row.exists and row.state == "finalized" and row.shard == shard and row.start_us == start_us
