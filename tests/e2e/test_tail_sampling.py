"""Tail sampling per endpoint on the real broker (``TRACING_SAMPLE_TARGET_TPS``): every failed and every
slow trace kept; the ordinary traces of a busy endpoint kept at the target rate, those of a rare one
whole; the rollups count every trace all the same.

The endpoints' rates come from the rollups of the whole minutes before now: a first wave of traces
(start times spread evenly over the minutes around now, so every 5-minute window the worker may read
during the test sees the same rates: busy 0.5/s, rare 0.01/s) sets them. The second wave (start times
two hours back, outside any window the worker reads) is what the test checks: with a target of 0.1/s
the busy endpoint keeps a share 0.1 / 0.5 = 1/5 of its ordinary traces, the rare one all of them."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from shared.kafka import SpanProducer
from shared.models import Span
from shared.sampling import RATE_WINDOW_MINUTES
from shared.settings import Settings
from shared.store.base import Window
from tests.e2e.helpers import reader, running_worker, wait_for

pytestmark = pytest.mark.kafka

SECOND = 1_000_000
MINUTE = 60 * SECOND
TARGET_TPS = 0.1
BUSY_EVERY_US = 2 * SECOND  # 0.5 traces/s
RARE_EVERY_US = 100 * SECOND  # 0.01 traces/s
REFRESH_S = 1.0


def root(trace_id: str, operation: str, start_us: int, *, duration_us: int = 20_000, error: bool = False) -> Span:
    return Span(
        trace_id=trace_id,
        span_id="root",
        service_name="shop",
        operation_name=operation,
        start_time_us=start_us,
        duration_us=duration_us,
        status="error" if error else "success",
    )


def first_wave(now_us: int) -> list[Span]:
    """Evenly spread over [this minute - 6, this minute + 2): any window of the 5 whole minutes before a
    minute of the test lies inside."""
    start = now_us - now_us % MINUTE - (RATE_WINDOW_MINUTES + 1) * MINUTE
    end = start + (RATE_WINDOW_MINUTES + 3) * MINUTE
    busy = [root(f"warm-busy-{t}", "GET /busy", t) for t in range(start, end, BUSY_EVERY_US)]
    rare = [root(f"warm-rare-{t}", "GET /rare", t) for t in range(start, end, RARE_EVERY_US)]
    return busy + rare


def second_wave(now_us: int) -> dict[str, list[Span]]:
    base = now_us - 2 * 60 * MINUTE
    return {
        "ordinary": [root(f"busy-{i}", "GET /busy", base + i * SECOND) for i in range(400)],
        "failed": [root(f"failed-{i}", "GET /busy", base + i * SECOND, error=True) for i in range(20)],
        "slow": [root(f"slow-{i}", "GET /busy", base + i * SECOND, duration_us=2 * SECOND) for i in range(20)],
        "rare": [root(f"rare-{i}", "GET /rare", base + i * 30 * SECOND) for i in range(5)],
    }


async def send(settings: Settings, spans: list[Span]) -> None:
    async with SpanProducer(settings) as producer:
        for span in spans:
            await producer.send([span])
        await producer.flush()


async def finalized(settings: Settings, count: int) -> bool:
    async with reader(settings) as store:
        stats = await store.stats()
        return stats.completed_traces + stats.failed_traces >= count and stats.active_traces == 0


async def kept(settings: Settings, spans: list[Span]) -> list[str]:
    async with reader(settings) as store:
        return [s.trace_id for s in spans if await store.get_trace(s.trace_id) is not None]


@pytest.mark.parametrize("finalize_process", [True, False], ids=["finalizer-process", "inline"])
async def test_failed_and_slow_traces_kept_and_endpoints_at_the_target_rate(
    settings: Settings, finalize_process: bool
) -> None:
    settings = msgspec.structs.replace(
        settings,
        sample_target_tps=TARGET_TPS,
        sample_target_refresh_s=REFRESH_S,
        sample_slow_ms=1000,
        finalize_process=finalize_process,
    )
    now = time.time_ns() // 1000
    warm = first_wave(now)
    wave = second_wave(now)
    everything = len(warm) + sum(len(spans) for spans in wave.values())
    async with running_worker(settings):
        await send(settings, warm)
        await wait_for(lambda: finalized(settings, len(warm)), timeout_s=180, what="the first wave finalized")
        # every round that starts REFRESH_S after the first wave's rollups are in reads them whole
        await asyncio.sleep(1.5 * REFRESH_S)
        await send(settings, [s for spans in wave.values() for s in spans])
        await wait_for(lambda: finalized(settings, everything), timeout_s=180, what="the second wave finalized")

    assert await kept(settings, wave["failed"]) == [s.trace_id for s in wave["failed"]]
    assert await kept(settings, wave["slow"]) == [s.trace_id for s in wave["slow"]]
    assert await kept(settings, wave["rare"]) == [s.trace_id for s in wave["rare"]]
    ordinary = len(await kept(settings, wave["ordinary"]))
    expected = len(wave["ordinary"]) * TARGET_TPS / (SECOND / BUSY_EVERY_US)  # 400 * 1/5 = 80
    assert abs(ordinary - expected) <= 0.3 * expected, (ordinary, expected)

    # the rollups count every trace, kept or not
    async with reader(settings) as store:
        stats = await store.stats()
        assert stats.completed_traces + stats.failed_traces == everything
        base = now - 2 * 60 * MINUTE
        rows = await store.rollups("endpoints", Window(start_us=base, end_us=base + 10 * MINUTE))
        counts = {row.key[1]: (row.count, row.errors) for row in rows}
        assert counts == {"GET /busy": (440, 20), "GET /rare": (5, 0)}
