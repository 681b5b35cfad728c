"""The archive registry of the SQL backends, written once: the traces due to move, a block's registration
with its traces' hot rows removed in the same transaction, the registered blocks, the pinned traces.

A registration removes a trace's rows as :func:`.writer.purge` does (chunks, open spans, the row, its
endpoint index rows; its ``op_index`` and ``tag_index`` rows stay for :func:`.writer.sweep_index`: a search
joins ``traces`` and never sees them) but leaves the rollups alone: the trace moved, it is still counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from shared.store.base import ArchivedBlock, StoredTrace
from shared.store.sql.driver import SqlDriver
from shared.store.sql.reader import read_trace

DUE: Final = (
    "SELECT trace_id FROM traces WHERE state = 'finalized' AND shard = ? AND start_us < ?"
    " ORDER BY start_us, trace_id LIMIT ?"
)
REGISTER: Final = "INSERT INTO archive_blocks VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING"
BLOCKS: Final = "SELECT name, shard, start_us, end_us, created_us, meta FROM archive_blocks"
PIN: Final = "INSERT INTO archive_pins VALUES (?, ?) ON CONFLICT (trace_id) DO NOTHING"


async def due_traces(d: SqlDriver, before_us: int, shard: str, limit: int) -> list[StoredTrace]:
    """Up to ``limit`` finalized traces of ``shard`` that started before ``before_us``, oldest first, as
    :meth:`~.reader.SqlReader.get_trace` reads them (their analysis left to the caller), in one read."""
    ids = [str(r[0]) for r in await d.fetch(d.dialect.sql(DUE), [shard, before_us, limit])]
    found = [await read_trace(d, trace_id) for trace_id in ids]
    return [t for t in found if t is not None and t.state == "finalized"]


async def register(d: SqlDriver, block: ArchivedBlock, trace_ids: Sequence[str]) -> list[str]:
    """Register ``block`` and remove the hot rows of those of ``trace_ids`` it may take
    (:meth:`~.driver.SqlDriver.archive_rows`); the ids removed. A trace's ``endpoint_traces`` row (what a
    tail read walks alone: it goes with its trace) is keyed by its row's root service, root operation and
    duration, as its finalization wrote them: read from the row, never derived from the spans again."""
    values = [block.name, block.shard, block.start_us, block.end_us, block.created_us, block.meta]
    await d.execute(d.dialect.sql(REGISTER), values)
    rows = await d.archive_rows(trace_ids, block.created_us)
    if not rows:
        return []
    endpoints = [
        (service or "", operation or "", duration_us, tid)
        for _, tid, service, operation, duration_us in rows
        if (service or operation) and duration_us is not None
    ]
    if endpoints:
        await d.remove_index_rows([], [], endpoints)
    tids = [r[1] for r in rows]
    await d.delete_traces_data(tids)
    await d.delete_traces(tids)
    return [r[0] for r in rows]


async def blocks(d: SqlDriver, start_us: int | None, end_us: int | None) -> list[ArchivedBlock]:
    """The registered blocks overlapping [start_us, end_us] (either bound ``None``: open), by start."""
    where, params = [], []
    if end_us is not None:
        where.append("start_us <= ?")
        params.append(end_us)
    if start_us is not None:
        where.append("end_us >= ?")
        params.append(start_us)
    sql = BLOCKS + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY start_us, name"
    return [
        ArchivedBlock(name=str(r[0]), shard=str(r[1]), start_us=r[2], end_us=r[3], created_us=r[4], meta=bytes(r[5]))
        for r in await d.fetch(d.dialect.sql(sql), params)
    ]


async def drop(d: SqlDriver, names: Sequence[str]) -> None:
    await d.execute_many(d.dialect.sql("DELETE FROM archive_blocks WHERE name = ?"), [(n,) for n in names])


async def pin(d: SqlDriver, trace_id: str, now_us: int) -> None:
    await d.execute(d.dialect.sql(PIN), [trace_id, now_us])


async def pins(d: SqlDriver) -> set[str]:
    return {str(r[0]) for r in await d.fetch("SELECT trace_id FROM archive_pins", [])}
