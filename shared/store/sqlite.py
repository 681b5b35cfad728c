"""SQLite backend: the embedded default. One file, WAL, one writer connection per process.

All SQL of a call runs in one dedicated thread (one handoff per transaction, never per row); batches
travel into SQLite as one JSON document unpacked by ``json_each``, so Python never loops over rows to
bind them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    duration_us INTEGER,
    body TEXT,              -- the span as native JSON; NULL while only its finish event arrived
    finish TEXT,            -- the finish event as native JSON, merged on read
    late INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spans_by_span_id ON spans (span_id);

CREATE TABLE IF NOT EXISTS traces (
    trace_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,    -- active | finalized
    shard TEXT NOT NULL,    -- topic/partition whose worker finalizes it
    first_seen_us INTEGER NOT NULL,
    last_seen_us INTEGER NOT NULL,
    due_us INTEGER NOT NULL,
    root_done_us INTEGER,   -- when a finished root span was first seen
    root_service TEXT,
    root_operation TEXT,
    start_us INTEGER,
    duration_us INTEGER,
    span_count INTEGER,
    error_count INTEGER,
    status TEXT NOT NULL DEFAULT 'active',
    complete INTEGER,
    services TEXT,
    analysis TEXT,
    contribution TEXT,
    late_spans INTEGER NOT NULL DEFAULT 0,
    refinalizations INTEGER NOT NULL DEFAULT 0,
    finalized_at_us INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traces_due ON traces (due_us) WHERE state = 'active';
CREATE INDEX IF NOT EXISTS traces_start ON traces (start_us) WHERE finalized_at_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS traces_duration ON traces (duration_us) WHERE finalized_at_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS traces_dropped ON traces (start_us) WHERE state = 'dropped';

CREATE TABLE IF NOT EXISTS trace_ops (
    service TEXT NOT NULL, operation TEXT NOT NULL, trace_id TEXT NOT NULL,
    PRIMARY KEY (service, operation, trace_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_ops_by_trace ON trace_ops (trace_id);
CREATE TABLE IF NOT EXISTS trace_tags (
    key TEXT NOT NULL, value TEXT NOT NULL, trace_id TEXT NOT NULL,
    PRIMARY KEY (key, value, trace_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_tags_by_trace ON trace_tags (trace_id);

CREATE TABLE IF NOT EXISTS rollup_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    completed INTEGER NOT NULL, failed INTEGER NOT NULL, duration_us INTEGER NOT NULL
);
INSERT OR IGNORE INTO rollup_totals VALUES (1, 0, 0, 0);
CREATE TABLE IF NOT EXISTS rollup_services (
    service TEXT PRIMARY KEY, spans INTEGER NOT NULL, errors INTEGER NOT NULL, duration_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_buckets (
    service TEXT NOT NULL, bucket INTEGER NOT NULL, spans INTEGER NOT NULL, PRIMARY KEY (service, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_operations (
    service TEXT NOT NULL, operation TEXT NOT NULL, spans INTEGER NOT NULL, PRIMARY KEY (service, operation)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_deps (
    hour INTEGER NOT NULL, parent TEXT NOT NULL, child TEXT NOT NULL,
    calls INTEGER NOT NULL, errors INTEGER NOT NULL, PRIMARY KEY (hour, parent, child)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heartbeats (
    worker_id TEXT PRIMARY KEY, updated_us INTEGER NOT NULL, body TEXT NOT NULL
) WITHOUT ROWID;
"""

UPSERT_SPANS = """
INSERT INTO spans (trace_id, span_id, parent_id, duration_us, body)
SELECT value ->> '$.traceId', value ->> '$.spanId', value ->> '$.parentSpanId', value ->> '$.durationUs', value
FROM json_each(?1) WHERE true
ON CONFLICT (trace_id, span_id) DO UPDATE SET
    parent_id = excluded.parent_id, duration_us = excluded.duration_us, body = excluded.body
WHERE spans.body IS NOT excluded.body
  AND NOT (spans.duration_us IS NOT NULL AND excluded.duration_us IS NULL)  -- never reopen a finished span
RETURNING trace_id, span_id
"""

UPSERT_FINISHES = """
INSERT INTO spans (trace_id, span_id, finish)
SELECT value ->> '$.traceId', value ->> '$.spanId', value FROM json_each(?1) WHERE true
ON CONFLICT (trace_id, span_id) DO UPDATE SET finish = excluded.finish
WHERE spans.finish IS NOT excluded.finish
RETURNING trace_id, span_id
"""

FINALIZED_AMONG = """
SELECT t.trace_id, t.state FROM json_each(?1) j CROSS JOIN traces t ON t.trace_id = j.value
WHERE t.state IN ('finalized', 'dropped')
"""

MARK_LATE = """
UPDATE spans SET late = 1
WHERE (trace_id, span_id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))
"""

TOUCH_TRACES = """
INSERT INTO traces (trace_id, state, shard, first_seen_us, last_seen_us, due_us)
SELECT value ->> 0, 'active', value ->> 1, ?3, ?3, ?3 + ?5 FROM json_each(?1) WHERE true
ON CONFLICT (trace_id) DO UPDATE SET
    last_seen_us = excluded.last_seen_us,
    due_us = CASE WHEN traces.state = 'finalized' THEN excluded.last_seen_us + ?4
                  WHEN traces.root_done_us IS NOT NULL THEN traces.due_us
                  ELSE excluded.due_us END,
    state = 'active'  -- a re-opened trace keeps its last summary (and rollup share) until re-finalized
"""

ROOT_DONE = """
UPDATE traces SET root_done_us = ?2, due_us = MIN(due_us, ?2 + ?3)
WHERE trace_id IN (SELECT value FROM json_each(?1)) AND root_done_us IS NULL
  AND EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = traces.trace_id AND s.parent_id IS NULL
              AND s.body IS NOT NULL AND (s.duration_us IS NOT NULL OR s.finish IS NOT NULL))
"""

_json = msgspec.json.Encoder()
_analysis_decoder = msgspec.json.Decoder(TraceAnalysis)
_heartbeat_decoder = msgspec.json.Decoder(Heartbeat)


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs.db`` → ``/abs.db``; ``sqlite:///:memory:``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return url[len(prefix) :] or ":memory:"


class SqliteStore:
    """The embedded store. Safe for one writer process plus any number of reader processes (WAL)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._stop_checkpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None

    @classmethod
    async def open(cls, url_or_path: str) -> SqliteStore:
        path = sqlite_path(url_or_path) if url_or_path.startswith("sqlite:") else url_or_path
        store = cls(path)
        await store._run(store._connect)
        return store

    # -- plumbing -------------------------------------------------------------------------------------

    def _connect(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA busy_timeout = 30000")
        if self._path != ":memory:":
            # Checkpoints (the only fsyncs with synchronous=NORMAL) run in a thread of their own instead of
            # inside whichever commit crosses the WAL threshold: the write path never waits for one.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True)
            self._checkpointer.start()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:  # CREATE ... IF NOT EXISTS: safe when two processes race to create it
            conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif version != SCHEMA_VERSION:
            conn.close()
            raise RuntimeError(f"{self._path}: schema version {version}, this build knows {SCHEMA_VERSION}")
        self._conn = conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction (BEGIN IMMEDIATE: takes the write lock up front)."""
        conn = self._conn
        assert conn is not None, "store is closed"
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one read transaction (a consistent snapshot)."""
        conn = self._conn
        assert conn is not None, "store is closed"
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    async def check(self) -> None:
        await self._run(self._read, lambda c: c.execute("SELECT 1").fetchone())

    def _checkpoint_loop(self, interval_s: float = 0.5) -> None:
        """PASSIVE checkpoints from a second connection: they copy WAL pages into the database file while
        writers go on appending (never blocking them); a checkpoint that meets a lock just waits a turn."""
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=30.0, check_same_thread=False)
        try:
            while not self._stop_checkpoints.wait(interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.OperationalError:
                    pass  # busy: the next turn catches up
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    async def close(self) -> None:
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

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
        spans_doc = _json.encode(spans) if spans else None
        finish_doc = _json.encode(finishes) if finishes else None
        candidates = {s.trace_id for s in spans if s.parent_span_id is None}
        candidates.update(f.trace_id for f in finishes)

        def tx(c: sqlite3.Connection) -> WriteResult:
            changed: list[tuple[str, str]] = []
            if spans_doc is not None:
                changed += c.execute(UPSERT_SPANS, (spans_doc,)).fetchall()
            if finish_doc is not None:
                changed += c.execute(UPSERT_FINISHES, (finish_doc,)).fetchall()
            if not changed:
                return WriteResult(spans_changed=0, traces_touched=0, late_spans=0)
            traces = {t for t, _ in changed}
            traces_doc = _json.encode(list(traces))
            late = 0
            done = dict(c.execute(FINALIZED_AMONG, (traces_doc,)).fetchall())
            if done:  # rare: spans arriving after their trace was finalized (or sampled out)
                dropped = [t for t, state in done.items() if state == "dropped"]
                if dropped:  # a sampled-out trace stays out: its late spans go too
                    c.execute(
                        "DELETE FROM spans WHERE trace_id IN (SELECT value FROM json_each(?1))",
                        (_json.encode(dropped),),
                    )
                    changed = [pair for pair in changed if pair[0] not in done or done[pair[0]] != "dropped"]
                    traces = {t for t, _ in changed}
                    if not traces:
                        return WriteResult(spans_changed=0, traces_touched=0, late_spans=0)
                    traces_doc = _json.encode(list(traces))
                late_pairs = [pair for pair in changed if pair[0] in done]
                if late_pairs:
                    late = c.execute(MARK_LATE, (_json.encode(late_pairs),)).rowcount
            owned_doc = _json.encode([(t, shards[t]) for t in traces])
            c.execute(TOUCH_TRACES, (owned_doc, None, now_us, grace_us, idle_us))
            roots = candidates & traces
            if roots:
                c.execute(ROOT_DONE, (_json.encode(list(roots)), now_us, grace_us))
            # a span and its finish in one batch are one changed row, not two
            return WriteResult(spans_changed=len(set(changed)), traces_touched=len(traces), late_spans=late)

        return await self._run(self._tx, tx)

    async def due_traces(self, shards: Collection[str], now_us: int, limit: int) -> list[str]:
        if not shards:
            return []
        shards_doc = _json.encode(list(shards))

        def read(c: sqlite3.Connection) -> list[str]:
            rows = c.execute(
                "SELECT trace_id FROM traces WHERE state = 'active' AND due_us <= ?1"
                " AND shard IN (SELECT value FROM json_each(?2)) ORDER BY due_us LIMIT ?3",
                (now_us, shards_doc, limit),
            ).fetchall()
            return [r[0] for r in rows]

        return await self._run(self._read, read)

    async def finalize(
        self, trace_ids: Sequence[str], *, now_us: int, sampler: Sampler | None = None
    ) -> list[TraceAnalysis]:
        if not trace_ids:
            return []
        ids_doc = _json.encode(list(trace_ids))

        def tx(c: sqlite3.Connection) -> list[TraceAnalysis]:
            rows = c.execute(
                "SELECT trace_id, contribution, finalized_at_us FROM traces"
                " WHERE trace_id IN (SELECT value FROM json_each(?1)) AND state = 'active'",
                (ids_doc,),
            ).fetchall()
            if not rows:
                return []
            active_doc = _json.encode([r[0] for r in rows])
            span_rows: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
            late_counts: dict[str, int] = defaultdict(int)
            for trace_id, body, finish, late in c.execute(
                "SELECT trace_id, body, finish, late FROM spans"
                " WHERE trace_id IN (SELECT value FROM json_each(?1)) AND body IS NOT NULL",
                (active_doc,),
            ):
                span_rows[trace_id].append((body, finish))
                late_counts[trace_id] += late
            delta = RollupDelta()
            results: list[TraceAnalysis] = []
            trace_updates: list[tuple[Any, ...]] = []
            op_rows: list[tuple[str, str, str]] = []
            tag_index: list[tuple[str, str, str]] = []
            dropped: list[str] = []
            # Only finish events and no span: nothing to finalize. The trace row goes; its finish rows stay
            # and merge if the span ever arrives (which makes the trace active again).
            empty = [r[0] for r in rows if r[0] not in span_rows]
            if empty:
                c.execute(
                    "DELETE FROM traces WHERE trace_id IN (SELECT value FROM json_each(?1))", (_json.encode(empty),)
                )
            for trace_id, old_contribution, _ in rows:
                if trace_id not in span_rows:
                    continue
                bodies = span_rows[trace_id]
                spans = decode_spans([b for b, _ in bodies], [f for _, f in bodies])
                done = finalize_trace(trace_id, spans, previous=old_contribution, delta=delta, sampler=sampler)
                analysis = done.analysis
                results.append(analysis)
                if not done.kept:
                    dropped.append(trace_id)
                trace_updates.append(
                    (
                        "finalized" if done.kept else "dropped",
                        analysis.root_service,
                        analysis.root_operation,
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
                        now_us if done.kept else None,  # a dropped trace has no summary to serve
                        trace_id,
                    )
                )
                if done.kept:
                    op_rows.extend((s, o, trace_id) for s, o in analysis.operations)
                    tag_index.extend(tag_rows(trace_id, spans))
            c.executemany(
                "UPDATE traces SET state = ?, root_service = ?, root_operation = ?, start_us = ?,"
                " duration_us = ?, span_count = ?, error_count = ?, status = ?, complete = ?, services = ?,"
                " analysis = ?, contribution = ?, late_spans = ?,"
                " refinalizations = refinalizations + (finalized_at_us IS NOT NULL), finalized_at_us = ?"
                " WHERE trace_id = ?",
                trace_updates,
            )
            c.execute("DELETE FROM trace_ops WHERE trace_id IN (SELECT value FROM json_each(?1))", (active_doc,))
            c.execute("DELETE FROM trace_tags WHERE trace_id IN (SELECT value FROM json_each(?1))", (active_doc,))
            c.executemany("INSERT OR IGNORE INTO trace_ops VALUES (?, ?, ?)", op_rows)
            c.executemany("INSERT OR IGNORE INTO trace_tags VALUES (?, ?, ?)", tag_index)
            if dropped:
                c.execute(
                    "DELETE FROM spans WHERE trace_id IN (SELECT value FROM json_each(?1))", (_json.encode(dropped),)
                )
            self._apply(c, delta)
            return results

        return await self._run(self._tx, tx)

    @staticmethod
    def _apply(c: sqlite3.Connection, d: RollupDelta) -> None:
        c.execute(
            "UPDATE rollup_totals SET completed = completed + ?, failed = failed + ?, duration_us = duration_us + ?",
            (d.completed, d.failed, d.duration_us),
        )
        c.executemany(
            "INSERT INTO rollup_services VALUES (?, ?, ?, ?) ON CONFLICT (service) DO UPDATE SET"
            " spans = spans + excluded.spans, errors = errors + excluded.errors,"
            " duration_us = duration_us + excluded.duration_us",
            list(d.service_rows()),
        )
        c.executemany(
            "INSERT INTO rollup_buckets VALUES (?, ?, ?) ON CONFLICT (service, bucket) DO UPDATE SET"
            " spans = spans + excluded.spans",
            list(d.bucket_rows()),
        )
        c.executemany(
            "INSERT INTO rollup_operations VALUES (?, ?, ?) ON CONFLICT (service, operation) DO UPDATE SET"
            " spans = spans + excluded.spans",
            list(d.operation_rows()),
        )
        c.executemany(
            "INSERT INTO rollup_deps VALUES (?, ?, ?, ?, ?) ON CONFLICT (hour, parent, child) DO UPDATE SET"
            " calls = calls + excluded.calls, errors = errors + excluded.errors",
            list(d.dep_rows()),
        )
        # rows emptied by this delta go (only keys that shrank are probed: no scan of the rollup tables)
        shrunk = [(s,) for s, v in d.services.items() if v[0] < 0]
        c.executemany("DELETE FROM rollup_services WHERE service = ? AND spans <= 0", shrunk)
        c.executemany(
            "DELETE FROM rollup_buckets WHERE service = ? AND bucket = ? AND spans <= 0",
            [k for k, n in d.buckets.items() if n < 0],
        )
        c.executemany(
            "DELETE FROM rollup_operations WHERE service = ? AND operation = ? AND spans <= 0",
            [k for k, n in d.operations.items() if n < 0],
        )
        c.executemany(
            "DELETE FROM rollup_deps WHERE hour = ? AND parent = ? AND child = ? AND calls <= 0",
            [k for k, v in d.deps.items() if v[0] < 0],
        )

    async def purge(self, before_us: int) -> int:
        def tx(c: sqlite3.Connection) -> int:
            rows = c.execute(
                "SELECT trace_id, contribution FROM traces WHERE finalized_at_us IS NOT NULL AND start_us < ?1"
                " UNION ALL SELECT trace_id, contribution FROM traces WHERE state = 'dropped' AND start_us < ?1",
                (before_us,),
            ).fetchall()
            if not rows:
                return 0
            delta = RollupDelta()
            for _, contrib in rows:
                if contrib is not None:
                    delta.add(decode_contribution(contrib), -1)
            ids_doc = _json.encode([r[0] for r in rows])
            for table in ("spans", "trace_ops", "trace_tags", "traces"):
                c.execute(f"DELETE FROM {table} WHERE trace_id IN (SELECT value FROM json_each(?1))", (ids_doc,))
            self._apply(c, delta)
            return len(rows)

        return await self._run(self._tx, tx)

    async def record_heartbeat(self, heartbeat: Heartbeat) -> None:
        body = _json.encode(heartbeat).decode()

        def tx(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO heartbeats VALUES (?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET"
                " updated_us = excluded.updated_us, body = excluded.body",
                (heartbeat.worker_id, heartbeat.updated_at_us, body),
            )

        await self._run(self._tx, tx)

    # -- reads ----------------------------------------------------------------------------------------

    async def heartbeats(self, *, newer_than_us: int = 0) -> list[Heartbeat]:
        def read(c: sqlite3.Connection) -> list[Heartbeat]:
            rows = c.execute(
                "SELECT body FROM heartbeats WHERE updated_us > ? ORDER BY worker_id", (newer_than_us,)
            ).fetchall()
            return [_heartbeat_decoder.decode(r[0]) for r in rows]

        return await self._run(self._read, read)

    async def get_trace(self, trace_id: str) -> StoredTrace | None:
        def read(c: sqlite3.Connection) -> StoredTrace | None:
            row = c.execute(
                "SELECT state, analysis, late_spans, refinalizations, finalized_at_us FROM traces WHERE trace_id = ?",
                (trace_id,),
            ).fetchone()
            if row is None:
                return None
            span_rows = c.execute(
                "SELECT body, finish FROM spans WHERE trace_id = ? AND body IS NOT NULL", (trace_id,)
            ).fetchall()
            if not span_rows:  # only finish events so far: no span of the trace is stored
                return None
            state, analysis, late, refinalizations, finalized_at = row
            return StoredTrace(
                trace_id=trace_id,
                state=state,
                spans=decode_spans([b for b, _ in span_rows], [f for _, f in span_rows]),
                analysis=_analysis_decoder.decode(analysis) if state == "finalized" and analysis else None,
                completeness=Completeness(
                    late_spans=late, refinalizations=refinalizations, finalized_at_us=finalized_at
                ),
            )

        return await self._run(self._read, read)

    async def trace_of_span(self, span_id: str) -> str | None:
        def read(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT trace_id FROM spans WHERE span_id = ? LIMIT 1", (span_id,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run(self._read, read)

    async def find_traces(self, query: TraceQuery) -> list[TraceSummary]:
        where: list[str] = []
        params: list[Any] = []
        if query.status == "active":
            where.append("t.state = 'active'")
            order = "t.first_seen_us DESC, t.trace_id DESC"
        else:
            where.append("t.finalized_at_us IS NOT NULL")
            order = "t.start_us DESC, t.trace_id DESC"
            if query.status is not None:
                where.append("t.status = ?")
                params.append(query.status)
        if query.min_duration_us is not None:
            where.append("t.duration_us >= ?")
            params.append(query.min_duration_us)
        if query.max_duration_us is not None:
            where.append("t.duration_us <= ?")
            params.append(query.max_duration_us)
        if query.start_us is not None:
            where.append("t.start_us >= ?")
            params.append(query.start_us)
        if query.end_us is not None:
            where.append("t.start_us <= ?")
            params.append(query.end_us)
        # EXISTS probes (by trace id) keep the plan a walk down the start-time index that stops at LIMIT,
        # instead of materializing every trace of a service and sorting it.
        if query.service_name is not None or query.operation_name is not None:
            clause = "EXISTS (SELECT 1 FROM trace_ops o WHERE o.trace_id = t.trace_id"
            if query.service_name is not None:
                clause += " AND o.service = ?"
                params.append(query.service_name)
            if query.operation_name is not None:
                clause += " AND o.operation = ?"
                params.append(query.operation_name)
            where.append(clause + ")")
        for key, value in query.tags:
            where.append(
                "EXISTS (SELECT 1 FROM trace_tags g WHERE g.trace_id = t.trace_id AND g.key = ? AND g.value = ?)"
            )
            params.extend((key, value))
        sql = (
            f"SELECT t.trace_id, t.root_service, t.root_operation, coalesce(t.start_us, t.first_seen_us),"
            f" coalesce(t.duration_us, 0), coalesce(t.span_count, 0), coalesce(t.error_count, 0), t.status,"
            f" coalesce(t.complete, 0), t.services FROM traces t WHERE {' AND '.join(where)}"
            f" ORDER BY {order} LIMIT ? OFFSET ?"
        )
        params.extend((query.limit, query.offset))

        def read(c: sqlite3.Connection) -> list[TraceSummary]:
            return [summary_from_row(r) for r in c.execute(sql, params)]

        return await self._run(self._read, read)

    async def stats(self, *, slowest: int = 5) -> StoreStats:
        def read(c: sqlite3.Connection) -> StoreStats:
            completed, failed, duration = c.execute(
                "SELECT completed, failed, duration_us FROM rollup_totals"
            ).fetchone()
            # re-opened traces (late spans) still count as completed/failed until re-finalized
            active = c.execute(
                "SELECT count(*) FROM traces WHERE state = 'active' AND finalized_at_us IS NULL"
            ).fetchone()[0]
            slow = c.execute(
                "SELECT trace_id, duration_us FROM traces WHERE finalized_at_us IS NOT NULL"
                " ORDER BY duration_us DESC, trace_id LIMIT ?",
                (slowest,),
            ).fetchall()
            hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKET_BOUNDS_US) + 1))
            for service, bucket, n in c.execute("SELECT service, bucket, spans FROM rollup_buckets"):
                hist[service][bucket] = n
            services = {
                service: ServiceStats(count=spans, error_count=errors, total_duration_us=total, histogram=hist[service])
                for service, spans, errors, total in c.execute(
                    "SELECT service, spans, errors, duration_us FROM rollup_services ORDER BY service"
                )
            }
            return StoreStats(
                active_traces=active,
                completed_traces=completed,
                failed_traces=failed,
                total_duration_us=duration,
                slowest=[SlowTrace(trace_id=t, duration_us=d) for t, d in slow],
                services=services,
            )

        return await self._run(self._read, read)

    async def services(self) -> list[str]:
        def read(c: sqlite3.Connection) -> list[str]:
            return [r[0] for r in c.execute("SELECT service FROM rollup_services ORDER BY service")]

        return await self._run(self._read, read)

    async def operations(self, service: str) -> list[str]:
        def read(c: sqlite3.Connection) -> list[str]:
            rows = c.execute("SELECT operation FROM rollup_operations WHERE service = ? ORDER BY operation", (service,))
            return [r[0] for r in rows]

        return await self._run(self._read, read)

    async def dependencies(self, since_us: int = 0, until_us: int | None = None) -> list[Dependency]:
        first = since_us // HOUR_US
        last = (until_us // HOUR_US) if until_us is not None else 2**62

        def read(c: sqlite3.Connection) -> list[Dependency]:
            rows = c.execute(
                "SELECT parent, child, sum(calls), sum(errors) FROM rollup_deps WHERE hour BETWEEN ? AND ?"
                " GROUP BY parent, child HAVING sum(calls) > 0 ORDER BY parent, child",
                (first, last),
            )
            return [Dependency(parent=p, child=ch, calls=n, errors=e) for p, ch, n, e in rows]

        return await self._run(self._read, read)
