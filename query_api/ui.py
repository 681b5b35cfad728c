"""The web UI: the static files of ``query_api/static/`` served at ``/ui/`` (``/ui`` redirects there; GET
and HEAD only).

The UI is plain HTML, CSS and JavaScript modules (no build step, nothing loaded from other origins). It
reads the API from the same origin and sends the read token the user typed in (kept in the browser's
``localStorage``) as ``Authorization: Bearer <token>``.

* The files themselves are public (:data:`UI_ROUTES`, open in the auth middleware): the page must load
  before the user can type a token. The API answers the UI's data requests with the usual token checks.
* Only names of files inside the static folder are served: every path segment must be a plain file name
  (``[A-Za-z0-9_-][A-Za-z0-9._-]*``), so ``..``, encoded slashes (``..%2f``) and hidden files are 404s,
  and the resolved path must still be inside the folder (symlinks cannot lead out).
* ``Cache-Control: no-cache`` with an ``ETag``: file names carry no content hash, so browsers revalidate
  every time (a cheap 304) and never mix an old module with a new page after an upgrade.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web
from yarl import URL

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
PREFIX: Final = "/ui"
INDEX: Final = "index.html"

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
CACHE_CONTROL: Final = "no-cache"
SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def static_file(relative: str, root: Path = STATIC_DIR) -> Path | None:
    """The file ``relative`` (a ``/``-separated path, empty for the index) names inside ``root``, or None.

    ``relative`` is the raw path after the prefix (percent-encoded slashes left encoded), so a segment
    like ``..%2f..`` fails the segment rule instead of being decoded into a path.
    """
    segments = relative.split("/") if relative else []
    if segments and segments[-1] == "":  # a directory: its index
        segments[-1] = INDEX
    if not segments:
        segments = [INDEX]
    if not all(_SEGMENT.fullmatch(segment) for segment in segments):
        return None
    path = root.joinpath(*segments).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        return None
    return path


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


async def serve_static(request: web.Request) -> web.StreamResponse:
    raw = request.rel_url.path_safe
    if raw == PREFIX:
        location = URL.build(path=PREFIX + "/", query_string=request.rel_url.query_string, encoded=False)
        raise web.HTTPFound(location=str(location))
    path = static_file(raw.removeprefix(PREFIX + "/"))
    if path is None:
        raise web.HTTPNotFound()
    body = path.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {hdrs.CACHE_CONTROL: CACHE_CONTROL, hdrs.ETAG: etag, **SECURITY_HEADERS}
    if etag in {tag.strip() for tag in request.headers.get(hdrs.IF_NONE_MATCH, "").split(",")}:
        return web.Response(status=304, headers=headers)
    headers[hdrs.CONTENT_TYPE] = content_type(path)
    return web.Response(body=body, headers=headers)


UI_ROUTES: Final = frozenset({PREFIX, PREFIX + "/{path}"})
"""The UI's route templates: public in the auth middleware (the page must load before a token is typed)."""
