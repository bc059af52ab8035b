"""Serve chat with picows on uvloop as its broadcast example does: encode once, send to every client."""

import asyncio
import json
import signal
import sys

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

HEARTBEAT = json.dumps({"state": 1, "message": "心跳"}).encode()
INTERVAL = 5.0


class Room:
    """The set of connected clients, and the broadcast to all of them."""

    def __init__(self) -> None:
        self.clients: set[WSTransport] = set()

    def broadcast(self, payload: bytes) -> None:
        """Send one encoded message to every client."""
        for transport in tuple(self.clients):
            transport.send(WSMsgType.TEXT, payload)


class Client(WSListener):
    """One connection: joins the room, relays its messages, gets a heartbeat."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.transport: WSTransport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.room.clients.add(transport)
        self.timer = asyncio.get_running_loop().call_later(INTERVAL, self.beat)

    def beat(self) -> None:
        """Send the heartbeat and schedule the next."""
        self.transport.send(WSMsgType.TEXT, HEARTBEAT)
        self.timer = asyncio.get_running_loop().call_later(INTERVAL, self.beat)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The core API hands over frames, not messages; the benchmark's clients never fragment.
        if frame.msg_type == WSMsgType.TEXT:
            text = frame.get_payload_as_utf8_text()
            self.room.broadcast(json.dumps({"state": 2, "message": text}).encode())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.room.clients.discard(transport)
        if self.timer:
            self.timer.cancel()


async def main(port: int) -> None:
    """Serve /ws on 127.0.0.1:port until SIGTERM; other paths get 404."""
    room = Room()

    def route(request: WSUpgradeRequest) -> Client | None:
        return Client(room) if request.path == b"/ws" else None

    server = await ws_create_server(route, "127.0.0.1", port)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.close)
    async with server:
        await server.wait_closed()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
