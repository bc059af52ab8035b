"""The Lua scripts of the Redis backend, read from ``lua/`` and registered with a client.

``common.lua``, ``fold.lua`` and ``replay.lua`` hold functions that the other scripts share;
each script that runs is those two followed by its own file.  ``source()``
gives the full text, so a script can be run on its own
(``redis-cli --eval``) as well as through redis-py.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).with_name("lua")
LIBRARIES = ("common", "fold", "replay")
NAMES = ("publish", "history", "enter", "leave", "users", "renew", "restore", "depart", "change", "look")


@cache
def source(name: str) -> str:
    """Return the full text of one script: the shared functions, then its own body."""
    if name not in NAMES:
        raise KeyError(f"no Lua script named {name}")
    parts = [(FOLDER / f"{library}.lua").read_text() for library in LIBRARIES]
    parts.append((FOLDER / f"{name}.lua").read_text())
    return "\n".join(parts)


def register(client: Any) -> dict[str, Any]:
    """Register every script with client and return them by name."""
    return {name: client.register_script(source(name)) for name in NAMES}
