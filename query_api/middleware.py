"""The app's middlewares, outermost first: request metrics, error mapping, bearer-token auth.

* :func:`errors` is the one place errors become answers. Domain errors (:mod:`query_api.errors`) and
  aiohttp's own become JSON ``{"error": "..."}``: 400 (bad parameter, named), 401/403 (auth), 404 (unknown
  trace, span or route), 405 (with ``Allow``), 413 (body too large), 503 (store or Kafka down: on any
  route, a store call that failed with the connection lost, refused or reset, the server shutting down or
  starting, a locked or full SQLite file; see :mod:`shared.store.faults`). On the Jaeger-compatible routes
  (:data:`API_ERRORS`), a bad parameter, a failure or an invalid query is answered in that API's own
  error shape instead. Anything unexpected is logged and answered 500 without details.
* :func:`auth` checks bearer tokens: ``read_tokens`` for reads, ``write_tokens`` for POSTs (an empty set
  leaves those open). ``/healthz``, ``/openapi.json`` and the web UI's files never need a token; a
  request that matches no route gets its 404/405 without an auth check (the routes are public in
  ``/openapi.json`` anyway).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from aiokafka.errors import KafkaError

from shared.archive.tiered import ArchiveUnavailable
from shared.store.base import QueryError
from shared.store.faults import reason, unavailable

from .encoding import encode
from .errors import ApiError, Forbidden, Unauthorized
from .jaeger import classic, v3
from .jaeger.errors import ErrorAnswer, Failure, ParamError
from .keys import METRICS, SETTINGS
from .shapes import ErrorBody
from .ui import UI_ROUTES

log = logging.getLogger(__name__)

OPEN_ROUTES: Final = frozenset({"/healthz", "/openapi.json", *UI_ROUTES})
UNMATCHED: Final = "unmatched"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="tracing"'}
API_ERRORS: Final[tuple[tuple[str, ErrorAnswer], ...]] = (("/api/v3/", v3.ERRORS), ("/api/", classic.ERRORS))
"""Route prefixes whose bad parameters and failures are answered in their API's error shape (first match)."""


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=encode(ErrorBody(error=message)), content_type="application/json", headers=headers
    )


def route_of(request: web.Request) -> str:
    """The matched route's template (``/traces/{traceId}``), or ``unmatched``."""
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None or request.match_info.http_exception is not None else resource.canonical


@web.middleware
async def metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    method = request.method if request.method in _METHODS else "OTHER"
    request.app[METRICS].observe(method, route_of(request), response.status, time.perf_counter() - started)
    return response


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status == 404:
        message = f"not found: {request.path}"
    elif exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"method {request.method} not allowed on {request.path}; allowed: {allowed}"
    elif exc.status == 413:
        message = f"body: larger than {request.app[SETTINGS].max_body_bytes} bytes"
    else:
        message = exc.reason
    headers = {name: exc.headers[name] for name in ("Allow",) if name in exc.headers}
    return error_response(exc.status, message, headers)


def _failure(request: web.Request, exc: ParamError | Failure | QueryError) -> web.Response:
    route = route_of(request)
    for prefix, answer in API_ERRORS:
        if route.startswith(prefix):
            return answer(exc)
    if isinstance(exc, Failure):
        return error_response(exc.status, exc.message)
    return error_response(400, str(exc))


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except (ParamError, Failure, QueryError) as exc:
        return _failure(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except KafkaError as exc:
        log.warning("kafka error on %s %s: %r", request.method, request.path, exc)
        return error_response(503, f"kafka: {exc.__class__.__name__}: {exc}")
    except ArchiveUnavailable as exc:
        log.warning("archive unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(503, str(exc), {"Retry-After": str(STORE_RETRY_AFTER_S)})
    except Exception as exc:
        if unavailable(exc):
            return _store_away(request, exc)
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal error")


STORE_RETRY_AFTER_S: Final = 1


def _store_away(request: web.Request, exc: Exception) -> web.Response:
    """The store cannot answer now (restarting, unreachable, locked): a 503 the client may retry."""
    log.warning("store unavailable on %s %s: %s", request.method, request.path, reason(exc))
    return error_response(503, f"store unavailable: {reason(exc)}", {"Retry-After": str(STORE_RETRY_AFTER_S)})


def check_bearer(authorization: str | None, tokens: tuple[str, ...]) -> None:
    """Raise :class:`Unauthorized` without a bearer token, :class:`Forbidden` if it is not in ``tokens``.

    Every accepted token is compared in constant time (``hmac.compare_digest``), all of them each time.
    """
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)", headers=_CHALLENGE)
    given = token.encode()
    accepted = False
    for candidate in tokens:
        accepted |= hmac.compare_digest(candidate.encode(), given)
    if not accepted:
        raise Forbidden("the bearer token is not accepted for this operation")


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if route_of(request) not in OPEN_ROUTES | {UNMATCHED}:
        settings = request.app[SETTINGS]
        tokens = settings.write_tokens if request.method == "POST" else settings.read_tokens
        if tokens:
            check_bearer(request.headers.get("Authorization"), tokens)
    return await handler(request)
