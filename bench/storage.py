"""Row (i) storage: bytes a span on disk after a drain, per store, beside the same spans in plain formats.

- SQLite: the database file + its write-ahead log after ``PRAGMA wal_checkpoint(TRUNCATE)``; by table
  (each with its indexes) from the ``dbstat`` virtual table when the sqlite3 build has it (pages in use;
  the rest of the file is free pages).
- PostgreSQL: ``pg_total_relation_size`` (heap, indexes, TOAST) of every table of the store's schema
  (``current_schema()``) after ``VACUUM``; by table.
- Cassandra: the keyspace's data directory on each node after ``nodetool flush`` and a major compaction
  (``nodetool compact``); by table. ``nodetool`` is Cassandra's own ``NodeTool`` class, run from the jars
  ``scripts/cassandra.sh`` caches, over the node's local JMX port.
- A directory (Jaeger's Badger ``keys`` and ``values``): the size of every file below it.
- The same spans as native JSON lines (one span a line), as those lines zstd-compressed (level 3, one
  frame), and as a plain Parquet file compressed with zstd (one row per span sorted by trace id, ids as
  binary, names dictionary-encoded, tags, logs and resource as JSON text), built in memory: the floor a
  layout can be held to. pyarrow and zstandard come with the ``bench`` extra.
"""

from __future__ import annotations

import io
import re
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bench.common import CACHE_DIR, ROOT, Skipped, postgres_execute
from shared.codecs.native import encode_native
from shared.models import Span

ZSTD_LEVEL = 3
"""zstd's default level, for both the JSON lines and the Parquet pages."""
NODETOOL_TIMEOUT_S = 600.0


@dataclass
class Footprint:
    """Bytes on disk, in all and by part (table, index or directory), and how they were measured."""

    total: int
    parts: dict[str, int] = field(default_factory=dict)
    how: str = ""

    def per_span(self, spans: int) -> float:
        return self.total / spans

    def breakdown(self, spans: int, *, top: int = 12) -> str:
        """The largest parts in bytes a span, e.g. ``traces 370, chunks 314``."""
        ordered = sorted(self.parts.items(), key=lambda item: -item[1])
        shown = [(name, size) for name, size in ordered[:top] if size / spans >= 0.5]
        rest = (self.total - sum(size for _, size in shown)) / spans
        text = [f"{name} {size / spans:,.0f}" for name, size in shown]
        return ", ".join(text + ([f"others {rest:,.0f}"] if rest >= 0.5 else []))


def per_span(n_bytes: float, spans: int) -> str:
    value = n_bytes / spans
    return f"{value:,.1f} B/span" if value < 100 else f"{value:,.0f} B/span"


# -- the reference formats ------------------------------------------------------------------------------


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise Skipped("zstandard is not installed (pip install -e '.[bench]')") from None
    return zstandard


class JsonLines:
    """Counts the spans passing through :meth:`lines` as native JSON lines (one span a line, as the native
    topic carries a span), plain and zstd-compressed as one stream (one frame)."""

    def __init__(self, level: int = ZSTD_LEVEL) -> None:
        self.spans = self.plain = self.compressed = 0
        self._zstd = _zstandard().ZstdCompressor(level=level).compressobj()

    def lines(self, spans: Iterable[Span]) -> Iterator[Span]:
        for span in spans:
            line = encode_native(span) + b"\n"
            self.spans += 1
            self.plain += len(line)
            self.compressed += len(self._zstd.compress(line))
            yield span
        self.compressed += len(self._zstd.flush())


def _text(value: object) -> str | None:
    return msgspec.json.encode(value).decode() if value else None


def _row(s: Span) -> tuple[object, ...]:
    """One span as a row of :data:`PARQUET_COLUMNS` (ids as bytes, tags, logs and resource as JSON)."""
    parent = bytes.fromhex(s.parent_span_id) if s.parent_span_id else None
    return (
        bytes.fromhex(s.trace_id), s.start_time_us, bytes.fromhex(s.span_id), parent, s.service_name,
        s.operation_name, s.kind, s.status, s.duration_us, _text(s.tags), _text(s.logs), _text(s.resource),
    )  # fmt: skip


PARQUET_COLUMNS = (
    ("trace_id", "binary"), ("start_time_us", "int64"), ("span_id", "binary"), ("parent_span_id", "binary"),
    ("service_name", "string"), ("operation_name", "string"), ("kind", "string"), ("status", "string"),
    ("duration_us", "int64"), ("tags", "string"), ("logs", "string"), ("resource", "string"),
)  # fmt: skip
DICTIONARY_COLUMNS = ["service_name", "operation_name", "kind", "status", "resource"]


def parquet_file(spans: Iterable[Span]) -> bytes:
    """The spans as one Parquet file with zstd pages: one row per span sorted by trace id (then start), ids
    as binary, names, kind, status and resource dictionary-encoded, tags and logs as JSON text."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise Skipped("pyarrow is not installed (pip install -e '.[bench]')") from None
    rows = sorted((_row(s) for s in spans), key=lambda row: (row[0], row[1]))
    table = pa.table(
        {
            name: pa.array([row[i] for row in rows], getattr(pa, kind)())
            for i, (name, kind) in enumerate(PARQUET_COLUMNS)
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", compression_level=ZSTD_LEVEL, use_dictionary=DICTIONARY_COLUMNS)
    return sink.getvalue()


def references(spans: Iterable[Span]) -> tuple[int, dict[str, int]]:
    """How many spans, and their bytes in each reference format by the format's name (one pass)."""
    counted = JsonLines()
    parquet = len(parquet_file(counted.lines(spans)))
    return counted.spans, {
        "native JSON lines": counted.plain,
        f"zstd JSON lines (level {ZSTD_LEVEL})": counted.compressed,
        f"zstd Parquet (level {ZSTD_LEVEL})": parquet,
    }


# -- the stores -------------------------------------------------------------------------------------------


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def sqlite_footprint(path: Path) -> Footprint:
    """The database and its log after a TRUNCATE checkpoint; by table (with its indexes) from ``dbstat``."""
    db = sqlite3.connect(path)
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise RuntimeError(f"{path.name}: the checkpoint was blocked (a connection is still open)")
        wal = path.with_name(path.name + "-wal")
        total = _size(path) + _size(wal)
        try:
            pages = db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
        except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
            return Footprint(total, {}, "database + log after a TRUNCATE checkpoint (no dbstat: no breakdown)")
        owner = dict(db.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')"))
    finally:
        db.close()
    parts: dict[str, int] = {}
    for name, size in pages:
        table = owner.get(name, name)
        parts[table] = parts.get(table, 0) + size
    parts["(free pages)"] = max(0, total - sum(parts.values()))
    how = "database + log after a TRUNCATE checkpoint; by table with its indexes: pages in use (dbstat)"
    return Footprint(total, parts, how)


def with_path(url: str, name: str) -> str:
    """The store URL ``url`` (``scheme://hosts/database-or-keyspace?options``) naming database or keyspace
    ``name`` instead, its options kept."""
    head, _, tail = url.rpartition("/")
    query = tail.partition("?")[2]
    return f"{head}/{name}" + (f"?{query}" if query else "")


async def postgres_database(url: str, name: str) -> str:
    """Create the database ``name`` in the cluster of ``url`` (a ``postgresql://`` URL); its URL."""
    await postgres_execute(url, f'CREATE DATABASE "{name}"')
    return with_path(url, name)


async def postgres_footprint(url: str) -> Footprint:
    """``pg_total_relation_size`` of every table of the connection's schema, after ``VACUUM``."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM")
        rows = await conn.fetch(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'm')"
        )
    finally:
        await conn.close()
    parts = {str(name): int(size) for name, size in rows}
    how = "pg_total_relation_size (heap + indexes + TOAST) of every table of the schema, after VACUUM"
    return Footprint(sum(parts.values()), parts, how)


def cassandra_lib() -> Path:
    """The cached jars of the Cassandra version ``scripts/cassandra.sh`` runs."""
    pom = (ROOT / "deploy" / "cassandra" / "pom.xml").read_text()
    found = re.search(r"<cassandra\.version>([^<]+)</cassandra\.version>", pom)
    if found is None:
        raise Skipped("deploy/cassandra/pom.xml names no cassandra.version")
    return CACHE_DIR / f"cassandra-{found.group(1)}" / "lib"


NODETOOL_JVM = (
    "-Xmx128m",
    *("--add-exports", "java.base/sun.nio.ch=ALL-UNNAMED", "--add-exports", "java.base/jdk.internal.ref=ALL-UNNAMED"),
    *("--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED", "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED"),
)
"""What Cassandra's own ``nodetool`` script gives the JVM (from ``jvm11-client.options``) that NodeTool needs."""


def nodetool(jmx_port: int, home: Path, *args: str) -> None:
    """``nodetool -h 127.0.0.1 -p jmx_port args`` through Cassandra's own NodeTool class (its history file
    goes to ``home/.cassandra``)."""
    command = ["java", *NODETOOL_JVM, f"-Duser.home={home}", "-cp", f"{cassandra_lib()}/*"]
    result = subprocess.run(
        [*command, "org.apache.cassandra.tools.NodeTool", "-h", "127.0.0.1", "-p", str(jmx_port), *args],
        capture_output=True,
        text=True,
        timeout=NODETOOL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        said = [line for line in (result.stderr + result.stdout).splitlines() if line and not line[0].isspace()]
        raise RuntimeError(f"nodetool {' '.join(args)} failed ({result.returncode}): {' '.join(said[-2:])[-300:]}")


def _table_name(directory: Path) -> str:
    """``spans-1f0c...`` → ``spans`` (a table's data directory is its name, a dash and its id)."""
    return directory.name.rsplit("-", 1)[0]


def cassandra_footprint(data_dirs: Sequence[Path], jmx_ports: Sequence[int], keyspace: str) -> Footprint:
    """Flush and major-compact ``keyspace`` on every node, then add up its SSTables on each (by table, over
    the nodes: divide by the replication factor for one replica's share)."""
    for port, data in zip(jmx_ports, data_dirs, strict=True):
        nodetool(port, data.parent, "flush", keyspace)
        nodetool(port, data.parent, "compact", keyspace)
    parts: dict[str, int] = {}
    for data in data_dirs:
        for table in sorted((data / keyspace).glob("*-*")):
            files = [p for p in table.iterdir() if p.is_file()]  # snapshots/ and backups/ are not the table
            parts[_table_name(table)] = parts.get(_table_name(table), 0) + sum(_size(p) for p in files)
    how = "the keyspace's SSTables after nodetool flush and compact (every component: data, index, filter, ...)"
    return Footprint(sum(parts.values()), parts, how)


def directory_footprint(dirs: Mapping[str, Path]) -> Footprint:
    """Every file below each directory (its apparent size), by the name given and the file's kind (its
    suffix, or its name without one: Badger's ``.sst``, ``.vlog``, ``DISCARD``, ``MANIFEST``, ...)."""
    parts: dict[str, int] = {}
    for name, directory in dirs.items():
        for path in directory.rglob("*"):
            if path.is_file():
                kind = f"{name} {path.suffix or path.name}"
                parts[kind] = parts.get(kind, 0) + _size(path)
    return Footprint(sum(parts.values()), parts, "the files below " + " and ".join(dirs))
