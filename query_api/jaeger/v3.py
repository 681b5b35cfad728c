"""Jaeger's current HTTP query API (``/api/v3/...``, the gRPC-gateway of ``api_v3.QueryService``).

Traces are answered as OTLP JSON wrapped in ``{"result": {"resourceSpans": [...]}}``: one resource per
service and resource of each trace (attributes: ``service.name`` first, then the spans' resource
attributes), one ``scopeSpans`` per instrumentation scope in it (``scope`` holds ``name``/``version`` when
the producer gave them, else it is ``{}``), all in order of first span start; span and trace ids as
given (see below), times as strings of nanoseconds since the epoch (``startTimeUnixNano``), ``kind`` as the
OTLP enum number (0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer), ``status`` ``{}``
(unset) or ``{"code": 2}`` (error), tags as ``attributes`` (``stringValue``, ``boolValue``, ``intValue`` as
a string, ``doubleValue``), logs as ``events`` (the ``event`` field is the event name). An open span ends
at its start (zero length). Errors are ``{"error": {"httpCode", "message"}}``; like Jaeger, a search or
lookup that finds nothing is a 404 ``No traces found``.

Trace and span ids are this store's ids, passed through unchanged: any 1..64 characters of
``[A-Za-z0-9._:-]``, so they are OTLP's lowercase hex only when the producers used such ids. A trace is
looked up by its id as given, then, for a hex id, as Jaeger reads it (any case, leading zeros optional).

Parameters take Jaeger's canonical camelCase names and the snake_case aliases it still accepts
(``query.serviceName`` or ``query.service_name``, ...). Routes: ``GET /api/v3/services``,
``GET /api/v3/operations?service=&spanKind=``, ``GET /api/v3/traces?query.*``,
``GET /api/v3/traces/{trace_id}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import msgspec
from aiohttp import web
from multidict import MultiMapping

from shared.models import Span, TagValue
from shared.store.base import StoredTrace, TraceQuery

from ..encoding import encode
from ..keys import JAEGER
from .common import (
    INT64_MAX,
    INT64_MIN,
    MAX_EPOCH_US,
    build_query,
    duration_bounds_us,
    first,
    go_bool,
    integer,
    json_tag_value,
    non_finite_text,
    render,
    result_limit,
    rfc3339_ns,
    trace_id_param,
)
from .errors import Failure, ParamError, error_answer

DEFAULT_SEARCH_DEPTH: Final = 100
"""Traces a search returns when ``query.searchDepth`` is not given (Jaeger's default)."""
NO_TRACES: Final = "No traces found"

SERVICE: Final = ("query.serviceName", "query.service_name")
OPERATION: Final = ("query.operationName", "query.operation_name")
TIME_MIN: Final = ("query.startTimeMin", "query.start_time_min")
TIME_MAX: Final = ("query.startTimeMax", "query.start_time_max")
SEARCH_DEPTH: Final = ("query.searchDepth", "query.search_depth", "query.num_traces")
DURATION_MIN: Final = ("query.durationMin", "query.duration_min")
DURATION_MAX: Final = ("query.durationMax", "query.duration_max")
RAW_TRACES: Final = ("query.rawTraces", "query.raw_traces")
ATTRIBUTES: Final = "query.attributes"

SPAN_KIND: Final = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
"""OTLP ``Span.SpanKind`` numbers; a span without a kind is 0 (unspecified)."""
STATUS_ERROR: Final = 2

Handler = Callable[[web.Request], Awaitable[web.Response]]
JSON = "application/json"
AnyValue = dict[str, str | bool | float]


# -- OTLP JSON ---------------------------------------------------------------------------------------


class KeyValue(msgspec.Struct):
    key: str
    value: AnyValue


class Event(msgspec.Struct, rename="camel"):
    time_unix_nano: str
    name: str
    attributes: list[KeyValue]


class Status(msgspec.Struct, omit_defaults=True):
    code: int = 0


class OtlpSpan(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    name: str
    kind: int
    start_time_unix_nano: str
    end_time_unix_nano: str
    attributes: list[KeyValue]
    events: list[Event]
    status: Status


class Scope(msgspec.Struct, omit_defaults=True):
    name: str = ""
    version: str = ""


class ScopeSpans(msgspec.Struct):
    scope: Scope
    spans: list[OtlpSpan]


class Resource(msgspec.Struct):
    attributes: list[KeyValue]


class ResourceSpans(msgspec.Struct, rename="camel"):
    resource: Resource
    scope_spans: list[ScopeSpans]


class TracesData(msgspec.Struct, rename="camel"):
    resource_spans: list[ResourceSpans]


class Result(msgspec.Struct):
    result: TracesData


class Services(msgspec.Struct):
    services: list[str]


class Operation(msgspec.Struct, rename="camel"):
    name: str
    span_kind: str


class Operations(msgspec.Struct):
    operations: list[Operation]


class ErrorDetails(msgspec.Struct, rename="camel"):
    http_code: int
    message: str


class GatewayError(msgspec.Struct):
    error: ErrorDetails


# -- conversion --------------------------------------------------------------------------------------


def any_value(value: TagValue) -> AnyValue:
    """A tag value as an OTLP ``AnyValue`` (proto3 JSON: 64-bit integers are strings)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)} if INT64_MIN <= value <= INT64_MAX else {"stringValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value if math.isfinite(value) else non_finite_text(value)}
    return {"stringValue": value}


def _attributes(tags: dict[str, TagValue]) -> list[KeyValue]:
    return [KeyValue(key, any_value(value)) for key, value in tags.items()]


def otlp_span(span: Span) -> OtlpSpan:
    start_ns = span.start_time_us * 1000
    events = []
    for log in span.logs:
        name = log.fields.get("event")
        fields = log.fields
        if isinstance(name, str):
            fields = {k: v for k, v in fields.items() if k != "event"}
        events.append(
            Event(
                time_unix_nano=str(log.timestamp_us * 1000),
                name=name if isinstance(name, str) else "",
                attributes=_attributes(fields),
            )
        )
    return OtlpSpan(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        name=span.operation_name,
        kind=0 if span.kind is None else SPAN_KIND[span.kind],
        start_time_unix_nano=str(start_ns),
        end_time_unix_nano=str(start_ns + (span.duration_us or 0) * 1000),
        attributes=_attributes(span.tags),
        events=events,
        status=Status(code=STATUS_ERROR if span.status == "error" else 0),
    )


ResourceKey = tuple[str, tuple[tuple[str, TagValue], ...]]
ScopeKey = tuple[str, str]


def resource_spans(traces: Sequence[StoredTrace]) -> TracesData:
    """One ``resourceSpans`` entry per (service, resource attributes) of each trace, one ``scopeSpans`` per
    scope in it; resources, scopes and spans in order of first span start (then span id)."""
    out: list[ResourceSpans] = []
    for trace in traces:
        grouped: dict[ResourceKey, dict[ScopeKey, list[OtlpSpan]]] = {}
        for span in sorted(trace.spans, key=lambda s: (s.start_time_us, s.span_id)):
            scopes = grouped.setdefault((span.service_name, tuple(span.resource.items())), {})
            scopes.setdefault((span.scope_name or "", span.scope_version or ""), []).append(otlp_span(span))
        out.extend(
            ResourceSpans(
                resource=Resource(
                    attributes=[KeyValue("service.name", {"stringValue": service}), *_attributes(dict(resource))]
                ),
                scope_spans=[
                    ScopeSpans(scope=Scope(name, version), spans=spans) for (name, version), spans in scopes.items()
                ],
            )
            for (service, resource), scopes in grouped.items()
        )
    return TracesData(resource_spans=out)


def _answer(value: object, status: int = 200) -> web.Response:
    return web.Response(body=encode(value), status=status, content_type=JSON)


def _error(status: int, message: str) -> web.Response:
    return _answer(GatewayError(error=ErrorDetails(http_code=status, message=message)), status)


async def _traces_answer(traces: Sequence[StoredTrace]) -> web.Response:
    if not traces:
        raise Failure(404, NO_TRACES)
    body = await render(traces, lambda: msgspec.json.encode(Result(result=resource_spans(traces))))
    return web.Response(body=body, content_type=JSON)


ERRORS: Final = error_answer(_error, lambda exc: f"malformed parameter {exc.param}: {exc.reason}")
"""Bad parameters and empty results answered as the gRPC gateway's errors."""


# -- parameters --------------------------------------------------------------------------------------


def _time_ns(given: tuple[str, str]) -> int:
    name, text = given
    try:
        return rfc3339_ns(text)
    except ValueError as exc:
        raise ParamError(name, str(exc)) from None


def _check_raw_traces(params: MultiMapping[str], *names: str) -> None:
    """``rawTraces`` asks for the trace without adjustments; none are made here, so it is only validated."""
    given = first(params, *names)
    if given is not None:
        go_bool(*given)


def _attribute_filters(params: MultiMapping[str]) -> list[tuple[str, str]]:
    raw = params.get(ATTRIBUTES, "")
    if not raw:
        return []
    try:
        decoded = json.loads(raw)
    except ValueError as exc:
        raise ParamError(ATTRIBUTES, f"invalid JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise ParamError(ATTRIBUTES, "expected a JSON object of attribute: value")
    return [(key, json_tag_value(ATTRIBUTES, key, value)) for key, value in decoded.items()]


def search_query(params: MultiMapping[str]) -> TraceQuery | None:
    """The store query of a v3 search; ``None`` when the time window cannot hold any stored trace."""
    service = first(params, *SERVICE)
    operation = first(params, *OPERATION)
    attributes = _attribute_filters(params)
    time_min, time_max = first(params, *TIME_MIN), first(params, *TIME_MAX)
    if time_min is None or time_max is None:
        raise Failure(400, f"{TIME_MIN[0]} and {TIME_MAX[0]} are required")
    min_ns, max_ns = _time_ns(time_min), _time_ns(time_max)
    if min_ns >= max_ns:
        raise Failure(400, f"{TIME_MIN[0]} must be before {TIME_MAX[0]}")
    depth_given = first(params, *SEARCH_DEPTH)
    depth = DEFAULT_SEARCH_DEPTH if depth_given is None else integer(*depth_given, bits=32)
    min_us, max_us = duration_bounds_us(first(params, *DURATION_MIN), first(params, *DURATION_MAX))
    _check_raw_traces(params, *RAW_TRACES)
    start_us = max(0, -(-min_ns // 1000))
    end_us = min(MAX_EPOCH_US, max_ns // 1000)
    if end_us < 0 or start_us > MAX_EPOCH_US or start_us > end_us:
        return None
    return build_query(
        service=None if service is None else service[1],
        operation=None if operation is None else operation[1],
        tags=attributes,
        min_duration_us=min_us,
        max_duration_us=max_us,
        start_us=start_us,
        end_us=end_us,
        limit=result_limit(depth, DEFAULT_SEARCH_DEPTH),
    )


# -- handlers ----------------------------------------------------------------------------------------


async def get_trace(request: web.Request) -> web.Response:
    trace_id = trace_id_param("trace_id", request.match_info["trace_id"])
    params = request.query
    for names in (("startTime", "start_time"), ("endTime", "end_time")):
        given = first(params, *names)
        if given is not None:
            _time_ns(given)  # a lookup hint in Jaeger; validated, not needed here
    _check_raw_traces(params, "rawTraces", "raw_traces")
    found = await request.app[JAEGER].find_trace(trace_id)  # hex ids in any case, as Jaeger reads them
    return await _traces_answer([] if found is None else [found.trace])


async def find_traces(request: web.Request) -> web.Response:
    query = search_query(request.query)
    found = [] if query is None else await request.app[JAEGER].search(query)
    return await _traces_answer([t.trace for t in found])


async def services(request: web.Request) -> web.Response:
    return _answer(Services(services=await request.app[JAEGER].services()))


async def operations(request: web.Request) -> web.Response:
    """Operations of ``service`` as ``{name, spanKind}``, one per (operation, span kind) seen;
    ``spanKind`` keeps that kind only; no service, no operations."""
    service = request.query.get("service", "")
    kind = request.query.get("spanKind") or request.query.get("span_kind", "")  # span_kind: Jaeger's old name
    found = await request.app[JAEGER].operation_kinds(service, kind) if service else []
    return _answer(Operations(operations=[Operation(name=n, span_kind=k) for n, k in found]))
