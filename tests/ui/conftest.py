"""Fixtures of the web UI tests: a real headless Chromium driving the UI of a real API on a real socket.

``browser`` (session): Debian's Chromium (``/usr/bin/chromium``, or ``TRACING_TEST_CHROMIUM``) launched by
Playwright; Playwright never downloads a browser here. No browser or no Playwright: a skip locally, a
failure with ``CI=true`` (``scripts/test.sh`` installs the browser when it runs as root).
``ui_store`` / ``ui_api`` (session): one SQLite store filled with :mod:`tests.ui.data`'s traces (written
the way a worker writes them) and one API serving it, shared by the tests that only read.
``page`` (function): a fresh browser context and page that records console errors and page errors
(:class:`Page` ``.errors``), with a 1440 by 900 viewport.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
import pytest

from query_api import create_app
from shared.settings import Settings
from shared.store import open_store
from shared.store.base import TraceStore
from tests.api.support import LiveApi, serve
from tests.conftest import unique_settings
from tests.prerequisites import missing

from .data import seed

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Playwright, ViewportSize
    from playwright.async_api import Page as PlaywrightPage

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("TRACING_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1440, "height": 900}


def _no_browser(reason: str) -> NoReturn:
    missing(f"no browser for the UI tests: {reason}")


@pytest.fixture(scope="session")
async def playwright() -> AsyncIterator[Playwright]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _no_browser("the playwright package is not installed (pip install -e '.[dev]')")
    async with async_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's executable."""
    found = CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which(CHROMIUM)
    if found is None:
        _no_browser(f"{CHROMIUM} is missing (apt-get install chromium)")
    return found


@pytest.fixture(scope="session")
async def browser(playwright: Playwright, chromium: str) -> AsyncIterator[Browser]:
    launched = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        await launched.close()


@dataclass
class Page:
    """A browser page and what went wrong on it: console errors (with the URL they concern) and
    uncaught exceptions."""

    page: PlaywrightPage
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def errors(self, *, allow_url: str | None = None) -> list[str]:
        """Every console error and page error; ``allow_url``: ignore console errors about URLs containing
        it (a request the page expects to fail)."""
        console = [text for text, url in self.console if allow_url is None or allow_url not in url]
        return console + [f"page error: {e}" for e in self.page_errors]

    async def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    raw = await context.new_page()
    raw.set_default_timeout(10_000)
    recorded = Page(raw)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            recorded.console.append((message.text, str(message.location.get("url", ""))))

    def on_page_error(error: Any) -> None:
        recorded.page_errors.append(str(error))

    raw.on("console", on_console)
    raw.on("pageerror", on_page_error)
    try:
        yield recorded
    finally:
        await context.close()


@pytest.fixture(scope="session")
def ui_settings(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return unique_settings(kafka_bootstrap, tmp_path_factory.mktemp("ui") / "traces.db", label="ui", partitions=1)


@pytest.fixture(scope="session")
async def ui_store(ui_settings: Settings) -> AsyncIterator[TraceStore]:
    store = await open_store(ui_settings)
    try:
        await seed(store, ui_settings)
        yield store
    finally:
        await store.close()


@pytest.fixture(scope="session")
async def ui_api(ui_settings: Settings, ui_store: TraceStore) -> AsyncIterator[LiveApi]:
    async with serve(create_app(ui_settings, store=ui_store)) as url, aiohttp.ClientSession() as http:
        yield LiveApi(url=url, http=http, store=ui_store, settings=ui_settings)
