"""Creating the PostgreSQL schema, and upgrading a schema of an older layout in place."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Final

import asyncpg

from shared.store.finalizing import encode_analysis
from shared.store.migration import migrate_trace
from shared.store.postgres.schema import SCHEMA, SCHEMA_LOCK_KEY, SCHEMA_VERSION, V1_TABLES
from shared.store.postgres.writer import add_index_rows, apply_rollups, py_text
from shared.store.rollups import Contribution, RollupDelta, encode_contribution

MIGRATE_BATCH: Final = 2000
"""v1 traces converted per round trip."""


async def create_or_migrate(conn: asyncpg.Connection) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION` in one transaction, serialized between processes by an
    advisory lock: create it when missing, migrate layout v1 in place (on any error nothing changes),
    refuse a newer layout with one line saying what to do."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        version = 0
        if await conn.fetchval("SELECT to_regclass('tracing_meta') IS NOT NULL"):
            found = await conn.fetchval("SELECT value FROM tracing_meta WHERE key = 'schema_version'")
            version = int(found) if found is not None else 0
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"PostgreSQL store layout v{version} is newer than this build's v{SCHEMA_VERSION};"
                " upgrade kafka-tracing, or point TRACING_STORE_URL at another database or schema"
            )
        if version == 1:
            await _migrate_v1(conn)
        else:
            await conn.execute(SCHEMA)
        await conn.execute(
            "INSERT INTO tracing_meta VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
            str(SCHEMA_VERSION),
        )


async def _migrate_v1(conn: asyncpg.Connection) -> None:
    """Layout v1 to v2 (see :mod:`shared.store.migration`), in the caller's transaction."""
    for table in V1_TABLES:
        await conn.execute(f"ALTER TABLE {table} RENAME TO v1_{table}")
    for (index,) in await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename LIKE 'v1\\_%'"
        " AND indexname NOT LIKE '%pkey'"
    ):
        await conn.execute(f'DROP INDEX "{index}"')
    for table in V1_TABLES:  # v2 reuses the names of v1's primary-key constraints
        constraint = await conn.fetchval(
            "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'p'", f"v1_{table}"
        )
        if constraint is not None:
            await conn.execute(f'ALTER TABLE v1_{table} RENAME CONSTRAINT "{constraint}" TO "v1_{constraint}"')
    await conn.execute(SCHEMA)  # tracing_meta and heartbeats stay as they are (IF NOT EXISTS)

    delta = RollupDelta()
    indexed: list[tuple[int, Contribution]] = []
    after = ""
    while True:
        traces = await conn.fetch(
            "SELECT trace_id, state, shard, first_seen_us, last_seen_us, due_us, root_done_us, root_service,"
            " root_operation, start_us, duration_us, span_count, error_count, status, complete, services, analysis,"
            " contribution, late_spans, refinalizations, finalized_at_us FROM v1_traces WHERE trace_id > $1"
            " ORDER BY trace_id LIMIT $2",
            after,
            MIGRATE_BATCH,
        )
        if not traces:
            break
        after = traces[-1][0]
        ids = [t[0] for t in traces]
        spans: dict[str, list[tuple[str | None, str | None, bool]]] = defaultdict(list)
        for trace_id, body, finish, late in await conn.fetch(
            "SELECT trace_id, body, finish, late FROM v1_spans WHERE trace_id = ANY($1::text[])", ids
        ):
            spans[trace_id].append((body, finish, late))
        for t in traces:
            moved = migrate_trace(
                spans.pop(t[0], ()),
                analysis_json=t[16],
                contribution_json=t[17],
                start_us=t[9],
                root_service=None if t[7] is None else py_text(t[7]),
                root_operation=None if t[8] is None else py_text(t[8]),
            )
            state = "waiting" if t[1] == "active" and not moved.has_spans else t[1]
            values: list[Any] = [t[0], state, *t[2:7], len(moved.chunks), *t[7:16]]
            values += [
                None if moved.analysis is None else encode_analysis(moved.analysis),
                None if moved.contribution is None else encode_contribution(moved.contribution),
                *t[18:21],
            ]
            tid = await _insert_trace(conn, values, moved.chunks)
            if moved.contribution is not None:
                delta.add(moved.contribution, +1)
                if t[20] is not None:
                    indexed.append((tid, moved.contribution))
    # finish events whose trace row v1 had already deleted (a finish-only trace): they wait for their span
    orphans: dict[str, list[tuple[str | None, str | None, bool]]] = defaultdict(list)
    for trace_id, body, finish, late in await conn.fetch(
        "SELECT s.trace_id, s.body, s.finish, s.late FROM v1_spans s"
        " WHERE NOT EXISTS (SELECT 1 FROM v1_traces t WHERE t.trace_id = s.trace_id)"
    ):
        orphans[trace_id].append((body, finish, late))
    for trace_id, rows in orphans.items():
        moved = migrate_trace(
            rows, analysis_json=None, contribution_json=None, start_us=None, root_service=None, root_operation=None
        )
        values = [trace_id, "waiting", "", 0, 0, 0, None, len(moved.chunks), *([None] * 9), None, None, 0, 0, None]
        await _insert_trace(conn, values, moved.chunks)
    await add_index_rows(conn, indexed)
    await apply_rollups(conn, delta)
    await conn.execute(
        "INSERT INTO open_spans SELECT s.span_id, t.tid FROM v1_spans s JOIN traces t ON t.trace_id = s.trace_id"
        " WHERE s.body IS NOT NULL AND s.duration_us IS NULL AND s.finish IS NULL ON CONFLICT DO NOTHING"
    )
    for table in V1_TABLES:
        await conn.execute(f"DROP TABLE v1_{table}")


async def _insert_trace(conn: asyncpg.Connection, values: list[Any], chunks: list[tuple[bool, bytes]]) -> int:
    tid: int = await conn.fetchval(
        "INSERT INTO traces (trace_id, state, shard, first_seen_us, last_seen_us, due_us, root_done_us, chunks,"
        " root_service, root_operation, start_us, duration_us, span_count, error_count, status, complete,"
        " services, analysis, contribution, late_spans, refinalizations, finalized_at_us)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, coalesce($15, 'active'), $16, $17,"
        " $18, $19, $20, $21, $22) RETURNING tid",
        *values,
    )
    if chunks:
        await conn.copy_records_to_table(
            "chunks",
            records=[(tid, seq, late, body) for seq, (late, body) in enumerate(chunks)],
            columns=("tid", "seq", "late", "body"),
        )
    return tid
