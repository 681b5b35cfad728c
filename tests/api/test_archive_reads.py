"""Reads through both tiers, over real HTTP, on every backend of the ``store`` fixture.

Realistic traces are written and finalized in the hot store, read through the seed and Jaeger APIs with no
archive configured, then the older half is moved into a ``file://`` archive by hand, as the mover does
(``archive_due`` -> ``write_block`` -> put -> ``register_block``). Every trace then answers by id through
every trace endpoint as before, field by field, with ``tier`` ``archive`` for the moved ones; searches over
windows that span both tiers find the same traces in the same order (ties on start: by trace id,
descending, in both tiers); Jaeger's archive button pins hot and archived traces alike; an archive that
cannot answer is a 503 for the reads that need it, and nothing else.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from bench.workload import realistic_traces
from shared.archive.block import block_name, encode_meta, write_block
from shared.archive.objects import FileObjectStore
from shared.archive.tiered import TieredReads
from shared.store.base import ArchivedBlock, TraceQuery, TraceStore

from .conftest import ServeApi
from .support import T0_US, LiveApi

NOW_US = T0_US + 3_600_000_000
TRACE_PATHS = ("/traces/{}", "/traces/{}/visualize", "/traces/{}/analyze", "/api/traces/{}", "/api/v3/traces/{}")


async def _seed(api: LiveApi, spans_wanted: int, *, shards: int = 1) -> list[str]:
    """Realistic traces (one millisecond apart from ``T0_US``, dealt to ``shards`` shards of the topic in
    turn) written and finalized; their ids by start."""
    traces = list(realistic_traces(spans_wanted, start_us=T0_US))
    ids = [trace[0].trace_id for trace in traces]
    shard_of = {trace_id: f"{api.settings.topic}/{i % shards}" for i, trace_id in enumerate(ids)}
    spans = [span for trace in traces for span in trace]
    await api.store.write_batch(spans, [], shards=shard_of, now_us=NOW_US, grace_us=1, idle_us=1)
    await api.finalize(*ids, now_us=NOW_US + 1)
    return ids


async def archive_before(
    store: TraceStore, root: Path, shard: str, before_us: int, *, unique: str = "reads", keep_hot: bool = False
) -> list[str]:
    """Move the finalized traces of ``shard`` that started before ``before_us`` into one block under
    ``root``, by the mover's steps; the ids moved. ``keep_hot``: the block is registered but the hot rows
    stay (as after a crash between the two on a store that cannot do both at once)."""
    due = await store.archive_due(before_us, shard=shard, limit=100_000)
    block = write_block(due, row_group_spans=400)  # several row groups
    name = block_name(0, block.meta.start_us, unique)
    await FileObjectStore(root).put(name, block.data)
    registered = ArchivedBlock(
        name=name,
        shard=shard,
        start_us=block.meta.start_us,
        end_us=block.meta.end_us,
        created_us=NOW_US + 2,
        meta=encode_meta(block.meta),
    )
    moved = [trace.trace_id for trace in due]
    await store.register_block(registered, [] if keep_hot else moved)
    return moved


async def archive_older_half(api: LiveApi, root: Path, ids: Sequence[str]) -> list[str]:
    """The traces of the first half of the window of ``ids`` (1 ms apart from ``T0_US``) archived."""
    return await archive_before(api.store, root, f"{api.settings.topic}/0", T0_US + len(ids) // 2 * 1000)


def _without_tier(answer: Any) -> tuple[Any, list[str]]:
    """The answer with every ``tier`` field taken out (the seed's top level, each Jaeger trace), and the
    tiers taken out."""
    tiers: list[str] = []
    if isinstance(answer, dict):
        if "tier" in answer:
            tiers.append(answer.pop("tier"))
        for trace in answer.get("data") or []:
            if isinstance(trace, dict) and "tier" in trace:
                tiers.append(trace.pop("tier"))
    elif isinstance(answer, list):
        for row in answer:
            tiers.append(row.pop("tier"))
    return answer, tiers


async def _answers(api: LiveApi, paths: Sequence[str]) -> dict[str, tuple[Any, list[str]]]:
    found: dict[str, tuple[Any, list[str]]] = {}
    for path in paths:
        reply = await api.get(path)
        assert reply.status == 200, (path, reply.status, reply.text[:300])
        found[path] = _without_tier(reply.json)
    return found


def _searches(ids_by_start: Sequence[str]) -> list[str]:
    """Searches whose windows span both tiers (the first and last millisecond of the traces)."""
    start_ms, end_ms = T0_US // 1000 - 1, T0_US // 1000 + len(ids_by_start) + 1
    seed = f"/traces/query?start={start_ms}&end={end_ms}"
    jaeger = f"/api/traces?start={start_ms * 1000}&end={end_ms * 1000}"
    error_tag = quote(json.dumps({"error": "true"}))
    return [
        f"{seed}&limit=1000",
        f"{seed}&limit=7&offset={len(ids_by_start) // 2 - 3}",  # a page across the tiers' border
        f"{seed}&serviceName=database&limit=1000",
        f"{seed}&status=failed&limit=1000",
        f"{seed}&minDuration=20&limit=1000",
        f"{seed}&tag=rpc.system:grpc&limit=1000",
        f"{jaeger}&service=database&limit=1000",
        f"{jaeger}&service=database&tags={error_tag}&limit=1000",
        f"{jaeger}&service=payment-service&minDuration=10ms&limit=1000",
        f"{jaeger}&service=api-gateway&limit=5",
        f"/api/v3/traces?query.service_name=database&query.start_time_min={_rfc3339(start_ms)}"
        f"&query.start_time_max={_rfc3339(end_ms)}&query.search_depth=1000",
    ]


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_archived_traces_answer_as_before_through_every_read(
    serve_api: ServeApi, store: TraceStore, tmp_path: Path
) -> None:
    async with serve_api() as hot_only:
        ids = await _seed(hot_only, 2500)
        trace_paths = [template.format(trace_id) for trace_id in ids for template in TRACE_PATHS]
        before = await _answers(hot_only, [*trace_paths, *_searches(ids)])
        moved = await archive_older_half(hot_only, tmp_path, ids)
    assert 0 < len(moved) < len(ids)
    assert moved == ids[: len(moved)]  # oldest first
    archived = set(moved)
    for answer, tiers in before.values():
        assert set(tiers) <= {"hot"}, answer

    async with serve_api(archive_url=f"file://{tmp_path}") as both:
        for trace_id in moved:
            assert await both.store.get_trace(trace_id) is None  # its hot rows went with the registration
        after = await _answers(both, trace_paths)
        for path in trace_paths:
            trace_id = path.split("/")[-1] if "/api/" in path else path.split("/")[2]
            answer, tiers = after[path]
            assert answer == before[path][0], path
            if not path.startswith("/api/v3/"):  # OTLP JSON has no trace object to carry the tier
                assert tiers == ["archive" if trace_id in archived else "hot"], path

        searches = await _answers(both, _searches(ids))
        for path, (answer, _) in searches.items():
            assert answer == before[path][0], path
        for path in _searches(ids)[:9]:  # a filter that finds nothing proves nothing; these span both tiers
            answer, tiers = searches[path]
            assert len(answer if isinstance(answer, list) else answer["data"]) > 0, path
            assert {"hot", "archive"} <= set(tiers), path
        assert searches[_searches(ids)[-1]][0]["result"]["resourceSpans"]


async def test_the_archive_button_pins_hot_and_archived_traces(
    serve_api: ServeApi, store: TraceStore, tmp_path: Path
) -> None:
    async with serve_api(archive_url=f"file://{tmp_path}") as api:
        ids = await _seed(api, 300)
        moved = await archive_older_half(api, tmp_path, ids)
        archived, hot = moved[0], ids[-1]
        for trace_id in (archived, hot):
            reply = await api.post(f"/api/archive/{trace_id}")
            assert reply.status == 200, reply.text
            assert reply.json["data"] == []
        assert await api.store.pinned_traces() >= {archived, hot}
        unknown = await api.post("/api/archive/0123456789abcdef0123456789abcdef")
        assert unknown.status == 404
        assert unknown.json["errors"][0]["code"] == 404
        assert "0123456789abcdef0123456789abcdef" not in await api.store.pinned_traces()


async def test_pages_over_several_blocks_and_the_hot_store_answer_as_before(
    serve_api: ServeApi, store: TraceStore, tmp_path: Path
) -> None:
    pages = [(limit, offset) for limit in (1, 5, 17) for offset in (0, 3, 11, 16, 30, 45)]
    queries = [TraceQuery(limit=limit, offset=offset) for limit, offset in pages]
    async with serve_api() as hot_only:
        ids = await _seed(hot_only, 1200, shards=2)  # two shards' blocks of each window overlap in time
        paths = [f"/traces/query?limit={limit}&offset={offset}" for limit, offset in pages]
        paths += [f"/api/traces?service=api-gateway&limit={limit}" for limit, _ in pages]
        before = await _answers(hot_only, paths)
        expected = [await store.find_traces(query) for query in queries]
        topic, quarter = hot_only.settings.topic, len(ids) // 4
        moved = [
            await archive_before(
                store, tmp_path, f"{topic}/{shard}", T0_US + n * quarter * 1000, unique=f"q{n}s{shard}"
            )
            for n in (1, 2, 3)
            for shard in (0, 1)
        ]
    assert all(moved) and sum(map(len, moved)) < len(ids)
    async with serve_api(archive_url=f"file://{tmp_path}") as both:
        after = await _answers(both, paths)
    for path in paths:
        assert after[path][0] == before[path][0], path
    assert {"hot", "archive"} <= {tier for _, tiers in after.values() for tier in tiers}
    one_block_at_a_time = TieredReads(store, FileObjectStore(tmp_path), blocks_at_once=1)  # stops between blocks
    for query, answer in zip(queries, expected, strict=True):
        assert [found.summary for found in await one_block_at_a_time.find_traces(query)] == answer, query


async def test_a_trace_in_both_tiers_is_answered_once_from_the_hot_store(
    serve_api: ServeApi, store: TraceStore, tmp_path: Path
) -> None:
    async with serve_api(archive_url=f"file://{tmp_path}") as api:
        ids = await _seed(api, 300)
        shard = f"{api.settings.topic}/0"
        copied = await archive_before(api.store, tmp_path, shard, T0_US + len(ids) * 1000, keep_hot=True)
        assert copied == ids
        for trace_id in (ids[0], ids[-1]):
            assert (await api.get(f"/traces/{trace_id}")).json["tier"] == "hot"
        found = (await api.get("/traces/query?limit=1000")).json
        assert [row["traceId"] for row in found] == ids[::-1]  # newest first, each once
        assert {row["tier"] for row in found} == {"hot"}


SHARD = "spans/0"


async def _finalized_traces(store: TraceStore, tmp_path: Path) -> tuple[TieredReads, list[float], list[str]]:
    """200 realistic traces finalized in shard ``spans/0``, and reads over ``tmp_path``'s archive whose
    catalog is read again once ``now[0]`` is 5 s on."""
    now = [0.0]
    reads = TieredReads(store, FileObjectStore(tmp_path), refresh_s=5.0, clock=lambda: now[0])
    traces = list(realistic_traces(200, start_us=T0_US))
    spans = [span for trace in traces for span in trace]
    ids = [trace[0].trace_id for trace in traces]
    await store.write_batch(spans, [], shards=dict.fromkeys(ids, SHARD), now_us=NOW_US, grace_us=0, idle_us=0)
    await store.finalize(ids, now_us=NOW_US + 1)
    return reads, now, ids


async def test_registered_blocks_are_read_again_after_the_refresh_time(store: TraceStore, tmp_path: Path) -> None:
    reads, now, ids = await _finalized_traces(store, tmp_path)
    shard = SHARD
    assert await reads.blocks() == []
    moved = await archive_before(store, tmp_path, shard, T0_US + len(ids) * 1000)
    assert moved == ids
    now[0] = 4.9
    assert await reads.blocks() == [] and await reads.get_trace(ids[0]) is None  # not read again yet
    now[0] = 5.0
    assert [r.block.shard for r in await reads.blocks()] == [shard]
    found = await reads.get_trace(ids[0])
    assert found is not None and found.tier == "archive"


async def test_what_is_kept_of_a_block_goes_when_it_leaves_the_catalog(store: TraceStore, tmp_path: Path) -> None:
    reads, now, ids = await _finalized_traces(store, tmp_path)
    shard = SHARD
    await archive_before(store, tmp_path, shard, T0_US + len(ids) * 1000)
    found = await reads.get_trace(ids[0])
    assert found is not None and found.tier == "archive"
    reader = reads.reader
    assert reader is not None
    (name,) = [r.block.name for r in await reads.blocks()]
    assert name in reader._footers and any(key[0] == name for key in reader._groups)

    await store.drop_blocks([name])  # expired
    now[0] = 5.0
    assert await reads.blocks() == []
    assert name not in reader._footers and not any(key[0] == name for key in reader._groups)
    await reads.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_archive_away_is_a_503_for_archived_reads_only(
    serve_api: ServeApi, store: TraceStore, tmp_path: Path
) -> None:
    async with serve_api() as api:
        ids = await _seed(api, 300)
        moved = await archive_older_half(api, tmp_path, ids)
    away = f"s3://archive?endpoint=http://127.0.0.1:{_closed_port()}&region=us-east-1"
    async with serve_api(archive_url=away) as api:
        reply = await api.get(f"/traces/{moved[0]}")
        assert reply.status == 503
        assert "archive" in reply.json["error"]
        jaeger = await api.get(f"/api/traces/{moved[0]}")
        assert jaeger.status == 503
        hot = await api.get(f"/traces/{ids[-1]}")
        assert hot.status == 200
        assert hot.json["tier"] == "hot"
        assert (await api.get(f"/api/traces/{ids[-1]}")).status == 200


@pytest.mark.parametrize("path", ["/traces/{}", "/api/traces/{}"])
async def test_no_archive_answers_as_before(api: LiveApi, path: str) -> None:
    ids = await _seed(api, 50)
    reply = await api.get(path.format(ids[0]))
    assert reply.status == 200
    tier = reply.json["tier"] if path.startswith("/traces") else reply.json["data"][0]["tier"]
    assert tier == "hot"
    assert (await api.get(path.format("0123456789abcdef0123456789abcdef"))).status == 404
