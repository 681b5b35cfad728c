"""PostgreSQL backend (asyncpg): one database shared by many ingest workers and API replicas.

Same semantics and schema ideas as the SQLite backend; what differs is concurrency, since here many
processes write at once:

* **Writes lock their traces first.** ``write_batch`` starts by inserting-or-locking the row of every trace
  of the batch in ONE statement, in trace id order (``INSERT ... ON CONFLICT DO UPDATE ... WHERE false``
  locks existing rows without writing them). Span rows are only written while their trace's row is locked,
  so two writers never wait on each other's span rows, and the sorted single-pass lock order means they
  cannot deadlock on trace rows either. Deadlocks and serialization failures are still retried (the whole
  transaction, a few times, with jittered backoff) as a safety net.
* **Finalize skips what is busy.** ``finalize`` locks the active traces it was given with
  ``FOR UPDATE SKIP LOCKED``: two workers never finalize the same trace at once, and a trace a writer is
  adding spans to is left for the next round (it stays due). Because spans are only written under the
  trace lock, the spans ``finalize`` reads are exactly the committed ones, and a writer that waited for a
  finalization sees the trace as finalized afterwards: its spans are counted late and re-activate the trace.
* **Rollups are commutative increments** applied at the end of the transaction, one statement per table,
  rows in key order (so concurrent finalizations never deadlock on them and hold them briefly).

A batch travels as a few column arrays bound as parameters (ids, parent ids, durations and each span's
JSON from msgspec), unpacked by ``unnest`` inside one ``INSERT ... SELECT ... ON CONFLICT``: no per-row
statements or round trips, and PostgreSQL parses no JSON on the write path (unpacking one JSON document
there took ~40% of the statement's time for 20k spans: CPU of the one shared database, where building the
arrays costs the workers, which scale out, ~1 µs a span).
Index rows of finalized traces go in by binary ``COPY``.

Span bodies are ``text``, not ``jsonb``: the idempotence check compares the exact bytes msgspec wrote
(jsonb would re-serialize them, and pay a parse on every write and a re-render on every read, where text
goes straight to msgspec), and jsonb cannot hold ``\\u0000``, a legal JSON string escape a span may carry.

PostgreSQL ``text`` cannot hold NUL characters either, so names and tags stored as columns (service,
operation, tag key/value) go through :func:`pg_text` (a reversible escape that leaves every other string
unchanged) and come back through :func:`py_text`. Text columns that are sorted or compared use
``COLLATE "C"`` so that order is code point order, the same as SQLite's and Python's, whatever the
database's locale.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
import msgspec

from shared.analysis import Dependency, TraceAnalysis
from shared.models import Span, SpanFinish
from shared.sampling import Sampler
from shared.store.base import (
    BUCKET_BOUNDS_US,
    Completeness,
    Heartbeat,
    ServiceStats,
    SlowTrace,
    StoredTrace,
    StoreStats,
    TraceQuery,
    TraceSummary,
    WriteResult,
)
from shared.store.finalizing import decode_spans, finalize_trace, summary_from_row
from shared.store.rollups import HOUR_US, RollupDelta, decode_contribution
from shared.store.tags import tag_rows

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
SCHEMA_LOCK_KEY: Final = 0x7472_6163_696E_6701  # pg_advisory_xact_lock key guarding schema creation
RETRIES: Final = 6  # attempts of a write transaction that hit a deadlock or serialization failure
PURGE_CHUNK: Final = 2000  # traces deleted per purge transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS tracing_meta (key text PRIMARY KEY, value text NOT NULL);

CREATE TABLE IF NOT EXISTS spans (
    trace_id text COLLATE "C" NOT NULL,
    span_id text COLLATE "C" NOT NULL,
    parent_id text COLLATE "C",
    duration_us bigint,
    body text,              -- the span as native JSON, exactly as encoded; NULL while only its finish arrived
    finish text,            -- the finish event as native JSON, merged on read
    late boolean NOT NULL DEFAULT false,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_span_id ON spans (span_id);

CREATE TABLE IF NOT EXISTS traces (
    trace_id text COLLATE "C" PRIMARY KEY,
    state text NOT NULL,    -- active | finalized
    shard text NOT NULL,    -- topic/partition whose worker finalizes it
    first_seen_us bigint NOT NULL,
    last_seen_us bigint NOT NULL,
    due_us bigint NOT NULL,
    root_done_us bigint,    -- when a finished root span was first seen
    root_service text COLLATE "C",
    root_operation text COLLATE "C",
    start_us bigint,
    duration_us bigint,
    span_count integer,
    error_count integer,
    status text NOT NULL DEFAULT 'active',
    complete boolean,
    services text,          -- JSON list
    analysis text,          -- JSON
    contribution text,      -- JSON: this trace's share of the rollups
    late_spans integer NOT NULL DEFAULT 0,
    refinalizations integer NOT NULL DEFAULT 0,
    finalized_at_us bigint
) WITH (fillfactor = 85);
CREATE INDEX IF NOT EXISTS traces_due ON traces (due_us) WHERE state = 'active';
CREATE INDEX IF NOT EXISTS traces_start ON traces (start_us) WHERE finalized_at_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS traces_duration ON traces (duration_us) WHERE finalized_at_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS traces_dropped ON traces (start_us) WHERE state = 'dropped';

CREATE TABLE IF NOT EXISTS trace_ops (
    service text COLLATE "C" NOT NULL, operation text COLLATE "C" NOT NULL, trace_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (service, operation, trace_id)
);
CREATE INDEX IF NOT EXISTS trace_ops_by_trace ON trace_ops (trace_id);
CREATE TABLE IF NOT EXISTS trace_tags (
    key text COLLATE "C" NOT NULL, value text COLLATE "C" NOT NULL, trace_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (key, value, trace_id)
);
CREATE INDEX IF NOT EXISTS trace_tags_by_trace ON trace_tags (trace_id);

CREATE TABLE IF NOT EXISTS rollup_totals (
    id integer PRIMARY KEY CHECK (id = 1),
    completed bigint NOT NULL, failed bigint NOT NULL, duration_us bigint NOT NULL
);
INSERT INTO rollup_totals VALUES (1, 0, 0, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS rollup_services (
    service text COLLATE "C" PRIMARY KEY, spans bigint NOT NULL, errors bigint NOT NULL, duration_us bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS rollup_buckets (
    service text COLLATE "C" NOT NULL, bucket integer NOT NULL, spans bigint NOT NULL, PRIMARY KEY (service, bucket)
);
CREATE TABLE IF NOT EXISTS rollup_operations (
    service text COLLATE "C" NOT NULL, operation text COLLATE "C" NOT NULL, spans bigint NOT NULL,
    PRIMARY KEY (service, operation)
);
CREATE TABLE IF NOT EXISTS rollup_deps (
    hour bigint NOT NULL, parent text COLLATE "C" NOT NULL, child text COLLATE "C" NOT NULL,
    calls bigint NOT NULL, errors bigint NOT NULL, PRIMARY KEY (hour, parent, child)
);
CREATE TABLE IF NOT EXISTS heartbeats (
    worker_id text COLLATE "C" PRIMARY KEY, updated_us bigint NOT NULL, body text NOT NULL
);
"""

# -- write_batch statements ---------------------------------------------------------------------------

# Insert the row of every trace of the batch (a new trace is owned by its shard) or lock the existing one,
# in trace id order, in one statement. ``WHERE false``: an existing row is locked, never rewritten.
# Returns the ids inserted.
LOCK_TRACES = """
INSERT INTO traces AS t (trace_id, state, shard, first_seen_us, last_seen_us, due_us)
SELECT u.id, 'active', u.shard, $3::bigint, $3::bigint, $3::bigint + $4::bigint
FROM unnest($1::text[], $2::text[]) AS u(id, shard) ORDER BY u.id
ON CONFLICT (trace_id) DO UPDATE SET state = t.state WHERE false
RETURNING trace_id
"""

FINALIZED_AMONG = (
    "SELECT trace_id, state FROM traces WHERE trace_id = ANY($1::text[]) AND state IN ('finalized', 'dropped')"
)

# One row per (trace, span): of several versions in the batch, the last finished one wins, else the last
# one (what applying them one by one gives, since an open version never replaces a finished one).
UPSERT_SPANS = """
WITH changed AS (
    INSERT INTO spans AS s (trace_id, span_id, parent_id, duration_us, body)
    SELECT DISTINCT ON (u.trace_id, u.span_id) u.trace_id, u.span_id, u.parent_id, u.duration_us, u.body
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
        WITH ORDINALITY AS u(trace_id, span_id, parent_id, duration_us, body, n)
    ORDER BY u.trace_id, u.span_id, u.duration_us IS NOT NULL DESC, u.n DESC
    ON CONFLICT (trace_id, span_id) DO UPDATE SET
        parent_id = excluded.parent_id, duration_us = excluded.duration_us, body = excluded.body
    WHERE s.body IS DISTINCT FROM excluded.body
      AND NOT (s.duration_us IS NOT NULL AND excluded.duration_us IS NULL)  -- never reopen a finished span
    RETURNING trace_id, span_id, parent_id IS NULL AS root
)
SELECT coalesce(array_agg(trace_id), '{}'), coalesce(array_agg(span_id), '{}'),
       coalesce(array_agg(DISTINCT trace_id) FILTER (WHERE root), '{}')
FROM changed
"""

UPSERT_FINISHES = """
WITH changed AS (
    INSERT INTO spans AS s (trace_id, span_id, finish)
    SELECT DISTINCT ON (u.trace_id, u.span_id) u.trace_id, u.span_id, u.finish
    FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(trace_id, span_id, finish, n)
    ORDER BY u.trace_id, u.span_id, u.n DESC
    ON CONFLICT (trace_id, span_id) DO UPDATE SET finish = excluded.finish
    WHERE s.finish IS DISTINCT FROM excluded.finish
    RETURNING trace_id, span_id
)
SELECT coalesce(array_agg(trace_id), '{}'), coalesce(array_agg(span_id), '{}') FROM changed
"""

MARK_LATE = """
UPDATE spans SET late = true
FROM unnest($1::text[], $2::text[]) AS u(trace_id, span_id)
WHERE spans.trace_id = u.trace_id AND spans.span_id = u.span_id AND u.trace_id = ANY($3::text[])
"""

# Rows were inserted or locked by LOCK_TRACES; rows it inserted already carry these values.
TOUCH_TRACES = """
UPDATE traces SET
    last_seen_us = $2::bigint,
    due_us = CASE WHEN state = 'finalized' THEN $2::bigint + $3::bigint
                  WHEN root_done_us IS NOT NULL THEN due_us
                  ELSE $2::bigint + $4::bigint END,
    state = 'active'  -- a re-opened trace keeps its last summary (and rollup share) until re-finalized
WHERE trace_id = ANY($1::text[])
"""

ROOT_DONE = """
UPDATE traces t SET root_done_us = $2::bigint, due_us = least(t.due_us, $2::bigint + $3::bigint)
WHERE t.trace_id = ANY($1::text[]) AND t.root_done_us IS NULL
  AND EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id AND s.parent_id IS NULL
              AND s.body IS NOT NULL AND (s.duration_us IS NOT NULL OR s.finish IS NOT NULL))
"""

# -- finalize statements ------------------------------------------------------------------------------

LOCK_ACTIVE = """
SELECT trace_id, contribution FROM traces
WHERE trace_id = ANY($1::text[]) AND state = 'active'
ORDER BY trace_id FOR UPDATE SKIP LOCKED
"""

STORE_SUMMARIES = """
UPDATE traces t SET state = u.state, root_service = u.root_service, root_operation = u.root_operation,
    start_us = u.start_us, duration_us = u.duration_us, span_count = u.span_count, error_count = u.error_count,
    status = u.status, complete = u.complete, services = u.services, analysis = u.analysis,
    contribution = u.contribution, late_spans = u.late_spans,
    refinalizations = t.refinalizations + (t.finalized_at_us IS NOT NULL)::integer,
    finalized_at_us = CASE WHEN u.state = 'finalized' THEN $15::bigint END  -- a dropped trace has no summary
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::integer[], $7::integer[],
            $8::text[], $9::boolean[], $10::text[], $11::text[], $12::text[], $13::integer[], $14::text[])
    AS u(trace_id, root_service, root_operation, start_us, duration_us, span_count, error_count,
         status, complete, services, analysis, contribution, late_spans, state)
WHERE t.trace_id = u.trace_id
"""

SUMMARY_COLUMNS = (
    "t.trace_id, t.root_service, t.root_operation, coalesce(t.start_us, t.first_seen_us), coalesce(t.duration_us, 0),"
    " coalesce(t.span_count, 0), coalesce(t.error_count, 0), t.status, coalesce(t.complete, false), t.services"
)

_json = msgspec.json.Encoder()
_analysis_decoder = msgspec.json.Decoder(TraceAnalysis)
_heartbeat_decoder = msgspec.json.Decoder(Heartbeat)

_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


# -- NUL-safe text --------------------------------------------------------------------------------------


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


def _json_text(event: Span | SpanFinish) -> str:
    """One event as the native JSON the store keeps (the same bytes for the same content: msgspec's
    encoding is deterministic, which the "unchanged span is a no-op" comparison relies on)."""
    return _json.encode(event).decode()


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[Sequence[Any]]:
    """Rows to ``width`` column lists (for ``unnest``); empty columns when there are no rows."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


class PostgresStore:
    """The shared store: any number of worker and API processes may use one database at once."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresStore:
        """Connect (a pool) and create the schema if missing; several processes may do this at once."""
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        # Query parameters of the URL that asyncpg does not know are server settings (e.g. search_path);
        # they win over these defaults. JIT only adds latency to short statements like ours.
        given = parse_qs(urlsplit(url).query)
        # work_mem: a 20k-span batch sorts ~6 MB to de-duplicate; the 4 MB default would spill it to disk.
        defaults = {"jit": "off", "work_mem": "64MB", "application_name": "tracing"}
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            server_settings={k: v for k, v in defaults.items() if k not in given},
        )
        store = cls(pool)
        try:
            await store._create_schema()
        except BaseException:
            await pool.close()
            raise
        return store

    # -- plumbing -------------------------------------------------------------------------------------

    async def _create_schema(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # CREATE ... IF NOT EXISTS alone races (two sessions can both find a table missing): serialize.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
            exists = await conn.fetchval("SELECT to_regclass('tracing_meta') IS NOT NULL")
            if exists:
                version = await conn.fetchval("SELECT value FROM tracing_meta WHERE key = 'schema_version'")
                if version is not None and int(version) != SCHEMA_VERSION:
                    raise RuntimeError(f"PostgreSQL schema version {version}, this build knows {SCHEMA_VERSION}")
                if version is not None:
                    return
            await conn.execute(SCHEMA)
            await conn.execute(
                "INSERT INTO tracing_meta VALUES ('schema_version', $1) ON CONFLICT (key) DO NOTHING",
                str(SCHEMA_VERSION),
            )

    async def _write(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` in one READ COMMITTED transaction; retry it whole on deadlock or serialization failure."""
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    return await fn(conn)
            except _RETRYABLE:
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0.005, 0.02) * 2**attempt)
        raise AssertionError("unreachable")

    async def _read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` in one read-only REPEATABLE READ transaction (one consistent snapshot)."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await fn(conn)

    async def check(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def close(self) -> None:
        await self._pool.close()

    # -- writes ---------------------------------------------------------------------------------------

    async def write_batch(
        self,
        spans: Sequence[Span],
        finishes: Sequence[SpanFinish],
        *,
        shards: Mapping[str, str],
        now_us: int,
        grace_us: int,
        idle_us: int,
    ) -> WriteResult:
        if not spans and not finishes:
            return WriteResult(spans_changed=0, traces_touched=0, late_spans=0)
        # Column arrays, bound as 5 + 3 parameters: PostgreSQL receives them in binary and parses nothing,
        # which keeps the shared database's CPU for the upserts themselves (workers scale out, it does not).
        span_columns = (
            [s.trace_id for s in spans],
            [s.span_id for s in spans],
            [s.parent_span_id for s in spans],
            [s.duration_us for s in spans],
            [_json_text(s) for s in spans],
        )
        finish_columns = (
            [f.trace_id for f in finishes],
            [f.span_id for f in finishes],
            [_json_text(f) for f in finishes],
        )
        owned_ids = list(shards)
        owned_shards = list(shards.values())

        async def tx(c: asyncpg.Connection) -> WriteResult:
            inserted = {r[0] for r in await c.fetch(LOCK_TRACES, owned_ids, owned_shards, now_us, idle_us)}
            trace_ids: list[str] = []
            span_ids: list[str] = []
            roots: list[str] = []
            if spans:
                trace_ids, span_ids, roots = await c.fetchrow(UPSERT_SPANS, *span_columns)
            if finishes:
                finish_traces, finish_spans = await c.fetchrow(UPSERT_FINISHES, *finish_columns)
                trace_ids += finish_traces
                span_ids += finish_spans
                roots += finish_traces
            touched = set(trace_ids)
            if not touched.issubset(shards):
                raise KeyError(f"no shard given for trace(s) {sorted(touched.difference(shards))}")
            phantoms = inserted - touched  # created above, but every span was a duplicate
            if phantoms:
                await c.execute("DELETE FROM traces WHERE trace_id = ANY($1::text[])", list(phantoms))
            if not touched:
                return WriteResult(spans_changed=0, traces_touched=0, late_spans=0)
            late = 0
            existing = list(touched - inserted)
            if existing:
                done = {r[0]: r[1] for r in await c.fetch(FINALIZED_AMONG, existing)}
                dropped = [t for t, state in done.items() if state == "dropped"]
                if dropped:  # a sampled-out trace stays out: its late spans go too
                    await c.execute("DELETE FROM spans WHERE trace_id = ANY($1::text[])", dropped)
                    gone = set(dropped)
                    kept = [(t, sid) for t, sid in zip(trace_ids, span_ids, strict=True) if t not in gone]
                    trace_ids, span_ids = [t for t, _ in kept], [sid for _, sid in kept]
                    roots = [t for t in roots if t not in gone]
                    touched -= gone
                    existing = [t for t in existing if t not in gone]
                    if not touched:
                        return WriteResult(spans_changed=0, traces_touched=0, late_spans=0)
                finalized = [t for t, state in done.items() if state == "finalized"]
                if finalized:  # rare: spans arriving after their trace was finalized
                    status = await c.execute(MARK_LATE, trace_ids, span_ids, finalized)
                    late = int(status.rsplit(" ", 1)[1])
                if existing:
                    await c.execute(TOUCH_TRACES, existing, now_us, grace_us, idle_us)
            if roots:
                await c.execute(ROOT_DONE, list(set(roots)), now_us, grace_us)
            # a span and its finish in one batch are one changed row, not two
            changed = len(set(zip(trace_ids, span_ids, strict=True)))
            return WriteResult(spans_changed=changed, traces_touched=len(touched), late_spans=late)

        return await self._write(tx)

    async def due_traces(self, shards: Collection[str], now_us: int, limit: int) -> list[str]:
        if not shards:
            return []
        rows = await self._pool.fetch(
            "SELECT trace_id FROM traces WHERE state = 'active' AND due_us <= $1 AND shard = ANY($2::text[])"
            " ORDER BY due_us LIMIT $3",
            now_us,
            list(shards),
            limit,
        )
        return [r[0] for r in rows]

    async def finalize(
        self, trace_ids: Sequence[str], *, now_us: int, sampler: Sampler | None = None
    ) -> list[TraceAnalysis]:
        if not trace_ids:
            return []
        ids = list(dict.fromkeys(trace_ids))

        async def tx(c: asyncpg.Connection) -> list[TraceAnalysis]:
            locked = await c.fetch(LOCK_ACTIVE, ids)
            if not locked:
                return []
            active = [r[0] for r in locked]
            bodies: dict[str, list[str]] = defaultdict(list)
            finishes: dict[str, list[str | None]] = defaultdict(list)
            late_counts: dict[str, int] = defaultdict(int)
            for trace_id, body, finish, late in await c.fetch(
                "SELECT trace_id, body, finish, late FROM spans"
                " WHERE trace_id = ANY($1::text[]) AND body IS NOT NULL ORDER BY trace_id, span_id",
                active,
            ):
                bodies[trace_id].append(body)
                finishes[trace_id].append(finish)
                late_counts[trace_id] += late
            # Only finish events and no span: nothing to finalize. The trace row goes; its finish rows stay
            # and merge if the span ever arrives (which makes the trace active again).
            empty = [t for t in active if t not in bodies]
            if empty:
                await c.execute("DELETE FROM traces WHERE trace_id = ANY($1::text[])", empty)
            delta = RollupDelta()
            results: list[TraceAnalysis] = []
            summaries: list[tuple[Any, ...]] = []
            op_rows: list[tuple[str, str, str]] = []
            tag_index: list[tuple[str, str, str]] = []
            dropped: list[str] = []
            for trace_id, old_contribution in locked:
                if trace_id not in bodies:
                    continue
                spans = decode_spans(bodies[trace_id], finishes[trace_id])
                done = finalize_trace(trace_id, spans, previous=old_contribution, delta=delta, sampler=sampler)
                analysis = done.analysis
                results.append(analysis)
                summaries.append(
                    (
                        trace_id,
                        None if analysis.root_service is None else pg_text(analysis.root_service),
                        None if analysis.root_operation is None else pg_text(analysis.root_operation),
                        analysis.start_us,
                        analysis.duration_us,
                        analysis.span_count,
                        analysis.error_count,
                        done.status,
                        analysis.complete,
                        done.services_json(),
                        done.analysis_json(),
                        done.contribution_json(),
                        late_counts.get(trace_id, 0),
                        "finalized" if done.kept else "dropped",
                    )
                )
                if done.kept:
                    op_rows.extend((s, o, trace_id) for s, o in set(analysis.operations))
                    tag_index.extend(tag_rows(trace_id, spans))  # distinct per trace
                else:
                    dropped.append(trace_id)
            if not summaries:
                return []
            await c.execute(STORE_SUMMARIES, *_columns(summaries, 14), now_us)
            if dropped:  # sampled out: counted in the rollups, spans gone
                await c.execute("DELETE FROM spans WHERE trace_id = ANY($1::text[])", dropped)
            # index rows of a re-finalized trace are replaced (deleted for every trace: a probe each, and
            # the COPY below can then never meet an old row)
            summarized = [row[0] for row in summaries]
            await c.execute("DELETE FROM trace_ops WHERE trace_id = ANY($1::text[])", summarized)
            await c.execute("DELETE FROM trace_tags WHERE trace_id = ANY($1::text[])", summarized)
            await self._index(c, "trace_ops", op_rows)
            await self._index(c, "trace_tags", tag_index)
            await self._apply(c, delta)
            return results

        return await self._write(tx)

    @staticmethod
    async def _index(c: asyncpg.Connection, table: str, rows: Sequence[tuple[str, str, str]]) -> None:
        """COPY index rows: distinct per trace, and their traces' old rows deleted in this transaction."""
        if not rows:
            return
        first, second, trace_ids = _columns(rows, 3)
        escaped = pg_texts(first), pg_texts(second)
        if escaped[0] is not first or escaped[1] is not second:
            rows = list(zip(*escaped, trace_ids, strict=True))
        await c.copy_records_to_table(table, records=rows)

    @staticmethod
    async def _apply(c: asyncpg.Connection, d: RollupDelta) -> None:
        """Add ``d`` to the rollups: one commutative upsert per table, rows in key order (no deadlocks
        between concurrent finalizations), then drop rows a subtraction brought to zero."""
        if d.completed or d.failed or d.duration_us:
            await c.execute(
                "UPDATE rollup_totals SET completed = completed + $1, failed = failed + $2,"
                " duration_us = duration_us + $3 WHERE id = 1",
                d.completed,
                d.failed,
                d.duration_us,
            )
        await _upsert(c, "rollup_services", list(d.service_rows()))
        await _upsert(c, "rollup_buckets", list(d.bucket_rows()))
        await _upsert(c, "rollup_operations", list(d.operation_rows()))
        await _upsert(c, "rollup_deps", list(d.dep_rows()))

    async def purge(self, before_us: int) -> int:
        async def tx(c: asyncpg.Connection) -> int:
            rows = await c.fetch(
                "SELECT trace_id, contribution FROM traces"
                " WHERE (finalized_at_us IS NOT NULL OR state = 'dropped') AND start_us < $1"
                " LIMIT $2 FOR UPDATE SKIP LOCKED",
                before_us,
                PURGE_CHUNK,
            )
            if not rows:
                return 0
            delta = RollupDelta()
            for _, contrib in rows:
                if contrib is not None:
                    delta.add(decode_contribution(contrib), -1)
            ids = [r[0] for r in rows]
            for table in ("spans", "trace_ops", "trace_tags", "traces"):
                await c.execute(f"DELETE FROM {table} WHERE trace_id = ANY($1::text[])", ids)
            await self._apply(c, delta)
            return len(rows)

        total = 0
        while True:  # in chunks: short transactions, and traces being written or finalized are skipped
            purged = await self._write(tx)
            total += purged
            if purged < PURGE_CHUNK:
                return total

    async def record_heartbeat(self, heartbeat: Heartbeat) -> None:
        await self._pool.execute(
            "INSERT INTO heartbeats VALUES ($1, $2, $3) ON CONFLICT (worker_id) DO UPDATE SET"
            " updated_us = excluded.updated_us, body = excluded.body",
            pg_text(heartbeat.worker_id),
            heartbeat.updated_at_us,
            _json.encode(heartbeat).decode(),
        )

    # -- reads ----------------------------------------------------------------------------------------

    async def heartbeats(self, *, newer_than_us: int = 0) -> list[Heartbeat]:
        rows = await self._pool.fetch(
            "SELECT body FROM heartbeats WHERE updated_us > $1 ORDER BY worker_id", newer_than_us
        )
        return [_heartbeat_decoder.decode(r[0]) for r in rows]

    async def get_trace(self, trace_id: str) -> StoredTrace | None:
        # one statement: the trace row and its spans from one snapshot
        row = await self._pool.fetchrow(
            "SELECT t.state, t.analysis, t.late_spans, t.refinalizations, t.finalized_at_us, s.bodies, s.finishes"
            " FROM traces t, LATERAL (SELECT array_agg(body ORDER BY span_id) AS bodies,"
            "  array_agg(finish ORDER BY span_id) AS finishes"
            "  FROM spans WHERE trace_id = t.trace_id AND body IS NOT NULL) s"
            " WHERE t.trace_id = $1",
            trace_id,
        )
        if row is None or row["bodies"] is None:  # no trace, or only finish events so far
            return None
        state = row["state"]
        analysis = row["analysis"]
        return StoredTrace(
            trace_id=trace_id,
            state=state,
            spans=decode_spans(row["bodies"], row["finishes"]),
            analysis=_analysis_decoder.decode(analysis) if state == "finalized" and analysis else None,
            completeness=Completeness(
                late_spans=row["late_spans"],
                refinalizations=row["refinalizations"],
                finalized_at_us=row["finalized_at_us"],
            ),
        )

    async def trace_of_span(self, span_id: str) -> str | None:
        trace_id: str | None = await self._pool.fetchval(
            "SELECT trace_id FROM spans WHERE span_id = $1 LIMIT 1", span_id
        )
        return trace_id

    async def find_traces(self, query: TraceQuery) -> list[TraceSummary]:
        where: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if query.status == "active":
            where.append("t.state = 'active'")
            order = "t.first_seen_us DESC, t.trace_id DESC"
        else:
            where.append("t.finalized_at_us IS NOT NULL")
            order = "t.start_us DESC, t.trace_id DESC"
            if query.status is not None:
                where.append(f"t.status = {param(query.status)}")
        if query.min_duration_us is not None:
            where.append(f"t.duration_us >= {param(query.min_duration_us)}")
        if query.max_duration_us is not None:
            where.append(f"t.duration_us <= {param(query.max_duration_us)}")
        if query.start_us is not None:
            where.append(f"t.start_us >= {param(query.start_us)}")
        if query.end_us is not None:
            where.append(f"t.start_us <= {param(query.end_us)}")
        if query.service_name is not None or query.operation_name is not None:
            conditions = ["o.trace_id = t.trace_id"]
            if query.service_name is not None:
                conditions.append(f"o.service = {param(pg_text(query.service_name))}")
            if query.operation_name is not None:
                conditions.append(f"o.operation = {param(pg_text(query.operation_name))}")
            where.append(f"EXISTS (SELECT 1 FROM trace_ops o WHERE {' AND '.join(conditions)})")
        for key, value in query.tags:
            where.append(
                "EXISTS (SELECT 1 FROM trace_tags g WHERE g.trace_id = t.trace_id"
                f" AND g.key = {param(pg_text(key))} AND g.value = {param(pg_text(value))})"
            )
        sql = (
            f"SELECT {SUMMARY_COLUMNS} FROM traces t WHERE {' AND '.join(where)}"
            f" ORDER BY {order} LIMIT {param(query.limit)} OFFSET {param(query.offset)}"
        )
        return [summary_from_row(r, py_text) for r in await self._pool.fetch(sql, *params)]

    async def stats(self, *, slowest: int = 5) -> StoreStats:
        async def read(c: asyncpg.Connection) -> StoreStats:
            totals = await c.fetchrow("SELECT completed, failed, duration_us FROM rollup_totals WHERE id = 1")
            # re-opened traces (late spans) still count as completed/failed until re-finalized
            active = await c.fetchval("SELECT count(*) FROM traces WHERE state = 'active' AND finalized_at_us IS NULL")
            slow = await c.fetch(
                "SELECT trace_id, duration_us FROM traces WHERE finalized_at_us IS NOT NULL"
                " ORDER BY duration_us DESC, trace_id LIMIT $1",
                slowest,
            )
            hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKET_BOUNDS_US) + 1))
            for service, bucket, n in await c.fetch("SELECT service, bucket, spans FROM rollup_buckets"):
                hist[service][bucket] = n
            services = {
                py_text(service): ServiceStats(
                    count=spans, error_count=errors, total_duration_us=total, histogram=hist[service]
                )
                for service, spans, errors, total in await c.fetch(
                    "SELECT service, spans, errors, duration_us FROM rollup_services ORDER BY service"
                )
            }
            completed, failed, duration = totals if totals is not None else (0, 0, 0)
            return StoreStats(
                active_traces=active,
                completed_traces=completed,
                failed_traces=failed,
                total_duration_us=duration,
                slowest=[SlowTrace(trace_id=t, duration_us=d) for t, d in slow],
                services=services,
            )

        return await self._read(read)

    async def services(self) -> list[str]:
        rows = await self._pool.fetch("SELECT service FROM rollup_services ORDER BY service")
        return [py_text(r[0]) for r in rows]

    async def operations(self, service: str) -> list[str]:
        rows = await self._pool.fetch(
            "SELECT operation FROM rollup_operations WHERE service = $1 ORDER BY operation", pg_text(service)
        )
        return [py_text(r[0]) for r in rows]

    async def dependencies(self, since_us: int = 0, until_us: int | None = None) -> list[Dependency]:
        first = since_us // HOUR_US
        last = (until_us // HOUR_US) if until_us is not None else 2**62
        rows = await self._pool.fetch(
            "SELECT parent, child, sum(calls)::bigint, sum(errors)::bigint FROM rollup_deps"
            " WHERE hour BETWEEN $1 AND $2 GROUP BY parent, child HAVING sum(calls) > 0 ORDER BY parent, child",
            first,
            last,
        )
        return [Dependency(parent=py_text(p), child=py_text(ch), calls=n, errors=e) for p, ch, n, e in rows]


class _Rollup:
    """The two statements of one rollup table: add deltas to rows (by key), delete rows brought to zero."""

    def __init__(self, table: str, keys: Sequence[tuple[str, str]], counters: Sequence[tuple[str, str]]) -> None:
        names = [n for n, _ in keys] + [n for n, _ in counters]
        casts = ", ".join(f"${i + 1}::{kind}[]" for i, (_, kind) in enumerate([*keys, *counters]))
        key_list = ", ".join(n for n, _ in keys)
        updates = ", ".join(f"{n} = r.{n} + excluded.{n}" for n, _ in counters)
        self.width = len(names)
        self.key_count = len(keys)
        self.text_keys = [i for i, (_, kind) in enumerate(keys) if kind == "text"]
        # rows in key order: concurrent finalizations lock the rows they share in the same order
        self.upsert = (
            f"INSERT INTO {table} AS r ({', '.join(names)})"
            f" SELECT * FROM unnest({casts}) AS u({', '.join(names)}) ORDER BY {key_list}"
            f" ON CONFLICT ({key_list}) DO UPDATE SET {updates}"
        )
        key_casts = ", ".join(f"${i + 1}::{kind}[]" for i, (_, kind) in enumerate(keys))
        self.delete = (
            f"DELETE FROM {table} r USING unnest({key_casts}) AS u({key_list})"
            f" WHERE {' AND '.join(f'r.{n} = u.{n}' for n, _ in keys)} AND r.{counters[0][0]} <= 0"
        )


_ROLLUPS: Final = {
    "rollup_services": _Rollup(
        "rollup_services",
        [("service", "text")],
        [("spans", "bigint"), ("errors", "bigint"), ("duration_us", "bigint")],
    ),
    "rollup_buckets": _Rollup("rollup_buckets", [("service", "text"), ("bucket", "integer")], [("spans", "bigint")]),
    "rollup_operations": _Rollup(
        "rollup_operations", [("service", "text"), ("operation", "text")], [("spans", "bigint")]
    ),
    "rollup_deps": _Rollup(
        "rollup_deps",
        [("hour", "bigint"), ("parent", "text"), ("child", "text")],
        [("calls", "bigint"), ("errors", "bigint")],
    ),
}


async def _upsert(c: asyncpg.Connection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Add ``rows`` (keys, then counter deltas) to rollup ``table``. A row whose first counter drops to zero
    is deleted; only a subtraction can do that, so the delete is only sent when the deltas have one."""
    if not rows:
        return
    rollup = _ROLLUPS[table]
    columns = _columns(rows, rollup.width)
    for i in rollup.text_keys:
        columns[i] = pg_texts(columns[i])
    await c.execute(rollup.upsert, *columns)
    if any(value < 0 for value in columns[rollup.key_count]):
        await c.execute(rollup.delete, *columns[: rollup.key_count])
