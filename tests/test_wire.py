"""The adapter over simple-websocket and wsproto: loud failure when their internals change."""

from __future__ import annotations

import _socket
from importlib.metadata import version

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection as Protocol
from wsproto.events import CloseConnection, TextMessage

from chat import wire


def test_pinned_versions_are_the_tested_ones():
    """The installed simple-websocket, wsproto and flask-sock are the versions the adapter was tested with."""
    for package, expected in wire.TESTED_VERSIONS.items():
        assert version(package) == expected, f"{package} changed: re-check chat/wire.py"


def test_internals_the_adapter_uses_are_there():
    """simple-websocket still takes thread_class and wsproto still exposes its connection."""
    wire.check()


def test_check_fails_when_server_no_longer_takes_thread_class(monkeypatch):
    """If simple_websocket.Server stops accepting thread_class, check() says so at start-up."""
    import simple_websocket

    def changed(self, environ, subprotocols=None, receive_bytes=4096, ping_interval=None, event_class=None):
        """Stand in for a Server.__init__ without thread_class."""

    monkeypatch.setattr(simple_websocket.Server, "__init__", changed)
    with pytest.raises(RuntimeError, match="thread_class"):
        wire.check()


def test_check_fails_when_wsproto_hides_its_extensions(monkeypatch):
    """If wsproto's frame protocol stops exposing its extensions, check() says so, not compressed() later."""
    from wsproto import frame_protocol

    original = frame_protocol.FrameProtocol.__init__

    def without_extensions(self, *args, **kwargs):
        original(self, *args, **kwargs)
        del self.extensions

    monkeypatch.setattr(frame_protocol.FrameProtocol, "__init__", without_extensions)
    with pytest.raises(RuntimeError, match="extensions"):
        wire.check()


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


def test_dormant_thread_never_runs_its_target():
    """The stand-in for simple-websocket's reader thread does not run the reader."""
    ran = []
    thread = wire.DormantThread(target=lambda: ran.append(1))
    thread.start()
    thread.join()
    assert not ran and not thread.is_alive()


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
