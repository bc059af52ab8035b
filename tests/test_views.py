"""The page, the health check and the metrics, through Flask's test client."""

from __future__ import annotations

import pytest
from postgres_server import PostgresServer

from chat import create_app


def test_page_is_served_with_a_strict_policy(client):
    """The chat page allows only its own scripts and WebSocket origin, and no sniffing."""
    response = client.get("/", headers={"Host": "chat.example:8000"})
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "ws://chat.example:8000" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert b"<script" in response.data and b"chat.js" in response.data


def test_page_has_no_inline_script(client):
    """Every script on the page comes from a file."""
    html = client.get("/").data.decode()
    for tag in html.split("<script")[1:]:
        assert "src=" in tag.split(">")[0]
        assert tag.split(">", 1)[1].startswith("</script")


def test_healthz_reports_connections_backend_and_store(client):
    """/healthz answers 200 with the connection count, the backend state and the store's."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "connections": 0, "backend": True, "store": True}


def test_healthz_is_503_while_the_store_is_unreachable():
    """With its PostgreSQL stopped, /healthz answers 503 and "store": false; the backend is still fine."""
    pytest.importorskip("psycopg")
    database = PostgresServer().start()
    app = create_app({"STORE_URL": database.url})
    try:
        client = app.test_client()
        assert client.get("/healthz").json["store"] is True
        database.stop()
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json == {"status": "unavailable", "connections": 0, "backend": True, "store": False}
    finally:
        database.stop()
        app.extensions["chat"].hub.stop()


TOKEN = "scrape-me-0123456789"


def test_metrics_are_prometheus_text_for_the_token_holder():
    """/metrics serves the chat counters in Prometheus text format to a scraper with the bearer token."""
    client = create_app({"METRICS_TOKEN": TOKEN}).test_client()
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    body = response.data.decode()
    for name in ("chat_connections", "chat_rooms", "chat_deliveries_total", "chat_closes_total", "chat_fanout_seconds"):
        assert name in body


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789", TOKEN, f"Basic {TOKEN}"])
def test_metrics_refuse_a_missing_or_wrong_token(header):
    """Without the exact bearer token /metrics answers 401 and says what it needs."""
    client = create_app({"METRICS_TOKEN": TOKEN}).test_client()
    response = client.get("/metrics", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "CHAT_METRICS_TOKEN" in response.json["error"]


def test_metrics_are_off_without_a_token(client):
    """With no CHAT_METRICS_TOKEN configured /metrics is not served on the public port (404)."""
    response = client.get("/metrics")
    assert response.status_code == 404
    assert b"CHAT_METRICS_TOKEN" in response.data


def test_plain_get_on_ws_explains_itself(client):
    """A GET on /ws without an upgrade is a 400 that says it is a WebSocket endpoint."""
    response = client.get("/ws")
    assert response.status_code == 400
    assert b"WebSocket" in response.data
