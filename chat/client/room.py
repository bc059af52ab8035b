"""What a client knows of its room: the welcome, who is online, and the id it resumes after."""

from __future__ import annotations

from typing import Any

#: The server lists at most this many names (CHAT_PRESENCE_LIST_LIMIT's default).
MAX_LISTED = 200


def _names(value: Any) -> list[str]:
    return [name for name in value if isinstance(name, str)] if isinstance(value, list) else []


class Room:
    """Follow one room's frames: the resume position, the welcome and the online list."""

    def __init__(self, room: str | None, since: int | None) -> None:
        self.name = room
        self.last_id = since
        self.welcome: dict[str, Any] | None = None
        self.users: list[str] = []
        self.online = 0

    def advance(self, frame: dict[str, Any]) -> bool:
        """Move past a message or change; False for one of another room or one already seen."""
        room = frame.get("room")
        if isinstance(room, str) and self.name is not None and room != self.name:
            return False
        raw = frame.get("id")
        if not (isinstance(raw, str) and raw.isdigit()):
            return True
        position = int(raw)
        if self.last_id is not None and position <= self.last_id:
            return False
        self.last_id = position
        return True

    def presence(self, frame: dict[str, Any]) -> None:
        """Take a state-3 event into the welcome and the online list."""
        event, name = frame.get("event"), frame.get("name")
        online = frame.get("online")
        counted = isinstance(online, int)
        if event == "welcome":
            self.welcome = frame
            if isinstance(frame.get("room"), str):
                self.name = frame["room"]
            self.users = _names(frame.get("users"))
            self.online = online if counted else len(self.users)
        elif event == "join" and isinstance(name, str):
            # The count is the truth: a join the welcome's list already holds is not added twice.
            if not counted or len(self.users) < online:
                self.users.append(name)
            self.online = online if counted else len(self.users)
        elif event == "leave" and isinstance(name, str):
            if name in self.users and (not counted or len(self.users) > online):
                self.users.remove(name)
            self.online = online if counted else len(self.users)
        elif event == "presence":
            leaves = _names(frame.get("leaves"))
            users = [user for user in self.users if user not in leaves]
            total = online if counted else len(users)
            for user in _names(frame.get("joins")):
                if user not in users and len(users) < min(total, MAX_LISTED):
                    users.append(user)
            self.users, self.online = users, total
