"""Error answers: JSON ``{"error": "..."}`` with the right status, a 400 naming the parameter; never a 500."""

from __future__ import annotations

import pytest

from .conftest import ServeApi
from .support import LiveApi, Reply

pytestmark = pytest.mark.kafka

START = {"serviceName": "api-gateway", "operationName": "handleUserRequest"}


def _error(reply: Reply, status: int) -> str:
    assert reply.status == status, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json
    assert set(body) == {"error"}
    message: str = body["error"]
    return message


# -- query parameters --------------------------------------------------------------------------------


async def test_a_duration_that_is_not_a_number(api: LiveApi) -> None:
    assert _error(await api.get("/traces/query?minDuration=abc"), 400) == "minDuration: must be a number"
    assert _error(await api.get("/traces/query?maxDuration=nan"), 400) == "maxDuration: must be a number"
    assert _error(await api.get("/traces/query?minDuration=1e400"), 400) == "minDuration: must be a number"
    assert _error(await api.get("/traces/query?minDuration=1_000"), 400) == "minDuration: must be a number"


async def test_a_negative_duration(api: LiveApi) -> None:
    assert _error(await api.get("/traces/query?minDuration=-1"), 400) == "minDuration: must be >= 0"


async def test_a_time_that_is_not_a_number(api: LiveApi) -> None:
    assert _error(await api.get("/traces/query?start=yesterday"), 400) == "start: must be a number"
    assert _error(await api.get("/traces/query?end=1e99"), 400) == "end: must be <= 10000000000000"


async def test_limit_out_of_range(api: LiveApi) -> None:
    assert _error(await api.get("/traces/query?limit=0"), 400) == "limit: must be between 1 and 1000"
    assert _error(await api.get("/traces/query?limit=1001"), 400) == "limit: must be between 1 and 1000"
    assert _error(await api.get("/traces/query?limit=ten"), 400) == "limit: must be an integer"
    assert _error(await api.get("/traces/query?limit=2.5"), 400) == "limit: must be an integer"


async def test_a_negative_offset(api: LiveApi) -> None:
    assert _error(await api.get("/traces/query?offset=-1"), 400) == "offset: must be >= 0"


async def test_min_duration_above_max_duration(api: LiveApi) -> None:
    reply = await api.get("/traces/query?minDuration=500&maxDuration=100")
    assert _error(reply, 400) == "maxDuration: must be >= minDuration"


async def test_start_after_end(api: LiveApi) -> None:
    assert _error(await api.get("/traces/query?start=2000&end=1000"), 400) == "end: must be >= start"


async def test_an_unknown_status(api: LiveApi) -> None:
    message = _error(await api.get("/traces/query?status=done"), 400)
    assert message == "status: must be one of active, completed, failed, success, error"


async def test_a_tag_without_a_value_separator(api: LiveApi) -> None:
    assert _error(await api.get("/traces/query?tag=region"), 400) == "tag: expected key:value, got 'region'"
    assert _error(await api.get("/traces/query?tag=:eu"), 400) == "tag: expected key:value, got ':eu'"


async def test_an_empty_service_name(api: LiveApi) -> None:
    assert _error(await api.get("/traces/query?serviceName="), 400) == "serviceName: must not be empty"


async def test_an_unknown_parameter(api: LiveApi) -> None:
    message = _error(await api.get("/traces/query?minduration=500"), 400)
    assert message.startswith("minduration: unknown parameter; known: serviceName, operationName, ")


async def test_a_parameter_given_twice(api: LiveApi) -> None:
    assert _error(await api.get("/traces/query?limit=1&limit=2"), 400) == "limit: must be given at most once"


# -- paths and methods -------------------------------------------------------------------------------


async def test_an_unknown_trace(api: LiveApi) -> None:
    for suffix in ("", "/visualize", "/analyze"):
        reply = await api.get(f"/traces/no-such-trace{suffix}")
        assert _error(reply, 404) == "trace no-such-trace not found"


async def test_a_bad_trace_id_in_the_path(api: LiveApi) -> None:
    message = _error(await api.get("/traces/bad%20id"), 400)
    assert message == "traceId: must be 1..64 characters of [A-Za-z0-9._:-]"
    assert _error(await api.get("/traces/" + "x" * 65 + "/analyze"), 400).startswith("traceId: ")


async def test_an_unknown_route(api: LiveApi) -> None:
    assert _error(await api.get("/nothing/here"), 404) == "not found: /nothing/here"
    assert _error(await api.get("/traces/a/b/c"), 404) == "not found: /traces/a/b/c"


async def test_a_wrong_method(api: LiveApi) -> None:
    reply = await api.request("DELETE", "/traces/abc")
    assert _error(reply, 405).startswith("method DELETE not allowed on /traces/abc")
    assert set(reply.headers["Allow"].split(",")) == {"GET", "HEAD"}
    reply = await api.get("/traces/span/finish")
    _error(reply, 405)
    assert reply.headers["Allow"] == "POST"
    reply = await api.post("/stats", {})
    _error(reply, 405)
    assert set(reply.headers["Allow"].split(",")) == {"GET", "HEAD"}
    for route in ("/traces/start", "/traces/span"):  # write routes, not trace ids, for every method
        reply = await api.get(route)
        _error(reply, 405)
        assert reply.headers["Allow"] == "POST"
        reply = await api.request("OPTIONS", route)
        _error(reply, 405)
        assert reply.headers["Allow"] == "POST"


# -- bodies ------------------------------------------------------------------------------------------


async def test_a_body_that_is_not_json(api: LiveApi) -> None:
    message = _error(await api.post("/traces/start", b'{"serviceName": '), 400)
    assert message.startswith("body: invalid JSON: ")


async def test_an_empty_body(api: LiveApi) -> None:
    assert _error(await api.post("/traces/span"), 400) == "body: a JSON object is required"


async def test_a_body_that_is_not_an_object(api: LiveApi) -> None:
    assert _error(await api.post("/traces/start", [1, 2]), 400) == "body: Expected `object`, got `array`"


async def test_a_missing_field(api: LiveApi) -> None:
    reply = await api.post("/traces/start", {"serviceName": "api-gateway"})
    assert _error(reply, 400) == "operationName: required field is missing"
    reply = await api.post("/traces/span", {"serviceName": "a", "operationName": "b"})
    assert _error(reply, 400) == "traceId: required field is missing"
    assert _error(await api.post("/traces/span/finish", {}), 400) == "spanId: required field is missing"


async def test_a_field_of_the_wrong_type(api: LiveApi) -> None:
    reply = await api.post("/traces/start", {**START, "serviceName": 7})
    assert _error(reply, 400) == "serviceName: Expected `str`, got `int`"
    reply = await api.post("/traces/span", {**START, "traceId": "t", "duration": "45"})
    assert _error(reply, 400) == "duration: Expected `float | null`, got `str`"
    reply = await api.post("/traces/span", {**START, "traceId": "t", "duration": -1})
    assert _error(reply, 400) == "duration: Expected `float` >= 0.0"


async def test_an_empty_name(api: LiveApi) -> None:
    reply = await api.post("/traces/start", {**START, "operationName": ""})
    assert _error(reply, 400) == "operationName: Expected `str` of length >= 1"


async def test_a_bad_status(api: LiveApi) -> None:
    reply = await api.post("/traces/span", {**START, "traceId": "t", "status": "meh"})
    assert _error(reply, 400).startswith("status: Invalid enum value 'meh'")


async def test_a_bad_tag_value(api: LiveApi) -> None:
    reply = await api.post("/traces/start", {**START, "tags": {"k": None}})
    assert _error(reply, 400).startswith("tags: Expected `bool | int | float | str`, got `null`")
    reply = await api.post("/traces/start", {**START, "tags": {"k": {"nested": 1}}})
    assert _error(reply, 400).startswith("tags: ")
    reply = await api.post("/traces/span", {**START, "traceId": "t", "logs": [{"fields": {"k": [1]}}]})
    assert _error(reply, 400).startswith("logs[0].fields: ")


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/traces/start", "traceId", "has space"),
        ("/traces/start", "parentSpanId", "x" * 65),
        ("/traces/span", "traceId", "trace\n"),  # Python's "$" would accept the final newline
        ("/traces/span", "spanId", "ümlaut"),
        ("/traces/span", "parentSpanId", ""),
        ("/traces/span/finish", "spanId", "a/b"),
        ("/traces/span/finish", "traceId", "a b"),
    ],
)
async def test_a_bad_id(api: LiveApi, path: str, field: str, value: str) -> None:
    body = {**START, "traceId": "t", "spanId": "s", field: value}
    assert _error(await api.post(path, body), 400) == f"{field}: must be 1..64 characters of [A-Za-z0-9._:-]"


async def test_a_bad_traceparent_field(api: LiveApi) -> None:
    reply = await api.post("/traces/start", {**START, "traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"})
    assert _error(reply, 400) == "traceparent: not a valid W3C traceparent"
    reply = await api.post("/traces/start", {**START, "traceparent": "garbage"})
    assert _error(reply, 400).startswith("traceparent: ")


async def test_a_body_over_the_limit(serve_api: ServeApi) -> None:
    async with serve_api(max_body_bytes=1024) as api:
        reply = await api.post("/traces/start", {**START, "tags": {"blob": "x" * 2000}})
        assert _error(reply, 413) == "body: larger than 1024 bytes"
        reply = await api.post("/traces/start", {**START, "tags": {"blob": "x" * 500}})
        assert reply.status == 201


# -- tokens ------------------------------------------------------------------------------------------


async def test_tokens(serve_api: ServeApi) -> None:
    async with serve_api(read_tokens=("reader", "reader-2"), write_tokens=("writer",)) as api:
        missing = await api.get("/stats")
        assert _error(missing, 401).startswith("a bearer token is required")
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert _error(await api.post("/traces/start", START), 401).startswith("a bearer token is required")
        not_bearer = await api.get("/stats", headers={"Authorization": "Basic cmVhZGVyOg=="})
        _error(not_bearer, 401)

        wrong = await api.get("/stats", headers={"Authorization": "Bearer nope"})
        assert _error(wrong, 403) == "the bearer token is not accepted for this operation"

        reader = {"Authorization": "Bearer reader"}
        assert (await api.get("/stats", headers=reader)).status == 200
        assert (await api.get("/traces/query", headers={"Authorization": "bearer reader-2"})).status == 200
        assert (await api.get("/metrics", headers=reader)).status == 200
        assert _error(await api.post("/traces/start", START, headers=dict(reader)), 403)

        writer = {"Authorization": "Bearer writer"}
        assert (await api.post("/traces/start", START, headers=dict(writer))).status == 201
        _error(await api.get("/stats", headers=writer), 403)  # tokens are per direction

        # Always open, and unknown routes answer 404 before any token check.
        assert (await api.get("/healthz")).status == 200
        assert (await api.get("/openapi.json")).status == 200
        _error(await api.get("/nothing"), 404)


async def test_open_by_default(api: LiveApi) -> None:
    assert (await api.get("/stats")).status == 200
    assert (await api.post("/traces/start", START)).status == 201


async def test_the_document_declares_security_only_when_tokens_are_set(serve_api: ServeApi) -> None:
    async with serve_api() as open_api:
        document = (await open_api.get("/openapi.json")).json
        assert document["paths"]["/stats"]["get"]["security"] == []
    async with serve_api(read_tokens=("r",)) as closed:
        paths = (await closed.get("/openapi.json")).json["paths"]
        assert paths["/stats"]["get"]["security"] == [{"bearerAuth": []}]
        assert set(paths["/stats"]["get"]["responses"]) == {"200", "400", "401", "403"}  # 400: a bad window
        assert paths["/traces/start"]["post"]["security"] == []
        assert paths["/healthz"]["get"]["security"] == []
