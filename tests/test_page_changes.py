"""The page's messages that change, in Chromium: two signed-in users; edit and delete your own message, react,
reply, each seen live in the other's tab and again after a reload."""

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


def signed_in(browser: Browser, contexts: list[BrowserContext], url: str, user: str, errors: list[str]) -> Page:
    """Sign user in to the host app and wait until its chat page is connected."""
    context = browser.new_context(viewport=DESKTOP)
    contexts.append(context)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url + "/")
    page.get_by_test_id("login-name").fill(user)
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("status")).to_have_text("connected")
    return page


def message(page: Page, text: str):
    """Return the locator of the message whose text is text."""
    return page.locator(".message[data-id]", has=page.locator(".text", has_text=text))


@pytest.mark.slow
def test_edit_delete_react_and_reply_live_and_after_a_reload(browser: Browser, contexts, host_app_url: str) -> None:
    """Ana writes, edits and later deletes her message; Bo reacts and replies; each tab sees the other's changes
    live, and a reload shows the messages as they stand."""
    errors: list[str] = []
    ana = signed_in(browser, contexts, host_app_url, "ana", errors)
    bo = signed_in(browser, contexts, host_app_url, "bo", errors)
    say(ana, "lunch at 12?")
    say(ana, "or later")
    expect(texts(bo)).to_have_text(["lunch at 12?", "or later"])
    expect(message(ana, "lunch at 12?").get_by_test_id("edit")).to_have_count(1)
    expect(message(bo, "lunch at 12?").get_by_test_id("edit")).to_have_count(0)

    message(ana, "lunch at 12?").get_by_test_id("edit").click()
    expect(ana.get_by_test_id("input")).to_have_value("lunch at 12?")
    ana.get_by_test_id("input").fill("lunch at 12:30?")
    ana.get_by_test_id("input").press("Enter")
    for page in (ana, bo):
        expect(texts(page)).to_have_text(["lunch at 12:30?", "or later"])
        expect(message(page, "lunch at 12:30?").get_by_test_id("edited")).to_have_count(1)

    message(bo, "lunch at 12:30?").get_by_test_id("react").click()
    for page in (ana, bo):
        expect(message(page, "lunch at 12:30?").get_by_test_id("reaction")).to_have_text("👍 1")
    message(ana, "lunch at 12:30?").get_by_test_id("reaction").click()
    expect(message(bo, "lunch at 12:30?").get_by_test_id("reaction")).to_have_text("👍 2")

    message(bo, "lunch at 12:30?").get_by_test_id("reply").click()
    expect(bo.get_by_test_id("composing")).to_contain_text("lunch at 12:30?")
    say(bo, "sure")
    for page in (ana, bo):
        expect(message(page, "sure").get_by_test_id("quote")).to_have_text("↪ lunch at 12:30?")

    message(ana, "or later").get_by_test_id("delete").click()
    for page in (ana, bo):
        expect(page.locator(".message.deleted .text")).to_have_text(["message deleted"])

    for page in (ana, bo):
        page.reload()
        expect(page.get_by_test_id("status")).to_have_text("connected")
        expect(texts(page)).to_have_text(["lunch at 12:30?", "message deleted", "sure"])
        expect(message(page, "lunch at 12:30?").get_by_test_id("edited")).to_have_count(1)
        expect(message(page, "lunch at 12:30?").get_by_test_id("reaction")).to_have_text("👍 2")
        expect(message(page, "sure").get_by_test_id("quote")).to_have_text("↪ lunch at 12:30?")
    assert errors == []
