"""``insert_rows``: many rows per ``INSERT ... VALUES`` statement, on a real SQLite database. Every row
lands once, in order, whatever the count around the statement size; ``OR IGNORE`` still ignores
duplicates row by row, also within one statement."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.store.sqlite.driver import ROWS_PER_STATEMENT, insert_rows


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(":memory:", isolation_level=None)
    c.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, a TEXT NOT NULL, b BLOB)")
    yield c
    c.close()


def _rows(n: int) -> list[tuple[int, str, bytes | None]]:
    return [(i, f"row {i}", bytes([i % 256]) if i % 3 else None) for i in range(n)]


@pytest.mark.parametrize(
    "n", [0, 1, ROWS_PER_STATEMENT - 1, ROWS_PER_STATEMENT, ROWS_PER_STATEMENT + 1, 3 * ROWS_PER_STATEMENT + 7]
)
def test_every_row_lands_once_in_order(conn: sqlite3.Connection, n: int) -> None:
    rows = _rows(n)
    insert_rows(conn, "INSERT INTO t", rows)
    assert conn.execute("SELECT seq, a, b FROM t ORDER BY seq").fetchall() == rows


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 9)), max_size=4 * ROWS_PER_STATEMENT))
def test_or_ignore_keeps_the_first_of_each_key(rows: list[tuple[str, int]]) -> None:
    c = sqlite3.connect(":memory:", isolation_level=None)
    try:
        c.execute("CREATE TABLE u (k TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID")
        insert_rows(c, "INSERT OR IGNORE INTO u", rows)
        first: dict[str, int] = {}
        for key, value in rows:
            first.setdefault(key, value)
        assert dict(c.execute("SELECT k, n FROM u").fetchall()) == first
    finally:
        c.close()


def test_a_conflict_without_or_ignore_fails_the_statement(conn: sqlite3.Connection) -> None:
    rows = _rows(ROWS_PER_STATEMENT)
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(conn, "INSERT INTO t", [*rows, rows[0]])
