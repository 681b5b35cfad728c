"""How ``/ui/`` serves the UI's files: content types, caching headers, no way out of the static folder,
public even when read tokens are set (the API's data stays behind them)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import msgspec
import pytest
from yarl import URL

from query_api import create_app
from query_api.ui import STATIC_DIR, static_file
from tests.api.support import LiveApi, serve

pytestmark = pytest.mark.kafka

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


async def _get(http: aiohttp.ClientSession, url: str, raw_path: str, **kwargs: object) -> aiohttp.ClientResponse:
    """GET ``raw_path`` exactly as written (no client-side normalization of ``..`` or escapes)."""
    async with http.get(URL(url + raw_path, encoded=True), allow_redirects=False, **kwargs) as response:  # type: ignore[arg-type]
        await response.read()
        return response


async def test_ui_redirects_to_the_index(ui_api: LiveApi) -> None:
    response = await _get(ui_api.http, ui_api.url, "/ui")
    assert response.status == 302
    assert response.headers["Location"] == "/ui/"
    async with ui_api.http.get(ui_api.url + "/ui/") as index:
        assert index.status == 200
        assert index.headers["Content-Type"] == "text/html; charset=utf-8"
        body = await index.text()
    assert body == (STATIC_DIR / "index.html").read_text()
    assert '<script type="module" src="app.js"></script>' in body


async def test_every_static_file_is_served_with_its_type_and_cache_headers(ui_api: LiveApi) -> None:
    files = sorted(p for p in STATIC_DIR.iterdir() if p.is_file())
    assert {p.suffix for p in files} == set(TYPES)
    for path in files:
        async with ui_api.http.get(f"{ui_api.url}/ui/{path.name}") as response:
            assert response.status == 200, path.name
            assert response.headers["Content-Type"] == TYPES[path.suffix], path.name
            assert response.headers["Cache-Control"] == "no-cache"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            assert await response.read() == path.read_bytes()
            etag = response.headers["ETag"]
        # Revalidation: the same ETag answers 304 without a body.
        async with ui_api.http.get(f"{ui_api.url}/ui/{path.name}", headers={"If-None-Match": etag}) as cached:
            assert cached.status == 304
            assert await cached.read() == b""
            assert cached.headers["ETag"] == etag


async def test_head_and_other_methods(ui_api: LiveApi) -> None:
    async with ui_api.http.head(ui_api.url + "/ui/app.js") as head:
        assert head.status == 200
        assert head.headers["Content-Type"] == TYPES[".js"]
    async with ui_api.http.post(ui_api.url + "/ui/app.js") as post:
        assert post.status == 405
        assert set(post.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert (await post.json())["error"].startswith("method POST not allowed on /ui/app.js")


@pytest.mark.parametrize(
    "raw_path",
    [
        "/ui/..%2fapp.py",
        "/ui/..%2F..%2Fpyproject.toml",
        "/ui/%2e%2e/%2e%2e/pyproject.toml",
        "/ui/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/ui/../app.py",
        "/ui/../../pyproject.toml",
        "/ui/..",
        "/ui/%252e%252e%252fapp.py",
        "/ui/..%5capp.py",
        "/ui/..\\app.py",
        "/ui//etc/passwd",
        "/ui/%2fetc%2fpasswd",
        "/ui/.hidden",
        "/ui/app.js%00.html",
        "/ui/app.js/",
        "/ui/missing.js",
        "/ui/static/index.html",
        "/uiapp.js",
    ],
)
async def test_nothing_outside_the_static_folder(ui_api: LiveApi, raw_path: str) -> None:
    response = await _get(ui_api.http, ui_api.url, raw_path)
    assert response.status == 404, raw_path
    assert response.headers["Content-Type"].startswith("application/json")


def test_static_file_resolution(tmp_path: Path) -> None:
    root = tmp_path / "static"
    root.mkdir()
    (root / "index.html").write_text("index")
    (root / "app.js").write_text("js")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "sub").mkdir()
    assert static_file("", root) == root / "index.html"
    assert static_file("app.js", root) == root / "app.js"
    for bad in ("../secret.txt", "..", ".", "link.txt", "sub", "sub/", "app.js/", "a b.js", "%2e%2e", "\\secret.txt"):
        assert static_file(bad, root) is None, bad


async def test_the_files_need_no_token_the_data_does(ui_api: LiveApi) -> None:
    settings = msgspec.structs.replace(ui_api.settings, read_tokens=("reader-token",))
    async with serve(create_app(settings, store=ui_api.store)) as url, aiohttp.ClientSession() as http:
        for path in ("/ui/", "/ui/app.js", "/ui/style.css", "/ui/favicon.svg"):
            async with http.get(url + path) as response:
                assert response.status == 200, path
        assert (await _get(http, url, "/ui")).status == 302
        async with http.get(url + "/traces/query") as response:
            assert response.status == 401
        async with http.get(url + "/traces/query", headers={"Authorization": "Bearer reader-token"}) as response:
            assert response.status == 200
