"""Smoke tests of the benchmark harness (bench/): the in-process parts at tiny sizes, no broker needed
(except the one test marked ``kafka``)."""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from bench import analysis as analysis_bench
from bench import archive as archive_bench
from bench import drain, freshness, jaeger, pairs, run, workload, zipkin
from bench import metrics as metrics_bench
from bench.common import Row, Skipped, percentile, render_report, render_table, settings_env
from bench.profiling import summarize
from shared.codecs.native import decode_native
from shared.codecs.otlp import decode_otlp_proto
from shared.codecs.zipkin import decode_zipkin_json
from shared.kafka import ensure_topics
from shared.models import Event, Span
from shared.settings import Settings


def test_archive_bench_on_a_folder_at_a_tiny_size() -> None:
    args = argparse.Namespace(spans=3000, reads=3, workloads="demo,realistic", url="")
    rows = asyncio.run(archive_bench.measure(args))
    assert [row[0] for row in rows] == ["demo", "realistic"]
    assert all(0 < float(row[2]) < 1000 and "/" in row[-1] for row in rows)  # bytes a span; search ms p50 / p99


def test_decode_rate_at_a_tiny_size() -> None:
    values = [workload.native_message(t) for t in workload.demo_traces(300)]
    result = drain.decode_rate(values, min_seconds=0.01)
    assert result.spans_per_s > 0 and result.messages_per_s > 0 and result.redacted_spans_per_s > 0
    assert result.spans_per_s > result.messages_per_s  # a message holds a whole trace


def test_analysis_bench_at_a_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    rows = analysis_bench.measure(analysis_bench.demo_traces(20), repeat=1)
    assert [name.strip() for name, *_ in rows] == ["analyze", "contribution", "of which trace_contexts"]
    assert all(before > 0 and python > 0 and (built is None or built > 0) for _, before, python, built in rows)
    big = analysis_bench.big_trace()
    assert len(big) >= 10_000 and len({span.span_id for span in big}) == len(big)
    assert sum(span.parent_span_id is None for span in big) == 1  # one root over every request
    print(analysis_bench.table("t", rows))
    assert "| analyze " in capsys.readouterr().out


def test_metrics_bench_at_a_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert metrics_bench.main(["--routes", "2", "--repeat", "1"]) == 0  # the pages before and after agree
    lines = capsys.readouterr().out.splitlines()
    assert "the same names, types, help, labels and values on both sides" in lines[0]
    assert [line.split(" | ")[0] for line in lines[4:]] == [
        "| worker, per batch (messages, batch seconds)",
        "| worker, per finalize round (76 label sets)",
        "| worker, per heartbeat (12 partitions)",
        "| API, per request (count, latency)",
        "| scrape of the worker's page",
        "| scrape of the API's page (2 routes)",
    ]
    cells = [line.strip("| ").split(" | ")[1:] for line in lines[4:]]
    assert all(float(cell.replace(",", "")) > 0 for row in cells for cell in row)


def test_decode_rate_refuses_nothing() -> None:
    with pytest.raises(ValueError, match="no messages"):
        drain.decode_rate([])


def test_demo_traces_are_deterministic_and_sized() -> None:
    first = list(workload.demo_traces(1000, start_us=1_000_000))
    again = list(workload.demo_traces(1000, start_us=5_000_000))
    assert [s.span_id for t in first for s in t] == [s.span_id for t in again for s in t]
    spans = sum(len(t) for t in first)
    assert spans >= 1000 and spans - len(first[-1]) < 1000


def test_realistic_traces_decode_and_carry_high_cardinality_values() -> None:
    traces = [workload.realistic_trace(rng, 1_000_000 + n) for rng in [random.Random(3)] for n in range(300)]
    again = [workload.realistic_trace(rng, 1_000_000 + n) for rng in [random.Random(3)] for n in range(300)]
    assert traces == again  # deterministic for a seed
    spans = [s for t in traces for s in t]
    for trace in traces[:50]:
        decoded = decode_native(workload.native_message(trace))
        assert [(s.span_id, s.tags, s.logs, s.resource) for s in decoded if isinstance(s, Span)] == [
            (s.span_id, s.tags, s.logs, s.resource) for s in trace
        ]
    roots = [t[0] for t in traces]
    for key, where in (("http.url", spans), ("db.statement", spans), ("user.id", roots), ("http.request_id", roots)):
        values = [s.tags[key] for s in where if key in s.tags]
        assert len(set(values)) > len(values) / 2, key  # mostly distinct, unlike the demo's few constants
    assert 0.2 < sum(bool(s.logs) for s in spans) / len(spans) < 0.6
    assert all(any(log.fields["event"] == "exception" for log in s.logs) for s in spans if s.status == "error")


def _essentials(events: list[Event]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for s in events:
        assert isinstance(s, Span)
        kind = None if s.kind == "internal" else s.kind  # Zipkin has no internal kind
        out.append((s.trace_id, s.span_id, s.parent_span_id, s.service_name, s.operation_name))
        out.append((s.start_time_us, s.duration_us, s.status, kind))
    return out


def test_zipkin_messages_carry_the_same_spans() -> None:
    for trace in workload.demo_traces(200):
        native = decode_native(workload.native_message(trace))
        converted = decode_zipkin_json(workload.zipkin_message(trace))
        assert _essentials(converted) == _essentials(native)


def test_otlp_messages_carry_the_same_spans() -> None:
    for trace in workload.demo_traces(200):
        native = decode_native(workload.native_message(trace))
        converted = sorted(decode_otlp_proto(workload.otlp_message(trace)), key=lambda s: s.span_id)
        native = sorted(native, key=lambda s: s.span_id)  # OTLP groups the spans by service
        assert _essentials(converted) == _essentials(native)
        for ours, theirs in zip(native, converted, strict=True):
            assert isinstance(ours, Span) and isinstance(theirs, Span)
            assert theirs.tags == ours.tags  # typed attributes, as they were
            assert theirs.scope_name == "shared.demo"


def _below_a_producer(span_id: str | None, trace: list[Span]) -> bool:
    """The span is a producer span or below one: a queue's consumer span and what it calls."""
    by_id = {s.span_id: s for s in trace}
    while span_id is not None and by_id[span_id].kind != "producer":
        span_id = by_id[span_id].parent_span_id
    return span_id is not None


def test_one_span_per_message_workload_is_deterministic_and_in_finish_order() -> None:
    messages = list(workload.messages(2_000, "native-span"))
    again = list(workload.messages(2_000, "native-span"))
    spans = [decode_native(m.value) for m in messages]
    assert all(len(events) == 1 for events in spans)
    flat = [events[0] for events in spans]
    assert all(isinstance(s, Span) for s in flat)
    assert [s.span_id for s in flat] == [decode_native(m.value)[0].span_id for m in again]
    assert len(flat) == 2_000 and sum(m.traces for m in messages) == 200
    by_trace: dict[str, list[Span]] = {}
    for message, span in zip(messages, flat, strict=True):
        assert isinstance(span, Span)
        assert message.key == span.trace_id.encode() and message.spans == 1
        assert message.traces == (1 if span.parent_span_id is None else 0)
        by_trace.setdefault(span.trace_id, []).append(span)
    assert {len(t) for t in by_trace.values()} == {workload.TRACE_SIZE}
    for trace in by_trace.values():
        (root,) = [s for s in trace if s.parent_span_id is None]
        after_root = trace[trace.index(root) + 1 :]
        assert all(_below_a_producer(s.span_id, trace) for s in after_root)  # only async work outlives its root
    ends = [s.start_time_us + (s.duration_us or 0) for s in flat if isinstance(s, Span)]
    assert ends == sorted(ends)
    starts = [t[0].start_time_us for t in by_trace.values()]
    assert len(set(starts)) == len(starts)  # traces overlap: they interleave in the topic
    first_root = next(i for i, s in enumerate(flat) if isinstance(s, Span) and s.parent_span_id is None)
    assert len({s.trace_id for s in flat[: first_root + 1]}) > 1


def test_finish_order_puts_children_first_on_a_tie() -> None:
    root = Span(trace_id="t", span_id="r", service_name="s", operation_name="o", start_time_us=10, duration_us=5)
    child = Span(
        trace_id="t", span_id="c", parent_span_id="r", service_name="s", operation_name="o", start_time_us=12,
        duration_us=3,
    )  # fmt: skip
    other = Span(trace_id="u", span_id="x", service_name="s", operation_name="o", start_time_us=11, duration_us=1)
    assert [s.span_id for s in workload.in_finish_order([[root, child], [other]])] == ["x", "c", "r"]
    with pytest.raises(ValueError, match="open"):
        list(workload.in_finish_order([[msgspec.structs.replace(root, duration_us=None)]]))


def test_sized_traces_refuse_a_size_below_the_smallest_trace() -> None:
    with pytest.raises(ValueError, match="size"):
        next(workload.sized_traces(10, size=2))


def test_table_is_aligned_markdown() -> None:
    rows = [
        Row("a", "raw consume", "1,000 spans/s", "1.00", "a | pipe", seconds=1.25),
        Row("c", "one worker, SQLite", "n/a (no PostgreSQL)"),
    ]
    table = render_table(rows).splitlines()
    assert len(table) == 4
    assert table[0].startswith("|   | measure")
    assert set(table[1]) <= {"|", "-"}
    assert len({len(line) for line in table}) == 1  # every line padded to the same width
    assert "a \\| pipe" in table[2] and "1.2 s" in table[2]
    report = render_report({"date": "today", "machine": "2 cores"}, rows, ["sizes: tiny"])
    assert report.startswith("# Benchmark\n\n- date: today\n- machine: 2 cores\n\n| ")
    assert report.endswith("- sizes: tiny\n")


def test_percentile_is_nearest_rank() -> None:
    samples = [float(n) for n in range(100, 0, -1)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))


def test_settings_survive_the_trip_to_a_child_process() -> None:
    settings = Settings.from_env(
        {}, topic="t", grace_ms=0, idle_timeout_s=86_400.0, redact=False, read_tokens=("a", "b"), log_level="WARNING"
    )
    env = settings_env(settings)
    assert env["TRACING_GRACE_MS"] == "0" and env["TRACING_REDACT"] == "false"
    assert "TRACING_GROUP" not in env  # defaults are left out
    assert Settings.from_env(env) == settings


def test_metrics_pages_compare_names_types_labels_and_values_not_their_form() -> None:
    old = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1",le="2"} 3\n'
    assert metrics_bench.compare(old, '# HELP a_total A.\n# TYPE a_total counter\na_total{le="2",x="1"} 3.0\n') == []
    counted = metrics_bench.compare(old, old.replace("} 3", "} 4"))
    assert len(counted) == 1 and counted[0].endswith(" 3 -> 4")
    assert metrics_bench.compare(old, old.replace("counter", "gauge"))  # another type: another family


def test_zipkin_prometheus_counters() -> None:
    text = (
        '# TYPE zipkin_collector_spans_total counter\nzipkin_collector_spans_total{transport="kafka",} 1234.0\n'
        'zipkin_collector_spans_total{transport="http",} 9.0\n'
        'zipkin_collector_spans_dropped_total{transport="kafka",} 0.0\n'
    )
    assert zipkin.kafka_counters(text) == {"spans": 1234.0, "spans_dropped": 0.0}


def test_jaeger_span_counters_with_and_without_the_total_suffix() -> None:
    text = (
        "# TYPE otelcol_receiver_accepted_spans_total counter\n"
        'otelcol_receiver_accepted_spans_total{receiver="kafka",transport="kafka"} 1200\n'
        'otelcol_receiver_refused_spans_total{receiver="kafka",transport="kafka"} 0\n'
        'otelcol_exporter_sent_spans{exporter="jaeger_storage_exporter",otel_scope_name="x"} 1000\n'
        'otelcol_exporter_sent_spans{exporter="jaeger_storage_exporter",otel_scope_name="y"} 5e2\n'
        "otelcol_exporter_sent_spans_created 1.7e9\n"
    )
    assert jaeger.span_counters(text) == {"receiver_accepted": 1200.0, "receiver_refused": 0.0, "exporter_sent": 1500.0}


def test_jaeger_config_wires_the_kafka_receiver_to_the_memory_store() -> None:
    doc = msgspec.json.decode(
        jaeger.config(
            brokers="127.0.0.1:9092, 127.0.0.1:9093",
            topic="t",
            group="g",
            backend={"memory": {"max_traces": 10}},
            query_port=1,
            grpc_port=2,
            metrics_port=3,
        )
    )
    kafka = doc["receivers"]["kafka"]
    assert kafka["brokers"] == ["127.0.0.1:9092", "127.0.0.1:9093"]
    assert kafka["traces"] == {"topic": "t", "encoding": "otlp_proto"}
    assert kafka["group_id"] == "g" and kafka["initial_offset"] == "earliest"
    assert doc["service"]["pipelines"]["traces"] == {
        "receivers": ["kafka"],
        "processors": ["batch"],
        "exporters": ["jaeger_storage_exporter"],
    }
    store = doc["exporters"]["jaeger_storage_exporter"]["trace_storage"]
    assert doc["extensions"]["jaeger_storage"]["backends"][store] == {"memory": {"max_traces": 10}}
    assert doc["extensions"]["jaeger_query"]["enable_tracing"] is False
    reader = doc["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert reader == {"host": "127.0.0.1", "port": 3}


def test_jaeger_without_go_is_na(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jaeger, "CACHE_DIR", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(Skipped, match="go is not installed"):
        jaeger.build_binary()


def test_a_failed_jaeger_build_is_na_and_leaves_no_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "go").write_text('#!/bin/sh\n[ "$1" = get ] && { echo "no route to proxy.golang.org"; exit 1; }\nexit 0\n')
    (fake / "go").chmod(0o755)
    monkeypatch.setattr(jaeger, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(Skipped, match=r"`go get -tool` failed \(1\): .*no route to proxy.golang.org"):
        jaeger.build_binary()
    assert not jaeger.binary_path().exists()
    assert [p.name for p in jaeger.binary_path().parent.iterdir()] == ["build.log"]  # the module dir is gone


def test_freshness_schedule_paces_the_traces() -> None:
    traces = list(freshness.schedule(1_000, 2.0, 5_000_000))
    again = list(freshness.schedule(1_000, 2.0, 9_000_000))
    assert [t[0].trace_id for t in traces] == [t[0].trace_id for t in again]
    spans = 0
    for trace in traces:
        assert trace[0].start_time_us == 5_000_000 + int(spans / 1_000 * 1_000_000)
        spans += len(trace)
    assert spans >= 2_000 and spans - len(traces[-1]) < 2_000


def test_freshness_sent_log_follows_a_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "sent.txt"
    sent = freshness.SentLog(path)
    sent.read()  # no file yet
    assert sent.window_start_ms({}, 0.0) is None
    with path.open("w") as out:
        out.write("a 5000000 10.0 3 5000001\nb 6000000 10.5 4 6000002\nc 70")
    sent.read()
    assert sent.order == ["a", "b"] and sent.sent["b"] == (10.5, 4, 6000002)
    assert sent.window_start_ms({}, 11.0) == 5000  # the oldest unseen trace
    assert sent.window_start_ms({"a": 11.0}, 11.0) == 6000
    with path.open("a") as out:
        out.write("00000 11.0 2 7000003\n#done 9 3 1.5 0.25\n")
    sent.read()
    assert sent.order == ["a", "b", "c"] and sent.done == (9, 3, 1.5, 0.25)
    seen = {"a": 11.0, "b": 11.0, "c": 11.0}
    assert sent.window_start_ms(seen, 12.0) == 7000  # nothing unseen: the newest trace
    fresh = freshness.SentLog(path)
    fresh.read()
    assert fresh.window_start_ms({}, 1e9) == 5000  # however late: nothing sent after it was seen yet
    with path.open("a") as out:
        out.write(f"d 8000000 {10.5 + freshness.STRAGGLER_AFTER_S + 0.1} 1 8000004\n")
    fresh.read()
    fresh.mark_seen(["a", "d"])
    assert fresh.window_start_ms({"a": 11.0, "d": 60.0}, 61.0) == 7000  # b stopped holding the window, c not yet
    assert list(fresh.stragglers) == [(61.0, "b")]


@pytest.mark.kafka
async def test_freshness_producer_writes_every_trace_then_done(settings: Settings) -> None:
    await ensure_topics(settings, [settings.topic])
    out = io.StringIO()
    await freshness.produce(settings, spans_per_s=2_000, seconds=0.5, out=out)
    lines = out.getvalue().splitlines()
    done = lines[-1].split()
    assert done[0] == freshness.DONE and int(done[2]) == len(lines) - 1
    assert int(done[1]) == sum(int(line.split()[3]) for line in lines[:-1]) >= 1_000
    assert float(done[3]) >= 0.45  # the schedule, not faster
    sent = [float(line.split()[2]) for line in lines[:-1]]
    assert sent == sorted(sent)
    raw = await drain.raw_consume(settings, settings.topic, len(lines) - 1, int(done[1]), min_seconds=0.0)
    assert raw.passes == 1


def test_profile_summary_of_raw_stacks() -> None:
    raw = [
        "thread (0x1): MainThread;main (ingest/worker.py:10);decode (shared/codecs/native.py:22) 3",
        "thread (0x2): sqlite_0;run (threading.py:1);tx (/opt/app/shared/store/sqlite.py:289) 1",
        "garbage",
    ]
    text = summarize(raw, top=5)
    assert text.startswith("4 samples")
    assert "75.0%  MainThread" in text and "25.0%  sqlite" in text
    assert "75.0%  shared/codecs/native.py:22 decode" in text
    assert "75.0%  main (ingest/worker.py)" in text


def test_quick_sizes_and_row_selection() -> None:
    args = run.parse_args(["--quick", "--only", "b,c,h"])
    assert args.parts == ["b", "c", "h"] and args.sizes == run.QUICK
    assert run.parse_args([]).sizes.fresh_rate == 10_000
    assert run.parse_args(["--spans", "1234"]).sizes.spans == 1234
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "z"])


def test_pairs_sides_take_settings_with_or_without_the_prefix() -> None:
    assert pairs.side_env(["finalize_batch=2000", "TRACING_CACHE_MB=0", "redact=false"]) == {
        "TRACING_FINALIZE_BATCH": "2000",
        "TRACING_CACHE_MB": "0",
        "TRACING_REDACT": "false",
    }
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        pairs.side_env(["finalize_batch"])


@pytest.mark.kafka
def test_pairs_drain_both_sides_in_flipped_order(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    sizes = ["--pairs", "2", "--spans", "600", "--grace-ms", "100"]
    pairs.main([*sizes, "--bootstrap", settings.kafka_bootstrap, "--b", "finalize_batch=7", "finalize_process=false"])
    captured = capsys.readouterr()
    out = captured.out
    order = [line.split("pair ", 1)[1][:3] for line in captured.err.splitlines() if " pair " in line]
    assert order == ["1 A", "1 B", "2 B", "2 A"]
    assert "A: defaults; this checkout" in out and "B: finalize_batch=7 finalize_process=false; this checkout" in out
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2, out
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[3]) > 0  # B / A
        worker_a, finalizer_a = (float(x) for x in cells[4].split(" + "))
        worker_b, finalizer_b = (float(x) for x in cells[5].split(" + "))
        assert worker_a > 0 and finalizer_a > 0  # A finalizes in its finalizer process
        assert worker_b > 0 and finalizer_b == 0  # B, without one, in the worker
    assert "B / A finalized: median" in out


@pytest.mark.kafka
async def test_raw_consume_and_worker_drain_at_a_tiny_size(settings: Settings) -> None:
    filled = await workload.fill(settings, settings.topic, 300, "native", keep=5)
    assert len(filled.sample) == 5
    raw = await drain.raw_consume(settings, settings.topic, filled.messages, filled.spans, min_seconds=0.0)
    assert raw.passes == 1 and raw.spans_per_s > 0
    result = await drain.worker_drain(settings, filled.spans, filled.traces)
    assert 0 < result.finalized_per_s <= result.stored_per_s


@pytest.mark.kafka
async def test_fill_puts_keyed_messages_where_the_default_partitioner_does(settings: Settings) -> None:
    filled = await workload.fill(settings, settings.topic, 400, "native-span")
    consumer = AIOKafkaConsumer(**settings.kafka_options(), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topic, p) for p in range(settings.partitions)]  # as created
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        records: list[Any] = []
        while len(records) < filled.messages:
            batch = await consumer.getmany(timeout_ms=5_000)
            assert batch, f"only {len(records)} of {filled.messages} messages arrived"
            records += [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    ids = [p.partition for p in partitions]
    for record in records:
        assert record.partition == DefaultPartitioner()(record.key, ids, ids)
        (span,) = decode_native(record.value)
        assert record.key == span.trace_id.encode()
        assert dict(record.headers) == dict(workload.NATIVE_HEADERS)
    expected = [m.value for m in workload.messages(400, "native-span")]
    for p in ids:  # each partition holds its messages in the order they were generated
        got = [r.value for r in records if r.partition == p]
        assert _decoded_ids(got) == _decoded_ids([v for v in expected if _partition_of(v, ids) == p])


def _decoded_ids(values: list[bytes]) -> list[str]:
    return [decode_native(v)[0].span_id for v in values]


def _partition_of(value: bytes, ids: list[int]) -> int:
    partition: int = DefaultPartitioner()(decode_native(value)[0].trace_id.encode(), ids, ids)
    return partition


@pytest.mark.kafka
async def test_one_span_per_message_drains_every_trace_finalized(settings: Settings) -> None:
    filled = await workload.fill(settings, settings.topic, 300, "native-span")
    assert filled.messages == filled.spans == 300 and filled.traces == 30
    result = await drain.worker_drain(settings, filled.spans, filled.traces)
    assert 0 < result.finalized_per_s <= result.stored_per_s
