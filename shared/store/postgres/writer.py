"""The PostgreSQL write side: batches, finalization, purge, each inside the caller's transaction.

Concurrency (many workers write one database at once):

* **A write locks its existing traces first**, in trace id order, with ``SELECT ... FOR UPDATE``, then
  inserts its new traces in id order (``ON CONFLICT DO NOTHING``). Chunks are only written while their
  trace's row is locked or freshly inserted, so the chunk count a finalization reads under the same lock
  is exact. If another writer created one of the "new" traces first, the insert skips it and the whole
  transaction is retried (:class:`Conflict`): the next attempt finds it as an existing trace.
* **Finalize skips what is busy** (``FOR UPDATE SKIP LOCKED``): two workers never finalize one trace at
  once, and a trace being written is left for the next round (it stays due).
* **Rollups are commutative increments**, rows in key order (no deadlocks between finalizations).

Row sets travel as column arrays unnested in one statement per table, or by binary ``COPY``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import asyncpg
import msgspec

from shared.models import Event
from shared.sampling import Sampler
from shared.store.cache import TraceCache
from shared.store.chunks import StoredStates, TraceState
from shared.store.finalizing import FinalizePlan, FinalizeRow, encode_critical, plan_finalize
from shared.store.rollups import Contribution, Counters, RollupDelta, decode_contribution
from shared.store.sql import COUNTER_COLUMNS
from shared.store.writing import TraceRow, WritePlan, plan_write

_msgpack: Final = msgspec.msgpack.Encoder()


class Conflict(Exception):
    """Another writer created a trace this transaction meant to create: retry the transaction."""


def pg_text(value: str) -> str:
    """``value`` as PostgreSQL ``text`` can hold it: NUL becomes ``\\x01\\x01``, ``\\x01`` becomes ``\\x01\\x02``.

    Reversible (:func:`py_text`) and the identity on every string without those two characters, so that
    stored names stay readable and comparisons stay exact.
    """
    if "\x00" not in value and "\x01" not in value:
        return value
    return value.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")


def py_text(value: str) -> str:
    """Inverse of :func:`pg_text`."""
    if "\x01" not in value:
        return value
    return value.replace("\x01\x01", "\x00").replace("\x01\x02", "\x01")


def pg_texts(values: Sequence[str]) -> Sequence[str]:
    """:func:`pg_text` over a column of strings; one scan when (as always in practice) none needs it."""
    blob = "".join(values)
    if "\x00" not in blob and "\x01" not in blob:
        return values
    return [pg_text(v) for v in values]


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to ``width`` column lists (for ``unnest``); empty columns when there are no rows."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


async def read_chunks(c: asyncpg.Connection, tids: Mapping[str, int]) -> dict[str, list[tuple[bool, bytes]]]:
    """The stored chunks of each trace (trace_id -> tid), ``(late, body)`` in order."""
    by_tid = {tid: trace_id for trace_id, tid in tids.items()}
    chunks: dict[str, list[tuple[bool, bytes]]] = {trace_id: [] for trace_id in tids}
    for tid, late, body in await c.fetch(
        "SELECT tid, late, body FROM chunks WHERE tid = ANY($1::bigint[]) ORDER BY tid, seq", list(by_tid)
    ):
        chunks[by_tid[tid]].append((late, body))
    return chunks


async def read_states(c: asyncpg.Connection, tids: Mapping[str, int]) -> dict[str, TraceState]:
    """The stored state of each trace (trace_id -> tid), from its chunks in order."""
    return {trace_id: TraceState.from_chunks(rows) for trace_id, rows in (await read_chunks(c, tids)).items()}


async def current_states(
    c: asyncpg.Connection, cache: TraceCache | None, rows: Iterable[tuple[str, int, int]]
) -> dict[str, TraceState]:
    """The current state of each locked (trace_id, tid, chunks): the cache's copy when current (taken out
    of the cache; the caller puts it back after commit), else read back from the chunks."""
    states: dict[str, TraceState] = {}
    missing: dict[str, int] = {}
    for trace_id, tid, chunks in rows:
        state = cache.take(trace_id, tid, chunks) if cache is not None else None
        if state is None:
            missing[trace_id] = tid
        else:
            states[trace_id] = state
    if missing:
        states.update(await read_states(c, missing))
    return states


class Written(msgspec.Struct, kw_only=True, gc=False):
    plan: WritePlan
    tids: dict[str, int]
    states: dict[str, TraceState]


INSERT_TRACES: Final = """
INSERT INTO traces (trace_id, state, shard, first_seen_us, last_seen_us, due_us, root_done_us, chunks)
SELECT u.id, 'active', u.shard, $5::bigint, $5::bigint, u.due, u.root_done, 1
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(id, shard, due, root_done) ORDER BY u.id
ON CONFLICT (trace_id) DO NOTHING
RETURNING trace_id, tid
"""

UPDATE_TRACES: Final = """
UPDATE traces t SET state = 'active', last_seen_us = $6::bigint, due_us = u.due, root_done_us = u.root_done,
    chunks = u.chunks, shard = coalesce(u.shard, t.shard)
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::integer[], $5::text[])
    AS u(tid, due, root_done, chunks, shard)
WHERE t.tid = u.tid
"""


async def write_batch(
    c: asyncpg.Connection,
    cache: TraceCache | None,
    batch: Mapping[str, Sequence[Event]],
    *,
    shards: Mapping[str, str],
    now_us: int,
    grace_us: int,
    idle_us: int,
) -> Written:
    found = await c.fetch(
        "SELECT trace_id, tid, state, chunks, root_done_us, due_us FROM traces WHERE trace_id = ANY($1::text[])"
        " ORDER BY trace_id FOR UPDATE",
        sorted(batch),
    )
    rows = {
        r[0]: TraceRow(trace_id=r[0], tid=r[1], state=r[2], chunks=r[3], root_done_us=r[4], due_us=r[5]) for r in found
    }
    live = [(r.trace_id, r.tid, r.chunks) for r in rows.values() if r.state != "dropped"]
    states = await current_states(c, cache, live)
    plan = plan_write(batch, rows, states, shards=shards, now_us=now_us, grace_us=grace_us, idle_us=idle_us)
    tids = {trace_id: row.tid for trace_id, row in rows.items()}
    if plan.new:
        new = [(n.trace_id, n.shard, n.due_us, n.root_done_us) for n in plan.new]
        inserted = await c.fetch(INSERT_TRACES, *columns(new, 4), now_us)
        if len(inserted) != len(new):
            raise Conflict("a trace of this batch was created by another writer")
        tids.update((r[0], r[1]) for r in inserted)
    if plan.updates:
        updates = [(u.tid, u.due_us, u.root_done_us, u.chunks, u.shard) for u in plan.updates]
        await c.execute(UPDATE_TRACES, *columns(updates, 5), now_us)
    if plan.chunks:
        await c.copy_records_to_table(
            "chunks",
            records=[(tids[ch.trace_id], ch.seq, ch.late, ch.body) for ch in plan.chunks],
            columns=("tid", "seq", "late", "body"),
        )
    if plan.opened:
        spans, owners = columns([(s, tids[t]) for t, s in plan.opened], 2)
        await c.execute(
            "INSERT INTO open_spans SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING",
            pg_texts(spans),
            owners,
        )
    if plan.closed:
        spans, owners = columns([(s, tids[t]) for t, s in plan.closed], 2)
        await c.execute(
            "DELETE FROM open_spans o USING unnest($1::text[], $2::bigint[]) AS u(span_id, tid)"
            " WHERE o.span_id = u.span_id AND o.tid = u.tid",
            pg_texts(spans),
            owners,
        )
    states.update(plan.states)
    return Written(plan=plan, tids=tids, states=states)


class Finalized(msgspec.Struct, kw_only=True, gc=False):
    plan: FinalizePlan
    tids: dict[str, int]
    states: Mapping[str, TraceState]


STORE_SUMMARIES: Final = """
UPDATE traces t SET state = u.state, root_service = u.root_service, root_operation = u.root_operation,
    start_us = u.start_us, duration_us = u.duration_us, span_count = u.span_count, error_count = u.error_count,
    status = u.status, complete = u.complete, services = u.services, analysis = u.analysis,
    contribution = u.contribution, late_spans = u.late_spans,
    refinalizations = t.refinalizations + (t.finalized_at_us IS NOT NULL)::integer,
    finalized_at_us = CASE WHEN u.state = 'finalized' THEN $15::bigint END  -- a dropped trace has no summary
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::integer[], $7::integer[],
            $8::text[], $9::boolean[], $10::text[], $11::bytea[], $12::bytea[], $13::integer[], $14::text[])
    AS u(tid, root_service, root_operation, start_us, duration_us, span_count, error_count,
         status, complete, services, analysis, contribution, late_spans, state)
WHERE t.tid = u.tid
"""


async def finalize(
    c: asyncpg.Connection,
    cache: TraceCache | None,
    trace_ids: Sequence[str],
    *,
    now_us: int,
    sampler: Sampler | None,
) -> Finalized:
    rows = [
        FinalizeRow(trace_id=r[0], tid=r[1], chunks=r[2], contribution=r[3], indexed=r[4])
        for r in await c.fetch(
            "SELECT trace_id, tid, chunks, contribution, finalized_at_us IS NOT NULL FROM traces"
            " WHERE trace_id = ANY($1::text[]) AND state = 'active' ORDER BY trace_id FOR UPDATE SKIP LOCKED",
            list(dict.fromkeys(trace_ids)),
        )
    ]
    tids = {r.trace_id: r.tid for r in rows}
    states: Mapping[str, TraceState]
    if cache is None:  # a finalizer process: each trace's state built as its turn comes (see StoredStates)
        states = StoredStates(await read_chunks(c, tids))
    else:
        states = await current_states(c, cache, [(r.trace_id, r.tid, r.chunks) for r in rows])
    plan = plan_finalize(rows, states, sampler=sampler)
    if plan.waiting:
        await c.execute(
            "UPDATE traces SET state = 'waiting' WHERE tid = ANY($1::bigint[])", [tids[t] for t in plan.waiting]
        )
    if plan.summaries:
        summaries = [
            (
                s.tid,
                None if s.analysis.root_service is None else pg_text(s.analysis.root_service),
                None if s.analysis.root_operation is None else pg_text(s.analysis.root_operation),
                s.analysis.start_us,
                s.analysis.duration_us,
                s.analysis.span_count,
                s.analysis.error_count,
                s.status,
                s.analysis.complete,
                s.services_json,
                s.analysis_blob,
                s.contribution_blob,
                s.late_spans,
                "finalized" if s.kept else "dropped",
            )
            for s in plan.summaries
        ]
        await c.execute(STORE_SUMMARIES, *columns(summaries, 14), now_us)
    await remove_index_rows(c, [(tid, share) for _, tid, share in plan.index_removed])
    await add_index_rows(c, [(tid, share) for _, tid, share in plan.index_added])
    if plan.dropped:
        await delete_traces_data(c, [tid for _, tid, _ in plan.dropped])
    if plan.paths:
        ids, labels, paths = columns(
            [(ctx, pg_text(path[-1]), _msgpack.encode(path)) for ctx, path in sorted(plan.paths.items())], 3
        )
        await c.execute(
            "INSERT INTO call_paths SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[]) ON CONFLICT DO NOTHING",
            ids,
            labels,
            paths,
        )
    await apply_rollups(c, plan.delta)
    return Finalized(plan=plan, tids=tids, states=states)


def _op_index(tid: int, share: Contribution) -> list[tuple[str, str, int, int, int, int]]:
    return [(pg_text(s), pg_text(o), share.start_us, tid, lo, hi) for s, o, lo, hi in share.index_ops()]


def _tag_index(tid: int, share: Contribution) -> list[tuple[str, str, int, int]]:
    return [(pg_text(k), pg_text(v), share.start_us, tid) for k, v in share.tags]


async def add_index_rows(c: asyncpg.Connection, shares: Sequence[tuple[int, Contribution]]) -> None:
    if not shares:
        return
    await c.copy_records_to_table("trace_ops", records=[r for t, s in shares for r in _op_index(t, s)])
    await c.copy_records_to_table("trace_tags", records=[r for t, s in shares for r in _tag_index(t, s)])
    endpoints = [
        (pg_text(s.endpoint[0]), pg_text(s.endpoint[1]), s.duration_us, t, s.start_us, encode_critical(s))
        for t, s in shares
        if any(s.endpoint)
    ]
    if endpoints:
        await c.copy_records_to_table("endpoint_traces", records=endpoints)


async def remove_index_rows(c: asyncpg.Connection, shares: Sequence[tuple[int, Contribution]]) -> None:
    if not shares:
        return
    ops = [r[:4] for t, s in shares for r in _op_index(t, s)]
    await c.execute(
        "DELETE FROM trace_ops o USING unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])"
        " AS u(service, operation, start_us, tid) WHERE o.service = u.service AND o.operation = u.operation"
        " AND o.start_us = u.start_us AND o.tid = u.tid",
        *columns(ops, 4),
    )
    endpoints = [
        (pg_text(s.endpoint[0]), pg_text(s.endpoint[1]), s.duration_us, t) for t, s in shares if any(s.endpoint)
    ]
    await c.execute(
        "DELETE FROM endpoint_traces e USING unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])"
        " AS u(service, operation, duration_us, tid) WHERE e.service = u.service AND e.operation = u.operation"
        " AND e.duration_us = u.duration_us AND e.tid = u.tid",
        *columns(endpoints, 4),
    )
    tags = [r for t, s in shares for r in _tag_index(t, s)]
    await c.execute(
        "DELETE FROM trace_tags g USING unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])"
        " AS u(key, value, start_us, tid) WHERE g.key = u.key AND g.value = u.value"
        " AND g.start_us = u.start_us AND g.tid = u.tid",
        *columns(tags, 4),
    )


async def delete_traces_data(c: asyncpg.Connection, tids: Sequence[int]) -> None:
    """Delete the chunks and open-span entries of these traces (their rows stay)."""
    await c.execute("DELETE FROM chunks WHERE tid = ANY($1::bigint[])", list(tids))
    await c.execute("DELETE FROM open_spans WHERE tid = ANY($1::bigint[])", list(tids))


async def purge(c: asyncpg.Connection, before_us: int, limit: int) -> list[str]:
    """Delete up to ``limit`` finalized or dropped traces that started before ``before_us`` (rollups and
    indexes corrected; traces being written or finalized are skipped); returns their ids."""
    rows = await c.fetch(
        "SELECT trace_id, tid, contribution, finalized_at_us IS NOT NULL FROM traces"
        " WHERE (finalized_at_us IS NOT NULL OR state = 'dropped') AND start_us < $1"
        " LIMIT $2 FOR UPDATE SKIP LOCKED",
        before_us,
        limit,
    )
    if not rows:
        return []
    delta = RollupDelta()
    indexed: list[tuple[int, Contribution]] = []
    for _, tid, blob, was_indexed in rows:
        if blob is not None:
            share = decode_contribution(blob)
            delta.add(share, -1)
            if was_indexed:
                indexed.append((tid, share))
    await remove_index_rows(c, indexed)
    tids = [r[1] for r in rows]
    await delete_traces_data(c, tids)
    await c.execute("DELETE FROM traces WHERE tid = ANY($1::bigint[])", tids)
    await apply_rollups(c, delta)
    return [r[0] for r in rows]


def _upsert_sql(table: str, keys: Sequence[tuple[str, str]]) -> str:
    names = [n for n, _ in keys] + COUNTER_COLUMNS
    kinds = [k for _, k in keys] + ["bigint"] * len(COUNTER_COLUMNS)
    casts = ", ".join(f"${i + 1}::{kind}[]" for i, kind in enumerate(kinds))
    key_list = ", ".join(n for n, _ in keys)
    updates = ", ".join(f"{n} = r.{n} + excluded.{n}" for n in COUNTER_COLUMNS)
    return (
        f"INSERT INTO {table} AS r ({', '.join(names)}) SELECT * FROM unnest({casts}) AS u({', '.join(names)})"
        f" ON CONFLICT ({key_list}) DO UPDATE SET {updates}"
    )


def _delete_empty_sql(table: str, keys: Sequence[tuple[str, str]]) -> str:
    casts = ", ".join(f"${i + 1}::{kind}[]" for i, (_, kind) in enumerate(keys))
    key_list = ", ".join(n for n, _ in keys)
    matches = " AND ".join(f"r.{n} = u.{n}" for n, _ in keys)
    return f"DELETE FROM {table} r USING unnest({casts}) AS u({key_list}) WHERE {matches} AND r.n <= 0"


_OP_KEYS: Final = (
    ("grain", "smallint"),
    ("bucket", "bigint"),
    ("service", "text"),
    ("operation", "text"),
    ("kind", "text"),
)
_ENDPOINT_KEYS: Final = (("grain", "smallint"), ("bucket", "bigint"), ("service", "text"), ("operation", "text"))
UPSERT_OPS: Final = _upsert_sql("rollup_ops", _OP_KEYS)
UPSERT_ENDPOINTS: Final = _upsert_sql("rollup_endpoints", _ENDPOINT_KEYS)
DELETE_EMPTY_OPS: Final = _delete_empty_sql("rollup_ops", _OP_KEYS)
DELETE_EMPTY_ENDPOINTS: Final = _delete_empty_sql("rollup_endpoints", _ENDPOINT_KEYS)


async def _upsert_rollup(
    c: asyncpg.Connection, upsert: str, delete: str, rows: Sequence[tuple[int, int, tuple[str, ...], Counters]]
) -> None:
    if not rows:
        return
    flat = [(g, b, *(pg_text(k) for k in key), *values) for g, b, key, values in rows]  # rows in key order
    width = 2 + len(rows[0][2])
    await c.execute(upsert, *columns(flat, width + len(COUNTER_COLUMNS)))
    shrunk = [row[:width] for row, (_, _, _, values) in zip(flat, rows, strict=True) if values[0] < 0]
    if shrunk:
        await c.execute(delete, *columns(shrunk, width))


async def apply_rollups(c: asyncpg.Connection, d: RollupDelta) -> None:
    """Add the delta to every rollup table: one commutative upsert per table, rows in key order, then
    drop the rows a subtraction emptied."""
    if not d:
        return
    await _upsert_rollup(c, UPSERT_OPS, DELETE_EMPTY_OPS, d.op_rows())
    await _upsert_rollup(c, UPSERT_ENDPOINTS, DELETE_EMPTY_ENDPOINTS, d.endpoint_rows())
    deps = [(h, pg_text(p), pg_text(ch), calls, errors) for h, p, ch, calls, errors in d.dep_rows()]
    if deps:
        await c.execute(
            "INSERT INTO rollup_deps AS r (hour, parent, child, calls, errors)"
            " SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])"
            " ON CONFLICT (hour, parent, child) DO UPDATE SET calls = r.calls + excluded.calls,"
            " errors = r.errors + excluded.errors",
            *columns(deps, 5),
        )
        gone = [row[:3] for row in deps if row[3] < 0]
        if gone:
            await c.execute(
                "DELETE FROM rollup_deps r USING unnest($1::bigint[], $2::text[], $3::text[]) AS u(hour, parent, child)"
                " WHERE r.hour = u.hour AND r.parent = u.parent AND r.child = u.child AND r.calls <= 0",
                *columns(gone, 3),
            )
    contexts = [
        (g, b, pg_text(svc), pg_text(op), ctx, values[0], values[1])
        for g, b, (svc, op, ctx), values in d.context_rows()
    ]
    if contexts:
        await c.execute(
            "INSERT INTO rollup_contexts AS r SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::text[],"
            " $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])"
            " ON CONFLICT (grain, bucket, service, operation, ctx) DO UPDATE SET"
            " critical_us = r.critical_us + excluded.critical_us, traces = r.traces + excluded.traces",
            *columns(contexts, 7),
        )
        emptied = [row[:5] for row in contexts if row[6] < 0]
        if emptied:
            await c.execute(
                "DELETE FROM rollup_contexts r USING unnest($1::smallint[], $2::bigint[], $3::text[], $4::text[],"
                " $5::bigint[]) AS u(grain, bucket, service, operation, ctx) WHERE r.grain = u.grain"
                " AND r.bucket = u.bucket AND r.service = u.service AND r.operation = u.operation AND r.ctx = u.ctx"
                " AND r.traces <= 0",
                *columns(emptied, 5),
            )
