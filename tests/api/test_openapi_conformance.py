"""schemathesis against the served ``/openapi.json``: generated requests, valid and invalid, for every
operation; no answer is a 500 and every answer conforms to the document (status, content type, schema).

The server runs on the test's event loop; schemathesis (synchronous, ``requests``) runs in a worker thread.
Tokens are configured, so the document declares bearer auth and schemathesis also checks that it is
enforced. Bounded: a handful of examples per operation and mode, derandomized for reproducible runs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import Case, CheckFunction, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from .conftest import ServeApi

pytestmark = pytest.mark.kafka

EXAMPLES_PER_OPERATION_AND_MODE = 5
READ_TOKEN, WRITE_TOKEN = "reader-token", "writer-token"


_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _breaks_a_cross_parameter_rule(case: Case[Any]) -> bool:
    """Valid one by one (what a schema can say), rejected with a documented 400 naming the parameter:
    minDuration > maxDuration, start > end (or after now, when end defaults to now), a window together with
    start/end, end without start, tail
    together with minDuration, a window longer than 400 days or a time series of more than 1440 steps."""
    query = case.query or {}
    if "window" in query and ("start" in query or "end" in query):
        return True
    if "end" in query and "start" not in query and "window" not in query:
        return True
    if "tail" in query and "minDuration" in query:
        return True
    try:
        if "start" in query and "end" not in query and float(query["start"]) >= time.time() * 1000:
            return True  # the window's end defaults to now
    except (TypeError, ValueError):
        pass

    def span_ms(name: str) -> int | None:
        text = str(query.get(name, ""))
        unit = next((u for u in ("ms", "s", "m", "h", "d") if text.endswith(u) and text[: -len(u)].isdigit()), None)
        return int(text[: -len(unit)]) * _UNIT_MS[unit] if unit else None

    window_ms = span_ms("window")
    for length in (window_ms, span_ms("baseline")):
        if length is not None and not 0 < length <= 400 * 86_400_000:
            return True
    if case.path == "/stats/timeseries":
        if window_ms is None:
            try:
                start = float(query["start"]) if "start" in query else None
                end = float(query["end"]) if "end" in query else None
            except (TypeError, ValueError):
                return False
            window_ms = int((end - start) if start is not None and end is not None else 3_600_000)
        try:
            step = float(query.get("step", 60_000))
        except (TypeError, ValueError):
            return False
        if step > 0 and window_ms / step > 1439:
            return True

    def number(name: str) -> float | None:
        value = query.get(name)
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):
            return None

    pairs = (("minDuration", "maxDuration"), ("start", "end"))
    return any((low := number(a)) is not None and (high := number(b)) is not None and low > high for a, b in pairs)


def _fuzz(document: dict[str, Any], base_url: str) -> list[str]:
    """Run every operation in both generation modes; returns the operations exercised."""
    schema = schemathesis.openapi.from_dict(document)
    exercised: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        definition = document["paths"][operation.path][operation.method.lower()]
        has_inputs = bool(definition.get("parameters") or definition.get("requestBody"))
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_inputs else (GenerationMode.POSITIVE,)
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode)

            @hypothesis.settings(
                max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def check(case: Case[Any]) -> None:
                token = WRITE_TOKEN if case.method.upper() == "POST" else READ_TOKEN
                excluded: list[CheckFunction] = (
                    [positive_data_acceptance] if _breaks_a_cross_parameter_rule(case) else []
                )
                case.call_and_validate(
                    base_url=base_url, headers={"Authorization": f"Bearer {token}"}, excluded_checks=excluded
                )

            check()
            exercised.append(f"{mode.value} {operation.label}")
    return exercised


async def test_every_operation_conforms_to_the_document(serve_api: ServeApi) -> None:
    async with serve_api(read_tokens=(READ_TOKEN,), write_tokens=(WRITE_TOKEN,)) as api:
        document = (await api.get("/openapi.json")).json
        exercised = await asyncio.to_thread(_fuzz, document, api.url)
    operations = {label.split(" ", 1)[1] for label in exercised}
    assert len(operations) == 17, exercised
