"""``/stats`` over a window lists its slowest traces: first looked for among the slowest of the whole
store (as many as each of ``SLOW_CANDIDATES`` in turn), else among the window's traces by their start
(the SQL stores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.store.base import Window
from shared.store.sql import statements
from tests.store.test_contract import MS, NOW, SECOND, T0, simple_trace, write
from tests.store.test_index_sweep import sql_store

DURATIONS = [100, 90, 80, 70, 60, 50, 40, 30, 20, 10]
"""Trace ``t{i}`` lasts ``DURATIONS[i]`` ms and starts ``i`` seconds after T0."""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    ("inside", "expected"),
    [
        ([0, 1, 5], ["t0", "t1"]),  # the window holds the store's slowest: found among the first 2
        ([1, 2, 7], ["t1", "t2"]),  # one among the first 2, two among 3
        ([1, 6, 8], ["t1", "t6"]),  # one among the 3 candidates: the window's own traces by start
        ([7, 9], ["t7", "t9"]),  # none among them
    ],
)
async def test_a_windows_slowest_traces(
    backend: str, inside: list[int], expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statements, "SLOW_CANDIDATES", (2, 3))
    async with sql_store(backend, tmp_path) as (_, store):
        window = Window(start_us=T0 + 100 * SECOND, end_us=T0 + 200 * SECOND)
        for i, duration in enumerate(DURATIONS):
            start = window.start_us + i * SECOND if i in inside else T0 + i * SECOND
            await write(store, simple_trace(f"t{i}", start=start, duration=duration * MS))
        await store.finalize([f"t{i}" for i in range(len(DURATIONS))], now_us=NOW)
        stats = await store.stats(slowest=2, window=window)
        assert [s.trace_id for s in stats.slowest] == expected
        assert [s.trace_id for s in (await store.stats(slowest=2)).slowest] == ["t0", "t1"]
