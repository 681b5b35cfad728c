"""The Jaeger APIs where the real Jaeger UI (v1.73) and Jaeger's own query service showed differences
(issue 12), each compared with what Jaeger's code does; the Jaeger files read are named in each test.

Traces are decoded from OTLP (as the worker decodes the Collector's messages) and written straight into the
store, then read over HTTP from a live server, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.codecs.otlp import decode_otlp_json
from shared.models import Span

from .support import T0_US, LiveApi

pytestmark = pytest.mark.kafka

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0_NS = T0_US * 1000


def _attr(key: str, value: Any) -> dict[str, Any]:
    typed = {"stringValue": value} if isinstance(value, str) else {"intValue": str(value)}
    return {"key": key, "value": typed}


def _span(span_id: str, parent: str, name: str, start_ms: int, end_ms: int, kind: int, **extra: Any) -> dict[str, Any]:
    return {
        "traceId": TRACE, "spanId": span_id, "parentSpanId": parent, "name": name, "kind": kind,
        "startTimeUnixNano": str(T0_NS + start_ms * 1_000_000), "endTimeUnixNano": str(T0_NS + end_ms * 1_000_000),
        "status": {}, **extra,
    }  # fmt: skip


# One trace from three resources: checkout on two hosts (the same service, two processes for Jaeger), and
# payments; the scopes differ per library. As pdata's JSON marshaler writes it (ptrace/json_test.go).
REQUEST = {
    "resourceSpans": [
        {
            "resource": {"attributes": [_attr("service.name", "checkout"), _attr("host.name", "web-1"),
                                        _attr("process.pid", 42)]},
            "scopeSpans": [
                {"scope": {"name": "shop.http", "version": "1.4"},
                 "spans": [_span("00f067aa0ba902b7", "", "POST /checkout", 0, 50, 2,
                                 attributes=[_attr("http.method", "POST")])]},
                {"scope": {"name": "shop.db"},
                 "spans": [_span("00f067aa0ba902b8", "00f067aa0ba902b7", "INSERT", 5, 10, 3)]},
            ],
        },
        {
            "resource": {"attributes": [_attr("service.name", "payments")]},
            "scopeSpans": [{"scope": {}, "spans": [
                _span("00f067aa0ba902b9", "00f067aa0ba902b7", "charge", 12, 40, 2,
                      status={"code": 2, "message": "declined"})]}],
        },
        {
            "resource": {"attributes": [_attr("service.name", "checkout"), _attr("host.name", "web-2"),
                                        _attr("process.pid", 42)]},
            "scopeSpans": [{"scope": {"name": "shop.http", "version": "1.4"}, "spans": [
                _span("00f067aa0ba902ba", "00f067aa0ba902b7", "GET /cart", 20, 30, 1)]}],
        },
    ]
}  # fmt: skip


async def _seed(api: LiveApi) -> list[Span]:
    spans = [e for e in decode_otlp_json(json.dumps(REQUEST).encode()) if isinstance(e, Span)]
    await api.ingest(spans, now_us=T0_US + 1_000_000)
    await api.finalize(TRACE, now_us=T0_US + 2_000_000)
    return spans


def _kv(key: str, type_: str, value: Any) -> dict[str, Any]:
    return {"key": key, "type": type_, "value": value}


# -- resources and scopes ----------------------------------------------------------------------------


async def test_classic_processes_carry_the_resource_and_spans_the_scope(api: LiveApi) -> None:
    """Jaeger turns an OTLP resource into the span's process: ``service.name`` its service, the other
    attributes its tags (opentelemetry-collector-contrib ``pkg/translator/jaeger/traces_to_jaegerproto.go``,
    ``resourceToJaegerProtoProcess``), and the scope into the first span tags ``otel.scope.name`` /
    ``otel.scope.version`` (``getTagsFromInstrumentationLibrary``). Its UI model numbers the distinct
    processes ``p1``, ``p2``... in span order, one per distinct (service, tags) (jaeger
    ``model/converter/json/from_domain.go``, ``processHashtable``): checkout on two hosts is two processes."""
    await _seed(api)
    reply = await api.get(f"/api/traces/{TRACE}")
    assert reply.status == 200
    (trace,) = reply.json["data"]
    pid = _kv("process.pid", "int64", 42)
    assert trace["processes"] == {
        "p1": {"serviceName": "checkout", "tags": [_kv("host.name", "string", "web-1"), pid]},
        "p2": {"serviceName": "payments", "tags": []},
        "p3": {"serviceName": "checkout", "tags": [_kv("host.name", "string", "web-2"), pid]},
    }
    by_name = {span["operationName"]: span for span in trace["spans"]}
    names = ("POST /checkout", "INSERT", "charge", "GET /cart")
    assert [by_name[name]["processID"] for name in names] == ["p1", "p1", "p2", "p3"]
    assert by_name["POST /checkout"]["tags"] == [
        _kv("otel.scope.name", "string", "shop.http"),
        _kv("otel.scope.version", "string", "1.4"),
        _kv("http.method", "string", "POST"),
        _kv("span.kind", "string", "server"),
    ]
    assert by_name["INSERT"]["tags"] == [
        _kv("otel.scope.name", "string", "shop.db"),
        _kv("span.kind", "string", "client"),
    ]
    assert by_name["charge"]["tags"] == [
        _kv("otel.status_description", "string", "declined"),
        _kv("span.kind", "string", "server"),
        _kv("error", "bool", True),
    ]


async def test_v3_resources_and_scopes_are_otlps(api: LiveApi) -> None:
    """Jaeger's ``/api/v3`` answers OTLP (``cmd/query/app/apiv3/http_gateway.go`` marshals ``ptrace``
    as stored): a resource with its attributes, ``service.name`` among them, and a ``scopeSpans`` per scope
    with the scope's ``name`` and ``version``."""
    await _seed(api)
    resources = (await api.get(f"/api/v3/traces/{TRACE}")).json["result"]["resourceSpans"]
    assert [r["resource"]["attributes"] for r in resources] == [
        [{"key": "service.name", "value": {"stringValue": "checkout"}},
         {"key": "host.name", "value": {"stringValue": "web-1"}}, {"key": "process.pid", "value": {"intValue": "42"}}],
        [{"key": "service.name", "value": {"stringValue": "payments"}}],
        [{"key": "service.name", "value": {"stringValue": "checkout"}},
         {"key": "host.name", "value": {"stringValue": "web-2"}}, {"key": "process.pid", "value": {"intValue": "42"}}],
    ]  # fmt: skip
    scopes = [[(s["scope"], [span["name"] for span in s["spans"]]) for s in r["scopeSpans"]] for r in resources]
    assert scopes == [
        [({"name": "shop.http", "version": "1.4"}, ["POST /checkout"]), ({"name": "shop.db"}, ["INSERT"])],
        [({}, ["charge"])],
        [({"name": "shop.http", "version": "1.4"}, ["GET /cart"])],
    ]


# -- trace ids -----------------------------------------------------------------------------------------


async def test_hex_trace_ids_are_matched_as_jaeger_parses_them(api: LiveApi) -> None:
    """Jaeger reads a trace id with ``model.TraceIDFromString`` (jaeger-idl ``model/v1/ids.go``): two
    ``strconv.ParseUint(_, 16, 64)`` halves, so any case, and leading zeros optional. Both trace routes and
    the ``traceID=`` search find the trace under its stored (lowercase, 32-digit) id."""
    await _seed(api)
    for spelling in (TRACE.upper(), TRACE, "4BF92F3577B34DA6a3ce929d0e0e4736"):
        classic = await api.get(f"/api/traces/{spelling}")
        assert classic.status == 200 and classic.json["data"][0]["traceID"] == TRACE
        v3 = await api.get(f"/api/v3/traces/{spelling}")
        assert v3.status == 200
        assert v3.json["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == TRACE
    search = await api.get(f"/api/traces?traceID={TRACE.upper()}&traceID=ABC")
    assert [t["traceID"] for t in search.json["data"]] == [TRACE]
    assert search.json["errors"] == [{"msg": "trace not found", "traceID": "ABC"}]  # as asked for


async def test_a_64_bit_id_is_found_in_any_of_its_spellings(api: LiveApi) -> None:
    """A Zipkin producer stores a 64-bit trace id as 16 digits; Jaeger finds it under 32 digits with a zero
    high half too, and without leading zeros (the same number)."""
    spans = await _seed(api)
    short = "00f067aa0ba902b7"
    await api.ingest([Span(**{**_fields(spans[0]), "trace_id": short})], now_us=T0_US + 1_000_000)
    for spelling in ("F067AA0BA902B7", "0" * 16 + short, short.upper()):
        reply = await api.get(f"/api/traces/{spelling}")
        assert reply.status == 200 and reply.json["data"][0]["traceID"] == short, spelling
    assert (await api.get("/api/traces/trace-abc-123")).status == 404  # not hex: as given only


def _fields(span: Span) -> dict[str, Any]:
    return {name: getattr(span, name) for name in span.__struct_fields__}


# -- search without a service ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "parameter 'service' is required"),
        ("service=", "parameter 'service' is required"),
        ("operation=charge&limit=5", "parameter 'service' is required"),
        ("minDuration=2s&maxDuration=1s", "parameter 'service' is required"),  # Jaeger checks service first
        ("limit=ten", "unable to parse param 'limit': invalid syntax"),  # ... after parsing every parameter
    ],
)
async def test_classic_search_needs_a_service_as_jaegers_does(api: LiveApi, query: str, message: str) -> None:
    """Jaeger's ``parseTraceQueryParams`` parses every parameter, then ``validateQuery`` answers
    ``errServiceParameterRequired`` when there is neither a service nor a ``traceID``
    (``cmd/query/app/query_parser.go``), which ``search`` sends as a 400 in its envelope
    (``cmd/query/app/http_handler.go``, ``handleError``)."""
    await _seed(api)
    reply = await api.get("/api/traces?" + query)
    assert reply.status == 400
    body = reply.json
    assert body == {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [body["errors"][0]]}
    assert body["errors"][0]["code"] == 400 and body["errors"][0]["msg"].startswith(message)
    by_id = await api.get(f"/api/traces?traceID={TRACE}")  # the traceID= form needs no service
    assert by_id.status == 200 and [t["traceID"] for t in by_id.json["data"]] == [TRACE]


# -- prettyPrint ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "1", "yes", "0"])
async def test_pretty_print_indents_as_jaeger(api: LiveApi, value: str) -> None:
    """Jaeger's ``writeJSON`` indents with ``json.MarshalIndent(v, "", "    ")`` when ``prettyPrint`` is
    anything but empty or ``false`` (``cmd/query/app/http_handler.go``, ``json_marshaler.go``): the same
    document, four spaces per level; ``handleError`` never indents."""
    await _seed(api)
    for path in (f"/api/traces/{TRACE}", "/api/services", "/api/traces?service=checkout", "/api/dependencies"):
        compact = await api.get(path)
        pretty = await api.get(path + ("&" if "?" in path else "?") + f"prettyPrint={value}")
        assert pretty.status == 200 and pretty.headers["Content-Type"].startswith("application/json")
        assert pretty.json == compact.json
        assert pretty.text == json.dumps(compact.json, indent=4, ensure_ascii=False)
        assert pretty.text.startswith('{\n    "data": ')
    not_pretty = await api.get(f"/api/traces/{TRACE}?prettyPrint=false")
    assert not_pretty.text == (await api.get(f"/api/traces/{TRACE}")).text
    error = await api.get("/api/traces?prettyPrint=true")
    assert error.status == 400 and "\n" not in error.text


# -- metrics ----------------------------------------------------------------------------------------------

DISABLED = {"data": None, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": 501, "msg": "metrics querying is currently disabled"}]}  # fmt: skip


@pytest.mark.parametrize(
    "path",
    [
        "/api/metrics/minstep",
        "/api/metrics/latencies?service=checkout&quantile=0.95",
        "/api/metrics/latencies?service=checkout&quantile=0.5&spanKind=SPAN_KIND_SERVER&spanKind=SPAN_KIND_CLIENT"
        "&groupByOperation=true&endTs=1732500000000&lookback=3600000&step=60000&ratePer=600000",
        "/api/metrics/calls?service=checkout&spanKind=SPAN_KIND_SERVER",
        "/api/metrics/errors?service=checkout&service=payments",
        "/api/metrics/calls?service=",
    ],
)
async def test_metrics_answer_501_as_jaeger_without_a_metrics_backend(api: LiveApi, path: str) -> None:
    """Jaeger's query service without a metrics storage uses the "disabled" reader, whose every call
    returns ``ErrDisabled`` ("metrics querying is currently disabled"), which ``handleError`` answers with
    501 (``cmd/query/app/http_handler.go``; ``plugin/metricstore/disabled``); the Jaeger UI's Monitor tab
    then shows its "get started" page instead of an error."""
    reply = await api.get(path)
    assert reply.status == 501
    assert reply.json == DISABLED


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/metrics/latencies?service=a", "unable to parse param 'quantile': strconv.ParseFloat: parsing \"\""),
        ("/api/metrics/latencies?service=checkout&quantile=high", "unable to parse param 'quantile'"),
        ("/api/metrics/calls", "unable to parse param 'service': please provide at least one service name"),
        ("/api/metrics/errors?service=a&spanKind=server", "unable to parse param 'spanKind': unsupported span kind"),
        ("/api/metrics/calls?service=a&groupByOperation=maybe", "unable to parse param 'groupByOperation'"),
        ("/api/metrics/calls?service=a&endTs=now", "unable to parse param 'endTs'"),
        ("/api/metrics/calls?service=a&step=1m", "unable to parse param 'step'"),
    ],
)  # fmt: skip
async def test_metrics_parameters_are_checked_first_as_jaeger_does(api: LiveApi, path: str, message: str) -> None:
    """Before any metrics reader is asked, Jaeger parses ``quantile`` (latencies only) and
    ``parseMetricsQueryParams`` the rest (``cmd/query/app/query_parser.go``): a bad one is a 400."""
    reply = await api.get(path)
    assert reply.status == 400, reply.text
    ((error),) = reply.json["errors"]
    assert error["code"] == 400 and error["msg"].startswith(message), error["msg"]
