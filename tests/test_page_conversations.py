"""The page's conversations in Chromium: two signed-in users, a DM opened from the sidebar, its unread badge,
"… is typing", and "seen" under the message the other side has read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pages import DESKTOP, say, texts
from playwright.sync_api import Browser, BrowserContext, Page, expect


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    """Give each user a browser context of its own, closed after the test."""
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()


def signed_in(browser: Browser, contexts: list[BrowserContext], url: str, user: str) -> Page:
    """Sign user in to the host app and wait until its chat page is connected."""
    context = browser.new_context(viewport=DESKTOP)
    contexts.append(context)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url + "/")
    page.get_by_test_id("login-name").fill(user)
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("status")).to_have_text("connected")
    assert errors == []
    return page


@pytest.mark.slow
def test_a_dm_with_its_badge_typing_and_seen(browser: Browser, contexts, host_app_url: str) -> None:
    """Ana opens a DM with Bo and writes; Bo's sidebar shows it unread; Bo opens it and types, Ana sees it and
    "seen" under her message; the badge is gone."""
    ana = signed_in(browser, contexts, host_app_url, "ana")
    bo = signed_in(browser, contexts, host_app_url, "bo")
    ana.get_by_test_id("dm-user").fill("bo")
    ana.get_by_test_id("dm-user").press("Enter")
    expect(ana.locator(".conversation.current")).to_contain_text("@ bo")
    say(ana, "lunch at noon?")
    expect(ana.locator(".message.own[data-id] .text")).to_have_text(["lunch at noon?"])
    expect(ana.get_by_test_id("sending")).to_have_count(0)
    dm = bo.locator('[data-testid=conversation]:has-text("@ ana")')
    # The sidebar asks for the user's rooms every 10 s; a loaded machine missed two of those asks (20 s).
    expect(dm.get_by_test_id("unread")).to_have_text("1", timeout=60_000)
    dm.locator("button").click()
    expect(texts(bo)).to_have_text(["lunch at noon?"])
    expect(ana.get_by_test_id("seen")).to_have_count(1)
    expect(ana.locator(".message.own").last.get_by_test_id("seen")).to_have_text("seen")
    bo.get_by_test_id("input").press_sequentially("sure")
    expect(ana.get_by_test_id("typing")).to_have_text("bo is typing…")
    bo.get_by_test_id("input").press("Enter")
    expect(texts(ana)).to_have_text(["lunch at noon?", "sure"])
    expect(ana.get_by_test_id("typing")).to_be_hidden()
    expect(bo.locator('[data-testid=conversation]:has-text("@ ana")').get_by_test_id("unread")).to_have_count(0)
