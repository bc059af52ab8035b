"""The chat page with its static files, the health check and the metrics."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, jsonify, render_template, request, url_for

from ..metrics import CONTENT_TYPE
from .mount import state

bp = Blueprint("chat_views", __name__)


def index() -> Response:
    """Serve the chat page, told where its socket is and who it is, with a policy that allows only its own files."""
    you = state().identity()
    # Werkzeug builds a WebSocket rule's URL with a ws: scheme and this host; the page needs only the path.
    socket = urlsplit(url_for("chat_ws.chat_socket")).path
    html = render_template("chat/index.html", socket=socket, you=you)
    response = Response(html)
    host = request.host
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' ws://{host} wss://{host}; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    return response


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Report the connection count and whether the backend and the message store answer (503 if either does not)."""
    chat = state()
    backend = chat.hub.running() and chat.hub.backend.healthy()
    store = chat.hub.store.healthy()
    healthy = backend and store
    body = {"status": "ok" if healthy else "unavailable", "connections": chat.hub.count(), "backend": backend,
            "store": store}
    return jsonify(body), 200 if healthy else 503


@bp.get("/metrics")
def metrics() -> Response:
    """Serve the Prometheus metrics to a scraper that holds CHAT_METRICS_TOKEN; without one they are off."""
    chat = state()
    token = chat.settings["METRICS_TOKEN"]
    if token is None:
        abort(404, description="metrics are off: set CHAT_METRICS_TOKEN and scrape with that bearer token")
    if not _holds(token):
        response = jsonify(error="metrics need Authorization: Bearer <CHAT_METRICS_TOKEN>")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return Response(chat.metrics.render(), content_type=CONTENT_TYPE)


def _holds(token: str) -> bool:
    """Tell whether the request's Authorization gives token: as a bearer token, or a basic password, any case."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme == "basic" and request.authorization is not None:
        credentials = request.authorization.password or ""
    elif scheme != "bearer":
        return False
    return hmac.compare_digest(credentials.encode(), token.encode())


@bp.after_request
def security_headers(response: Response) -> Response:
    """Forbid MIME sniffing and keep the referrer to this origin, on the chat's own responses only."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def page_blueprint(static_url_path: str) -> Blueprint:
    """Return the page's blueprint, its template and its static files (shipped in the package) under static_url_path."""
    page = Blueprint("chat", __name__, template_folder="templates", static_folder="static",
                     static_url_path=static_url_path)
    page.add_url_rule("/", view_func=index, methods=["GET"])
    page.after_request(security_headers)
    return page


#: The page, served under the chat's prefix, its files under /static.
page = page_blueprint("/static")
#: The page for an app that serves /static itself where the chat is mounted: its files under /static/chat.
page_beside = page_blueprint("/static/chat")
