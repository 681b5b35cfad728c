"""Bringing a SQL database to the current storage layout, written once: create the schema in an empty
database, migrate layout v1 or v2 in place, refuse a newer layout. Runs inside the caller's transaction,
which the backend serializes between processes.

* v1 (one row per span) to v6: :mod:`shared.store.migration` converts each trace;
* v5 to v6: the rollups gain the ten-minute grain, derived from the minute rows (:func:`migrate_v5`);
* v4 to v5: the latency sketches packed a value per rollup row (:func:`migrate_v4`);
* v3 to v4: the tag index re-keyed by the hash of each (key, value) pair (:func:`migrate_v3`);
* v2 to v3 (same tables): every chunk and contribution re-encoded compressed (:mod:`shared.store.encoding`),
  the stored analyses dropped (derived from the spans on read). The space freed is reused by new rows; a
  ``VACUUM`` gives it back to the file system. A v2 store written before the latency sketch tables or the
  tables added since (``rollup_unseen``) gets them first (:func:`add_sketch`,
  :meth:`~.driver.SqlDriver.create_added_tables`): contributions are re-encoded as they were stored
  (without ``sketched`` or ``weight``: fixed buckets alone, adjusted count 1).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Final

from shared.store.encoding import CHUNK_DICT, CHUNK_V1, decode_chunk, encode_chunk
from shared.store.migration import migrate_trace
from shared.store.rollups import (
    MINUTE,
    TEN,
    TOTAL,
    UNSEEN_VALUES,
    Contribution,
    RollupDelta,
    decode_contribution,
    encode_contribution,
)
from shared.store.sketch import LEGACY_BINS, pack, summed_packed
from shared.store.sql.driver import Row, SqlDriver
from shared.store.sql.statements import BINS_SUFFIX, COUNTER_COLUMNS, SERIES
from shared.store.sql.writer import add_index_rows
from shared.store.tags import tag_hash

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
"""Layout v1's tables, except ``heartbeats`` (and PostgreSQL's ``tracing_meta``), which v2 keeps."""
MIGRATE_BATCH: Final = 2000
"""v1 traces converted per round trip."""
MIGRATED_COLUMNS: Final = (
    "trace_id, state, shard, first_seen_us, last_seen_us, due_us, root_done_us, chunks, root_service,"
    " root_operation, start_us, duration_us, span_count, error_count, status, complete, services, analysis,"
    " contribution, late_spans, refinalizations, finalized_at_us"
)
"""The columns of a migrated trace's row, in the order :meth:`~.driver.SqlDriver.insert_migrated` takes."""
V1_TRACES: Final = (
    "SELECT trace_id, state, shard, first_seen_us, last_seen_us, due_us, root_done_us, root_service,"
    " root_operation, start_us, duration_us, span_count, error_count, status, complete, services, analysis,"
    " contribution, late_spans, refinalizations, finalized_at_us FROM v1_traces WHERE trace_id > ?"
    " ORDER BY trace_id LIMIT ?"
)
V1_ORPHANS: Final = (
    "SELECT s.trace_id, s.body, s.finish, s.late FROM v1_spans s"
    " WHERE NOT EXISTS (SELECT 1 FROM v1_traces t WHERE t.trace_id = s.trace_id)"
)
V1_OPEN_SPANS: Final = (
    "INSERT INTO open_spans SELECT s.span_id, t.tid FROM v1_spans s {join} traces t ON t.trace_id = s.trace_id"
    " WHERE s.body IS NOT NULL AND s.duration_us IS NULL AND s.finish IS NULL ON CONFLICT DO NOTHING"
)

SpanRows = dict[str, list[tuple[str | None, str | None, bool]]]


async def create_or_migrate(d: SqlDriver, version: int, *, newer: str) -> None:
    """Bring the database to layout ``version``. ``newer``: the error when it holds a newer layout, with
    ``{version}`` for the layout found."""
    found = await d.layout_version()
    if found > version:
        raise RuntimeError(newer.format(version=found))
    if found == 1:
        await migrate_v1(d)
    elif found == 0:
        await d.create_schema()
    elif found < 5 and not await d.has_sketch():  # a v2 store written before the latency sketch
        await add_sketch(d)
    await d.create_added_tables()  # a v2 (or early v3) store written before them
    if found == 2:
        await migrate_v2(d)
    if found in (2, 3):
        await migrate_v3(d)
    if found in (2, 3, 4):
        await migrate_v4(d)
    if found in (2, 3, 4, 5):
        await migrate_v5(d)
    if found != version:
        await d.set_layout_version(version)


def sketch_fill_sql() -> list[str]:
    """The statements that fill the just created sketch tables from the fixed-bucket columns of the rollup
    rows: each bucket's count in the bin of its midpoint (:data:`~shared.store.sketch.LEGACY_BINS`; distinct
    per bucket, so no two statements write one row)."""
    statements = []
    for table, keys in SERIES.values():
        key_list = ", ".join(("grain", "bucket", *keys))
        for bucket, index in enumerate(LEGACY_BINS):
            statements.append(
                f"INSERT INTO {table}{BINS_SUFFIX} ({key_list}, bin, n)"
                f" SELECT {key_list}, {int(index)}, h{bucket} FROM {table} WHERE h{bucket} <> 0"
            )
    return statements


async def add_sketch(d: SqlDriver) -> None:
    """Layout v2 without the latency sketch tables (written before them): create them and convert the
    rollups' fixed buckets into them (and each service's all-time sketch from those). Contributions
    stored before (fixed buckets alone) subtract from the same midpoint bins, so re-finalizing and
    purging those traces stays exact."""
    await d.create_sketch()
    for statement in sketch_fill_sql():
        await d.execute(statement, [])
    await fill_service_bins(d, d.v4_tables[2])


def _by_trace(rows: Sequence[Row]) -> SpanRows:
    spans: SpanRows = defaultdict(list)
    for trace_id, body, finish, late in rows:
        spans[trace_id].append((body, finish, bool(late)))
    return spans


async def migrate_v1(d: SqlDriver) -> None:
    """Layout v1 to v2, trace by trace (see :mod:`shared.store.migration`)."""
    await d.set_v1_aside()
    delta = RollupDelta()
    indexed: list[tuple[int, Contribution]] = []
    after = ""
    while traces := await d.fetch(d.dialect.sql(V1_TRACES), [after, MIGRATE_BATCH]):
        after = traces[-1][0]
        spans = _by_trace(await d.v1_spans([t[0] for t in traces]))
        for t in traces:
            tid, share = await _move_trace(d, t, spans.pop(t[0], []))
            if share is not None:
                delta.add(share, +1)
                if t[20] is not None:  # finalized (and kept) once: it has search index rows
                    indexed.append((tid, share))
    # finish events whose trace row v1 had already deleted (a finish-only trace): they wait for their span
    for trace_id, rows in _by_trace(await d.fetch(V1_ORPHANS, [])).items():
        moved = migrate_trace(
            rows, analysis_json=None, contribution_json=None, start_us=None, root_service=None, root_operation=None
        )
        values = [trace_id, "waiting", "", 0, 0, 0, None, len(moved.chunks), *([None] * 9), None, None, 0, 0, None]
        await d.insert_migrated(values, moved.chunks)
    await add_index_rows(d, indexed)
    await d.apply_rollups(delta)
    await d.execute(V1_OPEN_SPANS.format(join=d.dialect.join), [])
    for table in V1_TABLES:
        await d.execute(f"DROP TABLE v1_{table}", [])


async def _move_trace(
    d: SqlDriver, t: Row, spans: list[tuple[str | None, str | None, bool]]
) -> tuple[int, Contribution | None]:
    """One v1 trace row (:data:`V1_TRACES`) and its span rows into the current layout; its tid and share."""
    untext = d.dialect.untext
    moved = migrate_trace(
        spans,
        analysis_json=t[16],
        contribution_json=t[17],
        start_us=t[9],
        root_service=None if t[7] is None else untext(t[7]),
        root_operation=None if t[8] is None else untext(t[8]),
    )
    state = "waiting" if t[1] == "active" and not moved.has_spans else t[1]
    values: list[Any] = [t[0], state, *t[2:7], len(moved.chunks), *t[7:16]]
    values += [
        None,  # the analysis: derived from the spans on read
        None if moved.contribution is None else encode_contribution(moved.contribution),
        *t[18:21],
    ]
    return await d.insert_migrated(values, moved.chunks), moved.contribution


async def migrate_v2(d: SqlDriver) -> None:
    """Layout v2 to v3: chunks and contributions re-encoded, analyses dropped (see the module's doc)."""
    key = d.chunk_key
    width = key.count(",") + 1
    marks = ", ".join("?" * width)
    select = d.dialect.sql(f"SELECT {key}, body FROM chunks WHERE ({key}) > ({marks}) ORDER BY {key} LIMIT ?")
    update = d.dialect.sql(f"UPDATE chunks SET body = ? WHERE ({key}) = ({marks})")
    after: list[Any] = [-1] * width
    while rows := await d.fetch(select, [*after, MIGRATE_BATCH]):
        keyed = [tuple(r) for r in rows]
        after = list(keyed[-1][:width])
        await d.execute_many(
            update, [(_v3_chunk(r[width]), *r[:width]) for r in keyed if r[width][0] not in (CHUNK_V1, CHUNK_DICT)]
        )
    select = d.dialect.sql(
        "SELECT tid, contribution FROM traces WHERE tid > ? AND (analysis IS NOT NULL OR contribution IS NOT NULL)"
        " ORDER BY tid LIMIT ?"
    )
    update = d.dialect.sql("UPDATE traces SET analysis = NULL, contribution = ? WHERE tid = ?")
    tid = -1
    while rows := await d.fetch(select, [tid, MIGRATE_BATCH]):
        tid = rows[-1][0]
        await d.execute_many(update, [(None if b is None else _v3_contribution(b), t) for t, b in rows])


def _v3_chunk(body: bytes) -> bytes:
    return encode_chunk(decode_chunk(body))


def _v3_contribution(blob: bytes) -> bytes:
    return encode_contribution(decode_contribution(blob))


V3_INDEXES: Final = (
    ("trace_ops", "service, operation, start_us, tid", "min_us, max_us", "op_index"),
    ("trace_tags", "key, value, start_us, tid", "", "tag_index"),
)
"""The v3 search indexes: (table, key columns, other columns, its v4 table)."""


SERVICE_BINS_FILL: Final = (
    "INSERT INTO rollup_services_bins SELECT service, bin, sum(n) FROM rollup_ops_bins"
    f" WHERE grain = {TOTAL} GROUP BY service, bin HAVING sum(n) <> 0"
)
"""The all-time sketch of each service, from its operations' total-grain bins."""


async def fill_service_bins(d: SqlDriver, ddl: str) -> None:
    """(Re)build ``rollup_services_bins`` (created by ``ddl`` where missing) from the operations' all-time
    sketches."""
    await d.execute(ddl, [])
    await d.execute("DELETE FROM rollup_services_bins", [])
    await d.execute(SERVICE_BINS_FILL, [])


async def migrate_v3(d: SqlDriver) -> None:
    """Layout v3 to v4: ``trace_ops`` and ``trace_tags`` (names, keys and values as text in every row)
    become ``op_index`` and ``tag_index`` (each pair's hash, :func:`shared.store.tags.tag_hash`), row for
    row, in key order; then they are dropped. ``rollup_services_bins`` is filled from the operations'
    all-time sketches (:data:`SERVICE_BINS_FILL`)."""
    untext = d.dialect.untext
    *indexes, service_bins = d.v4_tables
    for (old, key, rest, new), ddl in zip(V3_INDEXES, indexes, strict=True):
        await d.execute(ddl, [])
        columns = f"{key}, {rest}" if rest else key
        select = d.dialect.sql(f"SELECT {columns} FROM {old} WHERE ({key}) > (?, ?, ?, ?) ORDER BY {key} LIMIT ?")
        width = 3 + rest.count(",") + bool(rest)
        insert = d.dialect.sql(f"INSERT INTO {new} VALUES ({', '.join('?' * width)}) ON CONFLICT DO NOTHING")
        after: list[Any] = ["", "", -1, -1]
        while rows := await d.fetch(select, [*after, MIGRATE_BATCH]):
            after = list(rows[-1][:4])
            await d.execute_many(insert, [(tag_hash(untext(r[0]), untext(r[1])), *r[2:]) for r in rows])
        await d.execute(f"DROP TABLE {old}", [])
    await fill_service_bins(d, service_bins)


async def migrate_v4(d: SqlDriver) -> None:
    """Layout v4 to v5: the latency sketches packed a value per rollup row (docs/adr/0015-packed-sketches.md).
    Each row's bins (``rollup_ops_bins``, ``rollup_endpoints_bins``: a row per key and bin) go into its new
    ``bins`` column, each service's all-time bins (``rollup_services_bins``) into a row of
    ``rollup_services_sketch``, key by key in key order; then the three tables are dropped."""
    column, services_ddl = d.v5_sketch
    for table, keys in SERIES.values():
        await d.execute(f"ALTER TABLE {table} ADD COLUMN {column}", [])
        key_columns = ("grain", "bucket", *keys)
        update = f"UPDATE {table} SET bins = ? WHERE {' AND '.join(f'{k} = ?' for k in key_columns)}"
        await _pack_rows(d, f"{table}{BINS_SUFFIX}", key_columns, d.dialect.sql(update), key_first=False)
        await d.execute(f"DROP TABLE {table}{BINS_SUFFIX}", [])
    await d.execute(services_ddl, [])
    insert = d.dialect.sql("INSERT INTO rollup_services_sketch (service, bins) VALUES (?, ?)")
    await _pack_rows(d, "rollup_services_bins", ("service",), insert, key_first=True)
    await d.execute("DROP TABLE rollup_services_bins", [])


async def _pack_rows(d: SqlDriver, table: str, key_columns: Sequence[str], write: str, *, key_first: bool) -> None:
    """Read ``table`` (``key..., bin, n``) in key order, a batch at a time, and ``write`` each key's bins
    packed: parameters ``(packed, key...)``, or ``(key..., packed)`` when ``key_first``."""
    columns = (*key_columns, "bin")
    column_list = ", ".join(columns)
    select = d.dialect.sql(
        f"SELECT {column_list}, n FROM {table} WHERE ({column_list}) > ({', '.join('?' * len(columns))})"
        f" ORDER BY {column_list} LIMIT ?"
    )
    width = len(key_columns)
    after: list[Any] = [-1 if c in ("grain", "bucket", "bin") else "" for c in columns]
    key: tuple[Any, ...] | None = None
    bins: list[tuple[int, int]] = []
    writes: list[tuple[Any, ...]] = []

    def flush() -> None:
        if key is not None and bins:
            packed = pack(bins)
            writes.append((*key, packed) if key_first else (packed, *key))

    while rows := await d.fetch(select, [*after, MIGRATE_BATCH]):
        after = list(rows[-1][: width + 1])
        for row in rows:
            row_key = tuple(row[:width])
            if row_key != key:
                flush()
                key, bins = row_key, []
            bins.append((int(row[width]), int(row[width + 1])))
        await d.execute_many(write, writes)
        writes = []
    flush()
    await d.execute_many(write, writes)


GRAIN_TABLES: Final = (
    *((table, keys, tuple(COUNTER_COLUMNS), True) for table, keys in SERIES.values()),
    ("rollup_contexts", ("service", "operation", "ctx"), ("critical_us", "traces"), False),
    ("rollup_unseen", ("service",), UNSEEN_VALUES, False),
)
"""The rollup tables kept at every grain: (table, key columns, value columns, whether a row has a packed
sketch in ``bins``)."""


async def migrate_v5(d: SqlDriver) -> None:
    """Layout v5 to v6: the ten-minute grain (:data:`~shared.store.rollups.TEN`, docs/adr/0018-ten-minute-grain.md)
    derived from the minute rows of every rollup table: the values summed by the database, per ten minutes
    and key; the packed sketches of each ten minutes' rows summed here
    (:func:`~shared.store.sketch.summed_packed`), a ten minutes at a time. Ten-minute rows already there
    (a file made to look older) are derived again."""
    for table, keys, values, sketched in GRAIN_TABLES:
        key_list = ", ".join(keys)
        await d.execute(f"DELETE FROM {table} WHERE grain = {TEN}", [])
        await d.execute(
            f"INSERT INTO {table} (grain, bucket, {key_list}, {', '.join(values)})"
            f" SELECT {TEN}, bucket / 10, {key_list}, {', '.join(f'sum({v})' for v in values)} FROM {table}"
            f" WHERE grain = {MINUTE} GROUP BY bucket / 10, {key_list}",
            [],
        )
        if not sketched:
            continue
        select = d.dialect.sql(
            f"SELECT {key_list}, bins FROM {table} WHERE grain = {MINUTE} AND bucket >= ? AND bucket < ?"
            " AND length(bins) > 0"
        )
        where = " AND ".join(f"{k} = ?" for k in ("grain", "bucket", *keys))
        update = d.dialect.sql(f"UPDATE {table} SET bins = ? WHERE {where}")
        blocks = await d.fetch(f"SELECT DISTINCT bucket FROM {table} WHERE grain = {TEN} ORDER BY bucket", [])
        for (block,) in blocks:
            sketches: dict[tuple[Any, ...], list[bytes]] = defaultdict(list)
            for *key, bins in await d.fetch(select, [block * 10, block * 10 + 10]):
                sketches[tuple(key)].append(bytes(bins))
            writes = [(summed_packed(parts), TEN, block, *key) for key, parts in sketches.items()]
            await d.execute_many(update, writes)
