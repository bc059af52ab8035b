"""The page is customised by extending the packaged one: the standalone app's templates/, or a host app's own."""

from __future__ import annotations

from pathlib import Path

from conftest import ROOT
from flask import Flask

from chat import Chat, create_app


def test_the_standalone_apps_templates_folder_overrides_a_block_of_the_packaged_page(client):
    """templates/chat/index.html extends chat/page.html: its head block reaches the page, the rest is the package's."""
    assert '{% extends "chat/page.html" %}' in (ROOT / "templates" / "chat" / "index.html").read_text()
    html = client.get("/").data.decode()
    assert '<meta name="description" content="A real-time chat room">' in html
    assert 'id="messages"' in html and "chat.js" in html


def test_a_host_app_extends_the_packaged_page_from_its_own_templates(tmp_path: Path):
    """A host's templates/chat/index.html that extends chat/page.html changes the blocks it overrides, and only them."""
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "index.html").write_text(
        '{% extends "chat/page.html" %}{% block title %}Host chat{% endblock %}{% block brand %}Ours{% endblock %}'
    )
    app = Flask("host", template_folder=str(tmp_path))
    Chat(app, url_prefix="/chat")
    try:
        html = app.test_client().get("/chat/").data.decode()
    finally:
        app.extensions["chat"].hub.stop()
    assert "<title>Host chat</title>" in html and '<h1 class="brand">Ours</h1>' in html
    assert 'id="messages"' in html and "/chat/static/chat.js" in html


def test_without_a_templates_folder_the_packaged_page_is_served(monkeypatch, tmp_path: Path):
    """An installed package (no templates/ beside it) serves the page as shipped."""
    import chat

    monkeypatch.setattr(chat, "__file__", str(tmp_path / "chat" / "__init__.py"))
    assert chat.templates() is None
    app = create_app()
    try:
        html = app.test_client().get("/").data.decode()
    finally:
        app.extensions["chat"].hub.stop()
    assert "<title>Chat</title>" in html and 'name="description"' not in html
