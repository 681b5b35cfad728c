"""Serve a build of the Jaeger UI in front of the query API, as Jaeger's query service serves it.

The Jaeger UI is a static single-page app that reads its configuration from its own ``index.html``: the
query service rewrites three lines of it (``JAEGER_CONFIG``, ``JAEGER_STORAGE_CAPABILITIES``,
``JAEGER_VERSION``) and serves the app's assets beside the ``/api`` it calls. This does the same for a
build of the UI (``npm ci && npm run build`` in jaeger-ui's ``packages/jaeger-ui``, or the ``build/``
folder of a release's UI), forwarding ``/api/*`` and ``/analytics/*`` to the query API:

    python scripts/jaeger_ui.py --ui ~/jaeger-ui/packages/jaeger-ui/build --api http://127.0.0.1:3000

then open http://127.0.0.1:16686. The configuration it injects turns on the Monitor tab (the API serves
Jaeger's metrics from its rollups) and, with ``--archive`` (the API has ``TRACING_ARCHIVE_URL`` set), the
trace page's archive button: the UI shows it only when both its configuration's ``archiveEnabled`` and the
storage capabilities' ``archiveStorage`` are true. ``--config FILE`` merges a JSON file of your own over it
(Jaeger's UI configuration: ``menu``, ``search.maxLookback``, ``linkPatterns`` ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

FORWARDED = ("/api/", "/analytics/")
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"})
UI_CONFIG: dict[str, Any] = {
    "monitor": {"menuEnabled": True},
    "dependencies": {"menuEnabled": True},
}


def index_html(build: Path, config: dict[str, Any], archive: bool) -> bytes:
    """The UI's ``index.html`` with the configuration lines rewritten as Jaeger's query service does."""
    page = (build / "index.html").read_text()
    lines = {
        "const JAEGER_CONFIG = DEFAULT_CONFIG;": f"const JAEGER_CONFIG = {json.dumps(config)};",
        "const JAEGER_STORAGE_CAPABILITIES = DEFAULT_STORAGE_CAPABILITIES;": (
            f"const JAEGER_STORAGE_CAPABILITIES = {json.dumps({'archiveStorage': archive})};"
        ),
    }
    for line, replaced in lines.items():
        if line not in page:
            raise SystemExit(f"{build / 'index.html'}: no `{line}` line: is this a build of the Jaeger UI?")
        page = page.replace(line, replaced)
    return page.encode()


def make_app(build: Path, api: str, config: dict[str, Any], archive: bool) -> web.Application:
    page = index_html(build, config, archive)
    root = build.resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith(FORWARDED):
            return await forward(request)
        asset = (root / path.lstrip("/")).resolve()
        if path != "/" and asset.is_relative_to(root) and asset.is_file():
            return web.FileResponse(asset)
        # Every other path is a route of the single-page app (/search, /trace/{id}, /monitor ...).
        return web.Response(body=page, content_type="text/html")

    async def forward(request: web.Request) -> web.Response:
        session: aiohttp.ClientSession = request.app[SESSION]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS | {"host"}}
        async with session.request(
            request.method, api + request.path_qs, headers=headers, data=await request.read()
        ) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=answer.status, body=body, headers=kept)

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(auto_decompress=True)
        yield
        await app[SESSION].close()

    app = web.Application()
    app.cleanup_ctx.append(session_context)
    app.router.add_route("*", "/{tail:.*}", serve)
    return app


SESSION = web.AppKey("session", aiohttp.ClientSession)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ui", type=Path, required=True, help="the Jaeger UI's build folder (holds index.html)")
    parser.add_argument("--api", default="http://127.0.0.1:3000", help="the query API's base URL")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=16686)
    parser.add_argument("--archive", action="store_true", help="show the trace page's archive button")
    parser.add_argument("--config", type=Path, help="a JSON file merged over the injected UI configuration")
    args = parser.parse_args()
    if not (args.ui / "index.html").is_file():
        sys.exit(f"{args.ui}: no index.html: give the Jaeger UI's build folder")
    config = dict(UI_CONFIG, archiveEnabled=args.archive)
    if args.config:
        config.update(json.loads(args.config.read_text()))
    web.run_app(
        make_app(args.ui, args.api.rstrip("/"), config, args.archive),
        host=args.bind,
        port=args.port,
        print=lambda _: print(f"Jaeger UI on http://{args.bind}:{args.port}, reading {args.api}", flush=True),
    )


if __name__ == "__main__":
    main()
