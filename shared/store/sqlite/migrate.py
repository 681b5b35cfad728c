"""Creating the SQLite schema, and upgrading a file of an older layout in place."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from typing import Final

from shared.store.finalizing import encode_analysis
from shared.store.migration import migrate_trace
from shared.store.rollups import RollupDelta, encode_contribution
from shared.store.sqlite.schema import CHUNK_BITS, SCHEMA, SCHEMA_VERSION
from shared.store.sqlite.writer import add_index_rows, apply_rollups

V1_TABLES: Final = (
    "spans",
    "traces",
    "trace_ops",
    "trace_tags",
    "rollup_totals",
    "rollup_services",
    "rollup_buckets",
    "rollup_operations",
    "rollup_deps",
)
"""Layout v1's tables, except ``heartbeats``, which v2 keeps as it is."""


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]


def create_or_migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the file to :data:`SCHEMA_VERSION` in one transaction: create the schema in an empty file,
    migrate a layout-v1 file in place (on any error nothing changes), refuse a newer layout with one line
    saying what to do. Safe when several processes open the file at once."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won the race
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path}: store layout v{version} is newer than this build's v{SCHEMA_VERSION};"
                " upgrade kafka-tracing, or point TRACING_STORE_URL at another file"
            )
        if version == 1:
            _migrate_v1(conn)
        elif version == 0:
            for statement in _statements(SCHEMA):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Layout v1 to v2 (see :mod:`shared.store.migration`), in the caller's transaction."""
    for table in V1_TABLES:
        conn.execute(f"ALTER TABLE {table} RENAME TO v1_{table}")
    v1_indexes = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name LIKE 'v1_%'"
    ).fetchall()
    for (index,) in v1_indexes:
        conn.execute(f'DROP INDEX "{index}"')
    for statement in _statements(SCHEMA):
        conn.execute(statement)

    span_rows: dict[str, list[tuple[str | None, str | None, bool]]] = defaultdict(list)
    for trace_id, body, finish, late in conn.execute("SELECT trace_id, body, finish, late FROM v1_spans"):
        span_rows[trace_id].append((body, finish, bool(late)))
    delta = RollupDelta()
    indexed = []
    for row in conn.execute(
        "SELECT trace_id, state, shard, first_seen_us, last_seen_us, due_us, root_done_us, root_service,"
        " root_operation, start_us, duration_us, span_count, error_count, status, complete, services, analysis,"
        " contribution, late_spans, refinalizations, finalized_at_us FROM v1_traces ORDER BY first_seen_us, trace_id"
    ).fetchall():
        trace_id, state = row[0], row[1]
        moved = migrate_trace(
            span_rows.pop(trace_id, ()),
            analysis_json=row[16],
            contribution_json=row[17],
            start_us=row[9],
            root_service=row[7],
            root_operation=row[8],
        )
        if state == "active" and not moved.has_spans:
            state = "waiting"
        tid = conn.execute(
            "INSERT INTO traces (trace_id, state, shard, first_seen_us, last_seen_us, due_us, root_done_us, chunks,"
            " root_service, root_operation, start_us, duration_us, span_count, error_count, status, complete,"
            " services, analysis, contribution, late_spans, refinalizations, finalized_at_us)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING tid",
            (
                trace_id,
                state,
                *row[2:7],
                len(moved.chunks),
                *row[7:16],
                None if moved.analysis is None else encode_analysis(moved.analysis),
                None if moved.contribution is None else encode_contribution(moved.contribution),
                *row[18:21],
            ),
        ).fetchone()[0]
        conn.executemany(
            "INSERT INTO chunks VALUES (?, ?, ?)",
            [((tid << CHUNK_BITS) | seq, int(late), body) for seq, (late, body) in enumerate(moved.chunks)],
        )
        if moved.contribution is not None:
            delta.add(moved.contribution, +1)
            if row[20] is not None:  # finalized (and kept) once: it has search index rows
                indexed.append((tid, moved.contribution))
    # finish events whose trace row v1 had already deleted (a finish-only trace): they wait for their span
    for trace_id, rows in span_rows.items():
        moved = migrate_trace(
            rows, analysis_json=None, contribution_json=None, start_us=None, root_service=None, root_operation=None
        )
        tid = conn.execute(
            "INSERT INTO traces (trace_id, state, shard, first_seen_us, last_seen_us, due_us, chunks)"
            " VALUES (?, 'waiting', '', 0, 0, 0, ?) RETURNING tid",
            (trace_id, len(moved.chunks)),
        ).fetchone()[0]
        conn.executemany(
            "INSERT INTO chunks VALUES (?, ?, ?)",
            [((tid << CHUNK_BITS) | seq, int(late), body) for seq, (late, body) in enumerate(moved.chunks)],
        )
    add_index_rows(conn, indexed)
    apply_rollups(conn, delta)
    conn.execute(
        "INSERT OR IGNORE INTO open_spans SELECT s.span_id, t.tid FROM v1_spans s CROSS JOIN traces t"
        " ON t.trace_id = s.trace_id WHERE s.body IS NOT NULL AND s.duration_us IS NULL AND s.finish IS NULL"
    )
    for table in V1_TABLES:
        conn.execute(f"DROP TABLE v1_{table}")
