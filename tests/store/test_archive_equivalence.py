"""The archive answers as the hot store it will take traces from, on every backend of the ``store`` fixture:
realistic traces (tags, resources, logs, errors) written and finalized in the hot store, then read back
from it and written into a block; every trace read by id from the block equals the hot store's answer span
for span, and every search (trace-level and same-span: service, operation, tags, durations, status, time
range, limit, offset) answers the same summaries in the same order from both."""

from __future__ import annotations

from pathlib import Path

from bench.workload import realistic_traces
from shared.archive.block import write_block
from shared.archive.objects import FileObjectStore
from shared.archive.reader import BlockReader
from shared.store import StoredTrace, TraceQuery, TraceStore
from shared.store.tags import tag_text

T0 = 1_732_500_000_000_000
NOW = T0 + 3_600_000_000
NAME = "blocks/2024-11-25/0200-0000-equivalence.parquet"


async def test_archive_reads_and_searches_answer_as_the_hot_store(store: TraceStore, tmp_path: Path) -> None:
    traces = list(realistic_traces(3000, start_us=T0))
    spans = [span for trace in traces for span in trace]
    ids = [trace[0].trace_id for trace in traces]
    shards = dict.fromkeys(ids, "spans/0")
    await store.write_batch(spans, [], shards=shards, now_us=NOW, grace_us=0, idle_us=0)
    assert len(await store.finalize(ids, now_us=NOW + 1)) == len(ids)
    hot: list[StoredTrace] = []
    for trace_id in ids:
        found = await store.get_trace(trace_id)
        assert found is not None and found.state == "finalized"
        hot.append(found)
    block = write_block(hot, row_group_spans=500)  # several row groups
    archive = FileObjectStore(tmp_path)
    await archive.put(NAME, block.data)
    reader = BlockReader(archive)

    for trace in hot:
        got = await reader.get_trace(NAME, block.meta, trace.trace_id)
        assert got is not None
        assert got.spans == sorted(trace.spans, key=lambda span: span.start_time_us)
        assert got.completeness == trace.completeness

    a_db_span = next(s for s in spans if s.service_name == "database")
    log_field = next(iter(next(s for s in spans if s.logs).logs[0].fields.items()))
    resource = next(iter(next(s for s in spans if s.resource).resource.items()))
    starts = sorted(s.start_time_us for s in spans if s.parent_span_id is None)
    queries = [
        TraceQuery(limit=1000),
        TraceQuery(limit=7, offset=5),
        TraceQuery(service_name="database"),
        TraceQuery(service_name="database", operation_name=a_db_span.operation_name, limit=50),
        TraceQuery(operation_name=a_db_span.operation_name, limit=50),
        TraceQuery(status="failed", limit=100),
        TraceQuery(status="completed", min_duration_us=50_000, limit=100),
        TraceQuery(max_duration_us=20_000, limit=100),
        TraceQuery(start_us=starts[10], end_us=starts[40], limit=100),
        TraceQuery(tags=((log_field[0], tag_text(log_field[1])),), limit=100),
        TraceQuery(tags=(("rpc.system", "grpc"), (resource[0], tag_text(resource[1]))), limit=100),
        TraceQuery(service_name="database", tags=(("error", "true"),), same_span=True, limit=100),
        TraceQuery(service_name="payment-service", min_duration_us=10_000, same_span=True, limit=100),
        TraceQuery(tags=(("error", "true"),), same_span=True, limit=100),
    ]
    answers = []
    for query in queries:
        expected = await store.find_traces(query)
        assert await reader.find_traces(NAME, block.meta, query) == expected, query
        answers.append(len(expected))
    assert all(answers[2:]), [
        q for n, q in zip(answers, queries, strict=True) if not n
    ]  # every filter finds something (one empty answer proves nothing)
