"""Jaeger's remote sampling endpoint, as the producers' samplers poll it: ``GET /api/sampling?service=S``
(Jaeger's query and collector path) and ``GET /sampling?service=S`` (the path of the OpenTelemetry Go
sampler's default URL, contrib ``samplers/jaegerremote/constants.go``).

As Jaeger's handler (v1.75.0 ``internal/sampling/http/handler.go``, ``serviceFromRequest`` and
``encodeProto``): exactly one ``service`` parameter, else a 400 (here a JSON ``{"error": ...}`` as every
error of this API); the answer is the ``SamplingStrategyResponse`` as jsonpb JSON
(:func:`shared.remote_sampling.encode_response`).
"""

from __future__ import annotations

from aiohttp import web

from shared.remote_sampling import encode_response

from ..errors import BadRequest
from ..keys import SAMPLING


async def sampling_strategy(request: web.Request) -> web.Response:
    services = request.query.getall("service", [])
    if len(services) != 1:
        raise BadRequest("service", "'service' parameter must be provided once")
    response = await request.app[SAMPLING].strategy(services[0])
    return web.Response(body=encode_response(response), content_type="application/json")
