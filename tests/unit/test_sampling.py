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


def _endpoint_analysis(trace_id: str, operation: str, *, status: str = "success", duration_us: int = 1000) -> object:
    span = Span(
        trace_id=trace_id, span_id="r", service_name="shop", operation_name=operation, start_time_us=0,
        duration_us=duration_us, status=status,  # type: ignore[arg-type]
    )  # fmt: skip
    return analyze(trace_id, [span])


def test_per_endpoint_target_keeps_a_busy_endpoints_share_and_a_rare_one_whole() -> None:
    sampler = Sampler(rate=1.0, slow_us=5000, target_tps=2.0)
    assert not sampler.keeps_everything
    sampler.rates = {("shop", "busy"): 20.0, ("shop", "rare"): 1.0}
    ids = [f"{i:032x}" for i in range(20_000)]
    busy = [sampler.keep(_endpoint_analysis(i, "busy")) for i in ids]  # type: ignore[arg-type]
    assert abs(sum(busy) / len(ids) - 0.1) < 0.01  # 2/s of 20/s
    assert all(sampler.keep(_endpoint_analysis(i, "rare")) for i in ids[:500])  # type: ignore[arg-type]
    assert all(sampler.keep(_endpoint_analysis(i, "new")) for i in ids[:500])  # type: ignore[arg-type]  # not counted yet
    assert all(sampler.keep(_endpoint_analysis(i, "busy", status="error")) for i in ids[:500])  # type: ignore[arg-type]
    assert all(sampler.keep(_endpoint_analysis(i, "busy", duration_us=5000)) for i in ids[:500])  # type: ignore[arg-type]
    # a trace that stands for 5 of the traffic (head-sampled at 1/5) is kept 5 times as often
    weighted = [sampler.keep(_endpoint_analysis(i, "busy"), 5) for i in ids]  # type: ignore[arg-type]
    assert abs(sum(weighted) / len(ids) - 0.5) < 0.02
    assert all(w for b, w in zip(busy, weighted, strict=True) if b)  # the same hash: a superset
    assert sampler.keep(_endpoint_analysis(ids[0], "busy"), 10)  # type: ignore[arg-type]


def test_the_target_setting_makes_a_sampler_and_empty_means_off() -> None:
    assert sampler_for(Settings.from_env({"TRACING_SAMPLE_TARGET_TPS": ""})) is None
    sampler = sampler_for(
        Settings.from_env({"TRACING_SAMPLE_TARGET_TPS": "2.5", "TRACING_SAMPLE_TARGET_REFRESH_S": "3"})
    )
    assert sampler is not None and (sampler.target_tps, sampler.refresh_us, sampler.rate) == (2.5, 3_000_000, 1.0)
    with pytest.raises(ValueError, match="target_tps"):
        Sampler(rate=1.0, slow_us=0, target_tps=-1)


class _AwayStore:
    """A store whose reads fail, as one that is briefly away."""

    async def rollups(self, *args: object, **kwargs: object) -> list[object]:
        raise ConnectionRefusedError("store away")


async def test_a_failed_rate_read_keeps_the_rates_held_and_retries_next_round(caplog: pytest.LogCaptureFixture) -> None:
    sampler = Sampler(rate=1.0, slow_us=5000, target_tps=1.0, refresh_s=10)
    sampler.rates = {("shop", "busy"): 20.0}
    await sampler.refresh(_AwayStore(), 1_000_000)  # type: ignore[arg-type]
    assert sampler.rates == {("shop", "busy"): 20.0} and sampler.read_at_us is None
    assert "cannot read the endpoints' rates" in caplog.text
    await Sampler(rate=0.5, slow_us=0).refresh(_AwayStore(), 0)  # type: ignore[arg-type]  # no target: no read
