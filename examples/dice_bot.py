"""A Python bot for the chat: it answers "!roll" in its room with a die's roll, as a reply.

Run a chat (``make run``), then ``python -m examples.dice_bot ws://127.0.0.1:8000/ws lobby``.
"""

from __future__ import annotations

import random
import sys

from chat.client import Client


def serve(url: str, room: str) -> None:
    """Answer every new "!roll" in room until interrupted; reconnects and resends are the client's."""
    # Start after the room's last message, so that a restarted bot does not answer old rolls again.
    latest = Client(url, room).history(limit=1)["messages"]
    with Client(url, room, name="dice", since=latest[-1]["id"] if latest else None) as bot:
        print(f"dice joined {bot.room} as {bot.you} ({bot.online} online)", flush=True)
        for frame in bot.frames():
            if frame["state"] == 2 and frame["message"].strip() == "!roll" and frame["name"] != bot.you:
                rolled = random.randint(1, 6)
                answer = bot.send(f"{frame['name']} rolled {rolled}", reply_to=frame["id"])
                print(f"{frame['name']} asked in message {frame['id']}: rolled {rolled}, sent as {answer}", flush=True)


if __name__ == "__main__":
    serve(*sys.argv[1:3])
