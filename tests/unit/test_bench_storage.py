"""The measuring helpers of bench row (i) storage (bench/storage.py), on small inputs: the reference
formats are readable and hold every span, and the SQLite and directory footprints add up."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
import zstandard

from bench import jaeger, storage, workload
from shared.codecs.native import decode_native
from shared.models import Span


def spans_of(wire: workload.WireFormat, wanted: int) -> list[Span]:
    return [s for t in workload.traces_of(wire, wanted, start_us=1_000_000) for s in t]


@pytest.mark.parametrize("wire", ["native", "native-span", "realistic"])
def test_references_count_every_span_of_the_workload(wire: workload.WireFormat) -> None:
    spans = spans_of(wire, 600)
    count, sizes = storage.references(iter(spans))
    assert count == len(spans) >= 600
    plain, packed, parquet = sizes.values()
    assert plain == len(b"".join(msgspec.json.encode(s) + b"\n" for s in spans))
    assert 0 < parquet < packed < plain  # the columnar file is the smallest


def test_json_lines_decompress_to_one_span_a_line() -> None:
    spans = spans_of("realistic", 300)
    lines = storage.JsonLines()
    assert list(lines.lines(spans)) == spans  # passes the spans through unchanged
    assert lines.spans == len(spans)
    stream = zstandard.ZstdCompressor(level=storage.ZSTD_LEVEL).compressobj()
    compressed = b"".join(stream.compress(msgspec.json.encode(s) + b"\n") for s in spans) + stream.flush()
    assert len(compressed) == lines.compressed
    text = zstandard.ZstdDecompressor().decompressobj().decompress(compressed)
    decoded = [decode_native(line) for line in text.splitlines()]
    assert [event for batch in decoded for event in batch] == spans


def test_parquet_file_has_a_row_per_span_sorted_by_trace_with_binary_ids() -> None:
    spans = spans_of("native", 500)
    table = pq.read_table(io.BytesIO(storage.parquet_file(spans)))
    assert table.num_rows == len(spans)
    trace_ids = table.column("trace_id").to_pylist()
    assert trace_ids == sorted(trace_ids) and all(len(t) == 16 for t in trace_ids)
    assert sorted(table.column("span_id").to_pylist()) == sorted(bytes.fromhex(s.span_id) for s in spans)
    assert set(table.column("service_name").to_pylist()) == {s.service_name for s in spans}
    metadata = pq.ParquetFile(io.BytesIO(storage.parquet_file(spans))).metadata.row_group(0)
    columns = {metadata.column(i).path_in_schema: metadata.column(i) for i in range(metadata.num_columns)}
    assert columns["trace_id"].compression == "ZSTD"
    assert "RLE_DICTIONARY" in columns["service_name"].encodings
    assert "RLE_DICTIONARY" not in columns["span_id"].encodings


def test_sqlite_footprint_checkpoints_and_adds_up_by_table(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
    db.execute("CREATE INDEX a_v ON a (v)")
    db.execute("CREATE TABLE b (k TEXT PRIMARY KEY) WITHOUT ROWID")
    with db:
        db.executemany("INSERT INTO a (v) VALUES (?)", [(f"value {i}" * 20,) for i in range(2000)])
        db.executemany("INSERT INTO b VALUES (?)", [(f"key {i}",) for i in range(100)])
    db.close()  # a checkpoint needs no other connection reading
    footprint = storage.sqlite_footprint(path)
    assert footprint.total == path.stat().st_size  # the log was truncated into the database
    assert footprint.total == sum(footprint.parts.values())
    assert footprint.parts["a"] > 10 * footprint.parts["b"] > 0  # table a with its index a_v
    assert "a_v" not in footprint.parts


def test_directory_footprint_by_name_and_kind(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir()
    (tmp_path / "v" / "sub").mkdir(parents=True)
    (tmp_path / "k" / "000001.sst").write_bytes(b"x" * 100)
    (tmp_path / "k" / "MANIFEST").write_bytes(b"x" * 7)
    (tmp_path / "v" / "sub" / "000001.vlog").write_bytes(b"x" * 50)
    footprint = storage.directory_footprint({"keys": tmp_path / "k", "values": tmp_path / "v"})
    assert footprint.parts == {"keys .sst": 100, "keys MANIFEST": 7, "values .vlog": 50}
    assert footprint.total == 157 and footprint.breakdown(1) == "keys .sst 100, values .vlog 50, keys MANIFEST 7"
    assert footprint.breakdown(10) == "keys .sst 10, values .vlog 5, keys MANIFEST 1"
    assert footprint.breakdown(20) == "keys .sst 5, values .vlog 2"  # MANIFEST below half a byte a span
    assert footprint.breakdown(1, top=1) == "keys .sst 100, others 57"


def test_urls_get_another_database_or_keyspace() -> None:
    url = "cassandra://127.0.0.1,127.0.0.2:9042/tracing?replication_factor=1"
    assert storage.with_path(url, "i_native") == "cassandra://127.0.0.1,127.0.0.2:9042/i_native?replication_factor=1"
    assert storage.with_path("postgresql://p@h:5/tracing", "i_a") == "postgresql://p@h:5/i_a"


def test_jaeger_counts_the_cassandra_writers_span_inserts() -> None:
    page = (
        'jaeger_storage_inserts_total{otel_scope_name="x",table="traces"} 120\n'
        'jaeger_storage_inserts_total{otel_scope_name="x",table="tag_index"} 999\n'
        'jaeger_storage_inserts_total{otel_scope_name="y",table="traces"} 3\n'
    )
    assert jaeger.spans_inserted(page) == 123
    backend = jaeger.cassandra(9142, "i_jaeger")["cassandra"]
    assert backend == {
        "schema": {"keyspace": "i_jaeger", "create": True, "replication_factor": 1},
        "connection": {"servers": ["127.0.0.1"], "port": 9142, "tls": {"insecure": True}},
    }
    dirs = jaeger.badger(Path("/k"), Path("/v"))
    assert dirs == {"badger": {"directories": {"keys": "/k", "values": "/v"}, "ephemeral": False}}
