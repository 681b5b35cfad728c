"""Percentiles that stay true: for random latency distributions, p50/p95/p99 read from the rollups over a
window (minute rows, hour rows, both, and per-hour time series) are within 2% of the exact percentiles
of the traces that started in it (the sketch promises 1%), through each real store."""

from __future__ import annotations

import itertools
import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.models import Span
from shared.store import TraceStore
from shared.store.base import ServiceStats, Window
from tests.percentiles import exact_percentile
from tests.store.test_contract import T0, span, write

MINUTE = 60_000_000
HOUR = 60 * MINUTE
BASE = (T0 // HOUR) * HOUR + 10 * HOUR  # an hour boundary, after every other test's traces
NOW = BASE + 4 * HOUR
QUANTILES = (0.5, 0.95, 0.99)
TOLERANCE = 0.02
MAX_US = 600_000_000
_names = itertools.count()


@st.composite
def latencies(draw: st.DrawFn) -> list[int]:
    """Durations (µs) of a random shape: log-normal (narrow to very wide), a mixture of two, uniform, a
    single value repeated, or any integers at all."""
    n = draw(st.integers(1, 120))
    rng = random.Random(draw(st.integers(0, 2**32)))
    shape = draw(st.sampled_from(["lognormal", "bimodal", "uniform", "constant", "raw"]))
    if shape == "raw":
        return draw(st.lists(st.integers(1, MAX_US), min_size=1, max_size=n))
    mu = draw(st.floats(math.log(20), math.log(50_000_000)))
    sigma = draw(st.floats(0.0, 2.5))
    if shape == "lognormal":
        values = [rng.lognormvariate(mu, sigma) for _ in range(n)]
    elif shape == "bimodal":
        far = mu + draw(st.floats(1.0, 6.0))
        values = [rng.lognormvariate(far if rng.random() < 0.1 else mu, sigma / 4) for _ in range(n)]
    elif shape == "uniform":
        values = [rng.uniform(1, math.exp(mu)) for _ in range(n)]
    else:
        values = [math.exp(mu)] * n
    return [min(MAX_US, max(1, round(v))) for v in values]


def traces_of(service: str, durations: list[int], starts: list[int]) -> list[Span]:
    """One trace per duration: a server root of ``service`` and a child in ``service-db`` half as long."""
    spans = []
    for i, (duration, start) in enumerate(zip(durations, starts, strict=True)):
        trace_id = f"{service}-{i}"
        spans.append(span(trace_id, "root", service=service, operation="op", start=start, duration=duration))
        spans.append(span(trace_id, "db", parent="root", service=f"{service}-db", start=start, duration=duration // 2))
    return spans


def assert_close(stats: ServiceStats, durations: list[int], where: str) -> None:
    assert stats.count == len(durations), where
    for q in QUANTILES:
        exact = exact_percentile(durations, q)
        got = stats.percentile_us(q)
        assert abs(got - exact) <= TOLERANCE * exact, f"{where}: p{round(q * 100)} {got} vs exact {exact}"


WINDOWS = [
    ("hour rows", Window(start_us=BASE, end_us=BASE + 3 * HOUR)),
    ("minute and hour rows", Window(start_us=BASE + 7 * MINUTE, end_us=BASE + 2 * HOUR + 13 * MINUTE)),
    ("minute rows", Window(start_us=BASE + 61 * MINUTE, end_us=BASE + 75 * MINUTE)),
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(durations=latencies(), data=st.data())
async def test_percentiles_over_a_window_are_within_two_percent(
    store: TraceStore, durations: list[int], data: st.DataObject
) -> None:
    service = f"p{next(_names)}"
    starts = data.draw(
        st.lists(st.integers(BASE, BASE + 3 * HOUR - 1), min_size=len(durations), max_size=len(durations))
    )
    spans = traces_of(service, durations, starts)
    await write(store, spans, now=NOW)
    assert len(await store.finalize(sorted({s.trace_id for s in spans}), now_us=NOW)) == len(durations)
    for name, window in WINDOWS:
        inside = [d for d, s in zip(durations, starts, strict=True) if window.start_us <= s < window.end_us]
        stats = await store.stats(window=window)
        if not inside:
            assert service not in stats.services
            continue
        assert_close(stats.services[service], inside, f"{name}: root spans (/stats)")
        assert_close(stats.services[f"{service}-db"], [d // 2 for d in inside], f"{name}: child spans")
        [endpoint] = await store.rollups("endpoints", window, service=service)
        assert_close(endpoint.stats(), inside, f"{name}: traces (endpoints)")
    for point in await store.rollups("operations", WINDOWS[0][1], step_us=HOUR, service=service):
        hour = [d for d, s in zip(durations, starts, strict=True) if point.t_us <= s < point.t_us + HOUR]
        assert_close(point.stats(), hour, f"hour {point.t_us}: time series")
