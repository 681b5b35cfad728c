"""The OpenAPI 3.1 document of this API, served at ``/openapi.json``.

Body and response schemas are generated from the same msgspec Structs that validate requests and encode
answers (:mod:`query_api.shapes`), so the document cannot drift from the behaviour. Security is declared
as configured: an operation lists the bearer scheme only when tokens are set for it.
"""

from __future__ import annotations

import inspect
from importlib import metadata
from typing import Any, Final

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
_WINDOW_PARAMS: Final = [
    _query(
        "window",
        _DURATION_TEXT,
        "Count the traces that started in the last `<n>s|m|h|d` (e.g. `15m`, `24h`, `7d`; at most 400d). "
        "Rollups are per minute: the window is widened to the minutes it touches. Not with start/end.",
    ),
    _query(
        "start",
        {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_MS},
        "Window start, milliseconds since the epoch (with `end`, default now). Without window or start: all time.",
    ),
    _query(
        "end",
        {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_MS},
        "Window end (exclusive), milliseconds since the epoch; needs `start`.",
    ),
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
    _query(
        "minDuration",
        {"type": "number", "minimum": 0, "maximum": MAX_DURATION_MS},
        "Minimum trace duration, milliseconds.",
    ),
    _query(
        "maxDuration",
        {"type": "number", "minimum": 0, "maximum": MAX_DURATION_MS},
        "Maximum trace duration, milliseconds (must be >= minDuration).",
    ),
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
    _query(
        "start",
        {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_MS},
        "Traces that started at or after this time, milliseconds since the epoch.",
    ),
    _query(
        "end",
        {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_MS},
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
        "`zipkin_proto`). A message's encoding is its `content-type` header when it has one, else told from "
        "its bytes (protobuf records, or JSON starting with `{` or `[`), else the topic's default "
        f"(`{settings.otlp_format}` for OTLP, `zipkin_json` for Zipkin). Undecodable messages go to "
        f"`<topic>{settings.dlq_suffix}` with an `error` header; nothing else is lost."
    )


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document, with security as configured in ``settings``."""
    types: list[Any] = [
        StartRequest,
        SpanRequest,
        FinishRequest,
        StartResponse,
        SpanResponse,
        FinishResponse,
        TraceView,
        list[TraceSummaryView],
        Visualization,
        AnalysisView,
        StatsView,
        Health,
        ErrorBody,
        OperationStatsList,
        TimeseriesView,
        list[EndpointView],
        CriticalPathView,
        list[HotOperationView],
        ChangesView,
    ]
    (
        (
            start_req,
            span_req,
            finish_req,
            start_resp,
            span_resp,
            finish_resp,
            trace,
            summaries,
            visualization,
            analysis,
            stats,
            health,
            _,
            operation_stats,
            timeseries,
            endpoints,
            critical_path,
            hot_operations,
            changes,
        ),
        components,
    ) = msgspec.json.schema_components(types, ref_template=REF)
    for component in components.values():  # docstrings → plain descriptions
        if "description" in component:
            component["description"] = inspect.cleandoc(component["description"]).replace("``", "`")

    read_security: list[dict[str, list[str]]] = [{"bearerAuth": []}] if settings.read_tokens else []
    write_security: list[dict[str, list[str]]] = [{"bearerAuth": []}] if settings.write_tokens else []
    read_errors = [401, 403] if settings.read_tokens else []
    write_errors = [401, 403] if settings.write_tokens else []

    def read(summary: str, ok: dict[str, Any], *, errors: list[int], **extra: Any) -> dict[str, Any]:
        responses = {"200": ok} | {str(s): _error(s) for s in sorted([*errors, *read_errors])}
        return {"summary": summary, "security": read_security, "responses": responses, **extra}

    def write(
        summary: str, body: dict[str, Any], ok: dict[str, Any], *, errors: list[int], **extra: Any
    ) -> dict[str, Any]:
        responses = {"201": ok} | {str(s): _error(s) for s in sorted([400, 413, 503, *errors, *write_errors])}
        return {
            "summary": summary,
            "security": write_security,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": responses,
            **extra,
        }

    paths: dict[str, Any] = {
        "/traces/start": {
            "post": write(
                "Start a trace (or continue one from traceId / traceparent): publishes an open span",
                start_req,
                _json(start_resp, "The ids of the new span."),
                errors=[],
                operationId="startTrace",
                parameters=[
                    {
                        "name": "traceparent",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "W3C trace context, used when the body has no traceId or traceparent. "
                        "An invalid value is ignored (a new trace starts), as W3C asks of receivers.",
                    }
                ],
            )
        },
        "/traces/span": {
            "post": write(
                "Record a span: complete with duration (start = now - duration unless startTime), else open",
                span_req,
                _json(span_resp, "The ids of the span."),
                errors=[],
                operationId="addSpan",
            )
        },
        "/traces/span/finish": {
            "post": write(
                "Finish an open span (its trace is resolved when traceId is absent)",
                finish_req,
                _json(finish_resp, "The finished span."),
                errors=[404],
                operationId="finishSpan",
            )
        },
        "/traces/query": {
            "get": read(
                "Search traces, newest first",
                _json(summaries, "Matching traces (a JSON array).") | {"links": _TRACE_LINKS},
                errors=[400],
                operationId="queryTraces",
                parameters=_SEARCH_PARAMS,
            )
        },
        "/traces/{traceId}": {
            "get": read(
                "A whole trace: root span, other spans, completeness",
                _json(trace, "The trace."),
                errors=[400, 404],
                operationId="getTrace",
                parameters=[_BARE_TRACE_ID],
            )
        },
        "/traces/{traceId}/visualize": {
            "get": read(
                "The trace as a span tree",
                _json(visualization, "The tree."),
                errors=[400, 404],
                operationId="visualizeTrace",
                parameters=[_TRACE_ID],
            )
        },
        "/traces/{traceId}/analyze": {
            "get": read(
                "Bottlenecks, service breakdown, critical path and dependencies of a trace",
                _json(analysis, "The analysis."),
                errors=[400, 404],
                operationId="analyzeTrace",
                parameters=[_TRACE_ID],
            )
        },
        "/stats": {
            "get": read(
                "Overall statistics and ingest pipeline health, over all time or a window",
                _json(stats, "The statistics."),
                errors=[400],
                operationId="getStats",
                parameters=_WINDOW_PARAMS,
            )
        },
        "/stats/operations": {
            "get": read(
                "Per-operation statistics of a service (count, errors, average, p50/p95/p99)",
                _json(operation_stats, "The service's operations, busiest first."),
                errors=[400],
                operationId="getOperationStats",
                parameters=[
                    {**_query("serviceName", _NAME, "The service."), "required": True},
                    *_WINDOW_PARAMS,
                ],
            )
        },
        "/stats/timeseries": {
            "get": read(
                "A service's (or operation's) rate, errors and latency percentiles over time",
                _json(timeseries, "One point per step with spans."),
                errors=[400],
                operationId="getTimeseries",
                parameters=[
                    {**_query("serviceName", _NAME, "The service."), "required": True},
                    _query("operationName", _NAME, "Only this operation of the service."),
                    *_WINDOW_PARAMS,
                    _query(
                        "step",
                        {"type": "integer", "minimum": 60000, "multipleOf": 60000, "default": 60000},
                        "Milliseconds per point: whole minutes; at most 1440 points per window (default: the "
                        "last hour).",
                    ),
                ],
            )
        },
        "/analyze/endpoints": {
            "get": read(
                "Endpoints (root service and operation) with latency percentiles and critical-path totals",
                _json(endpoints, "Endpoints, largest critical-path total first."),
                errors=[400],
                operationId="getEndpoints",
                parameters=_WINDOW_PARAMS,
            )
        },
        "/analyze/endpoints/{service}/{operation}/critical-path": {
            "get": read(
                "Where an endpoint's latency goes: its traces' critical paths summed per calling context",
                _json(critical_path, "The aggregated critical path."),
                errors=[400],
                operationId="getEndpointCriticalPath",
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
                        {"type": "number", "minimum": 0, "maximum": MAX_DURATION_MS},
                        "Only the traces that lasted at least this many milliseconds (at most 10,000).",
                    ),
                ],
            )
        },
        "/analyze/endpoints/{service}/{operation}/changes": {
            "get": read(
                "The calling contexts whose mean critical time per trace grew most against a baseline",
                _json(changes, "Largest growth first."),
                errors=[400],
                operationId="getEndpointChanges",
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
            )
        },
        "/analyze/operations": {
            "get": read(
                "Operations ranked by the critical-path time they own across every endpoint",
                _json(hot_operations, "Largest first."),
                errors=[400],
                operationId="getHotOperations",
                parameters=_WINDOW_PARAMS,
            )
        },
        "/metrics": {
            "get": read(
                "Request metrics in the Prometheus text format",
                {
                    "description": "Prometheus text exposition format 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                errors=[],
                operationId="getMetrics",
            )
        },
        "/healthz": {
            "get": {
                "summary": "Liveness and store health (never needs a token)",
                "operationId": "getHealth",
                "security": [],
                "responses": {"200": _json(health, "The store answers."), "503": _error(503)},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document (never needs a token)",
                "operationId": "getOpenApi",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 document.")},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tracing query API",
            "version": _version(),
            "description": "Search, inspect and analyze traces; record spans (published to Kafka). "
            "Times are milliseconds; epoch times are milliseconds since the Unix epoch. Errors are "
            '`{"error": "..."}`.\n\n' + _ingest_note(settings),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
