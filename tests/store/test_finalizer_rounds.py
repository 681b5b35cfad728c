"""A finalizer process's round on PostgreSQL: the due traces are cut into ``concurrent_finalizes`` shares,
finalized at once in transactions of their own (real child, real database). Every trace is finalized
exactly once, and the rollups and span metrics count each once."""

from __future__ import annotations

from ingest.finalizer.client import FinalizerProcess
from shared.models import Span
from shared.settings import Settings
from shared.store import open_store
from shared.store.postgres import PostgresStore
from tests.e2e.helpers import gateway_trace

T0 = 1_732_500_000_000_000
TRACES = 41  # not a multiple of the shares


def _trace(n: int) -> list[Span]:
    return gateway_trace(f"t{n:03d}", T0 + n * 1000, error=n % 5 == 0)


async def test_a_round_in_concurrent_shares_finalizes_each_trace_once(postgres_url: str) -> None:
    assert PostgresStore.concurrent_finalizes > 1  # what this test is about
    settings = Settings.from_env({}, store_url=postgres_url)
    store = await open_store(settings, writer=True)
    finalizer = FinalizerProcess(settings)
    try:
        spans = [span for n in range(TRACES) for span in _trace(n)]
        shards = {span.trace_id: "spans/0" for span in spans}
        await store.write_batch(spans, [], shards=shards, now_us=T0, grace_us=0, idle_us=60_000_000)

        done = await finalizer.round(["spans/0"], 100)
        assert (done.due, done.finalized, done.error) == (TRACES, TRACES, None)
        assert sum(row[4] for row in done.span_sums) == 2 * TRACES  # every span of a first finalization, once
        errors = sum(row[4] for row in done.span_sums if row[3] == "STATUS_CODE_ERROR")
        assert errors == len(range(0, TRACES, 5))

        for n in range(TRACES):
            trace = await store.get_trace(f"t{n:03d}")
            assert trace is not None and trace.state == "finalized" and trace.completeness.refinalizations == 0
        stats = await store.stats()
        assert (stats.active_traces, stats.completed_traces, stats.failed_traces) == (0, TRACES - 9, 9)
        assert stats.services["db"].count == TRACES

        again = await finalizer.round(["spans/0"], 100)
        assert (again.due, again.finalized) == (0, 0)
    finally:
        await finalizer.stop()
        await store.close()
