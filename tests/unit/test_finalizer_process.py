"""The finalizer process without a broker: a round in the child finalizes the due traces of the shards it
is given, in the store the worker writes (a real SQLite file), and answers with the span metrics; a child
that cannot open the store fails its rounds with the store's error, and is not restarted on every round;
stopping it ends the process. A round cut into shares (a store's ``concurrent_finalizes``) counts the
shares that committed when another failed."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.finalizer.child import finalize_round, shares_of
from ingest.finalizer.client import FinalizerError, FinalizerProcess
from ingest.finalizer.protocol import Round
from shared.settings import Settings
from shared.store import TraceStore, open_store
from shared.store.rollups import Contribution
from tests.e2e.helpers import gateway_trace, process_alive

T0 = 1_732_500_000_000_000


def _running(finalizer: FinalizerProcess) -> int | None:
    return finalizer.pid


async def test_a_round_in_the_child_finalizes_the_due_traces_of_its_shards(tmp_path: Path) -> None:
    settings = Settings.from_env({}, store_url=f"sqlite:///{tmp_path / 'traces.db'}")
    store = await open_store(settings, writer=True)
    finalizer = FinalizerProcess(settings)
    try:
        spans = [*gateway_trace("t1", T0), *gateway_trace("t2", T0, error=True), *gateway_trace("t3", T0)]
        shards = {"t1": "spans/0", "t2": "spans/0", "t3": "spans/1"}
        await store.write_batch(spans, [], shards=shards, now_us=T0, grace_us=0, idle_us=60_000_000)

        done = await finalizer.round(["spans/0"], 10)
        pid = finalizer.pid
        assert pid is not None and pid != os.getpid()
        assert (done.due, done.finalized) == (2, 2)
        calls = {(s[0], s[1], s[3]): s[4] for s in done.span_sums}
        assert calls == {
            ("gateway", "GET /orders", "STATUS_CODE_UNSET"): 1,
            ("gateway", "GET /orders", "STATUS_CODE_ERROR"): 1,
            ("db", "SELECT", "STATUS_CODE_UNSET"): 2,
        }
        for trace_id in ("t1", "t2"):
            trace = await store.get_trace(trace_id)
            assert trace is not None and trace.state == "finalized" and len(trace.spans) == 2
        untouched = await store.get_trace("t3")  # another shard's trace: not this round's
        assert untouched is not None and untouched.state == "active"

        again = await finalizer.round(["spans/0"], 10)
        assert (again.due, again.finalized) == (0, 0)
        assert finalizer.pid == pid  # one child for every round
    finally:
        await finalizer.stop()
        await store.close()
    assert _running(finalizer) is None
    assert not process_alive(pid)


async def test_a_backlog_is_finalized_in_rounds_back_to_back_until_one_is_not_full(tmp_path: Path) -> None:
    settings = Settings.from_env({}, store_url=f"sqlite:///{tmp_path / 'traces.db'}")
    store = await open_store(settings, writer=True)
    finalizer = FinalizerProcess(settings)
    try:
        ids = [f"t{i:02d}" for i in range(25)]
        spans = [span for trace_id in ids for span in gateway_trace(trace_id, T0)]
        shards = dict.fromkeys(ids, "spans/0")
        await store.write_batch(spans, [], shards=shards, now_us=T0, grace_us=0, idle_us=60_000_000)
        asked: list[list[str]] = []
        answers: list[tuple[int, int]] = []

        def shards_now() -> list[str]:
            asked.append(["spans/0"])
            return asked[-1]

        await finalizer.rounds(shards_now, 10, lambda done, seconds: answers.append((done.due, done.finalized)))

        # two full rounds, the one that was not (5), and the one queued behind it (nothing left)
        assert answers == [(10, 10), (10, 10), (5, 5), (0, 0)]
        assert len(asked) == len(answers)
        for trace_id in ids:
            trace = await store.get_trace(trace_id)
            assert trace is not None and trace.state == "finalized"
        single: list[int] = []
        await finalizer.rounds(shards_now, 10, lambda done, seconds: single.append(done.due), backlog=False)
        assert single == [0]
    finally:
        await finalizer.stop()
        await store.close()


async def test_a_child_that_cannot_open_the_store_fails_its_rounds_with_the_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-directory").write_text("")
    settings = Settings.from_env({}, store_url=f"sqlite:///{tmp_path / 'not-a-directory' / 'traces.db'}")
    finalizer = FinalizerProcess(settings)
    try:
        with pytest.raises(FinalizerError, match=r"did not start.*not-a-directory") as first:
            await finalizer.round(["spans/0"], 10)
        assert _running(finalizer) is None
        # within the retry delay a round fails at once, with the same error, and starts no process
        with pytest.raises(FinalizerError) as second:
            await finalizer.round(["spans/0"], 10)
        assert str(second.value) == str(first.value)
    finally:
        await finalizer.stop()


@given(st.lists(st.text(max_size=3), max_size=40), st.integers(1, 6))
def test_shares_cut_the_due_traces_in_order_into_near_equal_runs(due: list[str], parts: int) -> None:
    shares = shares_of(due, parts)
    assert [trace for share in shares for trace in share] == due
    assert len(shares) == min(parts, len(due))
    assert all(shares)
    if due:
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


class _HalfFailing:
    """A store whose finalize fails for the share holding trace "boom" (the other share commits)."""

    cache = None
    shared_by_processes = True
    concurrent_finalizes = 2

    async def due_traces(self, shards: set[str], now_us: int, limit: int) -> list[str]:
        return ["a", "b", "boom", "c"][:limit]

    async def finalize(
        self,
        trace_ids: Sequence[str],
        *,
        now_us: int,
        sampler: object = None,
        on_first: Callable[[Sequence[Contribution]], None] | None = None,
    ) -> list[str]:
        if "boom" in trace_ids:
            raise OSError("disk gone")
        return list(trace_ids)


async def test_a_round_counts_the_shares_that_committed_when_another_failed() -> None:
    done = await finalize_round(cast(TraceStore, _HalfFailing()), None, Round(shards=["spans/0"], limit=10))
    assert (done.due, done.finalized) == (4, 2)  # "a", "b" committed; "boom", "c" stay due
    assert done.error == "OSError: disk gone"
