"""The PostgreSQL schema (storage layout v6): the same tables and columns as SQLite's
(:mod:`shared.store.sqlite.schema` explains them), in PostgreSQL's types.

* A rollup row's packed latency sketch is ``bytea``, merged by the upsert through the SQL function
  ``sketch_add`` (:data:`SKETCH_ADD`), which reads and writes the bytes of
  :data:`shared.store.sketch.ENTRY`, so concurrent workers merge under the upsert's row lock.
* Text that is sorted or compared is ``COLLATE "C"`` (code point order, as SQLite and Python).
* Chunk bodies are ``bytea``, compressed with zstd by the store (:mod:`shared.store.encoding`); the column
  says lz4, which PostgreSQL tries only on values over 2 KB moved out of line (a layout v2 choice, kept).
* ``tid`` comes from an identity column: never reused, it names the row's incarnation.
"""

from __future__ import annotations

from typing import Final

from shared.store.sql.statements import HISTOGRAM_COLUMNS

SCHEMA_VERSION: Final = 6
SCHEMA_LOCK_KEY: Final = 0x7472_6163_696E_6701  # pg_advisory_xact_lock key guarding schema changes

_HIST_DDL: Final = ", ".join(f"{c} bigint NOT NULL" for c in HISTOGRAM_COLUMNS)
OP_INDEX: Final = """CREATE TABLE op_index (
    op bigint NOT NULL, start_us bigint NOT NULL, tid bigint NOT NULL, min_us bigint NOT NULL,
    max_us bigint NOT NULL, PRIMARY KEY (op, start_us, tid)
)"""
SKETCH_ADD: Final = """CREATE OR REPLACE FUNCTION sketch_add(stored bytea, delta bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT coalesce(string_agg(int2send(s.bin) || int8send(s.n), ''::bytea ORDER BY s.bin), ''::bytea)
FROM (
    SELECT e.bin, sum(e.n)::bigint AS n
    FROM (
        SELECT (get_byte(v.b, i * 10) * 256 + get_byte(v.b, i * 10 + 1))::smallint AS bin,
               ('x' || encode(substr(v.b, i * 10 + 3, 8), 'hex'))::bit(64)::bigint AS n
        FROM (VALUES (stored), (delta)) AS v(b), generate_series(0, coalesce(length(v.b), 0) / 10 - 1) AS i
    ) e
    GROUP BY e.bin
    HAVING sum(e.n) > 0
) s
$$"""
"""``stored`` plus ``delta``, two packed sketches (:func:`shared.store.sketch.add_packed`): the bins whose
count falls to 0 or below left out."""
SERVICE_SKETCH: Final = """CREATE TABLE IF NOT EXISTS rollup_services_sketch (
    service text COLLATE "C" NOT NULL PRIMARY KEY, bins bytea NOT NULL
)"""
SKETCH_COLUMN: Final = "bins bytea NOT NULL DEFAULT ''::bytea"
"""The packed sketch of a rollup row (layout v5), as added to the rollup tables of a v4 database."""
SERVICE_BINS: Final = """CREATE TABLE IF NOT EXISTS rollup_services_bins (
    service text COLLATE "C" NOT NULL, bin integer NOT NULL, n bigint NOT NULL, PRIMARY KEY (service, bin)
)"""
TAG_INDEX: Final = """CREATE TABLE tag_index (
    tag bigint NOT NULL, start_us bigint NOT NULL, tid bigint NOT NULL, PRIMARY KEY (tag, start_us, tid)
)"""

SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS tracing_meta (key text PRIMARY KEY, value text NOT NULL);

CREATE TABLE traces (
    tid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trace_id text COLLATE "C" NOT NULL UNIQUE,
    state text NOT NULL,    -- active | finalized | dropped | waiting
    shard text NOT NULL,
    first_seen_us bigint NOT NULL,
    last_seen_us bigint NOT NULL,
    due_us bigint NOT NULL,
    root_done_us bigint,
    chunks integer NOT NULL,
    root_service text COLLATE "C",
    root_operation text COLLATE "C",
    start_us bigint,
    duration_us bigint,
    span_count integer,
    error_count integer,
    status text NOT NULL DEFAULT 'active',
    complete boolean,
    services text,
    analysis bytea,
    contribution bytea,     -- a sampled-out trace's share of the rollups (kept ones: derived from the chunks)
    late_spans integer NOT NULL DEFAULT 0,
    refinalizations integer NOT NULL DEFAULT 0,
    finalized_at_us bigint,
    final_chunks integer    -- chunks merged by the last finalization
) WITH (fillfactor = 85);
CREATE INDEX traces_due ON traces (due_us) WHERE state = 'active';
CREATE INDEX traces_start ON traces (start_us) WHERE finalized_at_us IS NOT NULL;
CREATE INDEX traces_duration ON traces (duration_us) WHERE finalized_at_us IS NOT NULL;
CREATE INDEX traces_dropped ON traces (start_us) WHERE state = 'dropped';

CREATE TABLE chunks (
    tid bigint NOT NULL, seq integer NOT NULL, late boolean NOT NULL, body bytea COMPRESSION lz4 NOT NULL,
    PRIMARY KEY (tid, seq)
);

CREATE TABLE open_spans (span_id text COLLATE "C" NOT NULL, tid bigint NOT NULL, PRIMARY KEY (span_id, tid));
CREATE INDEX open_spans_by_trace ON open_spans (tid);

{OP_INDEX};
CREATE TABLE endpoint_traces (
    service text COLLATE "C" NOT NULL, operation text COLLATE "C" NOT NULL, duration_us bigint NOT NULL,
    tid bigint NOT NULL, start_us bigint NOT NULL, critical bytea NOT NULL,
    PRIMARY KEY (service, operation, duration_us, tid)
);
{TAG_INDEX};
{SERVICE_SKETCH};
{SKETCH_ADD};

CREATE TABLE rollup_ops (
    grain smallint NOT NULL, bucket bigint NOT NULL,
    service text COLLATE "C" NOT NULL, operation text COLLATE "C" NOT NULL, kind text COLLATE "C" NOT NULL,
    n bigint NOT NULL, errors bigint NOT NULL, duration_us bigint NOT NULL, {_HIST_DDL}, {SKETCH_COLUMN},
    PRIMARY KEY (grain, bucket, service, operation, kind)
);
CREATE TABLE rollup_endpoints (
    grain smallint NOT NULL, bucket bigint NOT NULL,
    service text COLLATE "C" NOT NULL, operation text COLLATE "C" NOT NULL,
    n bigint NOT NULL, errors bigint NOT NULL, duration_us bigint NOT NULL, {_HIST_DDL}, {SKETCH_COLUMN},
    PRIMARY KEY (grain, bucket, service, operation)
);
CREATE TABLE rollup_contexts (
    grain smallint NOT NULL, bucket bigint NOT NULL,
    service text COLLATE "C" NOT NULL, operation text COLLATE "C" NOT NULL, ctx bigint NOT NULL,
    critical_us bigint NOT NULL, traces bigint NOT NULL,
    PRIMARY KEY (grain, bucket, service, operation, ctx)
);
CREATE TABLE call_paths (ctx bigint PRIMARY KEY, label text COLLATE "C" NOT NULL, path bytea NOT NULL);
CREATE TABLE rollup_deps (
    hour bigint NOT NULL, parent text COLLATE "C" NOT NULL, child text COLLATE "C" NOT NULL,
    calls bigint NOT NULL, errors bigint NOT NULL, PRIMARY KEY (hour, parent, child)
);
CREATE TABLE IF NOT EXISTS heartbeats (
    worker_id text COLLATE "C" PRIMARY KEY, updated_us bigint NOT NULL, body text NOT NULL
);
"""

ADDED_TABLES: Final = """
CREATE TABLE IF NOT EXISTS rollup_unseen (
    grain smallint NOT NULL, bucket bigint NOT NULL, service text COLLATE "C" NOT NULL,
    traces bigint NOT NULL, failed bigint NOT NULL, spans bigint NOT NULL, errors bigint NOT NULL,
    PRIMARY KEY (grain, bucket, service)
);
CREATE TABLE IF NOT EXISTS zstd_dicts (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, body bytea NOT NULL);
CREATE TABLE IF NOT EXISTS archive_blocks (
    name text COLLATE "C" PRIMARY KEY, shard text COLLATE "C" NOT NULL, start_us bigint NOT NULL,
    end_us bigint NOT NULL, created_us bigint NOT NULL, meta bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS archive_blocks_time ON archive_blocks (start_us, end_us);
CREATE TABLE IF NOT EXISTS archive_pins (trace_id text COLLATE "C" PRIMARY KEY, pinned_us bigint NOT NULL);
"""
"""Tables added to layout v2 after its release (and part of every new v3 schema), created when missing on
every open: ``rollup_unseen`` (the excess of the adjusted counts over the received traces and spans, per
service; see :mod:`shared.store.rollups`) and ``zstd_dicts`` (the dictionaries chunks are compressed with;
see :mod:`shared.store.sql.dicts`); ``archive_blocks`` and ``archive_pins`` (the archive's registered
blocks and the pinned traces; see :mod:`shared.store.sql.archive`)."""

ADDED_COLUMNS: Final = (("traces", "final_chunks", "integer"),)
"""Columns ``(table, column, type)`` added to layout v3 after its first version (and part of every new
schema), added when missing on open: ``traces.final_chunks``."""

SKETCH_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rollup_ops_bins (
    grain smallint NOT NULL, bucket bigint NOT NULL,
    service text COLLATE "C" NOT NULL, operation text COLLATE "C" NOT NULL, kind text COLLATE "C" NOT NULL,
    bin integer NOT NULL, n bigint NOT NULL,
    PRIMARY KEY (grain, bucket, service, operation, kind, bin)
);
CREATE TABLE IF NOT EXISTS rollup_endpoints_bins (
    grain smallint NOT NULL, bucket bigint NOT NULL,
    service text COLLATE "C" NOT NULL, operation text COLLATE "C" NOT NULL,
    bin integer NOT NULL, n bigint NOT NULL,
    PRIMARY KEY (grain, bucket, service, operation, bin)
);
"""
"""The rollups' latency sketches (:mod:`shared.store.sketch`): additive DDL, so a layout v2 database gains
it without a version bump (:func:`shared.store.sql.migrate.add_sketch`)."""
