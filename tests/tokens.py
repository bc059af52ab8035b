"""The tests' one JWT minter and the secrets the servers under test are given."""

from __future__ import annotations

import time

import jwt

#: CHAT_JWT_SECRET of every server a test starts with tokens on (32+ characters, as the settings require).
SECRET = "a-secret-for-tests-only-0123456789abcdef"
#: CHAT_API_KEY of every server a test starts with the write API on (16+ characters).
API_KEY = "api-key-for-tests-0123456789"


def mint(sub: str = "u1", name: str | None = None, rooms: list[str] | None = None, ttl: float = 60,
         secret: str = SECRET, **claims: object) -> str:
    """Return an HS256 token for sub, valid for ttl seconds (negative: already expired); name and rooms when given."""
    body: dict[str, object] = {"sub": sub, "exp": int(time.time() + ttl), **claims}
    if name is not None:
        body["name"] = name
    if rooms is not None:
        body["rooms"] = rooms
    return jwt.encode(body, secret, algorithm="HS256")
