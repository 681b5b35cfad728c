"""Faults on a 3-node Cassandra cluster (replication factor 3): three ``python -m ingest`` processes share a
12-partition topic of unkeyed, duplicated spans (one trace's spans on several partitions, so on several
workers at once); one worker is SIGKILLed and restarted, one Cassandra node is SIGKILLed mid-stream and
started again. Afterwards every span is stored once, every trace is finalized, the rollups are exact
(per service, per window, the dependencies) and sampled analyses equal the offline ``analyze()``.

The cluster is this test's own (``scripts/cassandra.sh up --nodes 3`` on free ports in a temp dir),
stopped in a ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from shared.analysis import analyze
from shared.codecs.native import encode_native
from shared.demo import make_trace
from shared.kafka import SpanProducer, ensure_topics
from shared.models import Span
from shared.settings import Settings
from shared.store import TraceStore, open_store
from shared.store.base import Window
from shared.store.cassandra.config import CassandraConfig, CassandraError
from tests.conftest import CASSANDRA_SH, cassandra_ports
from tests.e2e.helpers import (
    assert_analyzed_as_offline,
    assert_stored_as_sent,
    finalized_counts,
    send_paced,
    wait_for,
    wait_progress,
)
from tests.e2e.workers import WorkerProcess, stop_all
from tests.prerequisites import missing, require_cassandra_driver

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.timeout(600),  # three nodes take 1-2 min to start on 2 shared cores, before the test proper
]

TRACES = 500
"""About 12,000 spans, 16,000 with the duplicates: each written to three replicas on 2 shared cores."""
STEP = TRACES // 10
"""The traces finalized between one fault and the next: the first fault lands a tenth into the stream."""
SECOND = 1_000_000


def _cluster(state: Path, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CASSANDRA_SH), *args, "--dir", str(state)], capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL, state dir) of a fresh 3-node cluster on 127.0.0.1 .. 127.0.0.3; stopped and removed after.

    ``TRACING_TEST_CASSANDRA_CLUSTER_DIR`` names the state dir of a running 3-node cluster of
    ``scripts/cassandra.sh`` to use instead (a keyspace of the test's own in it; left running): to iterate
    on this test without starting three nodes every time."""
    require_cassandra_driver()
    existing = os.environ.get("TRACING_TEST_CASSANDRA_CLUSTER_DIR")
    if existing:
        found = _cluster(Path(existing), "url")
        assert found.returncode == 0, found.stderr
        base = CassandraConfig.from_url(found.stdout.strip().splitlines()[-1])
        keyspace = f"faults_{uuid.uuid4().hex[:16]}"
        yield msgspec.structs.replace(base, keyspace=keyspace).url(with_password=True), Path(existing)
        return
    state = tmp_path / "cassandra"
    try:
        up = _cluster(state, "up", "--nodes", "3", *cassandra_ports(3), timeout_s=900)
        if up.returncode != 0:
            missing(f"no 3-node Cassandra cluster: scripts/cassandra.sh up failed:\n{up.stderr[-3000:]}")
        yield up.stdout.strip().splitlines()[-1], state
    finally:
        _cluster(state, "down", "--purge", timeout_s=180)


def _unkeyed_messages(rng: random.Random, traces: list[list[Span]]) -> list[bytes]:
    """Each trace's spans in 1-3 messages, plus a third of its spans again in one more: sent without a
    key, they land on several partitions, duplicates included."""
    messages: list[bytes] = []
    for spans in traces:
        shuffled = rng.sample(spans, len(spans))
        parts = rng.randint(1, min(3, len(spans)))
        for i in range(parts):
            messages.append(encode_native(shuffled[i::parts]))
        again = rng.sample(spans, max(1, len(spans) // 3))
        messages.append(encode_native(again))
    rng.shuffle(messages)
    return messages


async def test_worker_and_node_killed_mid_stream_lose_and_double_nothing(
    settings: Settings, cluster: tuple[str, Path], tmp_path: Path
) -> None:
    url, state = cluster
    settings = msgspec.structs.replace(settings, store_url=url, partitions=12, idle_timeout_s=4.0, grace_ms=300)
    rng = random.Random(16)
    begin = time.time_ns() // 1000 - 60 * SECOND
    traces = [make_trace(rng, begin + i * 20_000) for i in range(TRACES)]
    messages = _unkeyed_messages(rng, traces)
    await ensure_topics(settings, [settings.topic, settings.dlq_topic])
    store = await open_store(settings)  # creates the keyspace and tables before the workers race for them
    logs = iter(tmp_path / f"worker-{i}.log" for i in range(10))
    workers = [WorkerProcess(settings, next(logs)) for _ in range(3)]
    sent = asyncio.Event()

    async def produce() -> None:
        # a steady flow over ~18 s, so that both kills land mid-stream
        async with SpanProducer(settings) as producer:
            await send_paced(messages, 18.0, 100, lambda value: producer.send_raw(value, key=None), producer.flush)
        sent.set()

    async def progressed(by: int) -> None:
        async def traces_finalized() -> int:
            return (await finalized_counts(store))[1]

        await wait_progress(traces_finalized, by, sent, "traces finalized", interval_s=0.5)

    producing = asyncio.create_task(produce())
    node_back: asyncio.Task[subprocess.CompletedProcess[str]] | None = None
    try:
        await progressed(STEP)
        workers[0].kill()  # SIGKILL: no commit, no leaving the group, a finalize round maybe half done
        workers[0] = WorkerProcess(settings, next(logs))
        await progressed(STEP)
        killed = _cluster(state, "kill", "--node", "3", timeout_s=60)
        assert killed.returncode == 0, killed.stderr
        await progressed(STEP)  # QUORUM (2 of 3 replicas) goes on without node 3
        node_back = asyncio.create_task(asyncio.to_thread(_cluster, state, "start", "--node", "3"))
        await producing
        await _wait_drained(store, traces, workers)
        await _wait_all_finalized(store, traces)
        started = await node_back
        assert started.returncode == 0, started.stderr[-3000:]
    finally:
        producing.cancel()
        codes = stop_all(workers)
        if node_back is not None:
            await asyncio.wait([node_back], timeout=300)
    assert codes == [0] * len(workers), "\n".join(w.output()[-3000:] for w in workers)

    try:
        await _assert_rollups_exact(store, traces)
        sample = rng.sample(traces, 200)
        stored = await assert_analyzed_as_offline(store, sample)
        assert [sorted(s.span_id for s in t.spans) for t in stored] == [sorted(s.span_id for s in t) for t in sample]
    finally:
        await store.close()


STALL_S = 90.0
"""How long the drain may see no count move before it fails: a loaded host is slow, not lossy."""


async def _wait_drained(store: TraceStore, traces: list[list[Span]], workers: list[WorkerProcess]) -> None:
    """Until every span is stored and every trace finalized, counted once. Fails when the counts stop
    moving for :data:`STALL_S` short of (or beyond) that, however long the whole takes (the test's timeout
    bounds it)."""
    expected = (sum(len(t) for t in traces), len(traces), 0)
    seen: list[tuple[int, int, int]] = []
    moved_at = time.monotonic()
    while not seen or seen[-1] != expected:
        try:
            counts = await finalized_counts(store)
        except CassandraError:  # a read timing out on the loaded cluster while it recovers: asked again
            counts = seen[-1] if seen else (0, 0, 0)
        if not seen or counts != seen[-1]:
            moved_at = time.monotonic()
        seen.append(counts)
        if time.monotonic() - moved_at > STALL_S:
            # (spans, finalized, active): short of the expected is slow or lost, beyond it is counted twice
            tails = "\n".join(f"--- worker {i}:\n{w.output()[-2000:]}" for i, w in enumerate(workers))
            raise AssertionError(
                f"no progress for {STALL_S:.0f} s short of every span stored and every trace finalized: "
                f"expected {expected}, last seen {seen[-5:]}\n{tails}"
            )
        await asyncio.sleep(1)


async def _wait_all_finalized(store: TraceStore, traces: list[list[Span]]) -> None:
    """A trace can be re-opened by a duplicate that raced its finalization (two workers wrote the same
    spans as two chunks): its counts are already right, and it is finalized again soon."""
    pending = [t[0].trace_id for t in traces]

    async def all_finalized() -> bool:
        left: list[str] = []
        for i in range(0, len(pending), 100):
            part = pending[i : i + 100]
            states = await asyncio.gather(*(store.get_trace(t) for t in part))
            left.extend(t for t, s in zip(part, states, strict=True) if s is None or s.state != "finalized")
        pending[:] = left
        return not pending

    await wait_for(all_finalized, timeout_s=60, what="every trace finalized (none re-opened)", interval_s=1)


async def _assert_rollups_exact(store: TraceStore, traces: list[list[Span]]) -> None:
    """Every trace counted once, at every grain, and its dependencies too."""
    stats = await assert_stored_as_sent(store, traces)
    per_service = Counter(s.service_name for t in traces for s in t)
    failed = sum(1 for t in traces if any(s.status == "error" for s in t))
    assert (stats.completed_traces, stats.failed_traces) == (len(traces) - failed, failed)
    # the minute and hour slices sum to the same counts as all time
    first = min(s.start_time_us for t in traces for s in t)
    last = max(s.start_time_us for t in traces for s in t)
    windowed = await store.stats(window=Window(start_us=first, end_us=last + 1))
    assert {k: v.count for k, v in windowed.services.items()} == dict(per_service)
    calls: Counter[tuple[str, str]] = Counter()
    for spans in traces:
        for d in analyze(spans[0].trace_id, spans).dependencies:
            calls[d.parent, d.child] += d.calls
    assert {(d.parent, d.child): d.calls for d in await store.dependencies()} == dict(calls)
