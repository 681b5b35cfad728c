"""The seed API's views: parse and validate the request, call a service (:mod:`query_api.services`), answer
JSON. No storage access here.

Errors are raised as :mod:`query_api.errors` (or the store's ``QueryError``) and turned into JSON answers by
the error middleware.
"""

from __future__ import annotations

import logging
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web

from shared.clock import now_us
from shared.store.base import Window

from . import params
from .encoding import encode, encode_visualization
from .errors import BadRequest, Unavailable, body_error
from .keys import CRITICAL, METRICS, MONITOR, OPENAPI, TRACES, WRITES
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .shapes import FinishRequest, Health, SpanRequest, StartRequest

log = logging.getLogger(__name__)

T = TypeVar("T")

JSON = "application/json"


def _json(value: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=encode(value), status=status, content_type=JSON)


async def _body(request: web.Request, shape: type[T]) -> T:
    """The body decoded and validated as ``shape``; a 400 names the bad field (413 past the size limit)."""
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("body", "a JSON object is required")
    try:
        return msgspec.json.decode(raw, type=shape)
    except msgspec.DecodeError as exc:
        raise body_error(exc) from None


# -- writes ------------------------------------------------------------------------------------------


async def start_trace(request: web.Request) -> web.Response:
    body = await _body(request, StartRequest)
    started = await request.app[WRITES].start(body, request.headers.get("traceparent"))
    return _json(started, status=201)


async def add_span(request: web.Request) -> web.Response:
    body = await _body(request, SpanRequest)
    return _json(await request.app[WRITES].span(body), status=201)


async def finish_span(request: web.Request) -> web.Response:
    body = await _body(request, FinishRequest)
    return _json(await request.app[WRITES].finish(body), status=201)


# -- reads -------------------------------------------------------------------------------------------


async def query_traces(request: web.Request) -> web.Response:
    query = params.trace_query(request.query)
    return _json(await request.app[TRACES].search(query))


async def get_trace(request: web.Request) -> web.Response:
    trace_id = params.trace_id(request.match_info)
    return _json(await request.app[TRACES].trace(trace_id))


async def visualize_trace(request: web.Request) -> web.Response:
    trace_id = params.trace_id(request.match_info)
    visualization = await request.app[TRACES].visualize(trace_id)
    return web.Response(body=encode_visualization(visualization), content_type=JSON)


async def analyze_trace(request: web.Request) -> web.Response:
    trace_id = params.trace_id(request.match_info)
    return _json(await request.app[TRACES].analysis(trace_id))


WINDOW_PARAMS: Final = ("window", "start", "end")


async def stats(request: web.Request) -> web.Response:
    params.only(request.query, WINDOW_PARAMS)
    return _json(await request.app[MONITOR].stats(params.window(request.query, now_us())))


async def operation_stats(request: web.Request) -> web.Response:
    q = request.query
    params.only(q, ("serviceName", *WINDOW_PARAMS))
    service = params.required_name(q, "serviceName")
    return _json(await request.app[MONITOR].operation_stats(service, params.window(q, now_us())))


async def timeseries(request: web.Request) -> web.Response:
    q = request.query
    params.only(q, ("serviceName", "operationName", "step", *WINDOW_PARAMS))
    service = params.required_name(q, "serviceName")
    operation = params.optional_name(q, "operationName")
    now = now_us()
    window = params.window(q, now) or Window(start_us=now - 3_600_000_000, end_us=now)
    step = params.milliseconds(q, "step")
    return _json(await request.app[MONITOR].timeseries(service, operation, window, step or 60_000_000))


# -- critical paths across traces ---------------------------------------------------------------------


def _endpoint(request: web.Request) -> tuple[str, str]:
    service, operation = request.match_info["service"], request.match_info["operation"]
    for name, value in (("service", service), ("operation", operation)):
        if not value or len(value) > 256:
            raise BadRequest(name, "must be 1 to 256 characters")
    return service, operation


async def endpoints(request: web.Request) -> web.Response:
    params.only(request.query, WINDOW_PARAMS)
    return _json(await request.app[CRITICAL].endpoints(params.window(request.query, now_us())))


async def hot_operations(request: web.Request) -> web.Response:
    params.only(request.query, WINDOW_PARAMS)
    return _json(await request.app[CRITICAL].operations(params.window(request.query, now_us())))


async def endpoint_critical_path(request: web.Request) -> web.Response:
    q = request.query
    params.only(q, ("tail", "minDuration", *WINDOW_PARAMS))
    service, operation = _endpoint(request)
    tail = params.fraction(q, "tail")
    min_duration = params.milliseconds(q, "minDuration")
    if tail is not None and min_duration is not None:
        raise BadRequest("tail", "give either tail or minDuration, not both")
    view = await request.app[CRITICAL].critical_path(
        service, operation, params.window(q, now_us()), tail=tail, min_duration_us=min_duration
    )
    return _json(view)


async def endpoint_changes(request: web.Request) -> web.Response:
    q = request.query
    params.only(q, ("window", "baseline", "limit"))
    service, operation = _endpoint(request)
    now = now_us()
    current = params.duration_text("window", q.get("window", "1h"))
    baseline = params.duration_text("baseline", q.get("baseline", "24h"))
    limit = params.integer(q, "limit", 20, low=1, high=1000)
    window = Window(start_us=max(0, now - current), end_us=now)
    aligned = window.aligned()
    before = Window(start_us=max(0, aligned.start_us - baseline), end_us=max(1, aligned.start_us))
    return _json(await request.app[CRITICAL].changes(service, operation, window, before, limit=limit))


# -- operations --------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[TRACES].check()
    except Exception as exc:  # any store failure means "not healthy"; the reason goes to the log
        log.warning("health check failed: %s", exc)
        raise Unavailable(f"store: {exc}") from exc
    return _json(Health(status="ok"))


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type=JSON)


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(text=request.app[METRICS].render())
    response.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return response
