"""Jaeger's parameter syntaxes as :mod:`query_api.jaeger.common` reads them (pure functions, no server)."""

from __future__ import annotations

import pytest

from query_api.jaeger.common import (
    duration_bounds_us,
    go_bool,
    go_duration_ns,
    integer,
    result_limit,
    rfc3339_ns,
    tag_filters,
)
from query_api.jaeger.errors import Failure, ParamError

T0_NS = 1_732_500_000_000_000_000


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("0", 0),
        ("-0", 0),
        ("+0", 0),
        ("1ns", 1),
        ("500us", 500_000),
        ("500µs", 500_000),  # micro sign
        ("500μs", 500_000),  # Greek mu
        ("100ms", 100_000_000),
        ("1.2s", 1_200_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("1m", 60_000_000_000),
        ("1h30m", 5_400_000_000_000),
        ("2h45m0.5s", 9_900_500_000_000),
        ("1.0000000009s", 1_000_000_000),  # Go truncates below a nanosecond
        ("-1.5s", -1_500_000_000),
    ],
)
def test_go_durations(text: str, nanos: int) -> None:
    assert go_duration_ns(text) == nanos


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", 'invalid duration ""'),
        ("abc", 'invalid duration "abc"'),
        (".s", 'invalid duration ".s"'),
        (" 1s", 'invalid duration " 1s"'),
        ("1", 'missing unit in duration "1"'),
        ("1.5.2s", 'missing unit in duration "1.5.2s"'),
        ("1S", 'unknown unit "S" in duration "1S"'),
        ("3d", 'unknown unit "d" in duration "3d"'),
        ("9999999999h", 'invalid duration "9999999999h"'),
    ],
)
def test_bad_go_durations(text: str, error: str) -> None:
    with pytest.raises(ValueError, match="^" + error.replace(".", r"\.") + "$"):
        go_duration_ns(text)


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("2024-11-25T02:00:00Z", T0_NS),
        ("2024-11-25t02:00:00z", T0_NS),
        ("2024-11-25T02:00:00.5Z", T0_NS + 500_000_000),
        ("2024-11-25T02:00:00.123456789Z", T0_NS + 123_456_789),
        ("2024-11-25T03:30:00+01:30", T0_NS),
        ("2024-11-25T03:00:00 01:00", T0_NS),  # an unencoded "+" arrives as a space
        ("2024-11-25T01:00:00-01:00", T0_NS),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59Z", -1_000_000_000),
    ],
)
def test_rfc3339_times(text: str, nanos: int) -> None:
    assert rfc3339_ns(text) == nanos


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-11-25",
        "2024-11-25T02:00:00",  # no offset
        "2024-11-25 02:00:00Z",
        "2024-11-25T02:00:00.1234567890Z",  # more than nanoseconds
        "2024-02-30T00:00:00Z",
        "2024-11-25T24:00:00Z",
        "2024-11-25T02:00:60Z",
        "2024-11-25T02:00:00+24:00",
        "1732500000",
    ],
)
def test_bad_rfc3339_times(text: str) -> None:
    with pytest.raises(ValueError, match="as an RFC 3339 time"):
        rfc3339_ns(text)


def test_go_booleans() -> None:
    for text in ("1", "t", "T", "TRUE", "true", "True"):
        assert go_bool("raw", text) is True
    for text in ("0", "f", "F", "FALSE", "false", "False"):
        assert go_bool("raw", text) is False
    with pytest.raises(ParamError, match="raw: invalid syntax"):
        go_bool("raw", "yes")


def test_integers() -> None:
    assert integer("limit", "+12") == 12
    assert integer("limit", "-3") == -3
    assert integer("limit", str(2**31 - 1), bits=32) == 2**31 - 1
    with pytest.raises(ParamError, match="out of range"):
        integer("limit", str(2**31), bits=32)
    with pytest.raises(ParamError, match="invalid syntax"):
        integer("limit", "1e3")


def test_duration_bounds_round_inwards_and_zero_means_none() -> None:
    assert duration_bounds_us(("min", "1500ns"), ("max", "2500ns")) == (2, 2)
    assert duration_bounds_us(("min", "0"), ("max", "0s")) == (None, None)
    assert duration_bounds_us(None, ("max", "1ms")) == (None, 1000)
    assert duration_bounds_us(("min", "2s"), ("max", "0")) == (2_000_000, None)
    with pytest.raises(Failure, match="'max' should be greater than 'min'"):
        duration_bounds_us(("min", "2s"), ("max", "1s"))
    with pytest.raises(ParamError, match="must not be negative"):
        duration_bounds_us(("min", "-2s"), None)


def test_result_limits() -> None:
    assert result_limit(0, 20) == 20
    assert result_limit(-5, 100) == 100
    assert result_limit(7, 20) == 7
    assert result_limit(5000, 20) == 1000


def test_error_true_is_the_failed_status() -> None:
    assert tag_filters([("error", "true"), ("k", "v")]) == ("failed", (("k", "v"),))
    assert tag_filters([("error", "false")]) == (None, (("error", "false"),))
    assert tag_filters([("k", "1"), ("k", "2")]) == (None, (("k", "2"),))  # the last value of a key wins
