"""Serve chat with websockets as its documentation shows: broadcast() to a set of connections."""

import asyncio
import json
import signal
import sys
from contextlib import suppress
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

HEARTBEAT = json.dumps({"state": 1, "message": "心跳"})
connections: set[ServerConnection] = set()


async def heartbeat(ws: ServerConnection) -> None:
    """Send a heartbeat every 5 s until the connection closes."""
    with suppress(ConnectionClosed):
        while True:
            await asyncio.sleep(5)
            await ws.send(HEARTBEAT)


async def chat(ws: ServerConnection) -> None:
    """Broadcast every message to every client."""
    connections.add(ws)
    beat = asyncio.create_task(heartbeat(ws))
    try:
        async for text in ws:
            broadcast(connections, json.dumps({"state": 2, "message": text}))
    except ConnectionClosed:
        pass  # a client that goes away without a close frame is not the server's error
    finally:
        connections.discard(ws)
        beat.cancel()


def health(connection: ServerConnection, request: Request) -> Response | None:
    """Answer plain HTTP requests for anything but /ws, so a readiness probe gets a 200."""
    if request.path != "/ws":
        return connection.respond(HTTPStatus.OK, "OK\n")
    return None


async def main(port: int) -> None:
    """Serve on 127.0.0.1:port until SIGTERM."""
    async with serve(chat, "127.0.0.1", port, process_request=health) as server:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.close)
        await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
