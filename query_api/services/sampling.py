"""Remote sampling strategies (``/api/sampling``, the gRPC ``SamplingManager``): per (service, root
operation) probabilities from each endpoint's estimated traffic (:mod:`shared.remote_sampling`).

Recomputed every ``TRACING_REMOTE_SAMPLING_INTERVAL_S``: a strategy is computed at the last multiple of the
interval (epoch time) from the traces stored then, so every replica that asks the same store in the same
interval answers the same, whichever one a producer polls.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Final

from shared.adjusted_counts import trace_probability
from shared.remote_sampling import SamplingStrategyResponse, strategy
from shared.settings import Settings
from shared.store.base import TraceQuery, TraceStore, TraceSummary

from .clock import Clock, now_us

WINDOW_INTERVALS: Final = 3
"""The traffic estimate spans this many intervals (a busy endpoint kept at 1 trace/s: 180 traces by default)."""
SETTLE_US: Final = 2_000_000
"""The estimate ends this long before the interval starts: traces of the last moments may not be stored yet."""
SEARCH_LIMIT: Final = 1000
"""The most recent traces of a service read per estimate; past that, the rate is over the time they cover."""
WEIGHT_SAMPLE: Final = 20
"""The traces per endpoint whose root spans are read for their sampling probability."""
CACHED_SERVICES: Final = 10_000


async def endpoint_rates(
    store: TraceStore, service: str, end_us: int, window_us: int, *, weigh: int = WEIGHT_SAMPLE
) -> dict[str, float]:
    """Estimated traces per second of each root operation of ``service``, over the traces that started in
    ``[end_us - window_us, end_us)``: each endpoint's count of received traces times the mean weight (1 /
    the sampling probability, :func:`~shared.adjusted_counts.trace_probability`) of ``weigh`` of them
    spread evenly over their start times (the probabilities change from interval to interval: the newest
    alone would weigh the whole window by the last one), per second. Not from the endpoints' rollups,
    though they count the same adjusted counts: a minute is their finest grain, and an interval can be
    shorter.

    Costs one search of at most :data:`SEARCH_LIMIT` traces and ``weigh`` trace reads per endpoint."""
    query = TraceQuery(service_name=service, start_us=end_us - window_us, end_us=end_us - 1, limit=SEARCH_LIMIT)
    found = await store.find_traces(query)
    covered_us = window_us
    if len(found) == SEARCH_LIMIT:  # newest first: these cover the end of the window only
        covered_us = max(1, end_us - min(summary.start_us for summary in found))
    by_operation: dict[str, list[TraceSummary]] = defaultdict(list)
    for summary in found:
        if summary.root_service == service and summary.root_operation:
            by_operation[summary.root_operation].append(summary)
    rates: dict[str, float] = {}
    for operation, traces in by_operation.items():
        weights = [await _trace_weight(store, summary.trace_id) for summary in _spread(traces, weigh)]
        rates[operation] = len(traces) * (sum(weights) / len(weights)) * 1_000_000 / covered_us
    return rates


def _spread(traces: list[TraceSummary], count: int) -> list[TraceSummary]:
    """``count`` of ``traces`` (all when there are no more) at even steps of their start order."""
    ordered = sorted(traces, key=lambda summary: (summary.start_us, summary.trace_id))
    if len(ordered) <= count:
        return ordered
    return [ordered[int((i + 0.5) * len(ordered) / count)] for i in range(count)]


async def _trace_weight(store: TraceStore, trace_id: str) -> float:
    """How many traces of the traffic the stored trace stands for (1 when it is gone)."""
    stored = await store.get_trace(trace_id)
    return 1.0 if stored is None else float(1 / trace_probability(stored.spans))


class SamplingService:
    """Strategies per service, each computed once per interval (per process: the requests that come while
    it is computed wait for that one computation) and then served from memory. A computation that failed
    (the store away) is not kept: the next request tries again."""

    def __init__(self, store: TraceStore, settings: Settings, clock: Clock = now_us) -> None:
        self._store = store
        self._target_tps = settings.remote_sampling_target_tps
        self._interval_us = max(1, int(settings.remote_sampling_interval_s * 1_000_000))
        self._clock = clock
        self._computed: dict[str, tuple[int, asyncio.Task[SamplingStrategyResponse]]] = {}

    async def strategy(self, service: str) -> SamplingStrategyResponse:
        """The strategy of ``service`` for the current interval."""
        now = self._clock()
        at_us = now - now % self._interval_us
        cached = self._computed.get(service)
        if cached is None or cached[0] != at_us:
            if len(self._computed) >= CACHED_SERVICES:
                self._computed = {key: value for key, value in self._computed.items() if not value[1].done()}
            cached = self._computed[service] = (at_us, asyncio.create_task(self._compute(service, at_us)))
        task = cached[1]
        try:
            return await asyncio.shield(task)  # a request that goes away does not cancel the others' answer
        except Exception:
            if self._computed.get(service) == cached:
                del self._computed[service]
            raise

    async def _compute(self, service: str, at_us: int) -> SamplingStrategyResponse:
        return strategy(await self.rates(service, at_us), self._target_tps)

    async def rates(self, service: str, at_us: int) -> dict[str, float]:
        """The estimated rates a strategy computed at ``at_us`` (an interval's start) is made of."""
        end_us = at_us - SETTLE_US
        return await endpoint_rates(self._store, service, end_us, WINDOW_INTERVALS * self._interval_us)
