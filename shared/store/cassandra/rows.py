"""A trace's partition as read: its static columns (the trace row), its chunk ids, and the state derived
from them.

Writers never write a state: they only add chunks (and due times). A trace is in the state its last
finalization left it (``finalized``, ``waiting`` or ``dropped``, the owner's ``state`` column) while its
chunk set is still the set that finalization used, recorded as a count and an XOR fingerprint of the
chunk ids (``final_n``, ``final_fp``); once a chunk that finalization did not see is stored, the trace is
``active``, whoever wrote it and however the writes raced (a chunk and its trace's columns are one
statement). ``dropped`` is final: later chunks are discarded by the writers that see it, and ignored.

The writer's cache key is the incarnation ``tid`` XOR the chunk fingerprint: a cached state is used only
for the exact chunk set it was built from.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from functools import reduce
from operator import xor
from typing import Final

import msgspec

from shared.store.cassandra.schema import Cql
from shared.store.cassandra.session import Row
from shared.store.chunks import TraceState
from shared.store.writing import RowState, TraceRow

ROW_QUERY: Final = (
    "SELECT seq, chunk_id, tid, shard, first_seen_us, due_us, root_done_us, active_at, state, final_n, final_fp,"
    " finalized_at_us, contrib_minutes, refinalizations, start_us, WRITETIME(body) FROM traces"
    " WHERE ns = ? AND trace_id = ?"
)
CHUNKS_QUERY: Final = "SELECT chunk_id, late, body, WRITETIME(body) FROM traces WHERE ns = ? AND trace_id = ?"


def fingerprint(chunk_ids: Iterable[int]) -> int:
    """The XOR of a set of random 63-bit chunk ids: equal sets have equal fingerprints, and two different
    sets of random ids collide with probability 2**-63."""
    return reduce(xor, chunk_ids, 0)


def derive_state(column: str | None, final_n: int | None, final_fp: int | None, chunk_ids: Sequence[int]) -> RowState:
    """A trace's state from the owner's ``state`` column, the chunk set it recorded, and the chunks stored."""
    if column == "dropped":
        return "dropped"
    if column in ("finalized", "waiting") and final_n == len(chunk_ids) and final_fp == fingerprint(chunk_ids):
        return "finalized" if column == "finalized" else "waiting"
    return "active"


class StoredRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One trace's static columns and chunk ids (in write order)."""

    trace_id: str
    tid: int | None
    """The incarnation (random, set at creation); ``None``: no trace (never written, or purged)."""
    shard: str | None
    first_seen_us: int | None
    due_us: int | None
    root_done_us: int | None
    active_at: int | None
    """The hour partition of the trace's ``idx_active`` row."""
    state_column: str | None
    final_n: int | None
    final_fp: int | None
    finalized_at_us: int | None
    contrib_minutes: frozenset[int]
    refinalizations: int
    start_us: int | None
    chunk_ids: tuple[int, ...]
    written_us: int = 0
    """The latest write timestamp of the chunks (each written with its batch's ``idx_active`` row)."""

    @property
    def exists(self) -> bool:
        return self.tid is not None

    @property
    def state(self) -> RowState:
        """The derived state (see the module docstring); meaningful only when :attr:`exists`."""
        return derive_state(self.state_column, self.final_n, self.final_fp, self.chunk_ids)

    @property
    def cache_key(self) -> int:
        return (self.tid or 0) ^ fingerprint(self.chunk_ids)

    def trace_row(self) -> TraceRow:
        """The row :func:`~shared.store.writing.plan_write` plans against (``tid``: the cache key)."""
        return TraceRow(
            trace_id=self.trace_id,
            tid=self.cache_key,
            state=self.state,
            chunks=len(self.chunk_ids),
            root_done_us=self.root_done_us,
            due_us=self.due_us or 0,
        )


def _stored_row(trace_id: str, rows: list[Row]) -> StoredRow:
    if not rows:
        return StoredRow(
            trace_id=trace_id,
            tid=None,
            shard=None,
            first_seen_us=None,
            due_us=None,
            root_done_us=None,
            active_at=None,
            state_column=None,
            final_n=None,
            final_fp=None,
            finalized_at_us=None,
            contrib_minutes=frozenset(),
            refinalizations=0,
            start_us=None,
            chunk_ids=(),
        )
    first = rows[0]
    (_, _, tid, shard, first_seen, due, root_done, active_at, state, final_n, final_fp, finalized_at) = first[:12]
    minutes, refinalizations, start_us = first[12:15]
    return StoredRow(
        trace_id=trace_id,
        tid=tid,
        shard=shard,
        first_seen_us=first_seen,
        due_us=due,
        root_done_us=root_done,
        active_at=active_at,
        state_column=state,
        final_n=final_n,
        final_fp=final_fp,
        finalized_at_us=finalized_at,
        contrib_minutes=frozenset(minutes or ()),
        refinalizations=refinalizations or 0,
        start_us=start_us,
        chunk_ids=tuple(r[1] for r in rows if r[1] is not None),
        written_us=max((r[15] or 0 for r in rows), default=0),
    )


async def read_rows(cql: Cql, trace_ids: Iterable[str]) -> dict[str, StoredRow]:
    """The partition of each trace (one read each, concurrently); a missing trace maps to a row that
    does not :attr:`~StoredRow.exists`."""
    ids = list(dict.fromkeys(trace_ids))
    results = await cql.many(ROW_QUERY, [(cql.ns, t) for t in ids])
    return {t: _stored_row(t, rows) for t, rows in zip(ids, results, strict=True)}


class Chunks(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A trace's stored chunks, in write order."""

    ids: list[int]
    late: list[bool]
    bodies: list[bytes]
    written_us: int = 0
    """The latest write timestamp of these chunks (see :attr:`StoredRow.written_us`)."""

    def flags(self, *, late_ids: Collection[int] = (), previous: Collection[int] | None = None) -> list[bool]:
        """Which chunks are late: written as late, listed in ``late_ids`` (found late by an earlier
        finalization), or, given ``previous`` (the chunk set of the previous finalization), not in it."""
        return [
            flag or cid in late_ids or (previous is not None and cid not in previous)
            for cid, flag in zip(self.ids, self.late, strict=True)
        ]

    def state(self, flags: Sequence[bool] | None = None) -> TraceState:
        """The merged state, with ``flags`` (default: as written) saying which chunks are late."""
        return TraceState.from_chunks(zip(self.late if flags is None else flags, self.bodies, strict=True))


async def read_chunks(cql: Cql, trace_ids: Iterable[str]) -> dict[str, Chunks]:
    """Every chunk of each trace (one paged read each, concurrently)."""
    ids = list(dict.fromkeys(trace_ids))
    results = await cql.many(CHUNKS_QUERY, [(cql.ns, t) for t in ids])
    out: dict[str, Chunks] = {}
    for trace_id, rows in zip(ids, results, strict=True):
        chunk_rows = [r for r in rows if r[0] is not None]
        out[trace_id] = Chunks(
            ids=[r[0] for r in chunk_rows],
            late=[bool(r[1]) for r in chunk_rows],
            bodies=[r[2] for r in chunk_rows],
            written_us=max((r[3] or 0 for r in chunk_rows), default=0),
        )
    return out
