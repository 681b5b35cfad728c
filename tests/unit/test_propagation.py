"""W3C traceparent helpers: round trips, the specification's parsing rules, and agreement with the
OpenTelemetry SDK's own propagator."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.propagation import format_traceparent, new_span_id, new_trace_id, parse_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"

trace_ids = st.from_regex(r"\A[0-9a-f]{32}\Z").filter(lambda s: s.strip("0") != "")
span_ids = st.from_regex(r"\A[0-9a-f]{16}\Z").filter(lambda s: s.strip("0") != "")


@given(trace_ids, span_ids, st.booleans())
def test_round_trip(trace_id: str, span_id: str, sampled: bool) -> None:
    header = format_traceparent(trace_id, span_id, sampled)
    assert len(header) == 55
    assert parse_traceparent(header) == (trace_id, span_id, sampled)


def test_specification_example() -> None:
    header = f"00-{TRACE_ID}-{SPAN_ID}-01"
    assert parse_traceparent(header) == (TRACE_ID, SPAN_ID, True)
    assert parse_traceparent(header.encode()) == (TRACE_ID, SPAN_ID, True)
    assert parse_traceparent(f"00-{TRACE_ID}-{SPAN_ID}-00") == (TRACE_ID, SPAN_ID, False)
    assert format_traceparent(TRACE_ID, SPAN_ID) == header
    assert format_traceparent(TRACE_ID, SPAN_ID, sampled=False) == f"00-{TRACE_ID}-{SPAN_ID}-00"


def test_leniency() -> None:
    assert parse_traceparent(f"  00-{TRACE_ID.upper()}-{SPAN_ID.upper()}-01 ") == (TRACE_ID, SPAN_ID, True)
    assert parse_traceparent(f"00-{TRACE_ID}-{SPAN_ID}-03") == (TRACE_ID, SPAN_ID, True)  # other flags ignored
    # a future version may append fields; the first four are read
    assert parse_traceparent(f"01-{TRACE_ID}-{SPAN_ID}-01-what-ever") == (TRACE_ID, SPAN_ID, True)
    assert parse_traceparent(f"cc-{TRACE_ID}-{SPAN_ID}-00") == (TRACE_ID, SPAN_ID, False)
    assert format_traceparent(TRACE_ID.upper(), SPAN_ID.upper()) == f"00-{TRACE_ID}-{SPAN_ID}-01"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"ff-{TRACE_ID}-{SPAN_ID}-01",  # version ff is invalid
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",  # version 00 has exactly four fields
        f"00-{'0' * 32}-{SPAN_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",  # short trace id
        f"00-{TRACE_ID}0-{SPAN_ID}-01",  # long trace id
        f"00-{TRACE_ID}-{SPAN_ID[:-1]}-01",  # short span id
        f"00-{TRACE_ID}-{SPAN_ID}-1",  # short flags
        f"0-{TRACE_ID}-{SPAN_ID}-01",  # short version
        f"00-{TRACE_ID[:-1]}g-{SPAN_ID}-01",  # not hex
        f"00_{TRACE_ID}_{SPAN_ID}_01",
        f"00-{TRACE_ID}-{SPAN_ID}-01\n-x",
        b"\xff\xfe",
    ],
)
def test_invalid_headers(header: str | bytes | None) -> None:
    assert parse_traceparent(header) is None


@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [
        ("0" * 32, SPAN_ID),
        (TRACE_ID, "0" * 16),
        (TRACE_ID[:-1], SPAN_ID),
        (TRACE_ID, SPAN_ID + "0"),
        ("x" * 32, SPAN_ID),
    ],
)
def test_format_rejects_invalid_ids(trace_id: str, span_id: str) -> None:
    with pytest.raises(ValueError, match="must be"):
        format_traceparent(trace_id, span_id)


def test_new_ids() -> None:
    trace_ids = {new_trace_id() for _ in range(100)}
    span_ids = {new_span_id() for _ in range(100)}
    assert len(trace_ids) == 100 and len(span_ids) == 100
    for trace_id in trace_ids:
        for span_id in span_ids:
            assert parse_traceparent(format_traceparent(trace_id, span_id)) == (trace_id, span_id, True)
            break


@given(st.text(max_size=80) | st.binary(max_size=80))
def test_never_raises(header: str | bytes) -> None:
    parsed = parse_traceparent(header)
    assert parsed is None or (len(parsed[0]), len(parsed[1])) == (32, 16)


def test_agrees_with_the_sdk_propagator() -> None:
    """What we format, the OpenTelemetry propagator extracts; what it injects, we parse."""
    propagator = TraceContextTextMapPropagator()
    trace_id, span_id = new_trace_id(), new_span_id()
    context = propagator.extract({"traceparent": format_traceparent(trace_id, span_id, sampled=False)})
    span_context = trace.get_current_span(context).get_span_context()
    assert (f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}") == (trace_id, span_id)
    assert not span_context.trace_flags.sampled
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=context)
    assert parse_traceparent(carrier["traceparent"]) == (trace_id, span_id, False)
