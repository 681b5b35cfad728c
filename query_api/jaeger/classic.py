"""Jaeger's classic HTTP query API (``/api/...``, what the Jaeger UI and Grafana's Jaeger data source call).

Every answer is Jaeger's envelope ``{"data", "total", "limit", "offset", "errors"}``; an error answer has
``data: null`` and ``errors: [{"code", "msg"}]``. Traces use Jaeger's UI model (``internal/uimodel``):

* a trace is ``{traceID, spans, processes, warnings}``; one process per service and resource (``p1``,
  ``p2``... in order of first appearance, as Jaeger's ``model/converter/json`` numbers its deduplicated
  processes), its tags the resource's attributes (OTLP resource attributes other than ``service.name``, as
  Jaeger's OTLP translator makes them process tags);
* a span is ``{traceID, spanID, operationName, references, startTime, duration, tags, logs, processID,
  warnings}``, times in microseconds; the parent becomes a ``CHILD_OF`` reference; the instrumentation scope
  becomes the first tags ``otel.scope.name``/``otel.scope.version``, the span kind a ``span.kind`` tag and an
  error status an ``error=true`` tag (unless the span has tags of those names), as Jaeger's translator does;
  tag types are ``string``, ``bool``, ``int64`` or ``float64`` (integers beyond ±2^53 are sent as strings,
  as Jaeger does); an open span has duration 0 and a warning saying so.

Trace ids are this store's ids: they may be any 1..64 characters of ``[A-Za-z0-9._:-]`` rather than
Jaeger's 16 or 32 hex digits, and are looked up as given first; a hex id is then also looked up as Jaeger
reads it, case-insensitively and with leading zeros optional (``ABC`` finds ``abc``, ``00000000000000000abc``
and ``0000000000000abc``; see :func:`~query_api.services.jaeger.jaeger_id_spellings`).

``?prettyPrint=`` (any value but ``false``) indents a 200 answer by four spaces, as Jaeger does; errors
are never indented. ``/api/metrics/*`` (the Monitor tab) answers from the store's rollups
(:mod:`query_api.jaeger.metrics`), with Jaeger's parameters and ``MetricFamily`` answers.

Routes: ``GET /api/traces/{traceID}``, ``GET /api/traces`` (search, ``service`` required; or ``traceID=``
repeated to fetch several), ``GET /api/services``, ``GET /api/services/{service}/operations``,
``GET /api/operations?service=``, ``GET /api/dependencies?endTs=&lookback=`` (milliseconds),
``GET /api/metrics/{latencies,calls,errors,minstep}``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler as AnyHandler
from multidict import MultiMapping

from shared.archive.tiered import Tier, TieredTrace
from shared.models import SCOPE_NAME_TAG, SCOPE_VERSION_TAG, Span, TagValue
from shared.store.base import StoredTrace, TraceQuery

from ..encoding import encode
from ..keys import JAEGER
from ..services.clock import now_us
from ..services.jaeger import jaeger_id_spellings
from . import metrics
from .common import (
    MAX_EPOCH_US,
    build_query,
    duration_bounds_us,
    first,
    go_duration_ns,
    integer,
    is_js_safe,
    json_tag_value,
    non_finite_text,
    render,
    result_limit,
    trace_id_param,
)
from .errors import Failure, ParamError, error_answer

DEFAULT_LIMIT: Final = 20
"""Traces a search returns when ``limit`` is not given (what the Jaeger UI sends by default)."""
DEFAULT_DEPENDENCY_LOOKBACK_MS: Final = 24 * 3600 * 1000
"""``/api/dependencies`` looks back one day unless ``lookback`` says otherwise (as Jaeger)."""
TRACE_NOT_FOUND: Final = "trace not found"
SERVICE_REQUIRED: Final = "parameter 'service' is required"
"""Jaeger's ``errServiceParameterRequired`` (``cmd/query/app/query_parser.go``)."""
PRETTY_PRINT_INDENT: Final = 4
"""Jaeger's ``prettyPrintIndent`` (four spaces, ``json.MarshalIndent``)."""
_GO_FLOAT: Final = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:inf|infinity|nan))")
"""What ``strconv.ParseFloat`` accepts in decimal (its hex floats and underscores left aside)."""
OPEN_SPAN_WARNING: Final = "span has no end time yet (still open); its duration is reported as 0"
_DAYS_OR_WEEKS: Final = {"d": 86_400_000_000, "w": 7 * 86_400_000_000}

Handler = Callable[[web.Request], Awaitable[web.Response]]
RENDER_INLINE_MAX_BYTES: Final = 1 << 20
"""Answers larger than this are indented in a worker thread."""
JSON = "application/json"


# -- Jaeger's UI model -------------------------------------------------------------------------------


class KeyValue(msgspec.Struct):
    key: str
    type: str
    value: str | int | float | bool | None


class Reference(msgspec.Struct, rename={"ref_type": "refType", "trace_id": "traceID", "span_id": "spanID"}):
    ref_type: str
    trace_id: str
    span_id: str


class Log(msgspec.Struct):
    timestamp: int
    fields: list[KeyValue]


class JaegerSpan(
    msgspec.Struct,
    rename={
        "trace_id": "traceID",
        "span_id": "spanID",
        "operation_name": "operationName",
        "start_time": "startTime",
        "process_id": "processID",
    },
):
    trace_id: str
    span_id: str
    operation_name: str
    references: list[Reference]
    start_time: int
    duration: int
    tags: list[KeyValue]
    logs: list[Log]
    process_id: str
    warnings: list[str] | None


class Process(msgspec.Struct, rename={"service_name": "serviceName"}):
    service_name: str
    tags: list[KeyValue]


class JaegerTrace(msgspec.Struct, rename={"trace_id": "traceID"}):
    trace_id: str
    spans: list[JaegerSpan]
    processes: dict[str, Process]
    warnings: list[str] | None
    tier: Tier  # not Jaeger's: where the trace was read (the Jaeger UI ignores fields it does not know)


class Operation(msgspec.Struct, rename={"span_kind": "spanKind"}):
    name: str
    span_kind: str


class DependencyLink(msgspec.Struct, rename={"call_count": "callCount"}):
    parent: str
    child: str
    call_count: int


class StructuredError(msgspec.Struct, kw_only=True, omit_defaults=True, rename={"trace_id": "traceID"}):
    code: int = 0
    msg: str
    trace_id: str = ""


class Envelope(msgspec.Struct, kw_only=True):
    data: Any
    total: int = 0
    limit: int = 0
    offset: int = 0
    errors: list[StructuredError] | None = None


# -- conversion --------------------------------------------------------------------------------------


def key_value(key: str, value: TagValue) -> KeyValue:
    """A tag as Jaeger types it; integers a JavaScript number cannot hold exactly become strings."""
    if isinstance(value, bool):
        return KeyValue(key, "bool", value)
    if isinstance(value, int):
        return KeyValue(key, "int64", value if is_js_safe(value) else str(value))
    if isinstance(value, float):
        return KeyValue(key, "float64", value if math.isfinite(value) else non_finite_text(value))
    return KeyValue(key, "string", value)


def span_tags(span: Span) -> list[KeyValue]:
    tags = [KeyValue(key, "string", value) for key, value in _scope_tags(span) if key not in span.tags]
    tags += [key_value(key, value) for key, value in span.tags.items()]
    if span.kind is not None and "span.kind" not in span.tags:
        tags.append(KeyValue("span.kind", "string", span.kind))
    if span.status == "error" and "error" not in span.tags:
        tags.append(KeyValue("error", "bool", True))
    return tags


def _scope_tags(span: Span) -> list[tuple[str, str]]:
    pairs = []
    if span.scope_name is not None:
        pairs.append((SCOPE_NAME_TAG, span.scope_name))
    if span.scope_version is not None:
        pairs.append((SCOPE_VERSION_TAG, span.scope_version))
    return pairs


ProcessKey = tuple[str, tuple[tuple[str, TagValue], ...]]


def jaeger_span(span: Span, trace_id: str, process_id: str) -> JaegerSpan:
    """A span in Jaeger's UI model, of the process ``process_id``; its parent as a ``CHILD_OF`` reference,
    an open span with duration 0 and a warning."""
    parent = span.parent_span_id
    return JaegerSpan(
        trace_id=trace_id,
        span_id=span.span_id,
        operation_name=span.operation_name,
        references=[] if parent is None else [Reference(ref_type="CHILD_OF", trace_id=trace_id, span_id=parent)],
        start_time=span.start_time_us,
        duration=span.duration_us or 0,
        tags=span_tags(span),
        logs=[
            Log(timestamp=log.timestamp_us, fields=[key_value(k, v) for k, v in log.fields.items()])
            for log in span.logs
        ],
        process_id=process_id,
        warnings=[OPEN_SPAN_WARNING] if span.duration_us is None else None,
    )


def jaeger_trace(stored: StoredTrace, tier: Tier = "hot") -> JaegerTrace:
    """A stored trace in Jaeger's UI model; spans ordered by start time (then span id)."""
    trace_id = stored.trace_id
    spans = sorted(stored.spans, key=lambda s: (s.start_time_us, s.span_id))
    process_ids: dict[ProcessKey, str] = {}
    processes: dict[str, Process] = {}
    out: list[JaegerSpan] = []
    for span in spans:
        key: ProcessKey = (span.service_name, tuple(span.resource.items()))
        process_id = process_ids.get(key)
        if process_id is None:
            process_id = process_ids[key] = f"p{len(process_ids) + 1}"
            tags = [key_value(name, value) for name, value in span.resource.items()]
            processes[process_id] = Process(service_name=span.service_name, tags=tags)
        out.append(jaeger_span(span, trace_id, process_id))
    return JaegerTrace(trace_id=trace_id, spans=out, processes=processes, warnings=None, tier=tier)


async def _traces_answer(found: Sequence[TieredTrace], errors: list[StructuredError] | None = None) -> web.Response:
    def convert() -> bytes:
        return msgspec.json.encode(Envelope(data=[jaeger_trace(t.trace, t.tier) for t in found], errors=errors))

    body = await render([t.trace for t in found], convert)
    return web.Response(body=body, content_type=JSON)


def _answer(envelope: Envelope | metrics.MetricFamily, status: int = 200) -> web.Response:
    """JSON of the envelope (or of a bare ``MetricFamily``: Jaeger writes that protobuf message as it is)."""
    return web.Response(body=encode(envelope), status=status, content_type=JSON)


def _error(status: int, message: str) -> web.Response:
    return _answer(Envelope(data=None, errors=[StructuredError(code=status, msg=message)]), status)


ERRORS: Final = error_answer(_error, lambda exc: f"unable to parse param '{exc.param}': {exc.reason}")
"""Bad parameters and missing traces answered in Jaeger's envelope (never indented, as its
``handleError``)."""


# -- parameters --------------------------------------------------------------------------------------


def _epoch_us(params: MultiMapping[str], name: str) -> int | None:
    text = params.get(name, "")
    if not text:
        return None
    value = integer(name, text)
    if not 0 <= value <= MAX_EPOCH_US:
        raise ParamError(name, f"must be between 0 and {MAX_EPOCH_US} microseconds since the epoch")
    return value


def _lookback_us(text: str) -> int | None:
    """The UI's ``lookback`` (``1h``, ``2d``, ``custom``) in microseconds; ``None`` for ``custom``."""
    if text == "custom":
        return None
    unit = _DAYS_OR_WEEKS.get(text[-1:])
    if unit is not None and text[:-1].isdigit():
        return int(text[:-1]) * unit
    try:
        value = go_duration_ns(text) // 1000
    except ValueError as exc:
        raise ParamError("lookback", str(exc)) from None
    if value < 0:
        raise ParamError("lookback", f'must not be negative, got "{text}"')
    return value


def _search_tags(params: MultiMapping[str]) -> list[tuple[str, str]]:
    tags: list[tuple[str, str]] = []
    for raw in params.getall("tag", []):
        key, sep, value = raw.partition(":")
        if not sep:
            raise Failure(400, f"malformed 'tag' parameter, expecting key:value, received: {raw}")
        tags.append((key, value))
    for raw in params.getall("tags", []):
        try:
            decoded = json.loads(raw)
        except ValueError as exc:
            raise Failure(400, f"malformed 'tags' parameter, cannot unmarshal JSON: {exc}") from None
        if not isinstance(decoded, dict):
            raise Failure(400, "malformed 'tags' parameter, expecting a JSON object of key: value")
        tags.extend((key, json_tag_value("tags", key, value)) for key, value in decoded.items())
    return tags


def search_query(params: MultiMapping[str]) -> TraceQuery:
    """The store query of a classic search. As in Jaeger's ``parseTraceQueryParams``, every parameter is
    parsed first, then ``service`` is required (a search by ``traceID=`` needs none: see
    :func:`find_traces`), then the bounds must be in order."""
    limit_text = params.get("limit", "")
    limit = result_limit(integer("limit", limit_text, bits=32), DEFAULT_LIMIT) if limit_text else DEFAULT_LIMIT
    start_us = _epoch_us(params, "start")
    end_us = _epoch_us(params, "end")
    if start_us is None and params.get("lookback"):
        lookback = _lookback_us(params["lookback"])
        if lookback is not None:
            start_us = max(0, (end_us if end_us is not None else now_us()) - lookback)
    tags = _search_tags(params)
    service = params.get("service", "")
    try:
        min_us, max_us = duration_bounds_us(first(params, "minDuration"), first(params, "maxDuration"))
    except Failure:  # the durations parsed but are out of order: Jaeger names a missing service first
        if not service:
            raise Failure(400, SERVICE_REQUIRED) from None
        raise
    if not service:
        raise Failure(400, SERVICE_REQUIRED)
    if start_us is not None and end_us is not None and start_us > end_us:
        raise Failure(400, "'end' should not be before 'start'")
    return build_query(
        service=service,
        operation=params.get("operation"),
        tags=tags,
        min_duration_us=min_us,
        max_duration_us=max_us,
        start_us=start_us,
        end_us=end_us,
        limit=limit,
    )


# -- handlers ----------------------------------------------------------------------------------------


def classic_route(handler: Handler) -> AnyHandler:
    """A classic handler as Jaeger's ``APIHandler`` answers: a 200 answer indented by four spaces when
    ``prettyPrint`` has any value other than ``""`` and ``"false"`` (its ``writeJSON``). Errors are
    answered by the error middleware (:data:`ERRORS`)."""

    @functools.wraps(handler)
    async def route(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        pretty = request.query.get("prettyPrint", "")
        if (
            pretty
            and pretty != "false"
            and response.status == 200
            and isinstance(response, web.Response)
            and isinstance(response.body, bytes)
        ):
            body = response.body
            if len(body) > RENDER_INLINE_MAX_BYTES:
                response.body = await asyncio.to_thread(msgspec.json.format, body, indent=PRETTY_PRINT_INDENT)
            else:
                response.body = msgspec.json.format(body, indent=PRETTY_PRINT_INDENT)
        return response

    return route


@classic_route
async def get_trace(request: web.Request) -> web.Response:
    """One trace; its id is matched as Jaeger's ``model.TraceIDFromString`` reads hex ids (case-insensitive,
    leading zeros optional: see :func:`~query_api.services.jaeger.jaeger_id_spellings`)."""
    trace_id = trace_id_param("traceID", request.match_info["traceID"])
    stored = await request.app[JAEGER].find_trace(trace_id)
    if stored is None:
        raise Failure(404, TRACE_NOT_FOUND)
    return await _traces_answer([stored])


@classic_route
async def archive_trace(request: web.Request) -> web.Response:
    """Jaeger's archive button (``POST /api/archive/{traceID}``): the trace is pinned, so no retention deletes
    it (in either tier); answered as Jaeger's ``archiveTrace`` answers (``data`` an empty list), a 404 for
    an unknown trace, a 501 from a store that keeps no pins."""
    trace_id = trace_id_param("traceID", request.match_info["traceID"])
    try:
        pinned = await request.app[JAEGER].pin_trace(trace_id)
    except NotImplementedError as exc:  # a store without pins (Cassandra, for now)
        raise Failure(501, str(exc)) from None
    if not pinned:
        raise Failure(404, TRACE_NOT_FOUND)
    return _answer(Envelope(data=[]))


@classic_route
async def find_traces(request: web.Request) -> web.Response:
    params = request.query
    jaeger = request.app[JAEGER]
    wanted = list(dict.fromkeys(trace_id_param("traceID", value) for value in params.getall("traceID", []) if value))
    if wanted:
        found = await jaeger.load_traces(wanted)
        known = {t.trace.trace_id for t in found}
        missing = [
            StructuredError(msg=TRACE_NOT_FOUND, trace_id=t)
            for t in wanted
            if not known.intersection(jaeger_id_spellings(t))
        ]
        return await _traces_answer(found, missing or None)
    return await _traces_answer(await jaeger.search(search_query(params)))


@classic_route
async def services(request: web.Request) -> web.Response:
    names = await request.app[JAEGER].services()
    return _answer(Envelope(data=names, total=len(names)))


@classic_route
async def service_operations(request: web.Request) -> web.Response:
    names = await request.app[JAEGER].operations(request.match_info["service"])
    return _answer(Envelope(data=names, total=len(names)))


@classic_route
async def operations(request: web.Request) -> web.Response:
    """Operations of ``service`` as ``{name, spanKind}``, one per (operation, span kind) seen, as Jaeger's
    stores keep them (``spanKind`` ``""`` when the spans set none); ``spanKind=server|client|...`` keeps
    that kind only."""
    service = request.query.get("service", "")
    if not service:
        raise Failure(400, SERVICE_REQUIRED)
    found = await request.app[JAEGER].operation_kinds(service, request.query.get("spanKind", ""))
    return _answer(Envelope(data=[Operation(name=n, span_kind=k) for n, k in found], total=len(found)))


@classic_route
async def dependencies(request: web.Request) -> web.Response:
    """Service call counts over ``[endTs - lookback, endTs]`` (milliseconds; default: the last day up to
    now), optionally only the links of ``service``. The store keeps them per hour, so the window is
    widened to whole hours."""
    params = request.query
    end_text = params.get("endTs", "")
    end_ms = integer("endTs", end_text) if end_text else now_us() // 1000
    if not 0 <= end_ms <= MAX_EPOCH_US // 1000:
        raise ParamError("endTs", f"must be between 0 and {MAX_EPOCH_US // 1000} milliseconds since the epoch")
    lookback_text = params.get("lookback", "")
    lookback_ms = integer("lookback", lookback_text) if lookback_text else DEFAULT_DEPENDENCY_LOOKBACK_MS
    if lookback_ms < 0:
        raise ParamError("lookback", "must not be negative")
    since_us, until_us = max(0, end_ms - lookback_ms) * 1000, end_ms * 1000
    links = await request.app[JAEGER].dependencies(since_us, until_us, params.get("service", ""))
    data = [DependencyLink(parent=link.parent, child=link.child, call_count=link.calls) for link in links]
    return _answer(Envelope(data=data))


# -- metrics (Jaeger's Monitor tab) ------------------------------------------------------------------


async def _metrics(request: web.Request, kind: str, quantile: float = 0.0) -> web.Response:
    query = metrics.metrics_query(request.query, now_us() // 1000)
    rows = await request.app[JAEGER].minute_rollups(
        query.services, metrics.rollup_window(query), sketch=kind == "latencies"
    )
    return _answer(metrics.metric_family(query, rows, kind, quantile))


@classic_route
async def metrics_latencies(request: web.Request) -> web.Response:
    """``/api/metrics/latencies``: the ``quantile`` (0..1) of the services' span latencies, from the
    rollups (:mod:`query_api.jaeger.metrics`); ``quantile`` is parsed first, as Jaeger does."""
    text = request.query.get("quantile", "")
    if not _GO_FLOAT.fullmatch(text):
        raise ParamError("quantile", f'strconv.ParseFloat: parsing "{text}": invalid syntax')
    quantile = float(text)
    if not 0 <= quantile <= 1:
        raise ParamError("quantile", "must be between 0 and 1")
    return await _metrics(request, "latencies", quantile)


@classic_route
async def metrics_calls(request: web.Request) -> web.Response:
    """``/api/metrics/calls``: the services' call rates (spans per second)."""
    return await _metrics(request, "calls")


@classic_route
async def metrics_errors(request: web.Request) -> web.Response:
    """``/api/metrics/errors``: the services' error rates (errors per call)."""
    return await _metrics(request, "errors")


@classic_route
async def metrics_minstep(request: web.Request) -> web.Response:
    """``/api/metrics/minstep``: the smallest step, in milliseconds: a minute, the rollups' grain."""
    return _answer(Envelope(data=metrics.MINUTE_MS))
