"""Tail sampling decisions: failed and slow traces always kept, a deterministic fraction of the rest."""

from __future__ import annotations

import msgspec
import pytest

from shared.analysis import analyze
from shared.models import Span
from shared.sampling import Sampler, sampler_for
from shared.settings import Settings


def _analysis(trace_id: str, *, duration_us: int = 1000, status: str = "success") -> object:
    span = Span(
        trace_id=trace_id, span_id="r", service_name="s", operation_name="o", start_time_us=0,
        duration_us=duration_us, status=status,  # type: ignore[arg-type]
    )  # fmt: skip
    return analyze(trace_id, [span])


def test_failed_and_slow_traces_are_always_kept() -> None:
    sampler = Sampler(rate=0.0, slow_us=5000)
    assert sampler.keep(_analysis("a", status="error"))  # type: ignore[arg-type]
    assert sampler.keep(_analysis("b", duration_us=5000))  # type: ignore[arg-type]
    assert not sampler.keep(_analysis("c"))  # type: ignore[arg-type]
    assert Sampler(rate=1.0, slow_us=5000).keep(_analysis("c"))  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_fraction_is_deterministic_and_close_to_the_rate(rate: float) -> None:
    sampler = Sampler(rate=rate, slow_us=10**12)
    ids = [f"{i:032x}" for i in range(20_000)]
    kept = [sampler.fraction_keeps(i) for i in ids]
    assert kept == [Sampler(rate=rate, slow_us=0).fraction_keeps(i) for i in ids]  # same answer everywhere
    assert abs(sum(kept) / len(ids) - rate) < 0.02


def test_rate_outside_0_1_is_rejected() -> None:
    with pytest.raises(ValueError, match="rate"):
        Sampler(rate=1.5, slow_us=0)
    assert msgspec.structs.asdict(_analysis("x"))["trace_id"] == "x"  # type: ignore[arg-type]


def test_the_settings_sampler_is_none_at_rate_one_and_takes_the_slow_threshold_in_ms() -> None:
    assert sampler_for(Settings.from_env({})) is None
    sampler = sampler_for(Settings.from_env({}, sample_rate=0.25, sample_slow_ms=40))
    assert sampler is not None and (sampler.rate, sampler.slow_us) == (0.25, 40_000)
