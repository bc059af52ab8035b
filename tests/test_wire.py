"""The adapter over simple-websocket and wsproto: loud failure when their internals change."""

from __future__ import annotations

import _socket
import socket

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection as Protocol
from wsproto.events import CloseConnection, TextMessage

from chat.socket import probe, wire


def test_the_libraries_behave_as_the_adapter_needs():
    """A handshake through a real flask-sock route is handed over and its frames read through wsproto."""
    probe.check()


def test_check_fails_when_wsproto_hides_its_extensions(monkeypatch):
    """If wsproto's frame protocol stops exposing its extensions, check() says so, not compressed() later."""
    from wsproto import frame_protocol

    original = frame_protocol.FrameProtocol.__init__

    def without_extensions(self, *args, **kwargs):
        original(self, *args, **kwargs)
        del self.extensions

    monkeypatch.setattr(frame_protocol.FrameProtocol, "__init__", without_extensions)
    with pytest.raises(probe.Changed, match=r"wsproto \d.*extensions"):
        probe.check()


def test_native_refuses_a_gevent_socket_without_its_os_socket():
    """A gevent socket whose OS socket cannot be found is an error, never a silent cooperative fallback."""
    import gevent.socket

    class Changed(gevent.socket.socket):
        """A gevent socket that keeps its OS socket elsewhere."""

        __module__ = gevent.socket.socket.__module__
        _sock = None

    probe = gevent.socket.socket()
    try:
        assert isinstance(wire.native(probe), _socket.socket)
    finally:
        probe.close()
    changed = Changed.__new__(Changed)
    with pytest.raises(RuntimeError, match="_sock"):
        wire.native(changed)


@pytest.mark.parametrize("options", [{}, {"ping_interval": 20}, {"ping_interval": 20, "max_message_size": 10}])
def test_simple_websockets_reader_thread_ends_at_once_whatever_the_hosts_options(options):
    """Through a Handover, simple-websocket makes the handshake, and its reader thread ends without reading a byte."""
    ws, server_side, client_side = accepted("gunicorn.socket", options)
    try:
        ws.thread.join(5)
        assert not ws.thread.is_alive()
        client_side.sendall(b"unread")
        assert server_side.recv(100) == b"unread", "the thread read nothing: the chat's own reader gets every byte"
    finally:
        server_side.close()
        client_side.close()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_text_frames_parse_in_a_real_client(size):
    """Frames built once for every recipient are what a conformant client parses back."""
    text = ("é" * size)[:size]
    client = Protocol(ConnectionType.CLIENT)
    client.receive_data(wire.text_frame(text.encode()))
    events = list(client.events())
    assert len(events) >= 1 and all(isinstance(e, TextMessage) for e in events)
    assert "".join(e.data for e in events) == text


def test_close_frame_parses_with_code_and_reason():
    """A close frame carries its status code and a reason cut to fit a control frame."""
    client = Protocol(ConnectionType.CLIENT)
    client.receive_data(wire.close_frame(1013, "x" * 500))
    (event,) = client.events()
    assert isinstance(event, CloseConnection) and event.code == 1013 and len(event.reason) == 123


def test_long_close_reason_is_cut_on_a_character_boundary():
    """A close reason longer than a control frame allows is cut to 123 bytes of valid UTF-8."""
    frame = wire.close_frame(1008, "é" * 100)
    assert frame[1] <= 125
    assert frame[4:].decode() == "é" * 61


def test_check_names_the_versions_when_the_server_changes(monkeypatch):
    """If simple-websocket's Server no longer makes the handshake, check() says so with the installed versions."""
    import simple_websocket

    def changed(self, environ, subprotocols=None, receive_bytes=4096, ping_interval=None, max_message_size=None,
                thread_class=None, event_class=None, selector_class=None):
        """Stand in for a Server.__init__ that no longer sets mode."""

    monkeypatch.setattr(simple_websocket.Server, "__init__", changed)
    with pytest.raises(probe.Changed, match=r"simple-websocket \d+\.\d+"):
        probe.check()


def accepted(mode_key: str, options: dict | None = None) -> tuple[object, socket.socket, socket.socket]:
    """Return a real simple-websocket Server accepted over a socket pair as mode_key's server hands it over."""
    import simple_websocket

    server_side, client_side = socket.socketpair()
    environ = {
        mode_key: server_side, "REQUEST_METHOD": "GET", "PATH_INFO": "/ws", "QUERY_STRING": "",
        "HTTP_HOST": "localhost", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "HTTP_SEC_WEBSOCKET_VERSION": "13",
    }
    wire.hand_over(environ)
    ws = simple_websocket.Server(environ, **(options or {}))
    assert client_side.recv(4096).startswith(b"HTTP/1.1 101")
    return ws, server_side, client_side


def test_detached_socket_outlives_gunicorn_closing_its_own(monkeypatch):
    """Once detached, gunicorn's half-close and close of its socket object leave the connection open."""
    monkeypatch.setattr(wire, "_released", True)
    ws, server_side, client_side = accepted("gunicorn.socket")
    own = wire.detach(ws, server_side)
    try:
        with pytest.raises(OSError):
            server_side.shutdown(socket.SHUT_WR)
        server_side.close()
        own.sendall(b"still here")
        assert client_side.recv(100) == b"still here"
    finally:
        own.close()
        client_side.close()


def test_a_stock_gunicorn_worker_keeps_its_socket():
    """Under a gunicorn worker that is not the chat's, whose finish_request needs its socket, nothing is taken."""
    ws, server_side, client_side = accepted("gunicorn.socket")
    try:
        assert wire.detach(ws, server_side) is None
    finally:
        server_side.close()
        client_side.close()


def test_the_development_server_keeps_its_socket(monkeypatch):
    """Under werkzeug, which writes to its socket after the route returns, detach() hands nothing over."""
    monkeypatch.setattr(wire, "_released", True)
    ws, server_side, client_side = accepted("werkzeug.socket")
    try:
        assert wire.detach(ws, server_side) is None
    finally:
        server_side.close()
        client_side.close()


@pytest.mark.parametrize("kind", ["os", "gevent"])
def test_receiver_times_out_reads_and_sees_the_close(kind):
    """A receiver returns None when the time passes, the bytes sent, then b"" once the peer is gone.

    The socket under it stays as the fan-out's non-blocking writes need it.
    """
    if kind == "gevent":
        import gevent.socket

        mine, peer = gevent.socket.socketpair()
    else:
        mine, peer = socket.socketpair()
    try:
        receiver = wire.receiver(mine, 1024)
        assert isinstance(receiver, wire.Waited if kind == "gevent" else wire.Polled)
        assert receiver.receive(0.01) is None
        assert receiver.receive(0) is None, "a timer already due is no lost connection"
        peer.sendall(b"frame")
        assert receiver.receive(5) == b"frame"
        peer.close()
        assert receiver.receive(5) == b""
        if kind == "gevent":
            assert not wire.native(mine).getblocking(), "the OS socket under it stays non-blocking for the fan-out"
        else:
            assert mine.gettimeout() is None, "the socket's blocking mode is the fan-out's too: it must not change"
    finally:
        mine.close()


def test_check_fails_when_wsproto_uses_its_event_queue_in_new_ways(monkeypatch):
    """If wsproto's Connection queues events where the chat uses it, check() says so before NoEvents stands in."""
    original = Protocol.send

    def send(self, event):
        """Stand in for a Connection.send that queues an event."""
        self._events.append(event)
        return original(self, event)

    monkeypatch.setattr(Protocol, "send", send)
    with pytest.raises(probe.Changed, match="queued an event"):
        probe.check()


def test_taken_over_connection_still_reads_frames_and_pings():
    """With NoEvents in place of wsproto's queue, frames, pings and the close still come through."""
    from wsproto.events import Ping

    ws, server_side, client_side = accepted("gunicorn.socket")
    try:
        _, protocol = wire.take_over(ws)
        client = Protocol(ConnectionType.CLIENT)
        protocol.receive_data(client.send(TextMessage(data="hi")) + client.send(Ping(b"p")))
        first, second = protocol.events()
        assert isinstance(first, TextMessage) and first.data == "hi"
        assert isinstance(second, Ping) and second.payload == b"p"
        protocol.receive_data(client.send(CloseConnection(code=1000)))
        (closed,) = protocol.events()
        assert isinstance(closed, CloseConnection) and closed.code == 1000
    finally:
        server_side.close()
        client_side.close()
