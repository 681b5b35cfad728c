"""The SQLite write side: batches, finalization, purge. Every function runs inside the caller's write
transaction on the store's connection thread; the planning is the backend-independent
:mod:`shared.store.writing` and :mod:`shared.store.finalizing`.

Row sets travel as ``executemany`` parameters, as multi-row ``VALUES`` (:func:`insert_rows`), or as one
JSON document unpacked by ``json_each``: one statement per table and batch, never one per span.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from shared.models import Event
from shared.sampling import Sampler
from shared.store.cache import TraceCache
from shared.store.chunks import StoredStates, TraceState
from shared.store.finalizing import FinalizePlan, FinalizeRow, encode_critical, plan_finalize
from shared.store.rollups import Contribution, Counters, RollupDelta, decode_contribution
from shared.store.sqlite.schema import CHUNK_BITS, HISTOGRAM_COLUMNS
from shared.store.writing import TraceRow, WritePlan, plan_write

_json: Final = msgspec.json.Encoder()
_msgpack: Final = msgspec.msgpack.Encoder()
CHUNK_MASK: Final = (1 << CHUNK_BITS) - 1


ROWS_PER_STATEMENT: Final = 50
"""Rows per ``INSERT ... VALUES (..), (..)`` of :func:`insert_flat` (and :func:`insert_rows`). Measured on
183k search index rows (six columns, a four-column key): 1.62 µs per row one row per statement, 1.24 at 50
rows, 1.33 at 200; the statement's binding loop is the same, its step, reset and interpreter-lock round
trip are paid once per statement instead of once per row. 50 rows of up to six columns stay under
SQLite's historical limit of 999 parameters."""


@functools.cache
def _values_sql(head: str, width: int, rows: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES {', '.join([row] * rows)}"


def insert_rows(c: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]]) -> None:
    """``head`` (``INSERT [OR IGNORE] INTO table``) for every row (all of one width), in order."""
    if rows:
        insert_flat(c, head, len(rows[0]), [value for row in rows for value in row])


def insert_flat(c: sqlite3.Connection, head: str, width: int, values: Sequence[Any]) -> None:
    """:func:`insert_rows` for rows given as one flat list of their values, ``width`` per row:
    :data:`ROWS_PER_STATEMENT` rows per statement, the remainder in one more."""
    rows = len(values) // width
    whole = rows - rows % ROWS_PER_STATEMENT
    if whole:
        step = width * ROWS_PER_STATEMENT
        c.executemany(
            _values_sql(head, width, ROWS_PER_STATEMENT), [values[i : i + step] for i in range(0, whole * width, step)]
        )
    if whole < rows:
        c.execute(_values_sql(head, width, rows - whole), values[whole * width :])


def _path_blob(path: Sequence[str]) -> bytes:
    return _msgpack.encode(path)


def _doc(values: Any) -> str:
    return _json.encode(values).decode()


def read_rows(c: sqlite3.Connection, trace_ids: Iterable[str]) -> dict[str, TraceRow]:
    rows = c.execute(
        "SELECT t.trace_id, t.tid, t.state, t.chunks, t.root_done_us, t.due_us"
        " FROM json_each(?1) j CROSS JOIN traces t ON t.trace_id = j.value",
        (_doc(list(trace_ids)),),
    )
    return {
        r[0]: TraceRow(trace_id=r[0], tid=r[1], state=r[2], chunks=r[3], root_done_us=r[4], due_us=r[5]) for r in rows
    }


def read_chunks(c: sqlite3.Connection, tids: Mapping[str, int]) -> dict[str, list[tuple[bool, bytes]]]:
    """The stored chunks of each trace (trace_id -> tid), ``(late, body)`` in order."""
    by_tid = {tid: trace_id for trace_id, tid in tids.items()}
    chunks: dict[str, list[tuple[bool, bytes]]] = {trace_id: [] for trace_id in tids}
    for chunk_id, late, body in c.execute(
        "SELECT c.id, c.late, c.body FROM json_each(?1) j CROSS JOIN chunks c"
        f" ON c.id BETWEEN j.value << {CHUNK_BITS} AND (j.value << {CHUNK_BITS}) | {CHUNK_MASK} ORDER BY c.id",
        (_doc(list(by_tid)),),
    ):
        chunks[by_tid[chunk_id >> CHUNK_BITS]].append((bool(late), body))
    return chunks


def read_states(c: sqlite3.Connection, tids: Mapping[str, int]) -> dict[str, TraceState]:
    """The stored state of each trace (trace_id -> tid), from its chunks in order."""
    return {trace_id: TraceState.from_chunks(rows) for trace_id, rows in read_chunks(c, tids).items()}


def current_states(
    c: sqlite3.Connection, cache: TraceCache | None, rows: Iterable[tuple[str, int, int]]
) -> dict[str, TraceState]:
    """The current state of each (trace_id, tid, chunks): the cache's copy when it is current (taken out
    of the cache: the caller puts it back after commit), else read back from the chunks."""
    states: dict[str, TraceState] = {}
    missing: dict[str, int] = {}
    for trace_id, tid, chunks in rows:
        state = cache.take(trace_id, tid, chunks) if cache is not None else None
        if state is None:
            missing[trace_id] = tid
        else:
            states[trace_id] = state
    if missing:
        states.update(read_states(c, missing))
    return states


class Written(msgspec.Struct, kw_only=True, gc=False):
    plan: WritePlan
    tids: dict[str, int]
    """Every trace of the batch that has a row, to its tid."""
    states: dict[str, TraceState]
    """Every state taken from the cache or built, current once the transaction commits."""


def write_batch(
    c: sqlite3.Connection,
    cache: TraceCache | None,
    batch: Mapping[str, Sequence[Event]],
    *,
    shards: Mapping[str, str],
    now_us: int,
    grace_us: int,
    idle_us: int,
) -> Written:
    rows = read_rows(c, batch)
    live = [(r.trace_id, r.tid, r.chunks) for r in rows.values() if r.state != "dropped"]
    states = current_states(c, cache, live)
    plan = plan_write(batch, rows, states, shards=shards, now_us=now_us, grace_us=grace_us, idle_us=idle_us)
    tids = {trace_id: row.tid for trace_id, row in rows.items()}
    if plan.new:
        inserted = c.execute(
            "INSERT INTO traces (trace_id, state, shard, first_seen_us, last_seen_us, due_us, root_done_us, chunks)"
            " SELECT value ->> 0, 'active', value ->> 1, ?2, ?2, value ->> 2, value ->> 3, 1 FROM json_each(?1)"
            " WHERE true RETURNING trace_id, tid",
            (_doc([(n.trace_id, n.shard, n.due_us, n.root_done_us) for n in plan.new]), now_us),
        ).fetchall()
        tids.update(inserted)
    if plan.updates:
        c.executemany(
            "UPDATE traces SET state = 'active', last_seen_us = ?, due_us = ?, root_done_us = ?, chunks = ?,"
            " shard = coalesce(?, shard) WHERE tid = ?",
            [(now_us, u.due_us, u.root_done_us, u.chunks, u.shard, u.tid) for u in plan.updates],
        )
    for chunk in plan.chunks:
        if chunk.seq > CHUNK_MASK:
            raise ValueError(f"trace {chunk.trace_id}: more than {CHUNK_MASK + 1} chunks")
    insert_rows(
        c, "INSERT INTO chunks", [((tids[ch.trace_id] << CHUNK_BITS) | ch.seq, ch.late, ch.body) for ch in plan.chunks]
    )
    insert_rows(c, "INSERT OR IGNORE INTO open_spans", [(s, tids[t]) for t, s in plan.opened])
    if plan.closed:
        c.executemany("DELETE FROM open_spans WHERE span_id = ? AND tid = ?", [(s, tids[t]) for t, s in plan.closed])
    states.update(plan.states)
    return Written(plan=plan, tids=tids, states=states)


class Finalized(msgspec.Struct, kw_only=True, gc=False):
    plan: FinalizePlan
    tids: dict[str, int]
    states: Mapping[str, TraceState]


class Planned(msgspec.Struct, kw_only=True, gc=False):
    """A finalize round's plan and the rows it was made from."""

    rows: list[FinalizeRow]
    states: Mapping[str, TraceState]
    plan: FinalizePlan


def finalize_rows(c: sqlite3.Connection, trace_ids: Sequence[str]) -> list[FinalizeRow]:
    """The active rows among ``trace_ids``, in their order."""
    return [
        FinalizeRow(trace_id=r[0], tid=r[1], chunks=r[2], contribution=r[3], indexed=bool(r[4]))
        for r in c.execute(
            "SELECT t.trace_id, t.tid, t.chunks, t.contribution, t.finalized_at_us IS NOT NULL"
            " FROM json_each(?1) j CROSS JOIN traces t ON t.trace_id = j.value WHERE t.state = 'active'",
            (_doc(list(dict.fromkeys(trace_ids))),),
        )
    ]


def plan_round(
    c: sqlite3.Connection, cache: TraceCache | None, trace_ids: Sequence[str], *, sampler: Sampler | None
) -> Planned:
    rows = finalize_rows(c, trace_ids)
    states: Mapping[str, TraceState]
    if cache is None:  # a finalizer process: each trace's state built as its turn comes (see StoredStates)
        states = StoredStates(read_chunks(c, {r.trace_id: r.tid for r in rows}))
    else:
        states = current_states(c, cache, [(r.trace_id, r.tid, r.chunks) for r in rows])
    return Planned(rows=rows, states=states, plan=plan_finalize(rows, states, sampler=sampler))


def finalize(
    c: sqlite3.Connection,
    cache: TraceCache | None,
    trace_ids: Sequence[str],
    *,
    now_us: int,
    sampler: Sampler | None,
    planned: Planned | None = None,
) -> Finalized:
    """Finalize the active traces among ``trace_ids``. ``planned``: a plan made earlier, outside this
    transaction; it is written only if the rows it was made from are still the rows (same incarnation,
    chunk count and previous share, hence the same states: chunks are only ever appended), else the round
    is planned again here. The plan is a function of the rows and states alone (the sampler decides by
    trace id), so either way the same rows are written."""
    if planned is None or finalize_rows(c, trace_ids) != planned.rows:
        planned = plan_round(c, cache, trace_ids, sampler=sampler)
    rows, states, plan = planned.rows, planned.states, planned.plan
    tids = {r.trace_id: r.tid for r in rows}
    if plan.waiting:
        c.executemany("UPDATE traces SET state = 'waiting' WHERE tid = ?", [(tids[t],) for t in plan.waiting])
    c.executemany(
        "UPDATE traces SET state = ?, root_service = ?, root_operation = ?, start_us = ?, duration_us = ?,"
        " span_count = ?, error_count = ?, status = ?, complete = ?, services = ?, analysis = ?, contribution = ?,"
        " late_spans = ?, refinalizations = refinalizations + (finalized_at_us IS NOT NULL),"
        " finalized_at_us = ? WHERE tid = ?",
        [
            (
                "finalized" if s.kept else "dropped",
                s.analysis.root_service,
                s.analysis.root_operation,
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
                now_us if s.kept else None,  # a dropped trace has no summary to serve
                s.tid,
            )
            for s in plan.summaries
        ],
    )
    remove_index_rows(c, [(tid, share) for _, tid, share in plan.index_removed])
    add_index_rows(c, [(tid, share) for _, tid, share in plan.index_added])
    if plan.dropped:
        delete_traces_data(c, [tid for _, tid, _ in plan.dropped])
    if plan.paths:
        c.executemany(
            "INSERT OR IGNORE INTO call_paths VALUES (?, ?, ?)",
            [(ctx, path[-1], _path_blob(path)) for ctx, path in plan.paths.items()],
        )
    apply_rollups(c, plan.delta)
    return Finalized(plan=plan, tids=tids, states=states)


def _op_index(tid: int, share: Contribution) -> list[tuple[str, str, int, int, int, int]]:
    return [(s, o, share.start_us, tid, lo, hi) for s, o, lo, hi in share.index_ops()]


def _tag_index(tid: int, share: Contribution) -> list[tuple[str, str, int, int]]:
    return [(k, v, share.start_us, tid) for k, v in share.tags]


def add_index_rows(c: sqlite3.Connection, shares: Sequence[tuple[int, Contribution]]) -> None:
    if not shares:
        return
    ops: list[Any] = []  # every row's values in one flat list per table, as insert_flat takes them
    tags: list[Any] = []
    for tid, share in shares:
        for op_row in _op_index(tid, share):
            ops += op_row
        for tag_row in _tag_index(tid, share):
            tags += tag_row
    insert_flat(c, "INSERT OR IGNORE INTO trace_ops", 6, ops)
    insert_flat(c, "INSERT OR IGNORE INTO trace_tags", 4, tags)
    insert_rows(
        c,
        "INSERT OR IGNORE INTO endpoint_traces",
        [(*s.endpoint, s.duration_us, t, s.start_us, encode_critical(s)) for t, s in shares if any(s.endpoint)],
    )


def remove_index_rows(c: sqlite3.Connection, shares: Sequence[tuple[int, Contribution]]) -> None:
    if not shares:
        return
    c.executemany(
        "DELETE FROM trace_ops WHERE service = ? AND operation = ? AND start_us = ? AND tid = ?",
        [r[:4] for t, s in shares for r in _op_index(t, s)],
    )
    c.executemany(
        "DELETE FROM trace_tags WHERE key = ? AND value = ? AND start_us = ? AND tid = ?",
        [r for t, s in shares for r in _tag_index(t, s)],
    )
    c.executemany(
        "DELETE FROM endpoint_traces WHERE service = ? AND operation = ? AND duration_us = ? AND tid = ?",
        [(*s.endpoint, s.duration_us, t) for t, s in shares if any(s.endpoint)],
    )


def delete_traces_data(c: sqlite3.Connection, tids: Collection[int]) -> None:
    """Delete the chunks and open-span entries of these traces (their rows stay)."""
    c.executemany(
        "DELETE FROM chunks WHERE id BETWEEN ? AND ?", [(t << CHUNK_BITS, (t << CHUNK_BITS) | CHUNK_MASK) for t in tids]
    )
    c.executemany("DELETE FROM open_spans WHERE tid = ?", [(t,) for t in tids])


def purge(c: sqlite3.Connection, before_us: int, limit: int) -> list[str]:
    """Delete up to ``limit`` finalized or dropped traces that started before ``before_us`` (rollups and
    indexes corrected); returns their ids."""
    rows = c.execute(
        "SELECT trace_id, tid, contribution, finalized_at_us IS NOT NULL FROM traces"
        " WHERE finalized_at_us IS NOT NULL AND start_us < ?1"
        " UNION ALL SELECT trace_id, tid, contribution, 0 FROM traces WHERE state = 'dropped' AND start_us < ?1"
        " LIMIT ?2",
        (before_us, limit),
    ).fetchall()
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
    remove_index_rows(c, indexed)
    tids = [r[1] for r in rows]
    delete_traces_data(c, tids)
    c.executemany("DELETE FROM traces WHERE tid = ?", [(t,) for t in tids])
    apply_rollups(c, delta)
    return [r[0] for r in rows]


def _upsert_sql(table: str, keys: Sequence[str]) -> str:
    counters = ["n", "errors", "duration_us", *HISTOGRAM_COLUMNS]
    columns = [*keys, *counters]
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(f"{c} = {c} + excluded.{c}" for c in counters)
    )


_OPS_KEYS: Final = ("grain", "bucket", "service", "operation", "kind")
_ENDPOINT_KEYS: Final = ("grain", "bucket", "service", "operation")
UPSERT_OPS: Final = _upsert_sql("rollup_ops", _OPS_KEYS)
UPSERT_ENDPOINTS: Final = _upsert_sql("rollup_endpoints", _ENDPOINT_KEYS)
DELETE_EMPTY_OPS: Final = (
    "DELETE FROM rollup_ops WHERE grain = ? AND bucket = ? AND service = ? AND operation = ? AND kind = ? AND n <= 0"
)
DELETE_EMPTY_ENDPOINTS: Final = (
    "DELETE FROM rollup_endpoints WHERE grain = ? AND bucket = ? AND service = ? AND operation = ? AND n <= 0"
)


def _shrunk(values: Counters) -> bool:
    return values[0] < 0


def apply_rollups(c: sqlite3.Connection, d: RollupDelta) -> None:
    """Add the delta to every rollup table; rows a subtraction emptied go (only the keys that shrank are
    probed: no scan)."""
    if not d:
        return
    ops = d.op_rows()
    c.executemany(UPSERT_OPS, [(g, b, *key, *values) for g, b, key, values in ops])
    endpoints = d.endpoint_rows()
    c.executemany(UPSERT_ENDPOINTS, [(g, b, *key, *values) for g, b, key, values in endpoints])
    deps = d.dep_rows()
    c.executemany(
        "INSERT INTO rollup_deps VALUES (?, ?, ?, ?, ?) ON CONFLICT (hour, parent, child) DO UPDATE SET"
        " calls = calls + excluded.calls, errors = errors + excluded.errors",
        deps,
    )
    c.executemany(DELETE_EMPTY_OPS, [(g, b, *key) for g, b, key, values in ops if _shrunk(values)])
    c.executemany(DELETE_EMPTY_ENDPOINTS, [(g, b, *key) for g, b, key, values in endpoints if _shrunk(values)])
    c.executemany(
        "DELETE FROM rollup_deps WHERE hour = ? AND parent = ? AND child = ? AND calls <= 0",
        [(h, p, ch) for h, p, ch, calls, _ in deps if calls < 0],
    )
    contexts = d.context_rows()
    c.executemany(
        "INSERT INTO rollup_contexts VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (grain, bucket, service, operation, ctx)"
        " DO UPDATE SET critical_us = critical_us + excluded.critical_us, traces = traces + excluded.traces",
        [(g, b, *key, *values) for g, b, key, values in contexts],
    )
    c.executemany(
        "DELETE FROM rollup_contexts WHERE grain = ? AND bucket = ? AND service = ? AND operation = ? AND ctx = ?"
        " AND traces <= 0",
        [(g, b, *key) for g, b, key, values in contexts if values[1] < 0],
    )
