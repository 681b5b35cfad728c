"""SQLite's SQL and driver calls for the shared algorithms (:mod:`shared.store.sql`): a
:class:`SqliteDriver` on the store's connection, inside the caller's transaction, on the store's
connection thread. Its coroutines never suspend (:func:`~shared.store.sql.driver.run_sync`).

Row sets travel as ``executemany`` parameters, as multi-row ``VALUES`` (:func:`insert_rows`), or as one
JSON document unpacked by ``json_each``: one statement per table and batch, never one per span.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from shared.critical_paths import Path
from shared.store.finalizing import FinalizeRow, Summary
from shared.store.rollups import UNSEEN_LIVE, UNSEEN_VALUES, Counters, RollupDelta
from shared.store.sketch import add_packed, has_negative
from shared.store.sql import migrate
from shared.store.sql.driver import (
    OP_WIDTH,
    TAG_WIDTH,
    ArchiveRow,
    Bound,
    EndpointIndexRow,
    EndpointKey,
    PurgeCandidate,
    Row,
    finalize_rows,
    run_sync,
    trace_rows,
)
from shared.store.sql.statements import COUNTER_COLUMNS, Dialect
from shared.store.sqlite.schema import (
    ADDED_COLUMNS,
    ADDED_TABLE_NAMES,
    ADDED_TABLES,
    CHUNK_BITS,
    OP_INDEX,
    SCHEMA,
    SCHEMA_VERSION,
    SERVICE_BINS,
    SERVICE_SKETCH,
    SKETCH_COLUMN,
    SKETCH_SCHEMA,
    TAG_INDEX,
)
from shared.store.writing import Chunk, NewTrace, TraceRow, TraceUpdate

_json: Final = msgspec.json.Encoder()
_msgpack: Final = msgspec.msgpack.Encoder()
_path_decoder: Final = msgspec.msgpack.Decoder(list[str])
CHUNK_MASK: Final = (1 << CHUNK_BITS) - 1
DIALECT: Final = Dialect(
    numbered=False,
    text=str,
    untext=str,
    false="0",
    join="CROSS JOIN",
    duration_index_hint="INDEXED BY traces_duration",
    start_index_hint="INDEXED BY traces_start",
)

ROWS_PER_STATEMENT: Final = 50
"""Rows per ``INSERT ... VALUES (..), (..)`` of :func:`insert_flat` (and :func:`insert_rows`): the
statement's step, reset and interpreter-lock round trip are paid once per statement instead of once per
row; 50 rows of up to six columns stay under SQLite's historical limit of 999 parameters."""


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


def _doc(values: Any) -> str:
    return _json.encode(values).decode()


def _upsert_sql(
    table: str, keys: Sequence[str], counters: Sequence[str] = COUNTER_COLUMNS, *, sketch: bool = False
) -> str:
    """Counters added; with ``sketch``, the row's packed sketch (the last column) merged by ``sketch_add``."""
    columns = [*keys, *counters, *(["bins"] if sketch else [])]
    updates = [f"{c} = {c} + excluded.{c}" for c in counters] + (["bins = sketch_add(bins, excluded.bins)"] * sketch)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(updates)
    )


def _delete_empty_sql(table: str, keys: Sequence[str], count: str = "n") -> str:
    return f"DELETE FROM {table} WHERE {' AND '.join(f'{k} = ?' for k in keys)} AND {count} <= 0"


_OP_KEYS: Final = ("grain", "bucket", "service", "operation", "kind")
_ENDPOINT_KEYS: Final = ("grain", "bucket", "service", "operation")
UPSERT_OPS: Final = _upsert_sql("rollup_ops", _OP_KEYS, sketch=True)
UPSERT_ENDPOINTS: Final = _upsert_sql("rollup_endpoints", _ENDPOINT_KEYS, sketch=True)
UPSERT_SERVICE_SKETCH: Final = _upsert_sql("rollup_services_sketch", ("service",), (), sketch=True)
TIDY_SERVICE_SKETCH: Final = "UPDATE rollup_services_sketch SET bins = sketch_add(bins, NULL) WHERE service = ?"
"""A service's sketch of which a delta took bins out: re-packed without the bins at 0 or below (a row the
delta inserted holds the delta as it came)."""
DELETE_EMPTY_SERVICE_SKETCH: Final = "DELETE FROM rollup_services_sketch WHERE service = ? AND length(bins) = 0"
DELETE_EMPTY_OPS: Final = _delete_empty_sql("rollup_ops", _OP_KEYS)
DELETE_EMPTY_ENDPOINTS: Final = _delete_empty_sql("rollup_endpoints", _ENDPOINT_KEYS)
DELETE_EMPTY_DEPS: Final = _delete_empty_sql("rollup_deps", ("hour", "parent", "child"), "calls")
DELETE_EMPTY_CONTEXTS: Final = _delete_empty_sql(
    "rollup_contexts", ("grain", "bucket", "service", "operation", "ctx"), "traces"
)
UNSEEN_KEYS: Final = ("grain", "bucket", "service")
UPSERT_UNSEEN: Final = (
    "INSERT INTO rollup_unseen VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (grain, bucket, service) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in UNSEEN_VALUES)
)
DELETE_EMPTY_UNSEEN: Final = _delete_empty_sql("rollup_unseen", UNSEEN_KEYS, UNSEEN_VALUES[UNSEEN_LIVE])
UPSERT_DEPS: Final = (
    "INSERT INTO rollup_deps VALUES (?, ?, ?, ?, ?) ON CONFLICT (hour, parent, child) DO UPDATE SET"
    " calls = calls + excluded.calls, errors = errors + excluded.errors"
)
UPSERT_CONTEXTS: Final = (
    "INSERT INTO rollup_contexts VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (grain, bucket, service, operation, ctx)"
    " DO UPDATE SET critical_us = critical_us + excluded.critical_us, traces = traces + excluded.traces"
)
STORE_SUMMARY: Final = (
    "UPDATE traces SET state = ?, root_service = ?, root_operation = ?, start_us = ?, duration_us = ?,"
    " span_count = ?, error_count = ?, status = ?, complete = ?, services = ?, analysis = ?, contribution = ?,"
    " late_spans = ?, final_chunks = ?, refinalizations = refinalizations + (finalized_at_us IS NOT NULL),"
    " finalized_at_us = ? WHERE tid = ?"
)


def _shrunk(values: Counters) -> bool:
    return values[0] < 0


class SqliteDriver(Bound[sqlite3.Connection]):
    """The :class:`~shared.store.sql.driver.SqlDriver` of one SQLite connection."""

    __slots__ = ()
    dialect: Final = DIALECT
    v4_tables: Final = (OP_INDEX, TAG_INDEX, SERVICE_BINS)
    v5_sketch: Final = (SKETCH_COLUMN, SERVICE_SKETCH)
    chunk_key: Final = "id"

    async def fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Row]:
        return self.c.execute(sql, params).fetchall()

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        self.c.execute(sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.c.executemany(sql, rows)

    async def paths(self, ids: Collection[int]) -> dict[int, tuple[str, ...]]:
        rows = self.c.execute(
            "SELECT p.ctx, p.path FROM json_each(?1) j CROSS JOIN call_paths p ON p.ctx = j.value", (_doc(list(ids)),)
        )
        return {ctx: tuple(_path_decoder.decode(path)) for ctx, path in rows}

    async def chunk_rows(self, tids: Mapping[str, int]) -> dict[str, list[tuple[bool, bytes]]]:
        by_tid = {tid: trace_id for trace_id, tid in tids.items()}
        chunks: dict[str, list[tuple[bool, bytes]]] = {trace_id: [] for trace_id in tids}
        for chunk_id, late, body in self.c.execute(
            "SELECT c.id, c.late, c.body FROM json_each(?1) j CROSS JOIN chunks c"
            f" ON c.id BETWEEN j.value << {CHUNK_BITS} AND (j.value << {CHUNK_BITS}) | {CHUNK_MASK} ORDER BY c.id",
            (_doc(list(by_tid)),),
        ):
            chunks[by_tid[chunk_id >> CHUNK_BITS]].append((bool(late), body))
        return chunks

    # -- writes ---------------------------------------------------------------------------------------

    async def read_rows(self, trace_ids: Collection[str]) -> dict[str, TraceRow]:
        rows = self.c.execute(
            "SELECT t.trace_id, t.tid, t.state, t.chunks, t.root_done_us, t.due_us"
            " FROM json_each(?1) j CROSS JOIN traces t ON t.trace_id = j.value",
            (_doc(list(trace_ids)),),
        )
        return trace_rows(rows)

    async def insert_traces(self, new: Sequence[NewTrace], now_us: int) -> Iterable[tuple[str, int]]:
        rows: list[tuple[str, int]] = self.c.execute(
            "INSERT INTO traces (trace_id, state, shard, first_seen_us, last_seen_us, due_us, root_done_us, chunks)"
            " SELECT value ->> 0, 'active', value ->> 1, ?2, ?2, value ->> 2, value ->> 3, 1 FROM json_each(?1)"
            " WHERE true RETURNING trace_id, tid",
            (_doc([(n.trace_id, n.shard, n.due_us, n.root_done_us) for n in new]), now_us),
        ).fetchall()
        return rows

    async def update_traces(self, updates: Sequence[TraceUpdate], now_us: int) -> None:
        self.c.executemany(
            "UPDATE traces SET state = 'active', last_seen_us = ?, due_us = ?, root_done_us = ?, chunks = ?,"
            " shard = coalesce(?, shard) WHERE tid = ?",
            [(now_us, u.due_us, u.root_done_us, u.chunks, u.shard, u.tid) for u in updates],
        )

    async def insert_chunks(self, chunks: Sequence[Chunk], tids: Mapping[str, int]) -> None:
        for chunk in chunks:
            if chunk.seq > CHUNK_MASK:
                raise ValueError(f"trace {chunk.trace_id}: more than {CHUNK_MASK + 1} chunks")
        insert_rows(
            self.c,
            "INSERT INTO chunks",
            [((tids[ch.trace_id] << CHUNK_BITS) | ch.seq, ch.late, ch.body) for ch in chunks],
        )

    async def open_spans(self, rows: Sequence[tuple[str, int]]) -> None:
        insert_rows(self.c, "INSERT OR IGNORE INTO open_spans", rows)

    async def close_spans(self, rows: Sequence[tuple[str, int]]) -> None:
        self.c.executemany("DELETE FROM open_spans WHERE span_id = ? AND tid = ?", rows)

    # -- finalization and purge ------------------------------------------------------------------------

    async def finalize_rows(self, trace_ids: Sequence[str]) -> list[FinalizeRow]:
        rows = self.c.execute(
            "SELECT t.trace_id, t.tid, t.chunks, t.contribution, t.final_chunks, t.finalized_at_us IS NOT NULL"
            " FROM json_each(?1) j CROSS JOIN traces t ON t.trace_id = j.value WHERE t.state = 'active'",
            (_doc(list(dict.fromkeys(trace_ids))),),
        )
        return finalize_rows(rows)

    async def mark_waiting(self, tids: Sequence[int]) -> None:
        self.c.executemany("UPDATE traces SET state = 'waiting' WHERE tid = ?", [(t,) for t in tids])

    async def store_summaries(self, summaries: Sequence[Summary], now_us: int) -> None:
        self.c.executemany(
            STORE_SUMMARY,
            [
                # a dropped trace has no summary to serve
                (
                    "finalized" if s.kept else "dropped",
                    *s.values(analysis=False),
                    s.chunks,
                    now_us if s.kept else None,
                    s.tid,
                )
                for s in summaries
            ],
        )

    async def add_index_rows(
        self, ops: Sequence[Any], tags: Sequence[Any], endpoints: Sequence[EndpointIndexRow]
    ) -> None:
        insert_flat(self.c, "INSERT OR IGNORE INTO op_index", OP_WIDTH, ops)
        insert_flat(self.c, "INSERT OR IGNORE INTO tag_index", TAG_WIDTH, tags)
        insert_rows(self.c, "INSERT OR IGNORE INTO endpoint_traces", endpoints)

    async def remove_index_rows(
        self, ops: Sequence[Any], tags: Sequence[Any], endpoints: Sequence[EndpointKey]
    ) -> None:
        c = self.c
        c.executemany(
            "DELETE FROM op_index WHERE op = ? AND start_us = ? AND tid = ?",
            [ops[i : i + 3] for i in range(0, len(ops), OP_WIDTH)],
        )
        c.executemany(
            "DELETE FROM tag_index WHERE tag = ? AND start_us = ? AND tid = ?",
            [tags[i : i + TAG_WIDTH] for i in range(0, len(tags), TAG_WIDTH)],
        )
        c.executemany(
            "DELETE FROM endpoint_traces WHERE service = ? AND operation = ? AND duration_us = ? AND tid = ?", endpoints
        )

    async def delete_traces_data(self, tids: Sequence[int]) -> None:
        self.c.executemany(
            "DELETE FROM chunks WHERE id BETWEEN ? AND ?",
            [(t << CHUNK_BITS, (t << CHUNK_BITS) | CHUNK_MASK) for t in tids],
        )
        self.c.executemany("DELETE FROM open_spans WHERE tid = ?", [(t,) for t in tids])

    async def insert_paths(self, paths: Mapping[int, Path]) -> None:
        self.c.executemany(
            "INSERT OR IGNORE INTO call_paths VALUES (?, ?, ?)",
            [(ctx, path[-1], _msgpack.encode(path)) for ctx, path in paths.items()],
        )

    async def apply_rollups(self, delta: RollupDelta) -> None:
        """Only the keys that shrank are probed for emptied rows: no scan."""
        if not delta:
            return
        c = self.c
        ops = delta.op_sketch_rows()
        c.executemany(UPSERT_OPS, [(g, b, *key, *values, bins) for g, b, key, values, bins in ops])
        endpoints = delta.endpoint_sketch_rows()
        c.executemany(UPSERT_ENDPOINTS, [(g, b, *key, *values, bins) for g, b, key, values, bins in endpoints])
        deps = delta.dep_rows()
        c.executemany(UPSERT_DEPS, deps)
        c.executemany(DELETE_EMPTY_OPS, [(g, b, *key) for g, b, key, values, _ in ops if _shrunk(values)])
        c.executemany(DELETE_EMPTY_ENDPOINTS, [(g, b, *key) for g, b, key, values, _ in endpoints if _shrunk(values)])
        c.executemany(DELETE_EMPTY_DEPS, [(h, p, ch) for h, p, ch, calls, _ in deps if calls < 0])
        services = delta.service_sketch_rows()
        c.executemany(UPSERT_SERVICE_SKETCH, services)
        shrunk = [(service,) for service, bins in services if has_negative(bins)]
        c.executemany(TIDY_SERVICE_SKETCH, shrunk)
        c.executemany(DELETE_EMPTY_SERVICE_SKETCH, shrunk)
        contexts = delta.context_rows()
        c.executemany(UPSERT_CONTEXTS, [(g, b, *key, *values) for g, b, key, values in contexts])
        c.executemany(DELETE_EMPTY_CONTEXTS, [(g, b, *key) for g, b, key, values in contexts if values[1] < 0])
        unseen = delta.unseen_rows()
        if unseen:
            c.executemany(UPSERT_UNSEEN, [(g, b, *key, *values) for g, b, key, values in unseen])
            c.executemany(DELETE_EMPTY_UNSEEN, [(g, b, *key) for g, b, key, v in unseen if v[UNSEEN_LIVE] < 0])

    async def purge_candidates(self, before_us: int, limit: int, *, lock: bool = True) -> list[PurgeCandidate]:
        # a write transaction holds the whole store: nothing to lock
        rows: list[PurgeCandidate] = self.c.execute(
            "SELECT trace_id, tid, contribution, final_chunks, finalized_at_us IS NOT NULL FROM traces"
            " WHERE finalized_at_us IS NOT NULL AND start_us < ?1"
            " AND trace_id NOT IN (SELECT trace_id FROM archive_pins)"
            " UNION ALL SELECT trace_id, tid, contribution, final_chunks, 0 FROM traces"
            " WHERE state = 'dropped' AND start_us < ?1"
            " LIMIT ?2",
            (before_us, limit),
        ).fetchall()
        return rows

    async def delete_traces(self, tids: Sequence[int]) -> None:
        self.c.executemany("DELETE FROM traces WHERE tid = ?", [(t,) for t in tids])

    async def archive_rows(self, trace_ids: Sequence[str], finalized_by_us: int) -> list[ArchiveRow]:
        rows: list[ArchiveRow] = self.c.execute(
            "SELECT t.trace_id, t.tid, t.root_service, t.root_operation, t.duration_us"
            " FROM json_each(?1) j CROSS JOIN traces t"
            " ON t.trace_id = j.value WHERE t.state = 'finalized' AND t.finalized_at_us <= ?2",
            (_doc(list(trace_ids)), finalized_by_us),
        ).fetchall()
        return rows

    # -- layout ---------------------------------------------------------------------------------------

    async def layout_version(self) -> int:
        version: int = self.c.execute("PRAGMA user_version").fetchone()[0]
        return version

    async def set_layout_version(self, version: int) -> None:
        self.c.execute(f"PRAGMA user_version = {int(version)}")

    async def create_schema(self) -> None:
        self._run(SCHEMA)
        await self.create_added_tables()

    async def has_sketch(self) -> bool:
        return has_sketch(self.c)

    async def create_sketch(self) -> None:
        self._run(SKETCH_SCHEMA)

    def _run(self, script: str) -> None:
        for statement in (s.strip() for s in script.split(";\n")):
            if statement:
                self.c.execute(statement)

    async def create_added_tables(self) -> None:
        self._run(ADDED_TABLES)
        for table, column, kind in ADDED_COLUMNS:
            if not has_column(self.c, table, column):
                self.c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    async def set_v1_aside(self) -> None:
        for table in migrate.V1_TABLES:
            self.c.execute(f"ALTER TABLE {table} RENAME TO v1_{table}")
        for (index,) in self.c.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name LIKE 'v1_%'"
        ).fetchall():
            self.c.execute(f'DROP INDEX "{index}"')
        await self.create_schema()

    async def v1_spans(self, trace_ids: Sequence[str]) -> Sequence[Row]:
        return self.c.execute(
            "SELECT s.trace_id, s.body, s.finish, s.late FROM json_each(?1) j CROSS JOIN v1_spans s"
            " ON s.trace_id = j.value",
            (_doc(list(trace_ids)),),
        ).fetchall()

    async def insert_migrated(self, values: Sequence[Any], chunks: Sequence[tuple[bool, bytes]]) -> int:
        tid: int = self.c.execute(
            f"INSERT INTO traces ({migrate.MIGRATED_COLUMNS}) VALUES ({', '.join('?' * 14)}, coalesce(?, 'active'),"
            f" {', '.join('?' * 7)}) RETURNING tid",
            values,
        ).fetchone()[0]
        self.c.executemany(
            "INSERT INTO chunks VALUES (?, ?, ?)",
            [((tid << CHUNK_BITS) | seq, int(late), body) for seq, (late, body) in enumerate(chunks)],
        )
        return tid


def add_functions(conn: sqlite3.Connection) -> None:
    """The application functions the schema's statements call: ``sketch_add(stored, delta)``, the merge
    of packed sketches (:func:`shared.store.sketch.add_packed`)."""
    conn.create_function("sketch_add", 2, add_packed, deterministic=True)


def has_sketch(conn: sqlite3.Connection) -> bool:
    """Whether a layout v2 file has the latency sketch tables (of layouts v2 to v4)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'rollup_endpoints_bins'").fetchone() is not None


def has_added_tables(conn: sqlite3.Connection) -> bool:
    """Whether the file has every table added since its layout's release (:data:`ADDED_TABLES`)."""
    names = ADDED_TABLE_NAMES
    found = conn.execute(
        f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ({', '.join('?' * len(names))})", names
    ).fetchone()[0]
    return bool(found == len(names))


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return conn.execute("SELECT 1 FROM pragma_table_info(?) WHERE name = ?", (table, column)).fetchone() is not None


def is_current(conn: sqlite3.Connection) -> bool:
    """Whether the file holds the current layout with everything added to it since its release."""
    return (
        conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        and has_added_tables(conn)
        and all(has_column(conn, table, column) for table, column, _ in ADDED_COLUMNS)
    )


def create_or_migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the file to :data:`SCHEMA_VERSION` in one transaction (see
    :func:`shared.store.sql.migrate.create_or_migrate`; on any error nothing changes). Safe when several
    processes open the file at once: the version is read again under the write lock."""
    if is_current(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        newer = (
            f"{path}: store layout v{{version}} is newer than this build's v{SCHEMA_VERSION};"
            " upgrade kafka-tracing, or point TRACING_STORE_URL at another file"
        )
        run_sync(migrate.create_or_migrate(SqliteDriver(conn), SCHEMA_VERSION, newer=newer))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
