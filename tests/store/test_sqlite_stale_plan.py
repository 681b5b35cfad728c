"""SQLite without a trace cache (a finalizer process) plans a round in a read transaction and writes it
in the write transaction that follows. A span written in between changes the trace's row, so the plan is
stale: the round is planned again under the write lock, and the summary counts the new span. An unchanged
row writes the plan as it is."""

from __future__ import annotations

from pathlib import Path

from shared.models import Span
from shared.store.sql import writer
from shared.store.sql.driver import run_sync
from shared.store.sqlite import SqliteStore
from shared.store.sqlite.driver import SqliteDriver

T0 = 1_732_500_000_000_000
SHARDS = {"t1": "spans/0"}


def _span(span_id: str, parent: str | None = None) -> Span:
    return Span(
        trace_id="t1",
        span_id=span_id,
        parent_span_id=parent,
        service_name="gateway" if parent is None else "db",
        operation_name="op",
        start_time_us=T0,
        duration_us=10_000,
    )


async def _write(store: SqliteStore, spans: list[Span]) -> None:
    await store.write_batch(spans, [], shards=SHARDS, now_us=T0, grace_us=0, idle_us=60_000_000)


def _plan(store: SqliteStore) -> writer.Planned:
    """A round planned in a read transaction (on the store's thread)."""
    return store._read(lambda c: run_sync(writer.plan_round(SqliteDriver(c), None, ["t1"], sampler=None)))


def _finalize(store: SqliteStore, planned: writer.Planned) -> writer.Finalized:
    """The round written in a write transaction (on the store's thread)."""
    return store._tx(
        lambda c: run_sync(writer.finalize(SqliteDriver(c), None, ["t1"], now_us=T0, sampler=None, planned=planned))
    )


async def test_a_plan_made_before_a_write_is_made_again(tmp_path: Path) -> None:
    store = await SqliteStore.open(str(tmp_path / "traces.db"))
    try:
        await _write(store, [_span("root"), _span("a", "root")])

        planned = await store._run(
            lambda: store._read(lambda c: run_sync(writer.plan_round(SqliteDriver(c), None, ["t1"], sampler=None)))
        )
        assert planned.plan.summaries[0].analysis.span_count == 2
        await _write(store, [_span("b", "root")])  # a second chunk: the row the plan was made from changed

        done = await store._run(
            lambda: store._tx(
                lambda c: run_sync(
                    writer.finalize(SqliteDriver(c), None, ["t1"], now_us=T0, sampler=None, planned=planned)
                )
            )
        )
        assert done.plan is not planned.plan
        assert done.plan.summaries[0].analysis.span_count == 3
        trace = await store.get_trace("t1")
        assert trace is not None and trace.analysis is not None and trace.analysis.span_count == 3
    finally:
        await store.close()


async def test_an_unchanged_row_writes_the_plan_made_before(tmp_path: Path) -> None:
    store = await SqliteStore.open(str(tmp_path / "traces.db"))
    try:
        await _write(store, [_span("root"), _span("a", "root")])

        def plan_then_finalize() -> tuple[writer.Planned, writer.Finalized]:
            planned = store._read(lambda c: run_sync(writer.plan_round(SqliteDriver(c), None, ["t1"], sampler=None)))
            done = store._tx(
                lambda c: run_sync(
                    writer.finalize(SqliteDriver(c), None, ["t1"], now_us=T0, sampler=None, planned=planned)
                )
            )
            return planned, done

        planned, done = await store._run(plan_then_finalize)
        assert done.plan is planned.plan
        trace = await store.get_trace("t1")
        assert trace is not None and trace.state == "finalized"
    finally:
        await store.close()
