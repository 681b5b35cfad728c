"""PostgreSQL's SQL and driver calls for the shared algorithms (:mod:`shared.store.sql`): a
:class:`PostgresDriver` on one asyncpg connection, inside the caller's transaction.

Concurrency (many workers write one database at once):

* **A write locks its existing traces first**, in trace id order, with ``SELECT ... FOR UPDATE``, then
  inserts its new traces in id order (``ON CONFLICT DO NOTHING``). Chunks are only written while their
  trace's row is locked or freshly inserted, so the chunk count a finalization reads under the same lock
  is exact. If another writer created one of the "new" traces first, the insert skips it and the whole
  transaction is retried (:class:`Conflict`): the next attempt finds it as an existing trace.
* **Finalize skips what is busy** (``FOR UPDATE SKIP LOCKED``): two workers never finalize one trace at
  once, and a trace being written is left for the next round (it stays due).
* **Rollups are commutative increments**, rows in key order (no deadlocks between finalizations).

Row sets travel as column arrays unnested in one statement per table, or by binary ``COPY``. Text is
stored escaped (:func:`pg_text`): PostgreSQL's ``text`` cannot hold NUL.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

import asyncpg
import msgspec

from shared.critical_paths import Path
from shared.store.finalizing import FinalizeRow, Summary
from shared.store.postgres.schema import (
    ADDED_COLUMNS,
    ADDED_TABLES,
    OP_INDEX,
    SCHEMA,
    SCHEMA_LOCK_KEY,
    SCHEMA_VERSION,
    SERVICE_BINS,
    SERVICE_SKETCH,
    SKETCH_ADD,
    SKETCH_COLUMN,
    SKETCH_SCHEMA,
    TAG_INDEX,
)
from shared.store.rollups import UNSEEN_LIVE, UNSEEN_VALUES, RollupDelta
from shared.store.sketch import has_negative
from shared.store.sql import driver as sqldriver
from shared.store.sql import migrate
from shared.store.sql.statements import COUNTER_COLUMNS, Dialect
from shared.store.writing import Chunk, NewTrace, TraceRow, TraceUpdate

_msgpack: Final = msgspec.msgpack.Encoder()
_path_decoder: Final = msgspec.msgpack.Decoder(list[str])


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


def _untext(value: str | None) -> str | None:
    return None if value is None else py_text(value)


def pg_texts(values: Sequence[str]) -> Sequence[str]:
    """:func:`pg_text` over a column of strings; one scan when (as always in practice) none needs it."""
    blob = "".join(values)
    if "\x00" not in blob and "\x01" not in blob:
        return values
    return [pg_text(v) for v in values]


def pg_rows(rows: Sequence[tuple[Any, ...]], text_columns: int) -> Sequence[tuple[Any, ...]]:
    """Rows whose first ``text_columns`` values are text, escaped by :func:`pg_text`; one scan when (as
    always in practice) none needs it."""
    blob = "".join(v for row in rows for v in row[:text_columns])
    if "\x00" not in blob and "\x01" not in blob:
        return rows
    return [(*(pg_text(v) for v in row[:text_columns]), *row[text_columns:]) for row in rows]


def _rows(values: Sequence[Any], width: int) -> list[tuple[Any, ...]]:
    """Flat values back to rows of ``width``."""
    return list(zip(*[iter(values)] * width, strict=True))


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to ``width`` column lists (for ``unnest``); empty columns when there are no rows."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


DIALECT: Final = Dialect(numbered=True, text=pg_text, untext=py_text, false="false", join="JOIN")

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

STORE_SUMMARIES: Final = """
UPDATE traces t SET state = u.state, root_service = u.root_service, root_operation = u.root_operation,
    start_us = u.start_us, duration_us = u.duration_us, span_count = u.span_count, error_count = u.error_count,
    status = u.status, complete = u.complete, services = u.services, analysis = u.analysis,
    contribution = u.contribution, late_spans = u.late_spans, final_chunks = u.final_chunks,
    refinalizations = t.refinalizations + (t.finalized_at_us IS NOT NULL)::integer,
    finalized_at_us = CASE WHEN u.state = 'finalized' THEN $16::bigint END  -- a dropped trace has no summary
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::integer[], $7::integer[],
            $8::text[], $9::boolean[], $10::text[], $11::bytea[], $12::bytea[], $13::integer[], $14::integer[],
            $15::text[])
    AS u(tid, root_service, root_operation, start_us, duration_us, span_count, error_count,
         status, complete, services, analysis, contribution, late_spans, final_chunks, state)
WHERE t.tid = u.tid
"""

INSERT_MIGRATED: Final = (
    f"INSERT INTO traces ({migrate.MIGRATED_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
    " $13, $14, coalesce($15, 'active'), $16, $17, $18, $19, $20, $21, $22) RETURNING tid"
)


def _delete_using_sql(table: str, keys: Sequence[tuple[str, str]], condition: str = "") -> str:
    """``DELETE`` the rows of ``table`` whose (name, type) ``keys`` are in the unnested column arrays."""
    casts = ", ".join(f"${i + 1}::{kind}[]" for i, (_, kind) in enumerate(keys))
    key_list = ", ".join(n for n, _ in keys)
    matches = " AND ".join(f"r.{n} = u.{n}" for n, _ in keys)
    return f"DELETE FROM {table} r USING unnest({casts}) AS u({key_list}) WHERE {matches}{condition}"


def _upsert_sql(table: str, keys: Sequence[tuple[str, str]], counters: Sequence[str], *, sketch: bool = False) -> str:
    """Counters added; with ``sketch``, the row's packed sketch (the last column) merged by ``sketch_add``."""
    names = [n for n, _ in keys] + list(counters) + ["bins"] * sketch
    kinds = [k for _, k in keys] + ["bigint"] * len(counters) + ["bytea"] * sketch
    casts = ", ".join(f"${i + 1}::{kind}[]" for i, kind in enumerate(kinds))
    key_list = ", ".join(n for n, _ in keys)
    updates = ", ".join(
        [f"{n} = r.{n} + excluded.{n}" for n in counters] + ["bins = sketch_add(r.bins, excluded.bins)"] * sketch
    )
    return (
        f"INSERT INTO {table} AS r ({', '.join(names)}) SELECT * FROM unnest({casts}) AS u({', '.join(names)})"
        f" ON CONFLICT ({key_list}) DO UPDATE SET {updates}"
    )


_TEXT_KEY: Final = (("service", "text"), ("operation", "text"))
_BUCKET: Final = (("grain", "smallint"), ("bucket", "bigint"))
_OP_KEYS: Final = (*_BUCKET, *_TEXT_KEY, ("kind", "text"))
_ENDPOINT_KEYS: Final = (*_BUCKET, *_TEXT_KEY)
_DEP_KEYS: Final = (("hour", "bigint"), ("parent", "text"), ("child", "text"))
_CONTEXT_KEYS: Final = (*_BUCKET, *_TEXT_KEY, ("ctx", "bigint"))
UPSERT_OPS: Final = _upsert_sql("rollup_ops", _OP_KEYS, COUNTER_COLUMNS, sketch=True)
UPSERT_ENDPOINTS: Final = _upsert_sql("rollup_endpoints", _ENDPOINT_KEYS, COUNTER_COLUMNS, sketch=True)
UPSERT_DEPS: Final = _upsert_sql("rollup_deps", _DEP_KEYS, ("calls", "errors"))
UPSERT_CONTEXTS: Final = _upsert_sql("rollup_contexts", _CONTEXT_KEYS, ("critical_us", "traces"))
_UNSEEN_KEYS: Final = (*_BUCKET, ("service", "text"))
UPSERT_UNSEEN: Final = _upsert_sql("rollup_unseen", _UNSEEN_KEYS, UNSEEN_VALUES)
DELETE_EMPTY_UNSEEN: Final = _delete_using_sql(
    "rollup_unseen", _UNSEEN_KEYS, f" AND r.{UNSEEN_VALUES[UNSEEN_LIVE]} <= 0"
)
_SERVICE_KEY: Final = (("service", "text"),)
UPSERT_SERVICE_SKETCH: Final = _upsert_sql("rollup_services_sketch", _SERVICE_KEY, (), sketch=True)
TIDY_SERVICE_SKETCH: Final = (
    "UPDATE rollup_services_sketch r SET bins = sketch_add(r.bins, NULL) FROM unnest($1::text[]) AS u(service)"
    " WHERE r.service = u.service"
)
"""The services' sketches a delta took bins out of, re-packed without the bins at 0 or below (a row the delta
inserted holds the delta as it came)."""
DELETE_EMPTY_SERVICE_SKETCH: Final = _delete_using_sql(
    "rollup_services_sketch", _SERVICE_KEY, " AND length(r.bins) = 0"
)
DELETE_EMPTY_OPS: Final = _delete_using_sql("rollup_ops", _OP_KEYS, " AND r.n <= 0")
DELETE_EMPTY_ENDPOINTS: Final = _delete_using_sql("rollup_endpoints", _ENDPOINT_KEYS, " AND r.n <= 0")
DELETE_EMPTY_DEPS: Final = _delete_using_sql("rollup_deps", _DEP_KEYS, " AND r.calls <= 0")
DELETE_EMPTY_CONTEXTS: Final = _delete_using_sql("rollup_contexts", _CONTEXT_KEYS, " AND r.traces <= 0")
_INDEX_KEY: Final = (("start_us", "bigint"), ("tid", "bigint"))
DELETE_OPS: Final = _delete_using_sql("op_index", (("op", "bigint"), *_INDEX_KEY))
DELETE_TAGS: Final = _delete_using_sql("tag_index", (("tag", "bigint"), *_INDEX_KEY))
DELETE_ENDPOINTS: Final = _delete_using_sql(
    "endpoint_traces", (*_TEXT_KEY, ("duration_us", "bigint"), ("tid", "bigint"))
)


class PostgresDriver(sqldriver.Bound[asyncpg.Connection]):
    """The :class:`~shared.store.sql.driver.SqlDriver` of one asyncpg connection."""

    __slots__ = ()
    dialect: Final = DIALECT
    v4_tables: Final = (OP_INDEX, TAG_INDEX, SERVICE_BINS)
    v5_sketch: Final = (SKETCH_COLUMN, f"{SERVICE_SKETCH};\n{SKETCH_ADD}")
    chunk_key: Final = "tid, seq"

    async def fetch(self, sql: str, params: Sequence[Any]) -> Sequence[sqldriver.Row]:
        rows: Sequence[sqldriver.Row] = await self.c.fetch(sql, *params)
        return rows

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        await self.c.execute(sql, *params)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self.c.executemany(sql, rows)

    async def paths(self, ids: Collection[int]) -> dict[int, tuple[str, ...]]:
        rows = await self.c.fetch("SELECT ctx, path FROM call_paths WHERE ctx = ANY($1::bigint[])", list(ids))
        return {ctx: tuple(_path_decoder.decode(path)) for ctx, path in rows}

    async def chunk_rows(self, tids: Mapping[str, int]) -> dict[str, list[tuple[bool, bytes]]]:
        by_tid = {tid: trace_id for trace_id, tid in tids.items()}
        chunks: dict[str, list[tuple[bool, bytes]]] = {trace_id: [] for trace_id in tids}
        for tid, late, body in await self.c.fetch(
            "SELECT tid, late, body FROM chunks WHERE tid = ANY($1::bigint[]) ORDER BY tid, seq", list(by_tid)
        ):
            chunks[by_tid[tid]].append((late, body))
        return chunks

    # -- writes ---------------------------------------------------------------------------------------

    async def read_rows(self, trace_ids: Collection[str]) -> dict[str, TraceRow]:
        found = await self.c.fetch(
            "SELECT trace_id, tid, state, chunks, root_done_us, due_us FROM traces WHERE trace_id = ANY($1::text[])"
            " ORDER BY trace_id FOR UPDATE",
            sorted(trace_ids),
        )
        return sqldriver.trace_rows(found)

    async def insert_traces(self, new: Sequence[NewTrace], now_us: int) -> Iterable[tuple[str, int]]:
        rows = [(n.trace_id, n.shard, n.due_us, n.root_done_us) for n in new]
        inserted = await self.c.fetch(INSERT_TRACES, *columns(rows, 4), now_us)
        if len(inserted) != len(rows):
            raise Conflict("a trace of this batch was created by another writer")
        return [(r[0], r[1]) for r in inserted]

    async def update_traces(self, updates: Sequence[TraceUpdate], now_us: int) -> None:
        rows = [(u.tid, u.due_us, u.root_done_us, u.chunks, u.shard) for u in updates]
        await self.c.execute(UPDATE_TRACES, *columns(rows, 5), now_us)

    async def insert_chunks(self, chunks: Sequence[Chunk], tids: Mapping[str, int]) -> None:
        await self.c.copy_records_to_table(
            "chunks",
            records=[(tids[ch.trace_id], ch.seq, ch.late, ch.body) for ch in chunks],
            columns=("tid", "seq", "late", "body"),
        )

    async def open_spans(self, rows: Sequence[tuple[str, int]]) -> None:
        spans, owners = columns(rows, 2)
        await self.c.execute(
            "INSERT INTO open_spans SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING",
            pg_texts(spans),
            owners,
        )

    async def close_spans(self, rows: Sequence[tuple[str, int]]) -> None:
        spans, owners = columns(rows, 2)
        await self.c.execute(
            "DELETE FROM open_spans o USING unnest($1::text[], $2::bigint[]) AS u(span_id, tid)"
            " WHERE o.span_id = u.span_id AND o.tid = u.tid",
            pg_texts(spans),
            owners,
        )

    # -- finalization and purge ------------------------------------------------------------------------

    async def finalize_rows(self, trace_ids: Sequence[str]) -> list[FinalizeRow]:
        rows = await self.c.fetch(
            "SELECT trace_id, tid, chunks, contribution, final_chunks, finalized_at_us IS NOT NULL FROM traces"
            " WHERE trace_id = ANY($1::text[]) AND state = 'active' ORDER BY trace_id FOR UPDATE SKIP LOCKED",
            list(dict.fromkeys(trace_ids)),
        )
        return sqldriver.finalize_rows(rows)

    async def mark_waiting(self, tids: Sequence[int]) -> None:
        await self.c.execute("UPDATE traces SET state = 'waiting' WHERE tid = ANY($1::bigint[])", list(tids))

    async def store_summaries(self, summaries: Sequence[Summary], now_us: int) -> None:
        cols = columns(
            [(s.tid, *s.values(analysis=False), s.chunks, "finalized" if s.kept else "dropped") for s in summaries],
            15,
        )
        for i in (1, 2):  # root service and operation
            cols[i] = [None if v is None else pg_text(v) for v in cols[i]]
        await self.c.execute(STORE_SUMMARIES, *cols, now_us)

    async def add_index_rows(
        self,
        ops: Sequence[Any],
        tags: Sequence[Any],
        endpoints: Sequence[sqldriver.EndpointIndexRow],
    ) -> None:
        await self.c.copy_records_to_table("op_index", records=_rows(ops, sqldriver.OP_WIDTH))
        await self.c.copy_records_to_table("tag_index", records=_rows(tags, sqldriver.TAG_WIDTH))
        if endpoints:
            await self.c.copy_records_to_table("endpoint_traces", records=pg_rows(endpoints, 2))

    async def remove_index_rows(
        self,
        ops: Sequence[Any],
        tags: Sequence[Any],
        endpoints: Sequence[sqldriver.EndpointKey],
    ) -> None:
        await self.c.execute(DELETE_OPS, *columns([r[:3] for r in _rows(ops, sqldriver.OP_WIDTH)], 3))
        await self.c.execute(DELETE_ENDPOINTS, *columns(pg_rows(endpoints, 2), 4))
        await self.c.execute(DELETE_TAGS, *columns(_rows(tags, sqldriver.TAG_WIDTH), 3))

    async def delete_traces_data(self, tids: Sequence[int]) -> None:
        await self.c.execute("DELETE FROM chunks WHERE tid = ANY($1::bigint[])", list(tids))
        await self.c.execute("DELETE FROM open_spans WHERE tid = ANY($1::bigint[])", list(tids))

    async def insert_paths(self, paths: Mapping[int, Path]) -> None:
        ids, labels, blobs = columns(
            [(ctx, pg_text(path[-1]), _msgpack.encode(path)) for ctx, path in sorted(paths.items())], 3
        )
        await self.c.execute(
            "INSERT INTO call_paths SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[]) ON CONFLICT DO NOTHING",
            ids,
            labels,
            blobs,
        )

    async def _upsert(self, upsert: str, delete: str, rows: Sequence[tuple[Any, ...]], keys: int, count: int) -> None:
        """One commutative upsert of ``rows`` (``keys`` key columns, then the counters; in key order), then
        the rows whose counter ``count`` went to zero or below deleted."""
        if not rows:
            return
        await self.c.execute(upsert, *columns(rows, len(rows[0])))
        shrunk = [row[:keys] for row in rows if row[count] < 0]
        if shrunk:
            await self.c.execute(delete, *columns(shrunk, keys))

    async def apply_rollups(self, delta: RollupDelta) -> None:
        """One commutative upsert per table, rows in key order, then the rows a subtraction emptied go."""
        if not delta:
            return
        series: list[tuple[str, str, Sequence[tuple[int, int, tuple[Any, ...], list[int], bytes]]]] = [
            (UPSERT_OPS, DELETE_EMPTY_OPS, delta.op_sketch_rows()),
            (UPSERT_ENDPOINTS, DELETE_EMPTY_ENDPOINTS, delta.endpoint_sketch_rows()),
        ]
        for upsert, delete, rows in series:
            keys = 2 + len(rows[0][2]) if rows else 0
            flat = [
                (g, b, *(pg_text(k) if type(k) is str else k for k in key), *values, bins)
                for g, b, key, values, bins in rows
            ]
            await self._upsert(upsert, delete, flat, keys, keys)
        deps = [(h, pg_text(p), pg_text(ch), calls, errors) for h, p, ch, calls, errors in delta.dep_rows()]
        await self._upsert(UPSERT_DEPS, DELETE_EMPTY_DEPS, deps, 3, 3)
        contexts = [(g, b, pg_text(s), pg_text(o), ctx, *values) for g, b, (s, o, ctx), values in delta.context_rows()]
        await self._upsert(UPSERT_CONTEXTS, DELETE_EMPTY_CONTEXTS, contexts, 5, 6)
        services = [(pg_text(s), bins) for s, bins in delta.service_sketch_rows()]
        if services:
            await self.c.execute(UPSERT_SERVICE_SKETCH, *columns(services, 2))
            shrunk = [s for s, bins in services if has_negative(bins)]
            if shrunk:
                await self.c.execute(TIDY_SERVICE_SKETCH, shrunk)
                await self.c.execute(DELETE_EMPTY_SERVICE_SKETCH, shrunk)
        unseen = [(g, b, pg_text(s), *values) for g, b, (s,), values in delta.unseen_rows()]
        await self._upsert(UPSERT_UNSEEN, DELETE_EMPTY_UNSEEN, unseen, 3, 3 + UNSEEN_LIVE)

    async def purge_candidates(
        self, before_us: int, limit: int, *, lock: bool = True
    ) -> list[sqldriver.PurgeCandidate]:
        rows = await self.c.fetch(
            "SELECT trace_id, tid, contribution, final_chunks, finalized_at_us IS NOT NULL FROM traces"
            " WHERE (finalized_at_us IS NOT NULL OR state = 'dropped') AND start_us < $1"
            " AND (state = 'dropped' OR trace_id NOT IN (SELECT trace_id FROM archive_pins))"
            f" LIMIT $2{' FOR UPDATE SKIP LOCKED' if lock else ''}",
            before_us,
            limit,
        )
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def delete_traces(self, tids: Sequence[int]) -> None:
        await self.c.execute("DELETE FROM traces WHERE tid = ANY($1::bigint[])", list(tids))

    async def archive_rows(self, trace_ids: Sequence[str], finalized_by_us: int) -> list[sqldriver.ArchiveRow]:
        rows = await self.c.fetch(
            "SELECT trace_id, tid, root_service, root_operation, duration_us FROM traces"
            " WHERE trace_id = ANY($1::text[])"
            " AND state = 'finalized' AND finalized_at_us <= $2 FOR UPDATE SKIP LOCKED",
            list(trace_ids),
            finalized_by_us,
        )
        return [(r[0], r[1], _untext(r[2]), _untext(r[3]), r[4]) for r in rows]

    # -- layout ---------------------------------------------------------------------------------------

    async def layout_version(self) -> int:
        if not await self.c.fetchval("SELECT to_regclass('tracing_meta') IS NOT NULL"):
            return 0
        found = await self.c.fetchval("SELECT value FROM tracing_meta WHERE key = 'schema_version'")
        return int(found) if found is not None else 0

    async def set_layout_version(self, version: int) -> None:
        await self.c.execute(
            "INSERT INTO tracing_meta VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
            str(version),
        )

    async def create_schema(self) -> None:
        await self.c.execute(SCHEMA)
        await self.create_added_tables()

    async def create_added_tables(self) -> None:
        await self.c.execute(ADDED_TABLES)
        for table, column, kind in ADDED_COLUMNS:  # looked up first: ALTER TABLE would lock the table
            if not await self.c.fetchval(
                "SELECT 1 FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
                table,
                column,
            ):
                await self.c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    async def has_sketch(self) -> bool:
        found: bool = await self.c.fetchval("SELECT to_regclass('rollup_endpoints_bins') IS NOT NULL")
        return found

    async def create_sketch(self) -> None:
        await self.c.execute(SKETCH_SCHEMA)

    async def set_v1_aside(self) -> None:
        c = self.c
        for table in migrate.V1_TABLES:
            await c.execute(f"ALTER TABLE {table} RENAME TO v1_{table}")
        for (index,) in await c.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename LIKE 'v1\\_%'"
            " AND indexname NOT LIKE '%pkey'"
        ):
            await c.execute(f'DROP INDEX "{index}"')
        for table in migrate.V1_TABLES:  # v2 reuses the names of v1's primary-key constraints
            constraint = await c.fetchval(
                "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'p'", f"v1_{table}"
            )
            if constraint is not None:
                await c.execute(f'ALTER TABLE v1_{table} RENAME CONSTRAINT "{constraint}" TO "v1_{constraint}"')
        await self.create_schema()  # tracing_meta and heartbeats stay as they are (IF NOT EXISTS)

    async def v1_spans(self, trace_ids: Sequence[str]) -> Sequence[sqldriver.Row]:
        return await self.fetch(
            "SELECT trace_id, body, finish, late FROM v1_spans WHERE trace_id = ANY($1::text[])", [list(trace_ids)]
        )

    async def insert_migrated(self, values: Sequence[Any], chunks: Sequence[tuple[bool, bytes]]) -> int:
        tid: int = await self.c.fetchval(INSERT_MIGRATED, *values)
        if chunks:
            await self.c.copy_records_to_table(
                "chunks",
                records=[(tid, seq, late, body) for seq, (late, body) in enumerate(chunks)],
                columns=("tid", "seq", "late", "body"),
            )
        return tid


async def create_or_migrate(conn: asyncpg.Connection) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION` in one transaction, serialized between processes by an
    advisory lock (see :func:`shared.store.sql.migrate.create_or_migrate`; on any error nothing changes)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        newer = (
            f"PostgreSQL store layout v{{version}} is newer than this build's v{SCHEMA_VERSION};"
            " upgrade kafka-tracing, or point TRACING_STORE_URL at another database or schema"
        )
        await migrate.create_or_migrate(PostgresDriver(conn), SCHEMA_VERSION, newer=newer)


__all__ = ["Conflict", "PostgresDriver", "create_or_migrate", "pg_text", "py_text"]
