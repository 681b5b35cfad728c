"""The views: parse and validate the request, call a service, answer JSON. No storage access here.

Errors are raised as :mod:`query_api.errors` (or the store's ``QueryError``) and turned into JSON answers by
the error middleware.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from . import params
from .encoding import encode, encode_visualization
from .errors import BadRequest, Unavailable, body_error
from .keys import METRICS, OPENAPI, QUERIES, WRITES
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
    return _json(await request.app[QUERIES].search(query))


async def get_trace(request: web.Request) -> web.Response:
    trace_id = params.trace_id(request.match_info)
    return _json(await request.app[QUERIES].trace(trace_id))


async def visualize_trace(request: web.Request) -> web.Response:
    trace_id = params.trace_id(request.match_info)
    visualization = await request.app[QUERIES].visualize(trace_id)
    return web.Response(body=encode_visualization(visualization), content_type=JSON)


async def analyze_trace(request: web.Request) -> web.Response:
    trace_id = params.trace_id(request.match_info)
    return _json(await request.app[QUERIES].analysis(trace_id))


async def stats(request: web.Request) -> web.Response:
    return _json(await request.app[QUERIES].stats())


# -- operations --------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[QUERIES].check()
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
