"""Tag redaction at ingest: every default key and value pattern, log fields, and what is left alone."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.models import Event, Log, Span, SpanFinish, Tags
from shared.redact import REDACTED, Redactor, branches
from shared.settings import Settings

DEFAULTS = Settings.from_env({})


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(DEFAULTS.redact_keys, DEFAULTS.redact_values)


@pytest.mark.parametrize(
    "key",
    ["password", "db.password", "PASSWD", "user.pass", "client_secret", "auth.token", "access_token",
     "Authorization", "http.request.header.authorization", "api_key", "x-api-key", "apiKey", "cookie",
     "set-cookie", "aws.credentials", "userPassword", "clientSecret"],
)  # fmt: skip
def test_sensitive_keys_are_redacted(redactor: Redactor, key: str) -> None:
    assert redactor.tags({key: "s3cr3t", "http.method": "GET"}) == {key: REDACTED, "http.method": "GET"}


@pytest.mark.parametrize(
    "value",
    ["alice@example.com", "contact: bob.smith+tag@mail.example.org", "4111 1111 1111 1111",
     "4111-1111-1111-1111", "card 5500005555555559 used"],
)  # fmt: skip
def test_sensitive_values_are_redacted(redactor: Redactor, value: str) -> None:
    assert redactor.tags({"note": value}) == {"note": REDACTED}


@pytest.mark.parametrize(
    "tags",
    [{"http.status_code": 200, "user.id": "user-123"}, {"cache.hit": True, "ratio": 0.5},
     {"order.id": "1234-5678"}, {"passenger_count": 3, "db.statement": "SELECT 1"},
     {"llm.max_tokens": 512, "tokenizer": "bpe", "compass": "north"},
     {"service.instance.id": "8a1b2c3d-4e5f-4a1b-8123-456789012345"}, {"request.id": "req-4111111111111111"}],
)  # fmt: skip
def test_ordinary_tags_are_untouched(redactor: Redactor, tags: dict[str, object]) -> None:
    assert redactor.tags(tags) is None  # type: ignore[arg-type]


@given(st.uuids())
def test_uuids_are_never_taken_for_card_numbers(value: uuid.UUID) -> None:
    """An SDK's random ``service.instance.id`` can hold 16 digits joined by a dash (about one UUID in a
    thousand): a card number is 13-16 digits that are not part of a longer token."""
    assert Redactor(DEFAULTS.redact_keys, DEFAULTS.redact_values).tags({"service.instance.id": str(value)}) is None


def test_non_string_values_of_sensitive_keys_are_redacted_too(redactor: Redactor) -> None:
    assert redactor.tags({"token": 12345}) == {"token": REDACTED}


def test_events_redact_span_tags_finish_tags_and_log_fields(redactor: Redactor) -> None:
    span = Span(
        trace_id="t", span_id="s", service_name="svc", operation_name="op", start_time_us=1,
        tags={"password": "x", "ok": 1},
        logs=(Log(timestamp_us=2, fields={"event": "login", "email": "eve@example.com"}),),
    )  # fmt: skip
    finish = SpanFinish(trace_id="t", span_id="s", end_time_us=3, tags={"authorization": "Bearer abc"})
    clean = Span(trace_id="t", span_id="c", service_name="svc", operation_name="op", start_time_us=1, tags={"a": 1})
    events: list[Event] = [span, finish, clean]
    out = redactor.events(events)
    assert isinstance(out[0], Span)
    assert out[0].tags == {"password": REDACTED, "ok": 1}
    assert out[0].logs[0].fields == {"event": "login", "email": REDACTED}
    assert out[1].tags == {"authorization": REDACTED}
    assert out[2] is clean  # unchanged events are not copied
    assert span.tags["password"] == "x"  # the input is not mutated


def test_a_span_whose_logs_need_no_redaction_is_not_copied(redactor: Redactor) -> None:
    span = Span(
        trace_id="t", span_id="s", service_name="svc", operation_name="op", start_time_us=1,
        logs=(Log(timestamp_us=2, fields={"event": "retry"}), Log(timestamp_us=3, fields={"attempt": 2})),
    )  # fmt: skip
    assert redactor.events([span])[0] is span


def test_events_redact_resource_attributes_once_per_resource(redactor: Redactor) -> None:
    """OTLP resource attributes (``Span.resource``, one dict shared by the spans of a resource) are redacted
    as tags are; the spans of one resource keep sharing one (redacted) dict; a clean resource is kept."""
    shared_resource: Tags = {"host.name": "web-1", "deploy.api_key": "k-123", "owner": "ops@example.com"}
    clean_resource: Tags = {"host.name": "web-2"}
    spans = [
        Span(trace_id="t", span_id=f"s{i}", service_name="svc", operation_name="op", start_time_us=1,
             resource=shared_resource)
        for i in range(3)
    ] + [Span(trace_id="t", span_id="c", service_name="svc", operation_name="op", start_time_us=1,
              resource=clean_resource)]  # fmt: skip
    out = redactor.events(spans)
    assert all(isinstance(span, Span) for span in out)
    first, second, third, clean = (span for span in out if isinstance(span, Span))
    assert first.resource == {"host.name": "web-1", "deploy.api_key": REDACTED, "owner": REDACTED}
    assert first.resource is second.resource is third.resource
    assert clean is spans[3] and clean.resource is clean_resource
    assert shared_resource["deploy.api_key"] == "k-123"  # the input is not mutated


def test_custom_patterns_and_off() -> None:
    custom = Redactor(r"^internal\.", r"\bSECRET-\d+\b")
    assert custom.tags({"internal.id": "1", "password": "x", "v": "SECRET-42"}) == {
        "internal.id": REDACTED, "password": "x", "v": REDACTED}  # fmt: skip
    assert Redactor("", "").tags({"password": "x"}) is None
    assert Settings.from_env({"TRACING_REDACT": "false"}).redact is False


def test_cached_and_short_values_decide_as_the_pattern_does() -> None:
    """The per-value cache and the shortest-match skip never change a decision: every value is redacted
    exactly when the value pattern finds it, asked once or many times."""
    r = Redactor("", Settings().redact_values)
    values = ["a@b.c", "ab.c", "4111 1111 1111 1111", "4111", "GET", "x" * 3, "user@example.com", ""]
    for _ in range(3):
        for value in values:
            expected = re.search(Settings().redact_values, value) is not None
            assert (r.tags({"k": value}) is not None) == expected, value


PREVIOUS_DEFAULT = r"[\w.+-]+@[\w-]+\.[\w.-]+|(?<![\w-])\d(?:[ -]?\d){12,15}(?![\w-])"
"""The default value pattern as first written: the one now set finds an e-mail from its ``@``."""


@given(st.text(alphabet="ab.+-@ 0123456789_xé", max_size=40))
def test_the_default_value_pattern_finds_what_it_always_found(value: str) -> None:
    redactor = Redactor("", DEFAULTS.redact_values)
    assert (redactor.tags({"v": value}) is not None) == (re.search(PREVIOUS_DEFAULT, value) is not None)


SPLIT_PATTERNS = [r"a+b|c", r"(a|b)c|[|c]d", r"\|a|b(?=c)", r"[^]|a]+|(?:ab|ba)$", r"x|(?<=a)b|\d{2}"]


@pytest.mark.parametrize("pattern", SPLIT_PATTERNS)
@given(value=st.text(alphabet="abcdx|]12", max_size=12))
def test_a_pattern_searched_branch_by_branch_matches_what_it_matched(pattern: str, value: str) -> None:
    assert branches(pattern) != [pattern]
    assert any(re.search(b, value) for b in branches(pattern)) == (re.search(pattern, value) is not None)


def test_patterns_that_cannot_be_split_stay_whole() -> None:
    assert branches("(?i)a|b") == ["(?i)a|b"]  # its flags belong to every branch
    assert branches(r"a\|b") == [r"a\|b"]
    assert branches("[a|b]") == ["[a|b]"]
    assert branches("(a|b)") == ["(a|b)"]
