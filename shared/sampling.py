"""Tail sampling, decided once per trace at finalization (the whole trace is known by then).

Kept: every failed trace, every trace at least ``slow_us`` long, and of the rest (the ordinary traces)
either a fixed ``rate`` (``TRACING_SAMPLE_RATE``) or, when ``target_tps`` is set
(``TRACING_SAMPLE_TARGET_TPS``), up to that many traces per second per endpoint (root service, root
operation), which then replaces the fixed rate.

Per endpoint: its ordinary traffic is what the rollups count over the last :data:`RATE_WINDOW_MINUTES`
whole minutes (traces without failure, each with its adjusted count, so it is the producers' traffic),
read through the store, so every worker of every process reads the same rates; each worker keeps them
for ``refresh_s`` seconds. An endpoint with ordinary rate r keeps a share f = min(1, target / r) of it: a
trace of adjusted count w (it stands for w traces of the traffic) is kept with probability min(1, f * w),
so the traces kept stand for target traces/s of the traffic. An endpoint the rollups have not counted
yet keeps everything.

Every decision is a hash of the trace id below a threshold, so every worker and every re-finalization
decides the same way (as long as they read the same rates). A dropped trace still counts in the rollups
(``/stats`` counts every trace before sampling); its spans are deleted, and spans arriving for it later are
dropped too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from shared.analysis import TraceAnalysis
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.store.base import TraceStore

log = logging.getLogger(__name__)

RATE_WINDOW_MINUTES: Final = 5
"""The whole minutes before the current one whose rollups give each endpoint's rate."""
MINUTE_US: Final = 60_000_000
HASH_RANGE: Final = 2**64

EndpointRates = Mapping[tuple[str, str], float]
"""(root service, root operation) -> ordinary traces per second of the traffic."""


def trace_hash(trace_id: str) -> int:
    """The 64-bit hash of a trace id every sampling decision compares with its threshold."""
    return int.from_bytes(hashlib.blake2b(trace_id.encode(), digest_size=8).digest(), "big")


class Sampler:
    def __init__(self, rate: float, slow_us: int, *, target_tps: float = 0.0, refresh_s: float = 10.0) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if target_tps < 0:
            raise ValueError("target_tps must be >= 0")
        self.rate = rate
        self.slow_us = slow_us
        self.target_tps = target_tps
        self.refresh_us = int(refresh_s * 1_000_000)
        self.rates: EndpointRates = {}
        self.read_at_us: int | None = None
        """When :attr:`rates` were last read (``None``: never)."""
        self._threshold = int(rate * HASH_RANGE)

    @property
    def keeps_everything(self) -> bool:
        return self.rate >= 1.0 and not self.target_tps

    def fraction_keeps(self, trace_id: str) -> bool:
        return trace_hash(trace_id) < self._threshold

    def endpoint_keeps(self, analysis: TraceAnalysis, weight: int = 1) -> bool:
        """The per-endpoint rule for an ordinary trace of adjusted count ``weight``."""
        rate = self.rates.get((analysis.root_service or "", analysis.root_operation or ""), 0.0)
        if rate <= self.target_tps:
            return True
        keep = min(1.0, self.target_tps * weight / rate)
        return trace_hash(analysis.trace_id) < int(keep * HASH_RANGE)

    def keep(self, analysis: TraceAnalysis, weight: int = 1) -> bool:
        if self.keeps_everything or analysis.failed or analysis.duration_us >= self.slow_us:
            return True
        if self.target_tps:
            return self.endpoint_keeps(analysis, weight)
        return self.fraction_keeps(analysis.trace_id)

    async def refresh(self, store: TraceStore, now_us: int) -> None:
        """Read the endpoints' rates again when the per-endpoint rule is on and they are older than the
        refresh interval. A failed read keeps the rates held (logged): the store may be briefly away."""
        if not self.target_tps or (self.read_at_us is not None and now_us - self.read_at_us < self.refresh_us):
            return
        try:
            self.rates = await endpoint_rates(store, now_us)
        except Exception as exc:  # the store's failure: decide with the rates held, try again next round
            log.warning("sampling: cannot read the endpoints' rates (%s: %s)", type(exc).__name__, exc)
            return
        self.read_at_us = now_us


async def endpoint_rates(store: TraceStore, now_us: int) -> dict[tuple[str, str], float]:
    """Each endpoint's ordinary traces per second (its traces without failure, with their adjusted counts)
    over the :data:`RATE_WINDOW_MINUTES` whole minutes before ``now_us``'s."""
    from shared.store.base import Window

    end = now_us - now_us % MINUTE_US
    window = Window(start_us=end - RATE_WINDOW_MINUTES * MINUTE_US, end_us=end)
    seconds = RATE_WINDOW_MINUTES * 60
    rows = await store.rollups("endpoints", window, sketch=False)
    return {(row.key[0], row.key[1]): (row.count - row.errors) / seconds for row in rows}


def sampler_for(settings: Settings) -> Sampler | None:
    """The sampler of ``TRACING_SAMPLE_RATE``, ``TRACING_SAMPLE_TARGET_TPS`` and ``TRACING_SAMPLE_SLOW_MS``;
    ``None`` when every trace is kept (rate 1, no target)."""
    if settings.sample_rate >= 1 and not settings.sample_target_tps:
        return None
    return Sampler(
        settings.sample_rate,
        settings.sample_slow_ms * 1000,
        target_tps=settings.sample_target_tps,
        refresh_s=settings.sample_target_refresh_s,
    )
