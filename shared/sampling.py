"""Tail sampling, decided once per trace at finalization (the whole trace is known by then).

Kept: every failed trace, every trace at least ``slow_us`` long, and a deterministic ``rate`` of the
rest (by a hash of the trace id, so every worker and every re-finalization decides the same way).
A dropped trace still counts in the rollups (``/stats`` counts every trace before sampling); its spans
are deleted, and spans arriving for it later are dropped too.
"""

from __future__ import annotations

import hashlib

from shared.analysis import TraceAnalysis
from shared.settings import Settings


class Sampler:
    def __init__(self, rate: float, slow_us: int) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        self.rate = rate
        self.slow_us = slow_us
        self._threshold = int(rate * 2**64)

    @property
    def keeps_everything(self) -> bool:
        return self.rate >= 1.0

    def fraction_keeps(self, trace_id: str) -> bool:
        digest = hashlib.blake2b(trace_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self._threshold

    def keep(self, analysis: TraceAnalysis) -> bool:
        return (
            self.keeps_everything
            or analysis.failed
            or analysis.duration_us >= self.slow_us
            or self.fraction_keeps(analysis.trace_id)
        )


def sampler_for(settings: Settings) -> Sampler | None:
    """The sampler of ``TRACING_SAMPLE_RATE`` and ``TRACING_SAMPLE_SLOW_MS``; ``None`` when every trace is
    kept (rate 1)."""
    return Sampler(settings.sample_rate, settings.sample_slow_ms * 1000) if settings.sample_rate < 1 else None
