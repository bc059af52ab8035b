"""The chat page in a real Chromium: the browser, pages in contexts of their own, and what a person does there."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, WebSocket, expect, sync_playwright
from served import under_gunicorn

__all__ = ["DESKTOP", "PHONE", "SOCKETS", "Opener", "browser", "host_app_url", "join", "open_page", "say", "texts"]

CHROMIUM = Path("/usr/bin/chromium")

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1100, "height": 700}
#: The WebSockets each page opened, in order.
SOCKETS: dict[Page, list[WebSocket]] = {}
PHONE = {"width": 360, "height": 640}
# A bound on a hang, not a speed: a loaded machine (CI's, three test workers on two cores) can take longer than
# Playwright's default of 5 s, and took over 10 s.
expect.set_options(timeout=30_000)

Opener = Callable[..., Page]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Launch Debian's Chromium once for the module, its profile folders in a temp folder."""
    if not CHROMIUM.exists():
        pytest.skip(f"chromium is missing: {CHROMIUM} is not installed (apt-get install chromium)")
    home = tmp_path_factory.mktemp("chromium")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CONFIG_HOME", str(home / "config"))
        env.setenv("XDG_CACHE_HOME", str(home / "cache"))
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            yield chromium
            chromium.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Opener]:
    """Open pages, each in its own context, and fail on any uncaught script error."""
    contexts = []
    errors: list[str] = []

    def open_(base_url: str, room: str, name: str, viewport: dict[str, int] = DESKTOP) -> Page:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{name}: {error}"))
        page.on("dialog", lambda dialog: refuse(dialog, errors))
        opened = SOCKETS.setdefault(page, [])
        page.on("websocket", lambda socket: opened.append(socket))
        page.goto(base_url + "/")
        # On load the page joins its default room as a guest, and that join's welcome writes its room into the
        # room field: typed before it came (a loaded machine welcomed late), the room was overwritten, and the
        # page joined the default room under the name given.
        expect(page.get_by_test_id("users").locator("li")).not_to_have_count(0)
        join(page, room, name)
        return page

    yield open_
    for context in contexts:
        context.close()
    SOCKETS.clear()
    assert errors == []


def refuse(dialog: Dialog, errors: list[str]) -> None:
    """Record a dialog the page should never open, and dismiss it."""
    errors.append(f"dialog {dialog.message!r}")
    dialog.dismiss()


def join(page: Page, room: str, name: str) -> None:
    """Choose room and name, and wait until the server has welcomed the page."""
    page.get_by_test_id("room").fill(room)
    page.get_by_test_id("name").fill(name)
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("status")).to_have_text("connected")
    expect(page.get_by_test_id("users")).to_contain_text(name)


def say(page: Page, text: str) -> None:
    """Type a message and press Enter."""
    page.get_by_test_id("input").fill(text)
    page.get_by_test_id("input").press("Enter")


def texts(page: Page) -> Locator:
    """Return a locator for the text of every chat message on the page."""
    return page.get_by_test_id("message").locator(".text")


@pytest.fixture
def host_app_url() -> Iterator[str]:
    """Serve examples/host_app.py under gunicorn (its chat at /chat) and return its base URL."""
    with under_gunicorn("examples.host_app:app", "/chat/healthz", SECRET_KEY="browser-test-secret") as (url, _):
        yield url
