"""The SQLite schema (storage layout v6).

Layout v6 (docs/architecture.md, "the store contract"). v5 kept the rollups at three grains (no ten
minutes: :func:`shared.store.sql.migrate.migrate_v5` derives them). v4 kept the latency sketches a row per key and
bin (``rollup_ops_bins``, ``rollup_endpoints_bins``, ``rollup_services_bins``). v3 had the search
indexes as ``trace_ops`` and ``trace_tags``, with the names, keys and values as text in every row; v2
had the same tables as v3, with chunks and contributions stored uncompressed and each finalized trace's
analysis stored with it:

* ``traces``: one row per trace. ``tid`` is its integer key (AUTOINCREMENT: never reused, so it names
  the row's incarnation); ``chunks`` counts its stored chunks. Summary columns are set at finalization.
* ``chunks``: the spans, one row per (trace, write batch): ``id = tid << CHUNK_BITS | seq``, so a trace's
  chunks are one contiguous key range, and a new trace's chunks append at the end of the table. Bodies
  are compact msgpack compressed with zstd (:mod:`shared.store.encoding`); so is ``traces.contribution``.
  ``traces.analysis`` stays NULL: a finalized trace's analysis is derived from its spans on read.
* ``traces.contribution`` (the trace's share of the rollups and search indexes, taken out again when it is
  re-finalized or purged) is stored only for a sampled-out trace, whose chunks go; a kept trace's is
  derived when needed from the chunks its last finalization merged, the first ``final_chunks`` (see
  :mod:`shared.store.finalizing`: this assumes the same analysis code computed it). A row with a stored
  contribution (a sampled-out trace's, or any written before ``final_chunks`` existed) is taken at its
  word.
* ``open_spans``: the span-id index, for open spans only.
* ``op_index`` / ``tag_index``: search indexes, written once per finalization. ``op_index`` has a row
  per (service, operation) of the trace and one per service (operation ``''``), with the smallest and
  largest duration of those spans; ``tag_index`` a row per distinct (key, value) of its spans. Both are
  keyed by the pair's 64-bit hash (:func:`shared.store.tags.tag_hash`) rather than its text, and carry
  the trace's start, so a search walks them newest first, and probes them by (hash, start, tid).
  ``endpoint_traces`` has a row per trace with a root: its endpoint, duration and critical path by calling
  context, so a tail read walks an endpoint's slowest traces in key order, without touching ``traces``.
* ``rollup_ops`` / ``rollup_endpoints``: time-bucketed rollups at four grains (minute, ten minutes, hour,
  total; see :mod:`shared.store.rollups`), fixed latency histograms as columns ``h0`` .. ``h18``, the row's latency
  sketch packed in ``bins`` (:func:`shared.store.sketch.pack`; merged by the upsert through the function
  ``sketch_add``, docs/adr/0015-packed-sketches.md); ``rollup_deps`` per hour.
  All-time trace counts are the endpoints' total-grain rows; ``rollup_services_sketch`` is the all-time
  sketch of each service (its operations' total-grain sketches summed), so ``/stats`` reads a row a
  service rather than every operation's. ``rollup_contexts`` holds the critical-path
  time per endpoint and calling context (:mod:`shared.critical_paths`) at the same grains; ``call_paths``
  names the contexts (id -> labels, and the last label for the bottom-up ranking).
* ``zstd_dicts``: the zstd dictionaries chunk bodies are compressed with once their writer has trained one
  (a chunk names its dictionary by id; :mod:`shared.store.sql.dicts`), each stored once by the writer that
  trained it, never changed (:data:`ADDED_TABLES`: created on open where missing, no layout version bump).

``PRAGMA user_version`` holds the layout version (:mod:`shared.store.sql.migrate` upgrades older files).
"""

from __future__ import annotations

from typing import Final

from shared.store.sql.statements import HISTOGRAM_COLUMNS

SCHEMA_VERSION: Final = 6
CHUNK_BITS: Final = 24
"""Chunk ids are ``tid << CHUNK_BITS | seq``: up to 16.7M chunks per trace."""

_HIST_DDL: Final = ", ".join(f"{c} INTEGER NOT NULL" for c in HISTOGRAM_COLUMNS)
OP_INDEX: Final = """CREATE TABLE IF NOT EXISTS op_index (
    op INTEGER NOT NULL, start_us INTEGER NOT NULL, tid INTEGER NOT NULL, min_us INTEGER NOT NULL,
    max_us INTEGER NOT NULL, PRIMARY KEY (op, start_us, tid)
) WITHOUT ROWID"""
SERVICE_SKETCH: Final = """CREATE TABLE IF NOT EXISTS rollup_services_sketch (
    service TEXT NOT NULL PRIMARY KEY, bins BLOB NOT NULL
) WITHOUT ROWID"""
SKETCH_COLUMN: Final = "bins BLOB NOT NULL DEFAULT x''"
"""The packed sketch of a rollup row (layout v5), as added to the rollup tables of a v4 file."""
SERVICE_BINS: Final = """CREATE TABLE IF NOT EXISTS rollup_services_bins (
    service TEXT NOT NULL, bin INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (service, bin)
) WITHOUT ROWID"""
TAG_INDEX: Final = """CREATE TABLE IF NOT EXISTS tag_index (
    tag INTEGER NOT NULL, start_us INTEGER NOT NULL, tid INTEGER NOT NULL, PRIMARY KEY (tag, start_us, tid)
) WITHOUT ROWID"""

SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS traces (
    tid INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,    -- active | finalized | dropped | waiting
    shard TEXT NOT NULL,    -- topic/partition whose worker finalizes it
    first_seen_us INTEGER NOT NULL,
    last_seen_us INTEGER NOT NULL,
    due_us INTEGER NOT NULL,
    root_done_us INTEGER,   -- when a finished root span was first seen
    chunks INTEGER NOT NULL,
    root_service TEXT,
    root_operation TEXT,
    start_us INTEGER,
    duration_us INTEGER,
    span_count INTEGER,
    error_count INTEGER,
    status TEXT NOT NULL DEFAULT 'active',
    complete INTEGER,
    services TEXT,
    analysis BLOB,          -- NULL since layout v3 (derived from the spans on read)
    contribution BLOB,      -- zstd msgpack Contribution of a sampled-out trace (kept ones: derived)
    late_spans INTEGER NOT NULL DEFAULT 0,
    refinalizations INTEGER NOT NULL DEFAULT 0,
    finalized_at_us INTEGER,
    final_chunks INTEGER    -- chunks merged by the last finalization (NULL: never, or written before it)
);
CREATE INDEX IF NOT EXISTS traces_due ON traces (due_us) WHERE state = 'active';
CREATE INDEX IF NOT EXISTS traces_start ON traces (start_us) WHERE finalized_at_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS traces_duration ON traces (duration_us) WHERE finalized_at_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS traces_dropped ON traces (start_us) WHERE state = 'dropped';

CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, late INTEGER NOT NULL, body BLOB NOT NULL);

CREATE TABLE IF NOT EXISTS open_spans (
    span_id TEXT NOT NULL, tid INTEGER NOT NULL, PRIMARY KEY (span_id, tid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS open_spans_by_trace ON open_spans (tid);

{OP_INDEX};
CREATE TABLE IF NOT EXISTS endpoint_traces (
    service TEXT NOT NULL, operation TEXT NOT NULL, duration_us INTEGER NOT NULL, tid INTEGER NOT NULL,
    start_us INTEGER NOT NULL, critical BLOB NOT NULL,
    PRIMARY KEY (service, operation, duration_us, tid)
) WITHOUT ROWID;
{TAG_INDEX};
{SERVICE_SKETCH};

CREATE TABLE IF NOT EXISTS rollup_ops (
    grain INTEGER NOT NULL, bucket INTEGER NOT NULL,
    service TEXT NOT NULL, operation TEXT NOT NULL, kind TEXT NOT NULL,
    n INTEGER NOT NULL, errors INTEGER NOT NULL, duration_us INTEGER NOT NULL, {_HIST_DDL}, {SKETCH_COLUMN},
    PRIMARY KEY (grain, bucket, service, operation, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_endpoints (
    grain INTEGER NOT NULL, bucket INTEGER NOT NULL, service TEXT NOT NULL, operation TEXT NOT NULL,
    n INTEGER NOT NULL, errors INTEGER NOT NULL, duration_us INTEGER NOT NULL, {_HIST_DDL}, {SKETCH_COLUMN},
    PRIMARY KEY (grain, bucket, service, operation)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_contexts (
    grain INTEGER NOT NULL, bucket INTEGER NOT NULL, service TEXT NOT NULL, operation TEXT NOT NULL,
    ctx INTEGER NOT NULL, critical_us INTEGER NOT NULL, traces INTEGER NOT NULL,
    PRIMARY KEY (grain, bucket, service, operation, ctx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS call_paths (ctx INTEGER PRIMARY KEY, label TEXT NOT NULL, path BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rollup_deps (
    hour INTEGER NOT NULL, parent TEXT NOT NULL, child TEXT NOT NULL,
    calls INTEGER NOT NULL, errors INTEGER NOT NULL, PRIMARY KEY (hour, parent, child)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heartbeats (
    worker_id TEXT PRIMARY KEY, updated_us INTEGER NOT NULL, body TEXT NOT NULL
) WITHOUT ROWID;
"""

ADDED_TABLES: Final = """
CREATE TABLE IF NOT EXISTS rollup_unseen (
    grain INTEGER NOT NULL, bucket INTEGER NOT NULL, service TEXT NOT NULL,
    traces INTEGER NOT NULL, failed INTEGER NOT NULL, spans INTEGER NOT NULL, errors INTEGER NOT NULL,
    PRIMARY KEY (grain, bucket, service)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zstd_dicts (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS archive_blocks (
    name TEXT PRIMARY KEY, shard TEXT NOT NULL, start_us INTEGER NOT NULL, end_us INTEGER NOT NULL,
    created_us INTEGER NOT NULL, meta BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS archive_blocks_time ON archive_blocks (start_us, end_us);
CREATE TABLE IF NOT EXISTS archive_pins (trace_id TEXT PRIMARY KEY, pinned_us INTEGER NOT NULL) WITHOUT ROWID
"""
"""Tables added to layout v2 after its release (and part of every new v3 schema), created when missing on
every open: ``rollup_unseen`` (the excess of the adjusted counts over the received traces and spans, per
service; see :mod:`shared.store.rollups`) and ``zstd_dicts`` (the dictionaries chunks are compressed with;
see :mod:`shared.store.sql.dicts`); ``archive_blocks`` and ``archive_pins`` (the archive's registered
blocks and the pinned traces; see :mod:`shared.store.sql.archive`)."""
ADDED_TABLE_NAMES: Final = ("rollup_unseen", "zstd_dicts", "archive_blocks", "archive_pins")

ADDED_COLUMNS: Final = (("traces", "final_chunks", "INTEGER"),)
"""Columns ``(table, column, type)`` added to layout v3 after its first version (and part of every new
schema), added when missing on open: ``traces.final_chunks``."""

SKETCH_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rollup_ops_bins (
    grain INTEGER NOT NULL, bucket INTEGER NOT NULL,
    service TEXT NOT NULL, operation TEXT NOT NULL, kind TEXT NOT NULL, bin INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (grain, bucket, service, operation, kind, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_endpoints_bins (
    grain INTEGER NOT NULL, bucket INTEGER NOT NULL, service TEXT NOT NULL, operation TEXT NOT NULL,
    bin INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (grain, bucket, service, operation, bin)
) WITHOUT ROWID;
"""
"""The rollups' latency sketches: additive DDL, so a layout v2 file gains it without a version bump."""
