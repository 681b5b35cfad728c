"""The OpenAPI 3.1 document of this API, served at ``/openapi.json``.

Body and response schemas are generated from the same msgspec Structs that validate requests and encode
answers (:mod:`query_api.shapes`), so the document cannot drift from the behaviour. Security is declared
as configured: an operation lists the bearer scheme only when tokens are set for it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final, Literal

import msgspec

from shared.models import ID_PATTERN
from shared.settings import Settings

from .params import DEFAULT_LIMIT, MAX_OFFSET, STATUS_PARAM
from .shapes import (
    MAX_DURATION_MS,
    MAX_EPOCH_MS,
    AnalysisView,
    ChangesView,
    CriticalPathView,
    EndpointView,
    ErrorBody,
    FinishRequest,
    FinishResponse,
    Health,
    HotOperationView,
    OperationStatsList,
    SpanRequest,
    SpanResponse,
    StartRequest,
    StartResponse,
    StatsView,
    TimeseriesView,
    TraceSummaryView,
    TraceView,
    Visualization,
)

REF: Final = "#/components/schemas/{name}"

_ERRORS: Final = {
    400: "A bad parameter or body field; the message names it first.",
    401: "A bearer token is required and none was sent.",
    403: "The bearer token is not accepted for this operation.",
    404: "Unknown trace or span.",
    413: "The body is larger than the configured limit (TRACING_MAX_BODY_BYTES).",
    503: "A dependency (store or Kafka) cannot answer.",
}


def _version() -> str:
    try:
        return metadata.version("kafka-tracing")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(status: int) -> dict[str, Any]:
    return _json({"$ref": REF.format(name="ErrorBody")}, _ERRORS[status])


def _query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description, **extra}


_TRACE_ID: Final = {
    "name": "traceId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": ID_PATTERN},
    "description": "The trace id.",
}
_BARE_TRACE_ID: Final = {
    **_TRACE_ID,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "pattern": "^(?!(?:query|start|span)$)" + ID_PATTERN.removeprefix("^"),
    },
    "description": "The trace id; `query`, `start` and `span` name other routes here (GET /traces/query is the "
    "search), so traces with those ids are reached through /visualize and /analyze only.",
}
_TRACE_LINKS: Final = {
    name: {"operationId": operation, "parameters": {"traceId": "$response.body#/0/traceId"}}
    for name, operation in (
        ("GetTrace", "getTrace"),
        ("VisualizeTrace", "visualizeTrace"),
        ("AnalyzeTrace", "analyzeTrace"),
    )
}

_DURATION_TEXT: Final = {"type": "string", "pattern": "^0*[1-9][0-9]*(ms|s|m|h|d)$"}
_EPOCH_MS: Final = {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_MS}
_DURATION_MS: Final = {"type": "number", "minimum": 0, "maximum": MAX_DURATION_MS}
_WINDOW_PARAMS: Final = [
    _query(
        "window",
        _DURATION_TEXT,
        "Count the traces that started in the last `<n>s|m|h|d` (e.g. `15m`, `24h`, `7d`; at most 400d). "
        "Rollups are per minute: the window is widened to the minutes it touches. Not with start/end.",
    ),
    _query(
        "start",
        _EPOCH_MS,
        "Window start, milliseconds since the epoch (with `end`, default now). Without window or start: all time.",
    ),
    _query("end", _EPOCH_MS, "Window end (exclusive), milliseconds since the epoch; needs `start`."),
]
_NAME: Final = {"type": "string", "minLength": 1, "maxLength": 256}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _NAME, "description": description}


_ENDPOINT_PARAMS: Final = [
    _path("service", "Root service of the endpoint's traces."),
    _path("operation", "Root operation of the endpoint's traces (URL-encode `/` as `%2F`)."),
]

_SEARCH_PARAMS: Final = [
    _query("serviceName", {"type": "string", "minLength": 1}, "Traces with a span of this service."),
    _query("operationName", {"type": "string", "minLength": 1}, "Traces with a span of this operation."),
    _query("minDuration", _DURATION_MS, "Minimum trace duration, milliseconds."),
    _query("maxDuration", _DURATION_MS, "Maximum trace duration, milliseconds (must be >= minDuration)."),
    _query(
        "status",
        {"type": "string", "enum": list(STATUS_PARAM)},
        "Trace status; `success` means completed and `error` means failed. `active` finds traces not yet "
        "finalized; every other filter applies to finalized traces.",
    ),
    _query(
        "tag",
        {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:"}},
        "`key:value`, repeatable: every pair must be on some span of the trace.",
        style="form",
        explode=True,
    ),
    _query("start", _EPOCH_MS, "Traces that started at or after this time, milliseconds since the epoch."),
    _query(
        "end",
        _EPOCH_MS,
        "Traces that started at or before this time, milliseconds since the epoch (must be >= start).",
    ),
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": 1000, "default": DEFAULT_LIMIT},
        "Maximum number of results.",
    ),
    _query(
        "offset",
        {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
        "Results to skip (paging).",
    ),
]


def _ingest_note(settings: Settings) -> str:
    """What the ingest workers read besides this API's writes: the topics, their encodings, and how the
    encoding of a message is told (``shared.codecs.format_of``)."""
    return (
        "Spans also arrive straight through Kafka, one topic per format: "
        f"`{settings.topic}` native JSON events (what the write endpoints publish); "
        f"`{settings.otlp_topic}` OTLP ExportTraceServiceRequest as protobuf or OTLP/JSON (the OpenTelemetry "
        "Collector's Kafka exporter, `otlp_proto` or `otlp_json`); "
        f"`{settings.zipkin_topic}` Zipkin v2 spans as a JSON list or a proto3 ListOfSpans (`zipkin_json`, "
        "`zipkin_proto`); "
        f"`{settings.jaeger_topic}` one Jaeger model.Span per message as protobuf or jsonpb JSON (the Collector's "
        "Kafka exporter, `jaeger_proto` or `jaeger_json`; the process's tags become the resource). A message's "
        "encoding is its `content-type` header when it has one, else told from its bytes (protobuf records, or "
        "JSON starting with `{` or `[`), else the topic's default "
        f"(`{settings.otlp_format}` for OTLP, `zipkin_json` for Zipkin, `jaeger_proto` for Jaeger). Undecodable "
        f"messages go to `<topic>{settings.dlq_suffix}` with an `error` header; nothing else is lost."
    )


@dataclass(frozen=True, kw_only=True)
class Operation:
    """One operation of the document. ``answer`` is the success answer's type (its schema is generated) or
    a literal schema; ``body`` makes it a write (POST, answered 201); ``access`` says which tokens guard
    it (``open``: none, ever)."""

    path: str
    operation_id: str
    summary: str
    answer: Any
    description: str
    errors: tuple[int, ...] = ()
    parameters: list[dict[str, Any]] | None = None
    body: Any = None
    access: Literal["read", "write", "open"] = "read"
    content_type: str = "application/json"
    links: dict[str, Any] | None = None


_TRACEPARENT_HEADER: Final = {
    "name": "traceparent",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "W3C trace context, used when the body has no traceId or traceparent. "
    "An invalid value is ignored (a new trace starts), as W3C asks of receivers.",
}
_SERVICE_PARAM: Final = {**_query("serviceName", _NAME, "The service."), "required": True}

OPERATIONS: Final = (
    Operation(
        path="/traces/start",
        operation_id="startTrace",
        summary="Start a trace (or continue one from traceId / traceparent): publishes an open span",
        body=StartRequest,
        answer=StartResponse,
        description="The ids of the new span.",
        access="write",
        parameters=[_TRACEPARENT_HEADER],
    ),
    Operation(
        path="/traces/span",
        operation_id="addSpan",
        summary="Record a span: complete with duration (start = now - duration unless startTime), else open",
        body=SpanRequest,
        answer=SpanResponse,
        description="The ids of the span.",
        access="write",
    ),
    Operation(
        path="/traces/span/finish",
        operation_id="finishSpan",
        summary="Finish an open span (its trace is resolved when traceId is absent)",
        body=FinishRequest,
        answer=FinishResponse,
        description="The finished span.",
        access="write",
        errors=(404,),
    ),
    Operation(
        path="/traces/query",
        operation_id="queryTraces",
        summary="Search traces, newest first",
        answer=list[TraceSummaryView],
        description="Matching traces (a JSON array).",
        links=_TRACE_LINKS,
        errors=(400,),
        parameters=_SEARCH_PARAMS,
    ),
    Operation(
        path="/traces/{traceId}",
        operation_id="getTrace",
        summary="A whole trace: root span, other spans, completeness",
        answer=TraceView,
        description="The trace.",
        errors=(400, 404),
        parameters=[_BARE_TRACE_ID],
    ),
    Operation(
        path="/traces/{traceId}/visualize",
        operation_id="visualizeTrace",
        summary="The trace as a span tree",
        answer=Visualization,
        description="The tree.",
        errors=(400, 404),
        parameters=[_TRACE_ID],
    ),
    Operation(
        path="/traces/{traceId}/analyze",
        operation_id="analyzeTrace",
        summary="Bottlenecks, service breakdown, critical path and dependencies of a trace",
        answer=AnalysisView,
        description="The analysis.",
        errors=(400, 404),
        parameters=[_TRACE_ID],
    ),
    Operation(
        path="/stats",
        operation_id="getStats",
        summary="Overall statistics and ingest pipeline health, over all time or a window",
        answer=StatsView,
        description="The statistics.",
        errors=(400,),
        parameters=_WINDOW_PARAMS,
    ),
    Operation(
        path="/stats/operations",
        operation_id="getOperationStats",
        summary="Per-operation statistics of a service (count, errors, average, p50/p95/p99)",
        answer=OperationStatsList,
        description="The service's operations, busiest first.",
        errors=(400,),
        parameters=[_SERVICE_PARAM, *_WINDOW_PARAMS],
    ),
    Operation(
        path="/stats/timeseries",
        operation_id="getTimeseries",
        summary="A service's (or operation's) rate, errors and latency percentiles over time",
        answer=TimeseriesView,
        description="One point per step with spans.",
        errors=(400,),
        parameters=[
            _SERVICE_PARAM,
            _query("operationName", _NAME, "Only this operation of the service."),
            *_WINDOW_PARAMS,
            _query(
                "step",
                {"type": "integer", "minimum": 60000, "multipleOf": 60000, "default": 60000},
                "Milliseconds per point: whole minutes; at most 1440 points per window (default: the last hour).",
            ),
        ],
    ),
    Operation(
        path="/analyze/endpoints",
        operation_id="getEndpoints",
        summary="Endpoints (root service and operation) with latency percentiles and critical-path totals",
        answer=list[EndpointView],
        description="Endpoints, largest critical-path total first.",
        errors=(400,),
        parameters=_WINDOW_PARAMS,
    ),
    Operation(
        path="/analyze/endpoints/{service}/{operation}/critical-path",
        operation_id="getEndpointCriticalPath",
        summary="Where an endpoint's latency goes: its traces' critical paths summed per calling context",
        answer=CriticalPathView,
        description="The aggregated critical path.",
        errors=(400,),
        parameters=[
            *_ENDPOINT_PARAMS,
            *_WINDOW_PARAMS,
            _query(
                "tail",
                {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "Only the traces at or above this quantile of the endpoint's durations (e.g. 0.95), "
                "from their stored critical paths (at most 10,000 traces). Not with minDuration.",
            ),
            _query(
                "minDuration",
                _DURATION_MS,
                "Only the traces that lasted at least this many milliseconds (at most 10,000).",
            ),
        ],
    ),
    Operation(
        path="/analyze/endpoints/{service}/{operation}/changes",
        operation_id="getEndpointChanges",
        summary="The calling contexts whose mean critical time per trace grew most against a baseline",
        answer=ChangesView,
        description="Largest growth first.",
        errors=(400,),
        parameters=[
            *_ENDPOINT_PARAMS,
            _query("window", {**_DURATION_TEXT, "default": "1h"}, "The current window, up to now."),
            _query(
                "baseline",
                {**_DURATION_TEXT, "default": "24h"},
                "The baseline window, just before the current one (at most 400d, as the window).",
            ),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}, "Changes."),
        ],
    ),
    Operation(
        path="/analyze/operations",
        operation_id="getHotOperations",
        summary="Operations ranked by the critical-path time they own across every endpoint",
        answer=list[HotOperationView],
        description="Largest first.",
        errors=(400,),
        parameters=_WINDOW_PARAMS,
    ),
    Operation(
        path="/metrics",
        operation_id="getMetrics",
        summary="Request metrics in the Prometheus text format",
        answer={"type": "string"},
        description="Prometheus text exposition format 0.0.4.",
        content_type="text/plain",
    ),
    Operation(
        path="/healthz",
        operation_id="getHealth",
        summary="Liveness and store health (never needs a token)",
        answer=Health,
        description="The store answers.",
        errors=(503,),
        access="open",
    ),
    Operation(
        path="/openapi.json",
        operation_id="getOpenApi",
        summary="This document (never needs a token)",
        answer={"type": "object"},
        description="The OpenAPI 3.1 document.",
        access="open",
    ),
)
"""Every operation of the document, in the order it lists them."""


def _schemas() -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    """The schema of every type the operations name (a ``$ref`` for Structs), and the components those
    refer to, described by their docstrings."""
    types = list(
        dict.fromkeys(t for op in OPERATIONS for t in (op.body, op.answer) if t is not None and not isinstance(t, dict))
    )
    types.append(ErrorBody)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    for component in components.values():  # docstrings → plain descriptions
        if "description" in component:
            component["description"] = inspect.cleandoc(component["description"]).replace("``", "`")
    return dict(zip(types, schemas, strict=True)), components


def _operation(op: Operation, schemas: dict[Any, dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """One operation object: its summary, security as configured, body, answers and parameters."""
    tokens = {"read": settings.read_tokens, "write": settings.write_tokens, "open": ()}[op.access]
    schema = op.answer if isinstance(op.answer, dict) else schemas[op.answer]
    ok = {"description": op.description, "content": {op.content_type: {"schema": schema}}}
    if op.links is not None:
        ok["links"] = op.links
    errors = [*op.errors, *([400, 413, 503] if op.body is not None else []), *([401, 403] if tokens else [])]
    document: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.operation_id,
        "security": [{"bearerAuth": []}] if tokens else [],
    }
    if op.body is not None:
        content = {"application/json": {"schema": schemas[op.body]}}
        document["requestBody"] = {"required": True, "content": content}
    ok_status = "201" if op.body is not None else "200"
    document["responses"] = {ok_status: ok} | {str(status): _error(status) for status in sorted(errors)}
    if op.parameters is not None:
        document["parameters"] = op.parameters
    return document


ESTIMATES_NOTE: Final = (
    "Estimates under head sampling: a producer that samples traces with probability p sends one trace of every "
    "1/p; each trace is counted with its adjusted count (1/p, an integer: read from the root span's W3C "
    "tracestate `ot=th:` threshold or its `jaeger.sampler.*` / `sampler.*` attributes; 1 when it says nothing). "
    "Every figure from the rollups is such an estimate of the traffic: `/stats/operations`, `/stats/timeseries`, "
    "`/analyze/endpoints` and its critical paths, dependencies, `/api/metrics/*` and the span metrics, and in "
    "`/stats` the `estimated*` counts, `avgDuration` and the services' percentiles and averages. Counts of "
    "traces and spans received are `/stats`'s `totalTraces`, `completedTraces`, `failedTraces` and the services' "
    "`count` and `errorCount`; searches and single traces show what was received."
)
"""Which figures are estimates (the API document's description says it)."""


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document, with security as configured in ``settings``."""
    schemas, components = _schemas()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tracing query API",
            "version": _version(),
            "description": "Search, inspect and analyze traces; record spans (published to Kafka). "
            "Times are milliseconds; epoch times are milliseconds since the Unix epoch. Errors are "
            '`{"error": "..."}`.\n\n' + _ingest_note(settings) + "\n\n" + ESTIMATES_NOTE,
        },
        "paths": {
            op.path: {"post" if op.body is not None else "get": _operation(op, schemas, settings)} for op in OPERATIONS
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
