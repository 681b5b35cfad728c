"""The Cassandra layout (storage layout v2 without transactions) and :class:`Cql`, the session bound to one
namespace.

Every partition key starts with ``ns``, the store's namespace (:data:`DEFAULT_NAMESPACE` in production;
the contract tests use one per test), so that one keyspace and one set of tables serve many isolated
stores. Times are µs since the epoch; ``hour`` columns are ``start_us // 3600 s`` (or of the writer's
clock for the active index), ``minute`` ``// 60 s``, ``grain`` and ``bucket`` as
:mod:`shared.store.rollups` defines them.

* ``traces ((ns, trace_id), seq, chunk_id)``: one partition per trace. Its clustering rows are the chunks
  (``seq``: the chunk count the writer read, so chunks merge in write order; ``chunk_id``: random, so
  concurrent writers never overwrite each other), written in ONE statement with the trace's static
  columns: a chunk is never listed without its body, nor the other way round. The static columns are the
  trace row: written by every writer (``last_seen_us``, ``due_us``, ``root_done_us``, and at creation
  ``tid``, ``shard``, ``first_seen_us``) or only by the owner's finalization (the rest). The state is not
  a column writers race on: :mod:`.rows` derives it from the chunk set and the set the last
  finalization used (``final_n``, ``final_fp``).
* ``open_spans ((ns, span_id), trace_id)``: the span-id index of open spans (``tid``: the incarnation).
* ``due ((ns, shard, bucket), due_us, trace_id, entry)`` (``entry``: the chunk written with it) and
  ``due_buckets ((ns, shard), bucket)``: the due index, scanned by the shard's owner only (:mod:`.due`);
  short ``gc_grace`` (a resurrected entry is checked against its trace and dropped).
* Search, written at finalization: ``idx_ops``, ``idx_tags``, ``idx_start`` (newest first per start hour),
  ``idx_duration`` (slowest first per start hour), ``idx_endpoint`` (slowest first per root service,
  operation and hour); ``idx_active`` (active traces by the hour they were first seen or re-opened);
  ``index_hours`` lists the hours that have rows. ``by_start ((ns, hour), shard, start_us, trace_id)``:
  every finalized or dropped trace, for the retention purge of one shard.
* Rollups (:mod:`.aggregates`): ``contribs ((ns, shard, minute), trace_id)`` (each trace's contribution
  under its owner shard), ``rollup_ops`` / ``rollup_endpoints`` / ``rollup_contexts`` / ``rollup_deps`` /
  ``rollup_ops_bins`` / ``rollup_endpoints_bins`` (the latency sketches, a row per key and bin)
  ``((ns, grain, bucket), shard, key...)`` with a ``stamp`` per row (who wrote it), ``rollup_hours``
  (hours with rows), ``rollup_pending`` (rounds begun and not finished), ``call_paths``, plus
  ``heartbeats``.
* The archive registry (:mod:`.archive`): ``archive_blocks ((ns, day), start_us, name)`` (the registered
  blocks by the day of their start), ``archive_days`` (the days with blocks), ``archive_names`` (a block's
  row by its name), ``archive_pins ((ns), trace_id)``; no TTL.

No lightweight transactions, no logged batches, no counters anywhere (docs/adr/0007-cassandra-data-model.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

from shared.store.cassandra.session import CassandraSession, Prepared, Row
from shared.store.rollups import HISTOGRAM_SIZE
from shared.store.sketch import from_fixed

HISTOGRAM_COLUMNS: Final = tuple(f"h{i}" for i in range(HISTOGRAM_SIZE))
COUNTER_COLUMNS: Final = ("n", "errors", "duration_us", *HISTOGRAM_COLUMNS)
_COUNTERS_DDL: Final = ", ".join(f"{c} bigint" for c in COUNTER_COLUMNS)
_SHORT_LIVED: Final = "WITH gc_grace_seconds = 3600"
"""Tables whose rows are deleted soon after they are written and whose resurrected rows are harmless."""

TABLES: Final[dict[str, str]] = {
    "traces": """CREATE TABLE IF NOT EXISTS traces (
        ns text, trace_id text, seq int, chunk_id bigint, late boolean, body blob,
        tid bigint static, shard text static, first_seen_us bigint static, last_seen_us bigint static,
        due_us bigint static, root_done_us bigint static, active_at bigint static,
        state text static, final_n int static, final_fp bigint static, final_chunks set<bigint> static,
        late_chunks set<bigint> static, contrib_minutes set<bigint> static,
        root_service text static, root_operation text static, start_us bigint static, duration_us bigint static,
        span_count int static, error_count int static, status text static, complete boolean static,
        services text static, analysis blob static, contribution blob static,
        late_spans int static, refinalizations int static, finalized_at_us bigint static,
        PRIMARY KEY ((ns, trace_id), seq, chunk_id))""",
    "open_spans": """CREATE TABLE IF NOT EXISTS open_spans (
        ns text, span_id text, trace_id text, tid bigint, PRIMARY KEY ((ns, span_id), trace_id))""",
    "due": f"""CREATE TABLE IF NOT EXISTS due (
        ns text, shard text, bucket bigint, due_us bigint, trace_id text, entry bigint, written_us bigint,
        PRIMARY KEY ((ns, shard, bucket), due_us, trace_id, entry)) {_SHORT_LIVED}""",
    "due_buckets": f"""CREATE TABLE IF NOT EXISTS due_buckets (
        ns text, shard text, bucket bigint, PRIMARY KEY ((ns, shard), bucket)) {_SHORT_LIVED}""",
    "idx_ops": """CREATE TABLE IF NOT EXISTS idx_ops (
        ns text, service text, operation text, hour bigint, start_us bigint, trace_id text,
        min_us bigint, max_us bigint,
        PRIMARY KEY ((ns, service, operation, hour), start_us, trace_id))
        WITH CLUSTERING ORDER BY (start_us DESC, trace_id ASC)""",
    "idx_tags": """CREATE TABLE IF NOT EXISTS idx_tags (
        ns text, key text, value text, hour bigint, start_us bigint, trace_id text,
        PRIMARY KEY ((ns, key, value, hour), start_us, trace_id))
        WITH CLUSTERING ORDER BY (start_us DESC, trace_id ASC)""",
    "idx_start": """CREATE TABLE IF NOT EXISTS idx_start (
        ns text, hour bigint, start_us bigint, trace_id text,
        PRIMARY KEY ((ns, hour), start_us, trace_id)) WITH CLUSTERING ORDER BY (start_us DESC, trace_id ASC)""",
    "idx_duration": """CREATE TABLE IF NOT EXISTS idx_duration (
        ns text, hour bigint, duration_us bigint, trace_id text, start_us bigint,
        PRIMARY KEY ((ns, hour), duration_us, trace_id)) WITH CLUSTERING ORDER BY (duration_us DESC, trace_id ASC)""",
    "idx_endpoint": """CREATE TABLE IF NOT EXISTS idx_endpoint (
        ns text, service text, operation text, hour bigint, duration_us bigint, trace_id text,
        start_us bigint, critical blob,
        PRIMARY KEY ((ns, service, operation, hour), duration_us, trace_id))
        WITH CLUSTERING ORDER BY (duration_us DESC, trace_id ASC)""",
    "idx_active": f"""CREATE TABLE IF NOT EXISTS idx_active (
        ns text, hour bigint, trace_id text, first_seen_us bigint, fresh boolean,
        PRIMARY KEY ((ns, hour), trace_id)) {_SHORT_LIVED}""",
    "index_hours": """CREATE TABLE IF NOT EXISTS index_hours (
        ns text, kind text, hour bigint, PRIMARY KEY ((ns), kind, hour))""",
    "by_start": """CREATE TABLE IF NOT EXISTS by_start (
        ns text, hour bigint, shard text, start_us bigint, trace_id text,
        PRIMARY KEY ((ns, hour), shard, start_us, trace_id))""",
    "contribs": """CREATE TABLE IF NOT EXISTS contribs (
        ns text, shard text, minute bigint, trace_id text, body blob,
        PRIMARY KEY ((ns, shard, minute), trace_id))""",
    "rollup_ops": f"""CREATE TABLE IF NOT EXISTS rollup_ops (
        ns text, grain int, bucket bigint, shard text, service text, operation text, kind text,
        {_COUNTERS_DDL}, stamp bigint,
        PRIMARY KEY ((ns, grain, bucket), shard, service, operation, kind))""",
    "rollup_endpoints": f"""CREATE TABLE IF NOT EXISTS rollup_endpoints (
        ns text, grain int, bucket bigint, shard text, service text, operation text,
        {_COUNTERS_DDL}, stamp bigint,
        PRIMARY KEY ((ns, grain, bucket), shard, service, operation))""",
    "rollup_ops_bins": """CREATE TABLE IF NOT EXISTS rollup_ops_bins (
        ns text, grain int, bucket bigint, shard text, service text, operation text, kind text, bin int,
        n bigint, stamp bigint,
        PRIMARY KEY ((ns, grain, bucket), shard, service, operation, kind, bin))""",
    "rollup_endpoints_bins": """CREATE TABLE IF NOT EXISTS rollup_endpoints_bins (
        ns text, grain int, bucket bigint, shard text, service text, operation text, bin int,
        n bigint, stamp bigint,
        PRIMARY KEY ((ns, grain, bucket), shard, service, operation, bin))""",
    "rollup_contexts": """CREATE TABLE IF NOT EXISTS rollup_contexts (
        ns text, grain int, bucket bigint, shard text, service text, operation text, ctx bigint,
        critical_us bigint, traces bigint, stamp bigint,
        PRIMARY KEY ((ns, grain, bucket), shard, service, operation, ctx))""",
    "rollup_deps": """CREATE TABLE IF NOT EXISTS rollup_deps (
        ns text, grain int, bucket bigint, shard text, parent text, child text,
        calls bigint, errors bigint, stamp bigint,
        PRIMARY KEY ((ns, grain, bucket), shard, parent, child))""",
    "rollup_unseen": """CREATE TABLE IF NOT EXISTS rollup_unseen (
        ns text, grain int, bucket bigint, shard text, service text,
        traces bigint, failed bigint, spans bigint, errors bigint, stamp bigint,
        PRIMARY KEY ((ns, grain, bucket), shard, service))""",
    "rollup_hours": """CREATE TABLE IF NOT EXISTS rollup_hours (
        ns text, hour bigint, PRIMARY KEY ((ns), hour))""",
    "rollup_pending": """CREATE TABLE IF NOT EXISTS rollup_pending (
        ns text, shard text, stamp bigint, minutes set<bigint>, traces blob,
        PRIMARY KEY ((ns, shard), stamp))""",
    "call_paths": """CREATE TABLE IF NOT EXISTS call_paths (
        ns text, ctx bigint, label text, path blob, PRIMARY KEY ((ns), ctx))""",
    "heartbeats": """CREATE TABLE IF NOT EXISTS heartbeats (
        ns text, worker_id text, updated_us bigint, body text, PRIMARY KEY ((ns), worker_id))""",
    "archive_blocks": """CREATE TABLE IF NOT EXISTS archive_blocks (
        ns text, day bigint, start_us bigint, name text, shard text, end_us bigint, created_us bigint, meta blob,
        PRIMARY KEY ((ns, day), start_us, name))""",
    "archive_days": """CREATE TABLE IF NOT EXISTS archive_days (
        ns text, day bigint, PRIMARY KEY ((ns), day))""",
    "archive_names": """CREATE TABLE IF NOT EXISTS archive_names (
        ns text, name text, day bigint, start_us bigint, PRIMARY KEY ((ns, name)))""",
    "archive_pins": """CREATE TABLE IF NOT EXISTS archive_pins (
        ns text, trace_id text, pinned_us bigint, PRIMARY KEY ((ns), trace_id))""",
}


async def create_tables(session: CassandraSession) -> None:
    """Create the tables the keyspace lacks (one read when all exist). Schema changes from several
    processes at once are best avoided (Cassandra may disagree on a table created twice at once): start
    one process first, as the deploy manifests and tests do. A keyspace written before the latency sketch
    gets its tables filled from the fixed buckets (:func:`fill_sketch`)."""
    existing = {
        row[0]
        for row in await session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?", (session.config.keyspace,)
        )
    }
    for name, ddl in TABLES.items():
        if name not in existing:
            await session.execute(ddl)
    if "rollup_endpoints" in existing and "rollup_endpoints_bins" not in existing:
        await fill_sketch(session)


SKETCHED: Final = (
    ("rollup_ops", ("service", "operation", "kind")),
    ("rollup_endpoints", ("service", "operation")),
)
"""The rollup tables with a latency sketch table (``..._bins``) beside them."""


async def fill_sketch(session: CassandraSession) -> None:
    """Every namespace's rollup rows into the just created sketch tables: each fixed bucket's count in the
    bin of its midpoint (:func:`shared.store.sketch.from_fixed`), with the row's stamp and remaining TTL. A
    slice recomputed later from the contributions stored before the sketch sums to the same bins."""
    for table, keys in SKETCHED:
        columns = ("ns", "grain", "bucket", "shard", *keys)
        select = await session.prepare(
            f"SELECT {', '.join(columns)}, {', '.join(HISTOGRAM_COLUMNS)}, stamp, TTL(n) FROM {table}"
        )
        insert = await session.prepare(
            f"INSERT INTO {table}_bins ({', '.join(columns)}, bin, n, stamp)"
            f" VALUES ({', '.join('?' * (len(columns) + 3))}) USING TTL ?"
        )
        width = len(columns)
        async for page in session.pages(select):
            for row in page:
                histogram = [int(h or 0) for h in row[width : width + HISTOGRAM_SIZE]]
                for index, n in from_fixed(histogram).items():
                    await session.execute(insert, (*row[:width], index, n, row[-2], row[-1] or 0))


DEFAULT_NAMESPACE: Final = "."
"""``ns`` without a namespace option: Cassandra refuses an empty partition key of one column (and a URL
namespace never contains a dot)."""
BATCH_ROWS: Final = 100
"""Statements per unlogged batch of one partition (bigger groups are split: each part is still atomic)."""


class Cql:
    """The session bound to one namespace: every statement here is prepared once per session, runs at the
    URL's consistency level (QUORUM unless told otherwise), and every value tuple starts with :attr:`ns`
    (after the value of a ``USING TIMESTAMP``, which CQL puts first).
    ``ttl_s``: the time to live of every row written (twice the retention: the purge's safety net)."""

    def __init__(self, session: CassandraSession, *, ttl_s: int, concurrency: int = 64) -> None:
        self.session = session
        self.ns = session.config.namespace or DEFAULT_NAMESPACE
        self.ttl_s = ttl_s
        self.concurrency = concurrency
        self._in_flight = asyncio.Semaphore(4 * concurrency)
        """Bounds the requests of concurrent calls together (finalizing many shards at once)."""
        self._stamp = 0

    def stamp(self) -> int:
        """A write timestamp for ``USING TIMESTAMP``: the wall clock in µs, increasing in this process (as
        the driver's own timestamps are), whatever clock the caller's ``now_us`` comes from."""
        self._stamp = max(self._stamp + 1, time.time_ns() // 1000)
        return self._stamp

    async def rows(self, cql: str, values: Sequence[Any]) -> list[Row]:
        """All rows of one statement (paged)."""
        return await self.session.execute_all(await self.session.prepare(cql), values)

    async def pages(self, cql: str, values: Sequence[Any], page_size: int) -> AsyncIterator[list[Row]]:
        """The rows of one statement a page at a time (stop early: nothing more is read)."""
        async for page in self.session.pages(await self.session.prepare(cql), values, page_size=page_size):
            yield page

    async def each(self, count: int, job: Callable[[int], Awaitable[None]]) -> None:
        """``job(0) .. job(count - 1)``, :attr:`concurrency` at a time; the first failure is raised (the
        jobs still running are cancelled, those done stay done: every job here is idempotent)."""
        cursor = iter(range(count))

        async def lane() -> None:
            for index in cursor:  # the lanes share one cursor: each job runs once
                async with self._in_flight:
                    await job(index)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.concurrency, count)):
                    group.create_task(lane())
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None

    async def many(self, cql: str, items: Iterable[Sequence[Any]]) -> list[list[Row]]:
        """One statement per item, concurrently; all rows of each (paged), in the order of ``items``."""
        statement = await self.session.prepare(cql)
        values = list(items)
        results: list[list[Row]] = [[] for _ in values]

        async def run(index: int) -> None:
            results[index] = await self.session.execute_all(statement, values[index])

        await self.each(len(values), run)
        return results

    async def partitions(self, groups: Iterable[Sequence[tuple[str, Sequence[Any]]]]) -> None:
        """Write each group of statements (all of one partition) as unlogged batches, groups concurrently:
        one request per partition instead of one per row."""
        prepared: dict[str, Prepared] = {}
        batches: list[list[tuple[Prepared, Sequence[Any]]]] = []
        for group in groups:
            items: list[tuple[Prepared, Sequence[Any]]] = []
            for cql, values in group:
                statement = prepared.get(cql)
                if statement is None:
                    statement = prepared[cql] = await self.session.prepare(cql)
                items.append((statement, values))
            batches.extend(items[i : i + BATCH_ROWS] for i in range(0, len(items), BATCH_ROWS))

        async def run(index: int) -> None:
            batch = batches[index]
            if len(batch) == 1:
                await self.session.execute(*batch[0])
            else:
                await self.session.execute_statements(batch)

        await self.each(len(batches), run)
