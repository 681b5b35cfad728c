"""The load generator: realistic traces (shared.demo) published through the producer client at a given
rate or as fast as possible, with a progress line."""

from __future__ import annotations

import asyncio
import random
import sys
import time

from shared.demo import make_trace
from shared.kafka import SpanProducer, ensure_topics
from shared.settings import Settings


class LoadReport:
    def __init__(self) -> None:
        self.traces = 0
        self.spans = 0
        self.seconds = 0.0

    @property
    def spans_per_second(self) -> float:
        return self.spans / self.seconds if self.seconds else 0.0


async def generate(
    settings: Settings,
    *,
    traces: int,
    rate: float | None = None,
    seed: int = 1,
    progress: bool = True,
    error_rate: float = 0.01,
) -> LoadReport:
    """Publish ``traces`` traces (``rate`` traces/s, or unthrottled when ``None``)."""
    await ensure_topics(settings, [settings.topic])
    rng = random.Random(seed)
    report = LoadReport()
    started = time.monotonic()
    last_print = 0.0
    async with SpanProducer(settings) as producer:
        for i in range(traces):
            if rate:
                ahead = started + i / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            spans = make_trace(rng, time.time_ns() // 1000, error_rate=error_rate)
            await producer.send(spans)
            report.traces += 1
            report.spans += len(spans)
            now = time.monotonic()
            if progress and (now - last_print > 0.2 or i == traces - 1):
                last_print = now
                done = (i + 1) / traces
                bar = "#" * int(done * 30)
                sys.stderr.write(
                    f"\r[{bar:<30}] {i + 1}/{traces} traces {report.spans} spans "
                    f"{report.spans / max(now - started, 1e-9):,.0f} spans/s"
                )
                sys.stderr.flush()
        await producer.flush()
    report.seconds = time.monotonic() - started
    if progress:
        sys.stderr.write("\n")
    return report
