"""Hostile clients, finding 4 and the token's redaction: logs and metrics that clients cannot shape."""

from __future__ import annotations

import base64
import struct
import time
import urllib.request

import jwt
import pytest
from conftest import Server, wait_for
from crowd import handshake, masked

SECRET = "a-secret-for-tests-only-0123456789abcdef"
METRICS = "metrics-token-0123456789"
FORGED = "2026-12-07 20:30:00,000 INFO chat.ws: connect 6.6.6.6 room=admin user=root"


@pytest.fixture(scope="module")
def server():
    """Start one server for this module, with metrics, tokens and gunicorn's access log on."""
    started = Server(
        "gthread", CHAT_METRICS_TOKEN=METRICS, CHAT_JWT_SECRET=SECRET, GUNICORN_CMD_ARGS="--access-logfile -",
    ).start()
    yield started
    started.stop()


def close_with(port: int, code: int, reason: bytes, path: str = "/ws?room=logs") -> None:
    """Connect, then close with code and reason."""
    member = handshake(port, path)
    member.sock.setblocking(True)
    member.sock.sendall(masked(0x8, struct.pack("!H", code) + reason))
    member.sock.settimeout(5)
    try:
        while member.sock.recv(65536):
            pass
    except OSError:
        pass
    member.sock.close()


def lines(log: str) -> list[str]:
    """Return the log's lines, split where a terminal would break them."""
    return log.replace("\r", "\n").splitlines()


def test_a_close_reason_cannot_forge_a_log_line(server):
    """A close reason with a newline, CR or escape codes is logged escaped, as one line."""
    close_with(server.port, 1000, b"bye\n" + FORGED.encode())
    close_with(server.port, 1000, b"\x1b[31mRED\x1b[0m\rOVERWRITE")
    wait_for(lambda: "OVERWRITE" in server.log(), 10, "the second disconnect line")
    log = server.log()
    assert not any(line.startswith(FORGED[:23]) for line in lines(log))
    assert "\x1b" not in log and "\r" not in log
    assert "OVERWRITE" in log


def test_a_token_subject_cannot_forge_a_log_line(server):
    """A JWT sub with a newline is logged escaped."""
    claims = {"sub": "root\n" + FORGED, "name": "Root", "exp": int(time.time() + 60)}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    close_with(server.port, 1000, b"", f"/ws?room=logs&token={token}")
    wait_for(lambda: "user='root\\n2026" in server.log(), 10, "the connect line, its user escaped")
    assert not any(line.startswith(FORGED[:23]) for line in lines(server.log()))


def metrics(server, authorization: str) -> tuple[int, str]:
    """Return the status and body of /metrics asked with authorization."""
    request = urllib.request.Request(server.url + "/metrics", headers={"Authorization": authorization})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_client_chosen_close_codes_are_one_label(server):
    """Close codes a client picks from 3000-4999 are counted as code="other", not a series each."""
    for code in (3001, 3999, 4999):
        close_with(server.port, code, b"")
    wait_for(lambda: 'code="other"} 3.0' in metrics(server, f"Bearer {METRICS}")[1], 10, "three closes as other")
    body = metrics(server, f"Bearer {METRICS}")[1]
    assert 'code="3001"' not in body and 'code="4999"' not in body


@pytest.mark.parametrize(("authorization", "status"), [
    (f"bearer {METRICS}", 200),
    (f"BEARER  {METRICS} ", 200),
    ("Basic " + base64.b64encode(f"prometheus:{METRICS}".encode()).decode(), 200),
    ("Bearer wrong-token-0123456789", 401),
    (f"Token {METRICS}", 401),
])
def test_metrics_take_the_token_in_every_standard_form(server, authorization, status):
    """/metrics takes its token as a bearer token in any case, or as a basic password; nothing else."""
    assert metrics(server, authorization)[0] == status


def test_a_percent_encoded_token_parameter_is_redacted(server):
    """?%74oken= is the token to Flask, so the access log hides its value too."""
    token = jwt.encode({"sub": "u1", "exp": int(time.time() + 60)}, SECRET, algorithm="HS256")
    with urllib.request.urlopen(f"{server.url}/healthz?%74oken={token}", timeout=5):
        pass
    wait_for(lambda: "[redacted]" in server.log(), 10, "the redacted request line")
    assert token.split(".")[2] not in server.log()
