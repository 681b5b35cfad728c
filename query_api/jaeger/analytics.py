"""The Jaeger UI's deep dependency graph ("Service Dependencies", the ``/deep-dependencies`` page):
``GET /analytics/v1/dependencies?service=&operation=&start=&end=``, served from the store's dependency
rollups. Stock Jaeger never served this route; the shape is the one the Jaeger UI reads.

Read from jaeger-ui v1.73.0 (``packages/jaeger-ui/src``): ``api/jaeger.js`` (``fetchDeepDependencyGraph``:
``GET /analytics/v1/dependencies`` with ``service``, ``operation`` when one is chosen, ``start``, ``end``),
``components/DeepDependencies/index.tsx`` (it asks with ``start=0&end=0``), ``model/ddg/types.tsx``
(``TDdgPayload``: ``{dependencies: [{path: [{service, operation}], attributes: [{key: "exemplar_trace_id",
value}]}]}``), ``model/ddg/transformDdgData.tsx`` (every path must hold the focal service, with the chosen
operation when there is one, else the page throws; a path's ``exemplar_trace_id`` values become the traces
its nodes' "View traces" opens) and ``model/ddg/transformTracesToPaths.tsx`` (the same payload built from
traces: a path runs from a root down through the focal node).

What is answered, over ``[start, end]`` in milliseconds (``0`` or absent: the day up to now, as
``/api/dependencies``):

* paths are chains of calls between services, from the rollups' parent service → child service links:
  every chain into the focal service (walking up its callers) and every chain out of it (walking down its
  callees), no service twice on a path, at most :data:`MAX_HOPS` hops and :data:`MAX_PATHS` paths; a focal
  service without links is a path of its own;
* the rollups count calls between services, not operations: a path's elements carry the operation ``*``,
  except the focal service's, which carries the ``operation`` asked for (``*`` when none);
* exemplars: up to :data:`EXEMPLARS` of the newest traces of the focal service in the window (one search, at
  most :data:`SEARCHED` traces) in which every service of the path took part.

An unknown service answers ``{"dependencies": []}``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Final

import msgspec
from aiohttp import web

from shared.analysis import Dependency
from shared.store.base import TraceQuery, TraceSummary

from ..encoding import encode
from ..errors import BadRequest
from ..keys import JAEGER
from ..services.clock import now_us

ANY_OPERATION: Final = "*"
MAX_HOPS: Final = 10
MAX_PATHS: Final = 1000
EXEMPLARS: Final = 5
SEARCHED: Final = 100
DAY_MS: Final = 86_400_000
MAX_MS: Final = 10**13


class PathElement(msgspec.Struct, frozen=True):
    service: str
    operation: str


class Attribute(msgspec.Struct, frozen=True):
    key: str
    value: str


class DependencyPath(msgspec.Struct, frozen=True):
    path: list[PathElement]
    attributes: list[Attribute]


class DeepDependencies(msgspec.Struct, frozen=True):
    dependencies: list[DependencyPath]


def _millis(params: Mapping[str, str], name: str) -> int:
    text = params.get(name, "") or "0"
    if not text.isdigit() or int(text) > MAX_MS:
        raise BadRequest(name, f"must be milliseconds since the epoch (0 to {MAX_MS}), got {text[:40]!r}")
    return int(text)


def _chains(edges: Mapping[str, set[str]], start: str) -> list[list[str]]:
    """Every maximal chain from ``start`` along ``edges`` with no service twice (depth-first, sorted),
    each at most :data:`MAX_HOPS` hops; at most :data:`MAX_PATHS` of them."""
    chains: list[list[str]] = []
    stack: list[list[str]] = [[start]]
    while stack and len(chains) < MAX_PATHS:
        chain = stack.pop()
        nexts = [s for s in sorted(edges.get(chain[-1], ()), reverse=True) if s not in chain]
        if not nexts or len(chain) > MAX_HOPS:
            if len(chain) > 1:
                chains.append(chain)
            continue
        stack.extend([*chain, s] for s in nexts)
    return chains


def service_paths(links: Iterable[Dependency], focal: str) -> list[list[str]]:
    """The service chains through ``focal`` (see the module): callers' chains ending at it, then callees'
    chains starting at it; ``[[focal]]`` when it has no links."""
    callers: dict[str, set[str]] = defaultdict(set)
    callees: dict[str, set[str]] = defaultdict(set)
    for link in links:
        if link.parent != link.child:
            callers[link.child].add(link.parent)
            callees[link.parent].add(link.child)
    upstream = [chain[::-1] for chain in _chains(callers, focal)]
    downstream = _chains(callees, focal)
    return (upstream + downstream)[:MAX_PATHS] or [[focal]]


def deep_dependencies(
    paths: list[list[str]], focal: str, operation: str, traces: Iterable[TraceSummary]
) -> DeepDependencies:
    """The payload of ``paths``, the focal element named by ``operation``, with exemplar trace ids."""
    traces = list(traces)
    out = []
    for services in paths:
        members = set(services)
        exemplars = [t.trace_id for t in traces if members.issubset(t.services)][:EXEMPLARS]
        out.append(
            DependencyPath(
                path=[PathElement(s, operation if s == focal else ANY_OPERATION) for s in services],
                attributes=[Attribute("exemplar_trace_id", trace_id) for trace_id in exemplars],
            )
        )
    return DeepDependencies(dependencies=out)


async def dependencies(request: web.Request) -> web.Response:
    """``GET /analytics/v1/dependencies``: the deep dependency graph of ``service`` (see the module)."""
    params = request.query
    service = params.get("service", "")
    if not service:
        raise BadRequest("service", "required: the focal service of the graph")
    end_ms = _millis(params, "end") or now_us() // 1000
    start_ms = _millis(params, "start") or max(0, end_ms - DAY_MS)
    if start_ms > end_ms:
        raise BadRequest("start", "must not be after end")
    jaeger = request.app[JAEGER]
    links = await jaeger.dependencies(start_ms * 1000, end_ms * 1000)
    if service not in await jaeger.services() and all(service not in (d.parent, d.child) for d in links):
        return web.Response(body=encode(DeepDependencies(dependencies=[])), content_type="application/json")
    query = TraceQuery(service_name=service, start_us=start_ms * 1000, end_us=end_ms * 1000, limit=SEARCHED)
    traces = await jaeger.summaries(query)
    payload = deep_dependencies(
        service_paths(links, service), service, params.get("operation") or ANY_OPERATION, traces
    )
    return web.Response(body=encode(payload), content_type="application/json")
