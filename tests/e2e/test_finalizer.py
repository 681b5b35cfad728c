"""The worker's finalizer process on the real broker: the worker's rounds run in a process of its own; a
killed one is replaced and every trace is still finalized exactly once; it ends with the worker. With
``finalize_process`` off, the rounds run in the worker."""

from __future__ import annotations

import os
import random
import signal
import time

import msgspec
import pytest

from shared.demo import make_trace
from shared.kafka import SpanProducer
from shared.models import Span
from shared.settings import Settings
from tests.e2e.helpers import process_alive, reader, running_worker, wait_for

pytestmark = pytest.mark.kafka


def _now_us() -> int:
    return time.time_ns() // 1000


async def _send(settings: Settings, traces: list[list[Span]]) -> None:
    async with SpanProducer(settings) as producer:
        for spans in traces:
            await producer.send(spans)
        await producer.flush()


async def _finalized_once(settings: Settings, traces: list[list[Span]]) -> bool:
    async with reader(settings) as store:
        for spans in traces:
            trace = await store.get_trace(spans[0].trace_id)
            if trace is None or trace.state != "finalized":
                return False
            assert trace.completeness.refinalizations == 0, trace.trace_id
            assert len(trace.spans) == len({s.span_id for s in spans})
    return True


async def test_a_killed_finalizer_process_is_replaced_and_nothing_is_finalized_twice(settings: Settings) -> None:
    rng = random.Random(41)
    first = [make_trace(rng, _now_us() - 1_000_000) for _ in range(40)]
    second = [make_trace(rng, _now_us() - 1_000_000) for _ in range(40)]
    async with running_worker(settings) as worker:
        finalizer = worker.finalizer
        assert finalizer is not None
        await wait_for(lambda: finalizer.pid is not None, timeout_s=30, what="finalizer process started")
        pid = finalizer.pid
        assert pid is not None and pid != os.getpid()

        await _send(settings, first)
        await wait_for(lambda: _finalized_once(settings, first), timeout_s=60, what="first traces finalized")
        assert finalizer.pid == pid

        os.kill(pid, signal.SIGKILL)
        await _send(settings, second)
        await wait_for(lambda: _finalized_once(settings, second), timeout_s=60, what="second traces finalized")
        replacement = finalizer.pid
        assert replacement is not None and replacement != pid
        assert worker.counters.traces_finalized == len(first) + len(second)
    assert not process_alive(replacement), "the finalizer process outlived its worker"
    assert await _finalized_once(settings, first + second)


async def test_with_finalize_process_off_the_worker_finalizes_inline(settings: Settings) -> None:
    settings = msgspec.structs.replace(settings, finalize_process=False)
    rng = random.Random(43)
    traces = [make_trace(rng, _now_us() - 1_000_000) for _ in range(20)]
    async with running_worker(settings) as worker:
        assert worker.finalizer is None
        await _send(settings, traces)
        await wait_for(lambda: _finalized_once(settings, traces), timeout_s=60, what="traces finalized")
        assert worker.counters.traces_finalized == len(traces)
