"""Make docs/page.png: two people chatting, one on a desktop and one on a phone, in real Chromium.

Run from the repository root with the dev venv: ``.venv/bin/python docs/screenshot.py``.
Needs /usr/bin/chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "page.png"
CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1000, "height": 700}
PHONE = {"width": 360, "height": 700}
MARGIN = 24
BACKDROP = "#e2e6ec"
LINES = [
    ("Ada", "Hi Bob! The deploy went out a minute ago."),
    ("Bob", "Nice. Anything I should look at?"),
    ("Ada", "The new page: it resumes after a reconnect without losing a message."),
    ("Bob", "Trying it now: switching my phone to airplane mode"),
    ("Bob", "…and back. Nothing missing, nothing twice"),
    ("Ada", "That's the idea."),
]
AT_BOTTOM = (
    "() => { const list = document.getElementById('messages');"
    " return list.scrollHeight - list.scrollTop - list.clientHeight < 2; }"
)
TO_BOTTOM = (
    "() => { const list = document.getElementById('messages');"
    " list.style.scrollBehavior = 'auto'; list.scrollTop = list.scrollHeight; }"
)


def free_port() -> int:
    """Return a port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, seconds: float = 20) -> None:
    """Return once url answers, or raise."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def open_page(browser: Browser, url: str, name: str, viewport: dict[str, int]) -> Page:
    """Open the page as name in room team, and wait until it is connected."""
    context = browser.new_context(viewport=viewport, color_scheme="light")
    # The page starts in the room and under the name it remembers: no guest comes and goes first.
    context.add_init_script(f'localStorage.setItem("chat.room", "team"); localStorage.setItem("chat.name", "{name}");')
    page = context.new_page()
    page.goto(url + "/")
    expect(page.get_by_test_id("status")).to_have_text("connected")
    return page


def chat(url: str) -> None:
    """Have Ada (desktop) and Bob (phone) talk, then write both pages side by side to docs/page.png."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        pages = {"Ada": open_page(browser, url, "Ada", DESKTOP), "Bob": open_page(browser, url, "Bob", PHONE)}
        expect(pages["Ada"].get_by_test_id("users")).to_contain_text("Bob")
        for count, (name, text) in enumerate(LINES, 1):
            pages[name].get_by_test_id("input").fill(text)
            pages[name].get_by_test_id("input").press("Enter")
            for page in pages.values():
                expect(page.get_by_test_id("message")).to_have_count(count)
        for page in pages.values():
            # A message waiting for its ack shows a clock.
            expect(page.locator(".pending")).to_have_count(0)
            page.evaluate(TO_BOTTOM)
            page.wait_for_function(AT_BOTTOM)
        compose(browser, pages["Ada"].screenshot(), pages["Bob"].screenshot())
        browser.close()


def compose(browser: Browser, desktop: bytes, phone: bytes) -> None:
    """Lay the two screenshots side by side in a page of their own, and screenshot that."""
    width = DESKTOP["width"] + PHONE["width"] + 3 * MARGIN
    height = max(DESKTOP["height"], PHONE["height"]) + 2 * MARGIN
    images = "".join(
        f'<img src="data:image/png;base64,{base64.b64encode(shot).decode()}" style="margin-left:{MARGIN}px">'
        for shot in (desktop, phone)
    )
    html = (
        f'<body style="margin:0;padding:{MARGIN}px 0;background:{BACKDROP};display:flex;align-items:flex-start">'
        f"{images}</body>"
    )
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_content(html)
    page.screenshot(path=str(OUT))


def main() -> None:
    """Serve the chat on a free port, take the screenshots, and write docs/page.png."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, CHAT_STORE_URL="none")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    server = subprocess.Popen(
        [str(gunicorn), "-b", f"127.0.0.1:{port}", "app:app"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(url + "/healthz")
        with tempfile.TemporaryDirectory() as folder:
            # Chromium's profile and cache go to a folder of their own, not the user's.
            os.environ["XDG_CONFIG_HOME"] = os.environ["XDG_CACHE_HOME"] = folder
            chat(url)
    finally:
        server.terminate()
        server.wait(timeout=15)
    print(f"{OUT}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
