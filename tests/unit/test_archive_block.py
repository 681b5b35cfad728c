"""The archive's blocks (shared/archive/block.py, reader.py) over a folder (``file://``): traces written to a
block read back by id equal span by span, with their summary and completeness; a read fetches only the row
groups that can hold the trace; searches answer as the hot store's semantics say (an oracle over the
traces themselves); the documented DuckDB query counts the spans of an archive folder."""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import duckdb
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.analysis import analyze
from shared.archive.block import (
    BlockMeta,
    GroupIndex,
    block_name,
    decode_meta,
    encode_meta,
    holding_groups,
    id_key,
    write_block,
)
from shared.archive.objects import FileObjectStore, ObjectMissing
from shared.archive.reader import FOOTERS_KEPT, BlockReader, Footer
from shared.models import Log, Span, Tags
from shared.store.base import Completeness, StoredTrace, TraceQuery, TraceSummary
from shared.store.search import trace_has_matching_span, trace_has_tags
from tests.conftest import ROOT

T0 = 1_796_600_000_000_000
NAME = "blocks/2026-12-07/0000-0001-test.parquet"

printable = st.characters(exclude_categories=["Cs"])  # no lone surrogates: not UTF-8, never decoded from the wire
texts = st.text(printable, max_size=12)
keys = st.text(printable, min_size=1, max_size=8)
values = (
    texts
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.sampled_from(["200", "true", "1.5"])  # texts that look like other types
)
tag_maps = st.dictionaries(keys | st.sampled_from(["http.status", "error", "user"]), values, max_size=4)
hex_ids = st.binary(min_size=1, max_size=16).map(bytes.hex)
text_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True)
names = st.sampled_from(["api", "users", "db", "a:b", "ünïcode"])


@st.composite
def spans(draw: st.DrawFn, trace_id: str) -> list[Span]:
    n = draw(st.integers(1, 8))
    ids = draw(st.lists(hex_ids | text_ids, min_size=n, max_size=n))
    return [
        Span(
            trace_id=trace_id,
            span_id=ids[i],
            parent_span_id=draw(st.none() | st.sampled_from(ids) | text_ids),
            service_name=draw(names),
            operation_name=draw(st.sampled_from(["get", "put", "q" * 256])),
            start_time_us=T0 + draw(st.integers(0, 10**9)),
            duration_us=draw(st.none() | st.integers(0, 10**8)),
            status=draw(st.sampled_from(["success", "error"])),
            kind=draw(st.sampled_from([None, "server", "client", "producer", "consumer", "internal"])),
            tags=draw(tag_maps),
            logs=tuple(
                Log(timestamp_us=t, fields=f)
                for t, f in draw(st.lists(st.tuples(st.integers(0, 2**62), tag_maps), max_size=2))
            ),
            resource=draw(tag_maps),
            scope_name=draw(st.none() | st.sampled_from(["lib", "io.opentelemetry.http"])),
            scope_version=draw(st.none() | st.just("1.2.3")),
            trace_state=draw(st.none() | st.just("ot=th:8")),
        )
        for i in range(n)
    ]


@st.composite
def traces(draw: st.DrawFn) -> list[StoredTrace]:
    # "6162" (hex) and "ab" (text) share the stored bytes b"ab": both must read back as themselves
    ids = draw(st.lists(hex_ids | text_ids | st.sampled_from(["6162", "ab"]), min_size=1, max_size=12, unique=True))
    return [
        StoredTrace(
            trace_id=trace_id,
            state="finalized",
            spans=draw(spans(trace_id)),
            analysis=None,
            completeness=Completeness(
                late_spans=draw(st.integers(0, 5)), refinalizations=draw(st.integers(0, 3)), finalized_at_us=T0
            ),
        )
        for trace_id in ids
    ]


class CountingStore(FileObjectStore):
    """A folder store that records the byte ranges read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ranges: list[tuple[int, int]] = []

    async def get_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        self.ranges.extend(ranges)
        return await super().get_ranges(name, ranges)


def by_start(spans: Sequence[Span]) -> list[Span]:
    return sorted(spans, key=lambda span: span.start_time_us)


def expected_summary(trace: StoredTrace) -> TraceSummary:
    a = analyze(trace.trace_id, trace.spans)
    return TraceSummary(
        trace_id=trace.trace_id,
        root_service=a.root_service,
        root_operation=a.root_operation,
        start_us=a.start_us,
        duration_us=a.duration_us,
        span_count=a.span_count,
        error_count=a.error_count,
        status="failed" if a.failed else "completed",
        complete=a.complete,
        services=sorted({span.service_name for span in trace.spans}),
    )


def matches(trace: StoredTrace, query: TraceQuery) -> bool:
    """The oracle: the hot store's search semantics (shared.store.base.TraceQuery) on the whole trace."""
    summary = expected_summary(trace)
    if query.status is not None and summary.status != query.status:
        return False
    if query.start_us is not None and summary.start_us < query.start_us:
        return False
    if query.end_us is not None and summary.start_us > query.end_us:
        return False
    if query.same_span:
        return trace_has_matching_span(trace.spans, query)
    if query.min_duration_us is not None and summary.duration_us < query.min_duration_us:
        return False
    if query.max_duration_us is not None and summary.duration_us > query.max_duration_us:
        return False
    if not any(
        query.service_name in (None, span.service_name) and query.operation_name in (None, span.operation_name)
        for span in trace.spans
    ):
        return False
    return trace_has_tags(trace.spans, query.tags)


def oracle(written: Sequence[StoredTrace], query: TraceQuery) -> list[TraceSummary]:
    found = [expected_summary(t) for t in written if matches(t, query)]
    found.sort(key=lambda s: (s.start_us, *_id_order(s.trace_id)), reverse=True)
    return found[query.offset : query.offset + query.limit]


def _id_order(trace_id: str) -> tuple[bytes, str]:
    from shared.archive.block import id_key

    key, text = id_key(trace_id)
    return key, text or ""


async def _put(root: Path, written: Sequence[StoredTrace], row_group_spans: int) -> tuple[CountingStore, BlockMeta]:
    block = write_block(written, row_group_spans=row_group_spans)
    store = CountingStore(root)
    await store.put(NAME, block.data)
    return store, block.meta


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(), st.sampled_from([1, 5, 4096]))
def test_a_trace_reads_back_equal_field_by_field(written: list[StoredTrace], row_group_spans: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_round_trip(Path(folder), written, row_group_spans))


async def _round_trip(root: Path, written: list[StoredTrace], row_group_spans: int) -> None:
    store, meta = await _put(root, written, row_group_spans)
    reader = BlockReader(store)
    assert (meta.trace_count, meta.span_count) == (len(written), sum(len(t.spans) for t in written))
    assert meta.services == sorted({s.service_name for t in written for s in t.spans})
    for trace in written:
        got = await reader.get_trace(NAME, meta, trace.trace_id)
        assert got is not None
        assert got.spans == by_start(trace.spans)
        assert [msgspec.structs.asdict(s) for s in got.spans] == [
            msgspec.structs.asdict(s) for s in by_start(trace.spans)
        ]
        assert [type(v) for s in got.spans for v in s.tags.values()] == [
            type(v) for s in by_start(trace.spans) for v in s.tags.values()
        ]
        assert (got.state, got.completeness) == ("finalized", trace.completeness)
        assert analyze(got.trace_id, got.spans) == analyze(trace.trace_id, by_start(trace.spans))
    assert await reader.get_trace(NAME, meta, "ffff" * 8) is None
    everything = TraceQuery(limit=1000)
    assert await reader.find_traces(NAME, meta, everything) == oracle(written, everything)


queries = st.builds(
    TraceQuery,
    service_name=st.none() | names,
    operation_name=st.none() | st.sampled_from(["get", "put"]),
    min_duration_us=st.none() | st.integers(0, 10**9),
    max_duration_us=st.none() | st.just(10**10),
    status=st.none() | st.sampled_from(["completed", "failed", "active"]),
    tags=st.lists(st.sampled_from([("error", "true"), ("user", "true"), ("http.status", "200")]), max_size=2).map(
        tuple
    ),
    start_us=st.none() | st.integers(T0, T0 + 10**9),
    end_us=st.none() | st.just(T0 + 2 * 10**9),
    limit=st.integers(1, 5),
    offset=st.integers(0, 3),
    same_span=st.booleans(),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(), queries, st.sampled_from([1, 7, 4096]))
def test_search_answers_as_the_hot_store_semantics(
    written: list[StoredTrace], query: TraceQuery, row_group_spans: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_search(Path(folder), written, query, row_group_spans))


async def _search(root: Path, written: list[StoredTrace], query: TraceQuery, row_group_spans: int) -> None:
    store, meta = await _put(root, written, row_group_spans)
    assert await BlockReader(store).find_traces(NAME, meta, query) == oracle(written, query)


def demo_traces(count: int) -> list[StoredTrace]:
    from bench.workload import demo_traces as generate

    return [
        StoredTrace(trace_id=s[0].trace_id, state="finalized", spans=s, analysis=None, completeness=Completeness())
        for s in generate(count)
    ]


def test_a_read_fetches_only_the_row_group_of_the_trace_and_the_footer_once(tmp_path: Path) -> None:
    written = demo_traces(20_000)

    async def run() -> None:
        store, meta = await _put(tmp_path, written, 4096)
        assert len(meta.row_groups) >= 4
        reader = BlockReader(store)
        for trace in written[::500]:
            store.ranges.clear()
            got = await reader.get_trace(NAME, meta, trace.trace_id)
            assert got is not None and got.spans == by_start(trace.spans)
            holding = [meta.row_groups[i] for i in holding_groups(meta, bytes.fromhex(trace.trace_id))]
            assert len(holding) == 1  # the filters rule out the other row groups whose id range holds it
            assert [(g.offset, g.offset + g.length) for g in holding] == [
                r for r in store.ranges if r[0] < meta.footer_offset
            ]
            assert sum(end - start for start, end in store.ranges) < meta.size / 3
        store.ranges.clear()
        found = await reader.find_traces(NAME, meta, TraceQuery(end_us=meta.row_groups[0].start_us, limit=1000))
        assert found and all(s.start_us <= meta.row_groups[0].start_us for s in found)
        assert len(store.ranges) < len(meta.row_groups)  # the footer was kept; row groups pruned

    asyncio.run(run())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(traces(), st.sampled_from([1, 3, 4096]), st.booleans()), min_size=1, max_size=4),
    st.lists(hex_ids | text_ids, max_size=8),
)
def test_the_index_of_many_blocks_finds_the_row_groups_each_block_would(
    blocks: list[tuple[list[StoredTrace], int, bool]], others: list[str]
) -> None:
    metas = []
    for written, row_group_spans, filtered in blocks:
        meta = write_block(written, row_group_spans=row_group_spans).meta
        if not filtered:  # a block written before the filters: its row groups may hold any id of their range
            meta = msgspec.structs.replace(
                meta, row_groups=[msgspec.structs.replace(g, trace_filter=b"") for g in meta.row_groups]
            )
        metas.append(meta)
    index = GroupIndex(metas)
    asked = [t.trace_id for written, _, _ in blocks for t in written] + others
    for trace_id in asked:
        key, _ = id_key(trace_id)
        expected = [(b, holding_groups(m, key)) for b, m in enumerate(metas)]
        assert index.holders(key) == [(b, groups) for b, groups in expected if groups]
    for b, (written, _, _) in enumerate(blocks):  # every written trace is found in its block
        for trace in written:
            assert b in dict(index.holders(id_key(trace.trace_id)[0]))
    assert GroupIndex([]).holders(b"x") == []


def test_prefetched_footers_leave_a_read_by_id_one_ranged_get(tmp_path: Path) -> None:
    written = demo_traces(3000)

    async def run() -> None:
        store, meta = await _put(tmp_path, written, 1024)
        reader = BlockReader(store)
        await reader.prefetch([(NAME, meta)])
        assert store.ranges == [(meta.footer_offset, meta.size)]
        assert reader.prefetches([(NAME, meta)]) == []  # kept
        for trace in written[::300]:
            store.ranges.clear()
            got = await reader.get_trace(NAME, meta, trace.trace_id)
            assert got is not None and got.spans == by_start(trace.spans)
            assert len(store.ranges) == 1 and store.ranges[0][1] <= meta.footer_offset  # the row group alone
        await reader.prefetch([(NAME, meta)])  # kept: not fetched again
        assert len(store.ranges) == 1 and reader.prefetches([(NAME, meta)]) == []
        others = [(f"blocks/other-{i}.parquet", meta) for i in range(FOOTERS_KEPT + 5)]
        assert reader.prefetches([(NAME, meta), *others]) == others[: FOOTERS_KEPT - 1]  # no more than are kept
        await store.delete(NAME)
        await BlockReader(store).prefetch([(NAME, meta)])  # a block gone: left for a read to report

    asyncio.run(run())


def test_a_footer_keeps_the_bounds_searches_prune_by() -> None:
    block = write_block(demo_traces(3000), row_group_spans=1024)
    footer = Footer(block.data[block.meta.footer_offset :])
    parquet = pq.ParquetFile(pa.BufferReader(block.data))
    assert len(footer.bounds) == len(block.meta.row_groups) == footer.meta.num_row_groups
    for g, bounds in enumerate(footer.bounds):
        group = footer.meta.row_group(g)
        columns = {group.column(i).path_in_schema: group.column(i).statistics for i in range(group.num_columns)}
        for name in ("service_name", "operation_name", "trace_duration_us"):
            stats = columns[name]
            assert bounds[name] == (stats.min, stats.max) and stats.min <= stats.max
        services = parquet.read_row_group(g, columns=["service_name"]).column(0).to_pylist()
        assert bounds["service_name"] == (min(services), max(services))


def test_a_missing_block_is_object_missing(tmp_path: Path) -> None:
    written = demo_traces(50)

    async def run() -> None:
        store, meta = await _put(tmp_path, written, 4096)
        await store.delete(NAME)
        await store.delete(NAME)  # twice: no error
        with pytest.raises(ObjectMissing):
            await BlockReader(store).get_trace(NAME, meta, written[0].trace_id)

    asyncio.run(run())


def test_block_names_sort_by_window_and_group_by_day() -> None:
    assert block_name(3, T0, "a1") == "blocks/2026-12-06/2333-0003-a1.parquet"
    assert block_name(3, T0, "a1") < block_name(0, T0 + 3_600_000_000, "a1")
    with pytest.raises(ValueError, match="not a block name part"):
        block_name(3, T0, "a/b")


def test_the_documented_duckdb_query_counts_the_spans_of_an_archive_folder(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "archive.md").read_text()
    query = re.findall(r"```sql\n(.*?)```", doc, re.S)[0]  # the first query: the spans of an archive folder
    assert "count(*)" in query
    written = demo_traces(3000)
    store = FileObjectStore(tmp_path)
    for i, part in enumerate((written[:40], written[40:])):
        block = write_block(part)
        asyncio.run(store.put(block_name(i, T0 + i * 3_600_000_000, f"b{i}"), block.data))
    asyncio.run(store.put("blocks/.put-x.tmp", b"an upload under way is not a block"))
    counted = duckdb.execute(query.replace("/path/to/archive", str(tmp_path))).fetchall()
    assert counted == [(sum(len(t.spans) for t in written),)]


def test_tags_keep_their_types() -> None:
    tags: Tags = {"i": 1, "s": "1", "f": 1.0, "b": True, "t": "true", "big": 2**63 - 1, "e": 1e300}
    span = Span(trace_id="ab", span_id="cd", service_name="s", operation_name="o", start_time_us=1, tags=tags)
    block = write_block(
        [StoredTrace(trace_id="ab", state="finalized", spans=[span], analysis=None, completeness=Completeness())]
    )
    with tempfile.TemporaryDirectory() as folder:
        store = FileObjectStore(Path(folder))
        asyncio.run(store.put(NAME, block.data))
        got = asyncio.run(BlockReader(store).get_trace(NAME, block.meta, "ab"))
    assert got is not None
    assert [(k, type(v), v) for k, v in got.spans[0].tags.items()] == [(k, type(v), v) for k, v in tags.items()]


def test_block_metadata_survives_the_hot_store_encoding() -> None:
    block = write_block(demo_traces(9000), row_group_spans=1000)
    assert len(block.meta.row_groups) >= 8
    assert decode_meta(encode_meta(block.meta)) == block.meta
    filters = sum(len(g.trace_filter) for g in block.meta.row_groups)
    assert filters <= 3 * block.meta.trace_count + 8 * len(block.meta.row_groups)  # FILTER_BITS a trace
    assert len(encode_meta(block.meta)) < 2000 + 100 * len(block.meta.row_groups) + filters
    with pytest.raises(msgspec.ValidationError):
        decode_meta(msgspec.msgpack.encode({"start_us": "yesterday"}))
