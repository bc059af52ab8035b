"""The chat page, the health check and the metrics."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, abort, jsonify, render_template, request

from . import state
from .metrics import CONTENT_TYPE

bp = Blueprint("views", __name__)


@bp.get("/")
def index() -> Response:
    """Serve the chat page with a policy that allows only its own script and socket."""
    response = Response(render_template("index.html"))
    host = request.host
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' ws://{host} wss://{host}; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    return response


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Report the connection count and whether the backend answers."""
    chat = state()
    healthy = chat.hub.running() and chat.hub.backend.healthy()
    body = {"status": "ok" if healthy else "unavailable", "connections": chat.hub.count(), "backend": healthy}
    return jsonify(body), 200 if healthy else 503


@bp.get("/metrics")
def metrics() -> Response:
    """Serve the Prometheus metrics to a scraper that holds CHAT_METRICS_TOKEN; without one they are off."""
    chat = state()
    token = chat.settings["METRICS_TOKEN"]
    if token is None:
        abort(404, description="metrics are off: set CHAT_METRICS_TOKEN and scrape with that bearer token")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        response = jsonify(error="metrics need Authorization: Bearer <CHAT_METRICS_TOKEN>")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return Response(chat.metrics.render(), content_type=CONTENT_TYPE)


@bp.after_app_request
def security_headers(response: Response) -> Response:
    """Forbid MIME sniffing and keep the referrer to this origin."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response
