"""Settings: defaults, then CHAT_* from the environment, then the app's config."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


def _number(kind: type, minimum: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return parse


def _switch(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "on", "true", "yes"}:
        return True
    if lowered in {"0", "off", "false", "no"}:
        return False
    raise ValueError("must be on or off")


def _rate(text: str) -> tuple[float, float] | None:
    """Parse "RATE[,BURST]" in messages per second, or "off"."""
    if text.strip().lower() in {"0", "off", "none"}:
        return None
    rate, _, burst = text.partition(",")
    per_second = float(rate)
    size = float(burst) if burst else max(1.0, per_second * 4)
    if not (math.isfinite(per_second) and math.isfinite(size)) or per_second <= 0 or size < 1:
        raise ValueError("must be RATE[,BURST] with RATE > 0 and BURST >= 1, or off")
    return per_second, size


def _origins(text: str) -> tuple[str, ...]:
    return tuple(item.strip().rstrip("/").lower() for item in text.split(",") if item.strip())


def _backend_url(text: str) -> str:
    if not text.startswith(("memory://", "redis://", "rediss://", "unix://", "redis+cluster://")):
        raise ValueError("must start with memory://, redis://, rediss://, unix:// or redis+cluster://")
    return text


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """Parse seconds, or a number with a unit: 30s, 10m, 24h, 7d."""
    text = text.strip().lower()
    scale = UNITS.get(text[-1:])
    value = float(text[:-1] if scale else text) * (scale or 1)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive duration such as 600, 10m, 24h or 7d")
    return value


def _token(text: str) -> str | None:
    token = text.strip()
    if not token:
        return None
    if len(token) < 16:
        raise ValueError("must be at least 16 characters")
    return token


def _secret(text: str) -> str | None:
    secret = text.strip()
    if not secret:
        return None
    if len(secret) < 32:
        raise ValueError("must be at least 32 characters (an HS256 key shorter than its hash is weak)")
    return secret


STORE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


def _store_url(text: str) -> str:
    """Accept none, sqlite:///relative/or////absolute/path or postgresql://; empty means the default file."""
    text = text.strip()
    if text.lower() == "none" or text == "":
        return text.lower()
    if not text.startswith(STORE_SCHEMES) or text == "sqlite:///":
        raise ValueError("must be none, sqlite:///file.db (sqlite:////abs/path.db) or postgresql://user@host/db")
    return text


def _retention(text: str) -> tuple[float | None, int | None]:
    """Parse "forever", an age (90d, 24h), a count of messages per room (100000), or both ("90d,100000")."""
    text = text.strip().lower()
    if text == "forever":
        return None, None
    age: float | None = None
    count: int | None = None
    for part in (item.strip() for item in text.split(",")):
        if part.isdigit():
            count = _number(int, 1)(part)
        elif part[-1:] in UNITS:
            age = _duration(part)
        else:
            raise ValueError("must be forever, an age such as 90d or 24h, a count of messages such as 100000, or both")
    return age, count


def _optional_text(text: str) -> str | None:
    return text.strip() or None


def _optional_count(text: str) -> int | None:
    if text.strip().lower() in {"", "auto"}:
        return None
    return _number(int, 1)(text)


PARSERS: dict[str, Callable[[str], Any]] = {
    "BACKEND_URL": _backend_url,
    "HEARTBEAT_INTERVAL": _number(float, 0.01),
    "PING_INTERVAL": _number(float, 0.01),
    "PING_TIMEOUT": _number(float, 0.01),
    "MAX_MESSAGE_BYTES": _number(int, 1),
    "RATE_LIMIT": _rate,
    "FRAME_RATE": _rate,
    "HANDSHAKE_RATE": _rate,
    "OUTBOX_LIMIT": _number(int, 1024),
    "REPLAY_BYTES": _number(int, 1024),
    "PAGE_BYTES": _number(int, 1024),
    "HISTORY_SIZE": _number(int, 0),
    "HISTORY_REPLAY": _number(int, 0),
    "ALLOWED_ORIGINS": _origins,
    "TRUST_PROXY": _switch,
    "MAX_CONNECTIONS": _optional_count,
    "MAX_CONNECTIONS_PER_IP": _number(int, 1),
    "COMPRESSION": _switch,
    "SHUTDOWN_TIMEOUT": _number(float, 0.1),
    "PRESENCE_TTL": _number(float, 1),
    "PRESENCE_INTERVAL": _number(float, 0.01),
    "PRESENCE_LIST_LIMIT": _number(int, 0),
    "HEADER_TIMEOUT": _number(float, 0.1),
    "ROOM_EXPIRY": _duration,
    "METRICS_TOKEN": _token,
    "JWT_SECRET": _secret,
    "JWT_MAX_AGE": _duration,
    "JWT_ISSUER": _optional_text,
    "JWT_AUDIENCE": _optional_text,
    "SIGNOUT_TTL": _duration,
    "ANONYMOUS": _switch,
    "API_KEY": _token,
    "IDEMPOTENCY_TTL": _duration,
    "STORE_URL": _store_url,
    "RETENTION": _retention,
    "RETENTION_INTERVAL": _duration,
    "OFFLINE_GRACE": _number(float, 0.01),
}

DEFAULTS: dict[str, Any] = {
    "BACKEND_URL": "memory://",
    "HEARTBEAT_INTERVAL": 5.0,
    "PING_INTERVAL": 25.0,
    "PING_TIMEOUT": 25.0,
    "MAX_MESSAGE_BYTES": 64 * 1024,
    "RATE_LIMIT": (5.0, 20.0),
    "FRAME_RATE": (100.0, 1000.0),
    "HANDSHAKE_RATE": (10.0, 100.0),
    "OUTBOX_LIMIT": 1024 * 1024,
    "REPLAY_BYTES": 512 * 1024,
    "PAGE_BYTES": 1024 * 1024,
    "HISTORY_SIZE": 1000,
    "HISTORY_REPLAY": 50,
    "ALLOWED_ORIGINS": (),
    "TRUST_PROXY": False,
    "MAX_CONNECTIONS": None,
    "MAX_CONNECTIONS_PER_IP": 50,
    "COMPRESSION": False,
    "SHUTDOWN_TIMEOUT": 8.0,
    "PRESENCE_TTL": 30.0,
    "PRESENCE_INTERVAL": 0.25,
    "PRESENCE_LIST_LIMIT": 200,
    "HEADER_TIMEOUT": 10.0,
    "ROOM_EXPIRY": 7 * 86400.0,
    "METRICS_TOKEN": None,
    "JWT_SECRET": None,
    "JWT_MAX_AGE": 30 * 86400.0,
    "JWT_ISSUER": None,
    "JWT_AUDIENCE": None,
    "SIGNOUT_TTL": 30 * 86400.0,
    "ANONYMOUS": True,
    "API_KEY": None,
    "IDEMPOTENCY_TTL": 86400.0,
    #: Empty: a SQLite file, chat.db, in the app's instance folder.
    "STORE_URL": "",
    "RETENTION": (None, None),
    "RETENTION_INTERVAL": 60.0,
    #: Seconds a user's last connection must stay closed before on_offline is called (so a reload is no absence).
    "OFFLINE_GRACE": 10.0,
}


def load(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the settings, each named without its CHAT_ prefix."""
    settings = dict(DEFAULTS)
    # Heroku sets DYNO, and every request reaches it through Heroku's router.
    settings["TRUST_PROXY"] = "DYNO" in environ
    if "CHAT_BACKEND_URL" not in environ and environ.get("REDIS_URL"):
        settings["BACKEND_URL"] = _parse("REDIS_URL", "BACKEND_URL", environ["REDIS_URL"])
    # Heroku's Postgres add-on sets DATABASE_URL; other databases there belong to the host app.
    if "CHAT_STORE_URL" not in environ and environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        settings["STORE_URL"] = _parse("DATABASE_URL", "STORE_URL", environ["DATABASE_URL"])
    for key in PARSERS:
        name = "CHAT_" + key
        if name in environ:
            settings[key] = _parse(name, key, environ[name])
    for key, value in (overrides or {}).items():
        if key.startswith("CHAT_"):
            key = key[len("CHAT_"):]
        if key in PARSERS and isinstance(value, str):
            value = _parse("CHAT_" + key, key, value)
        settings[key] = value
    return settings


def from_app(app_config: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return the settings from an app's CHAT_* config first, then CHAT_* variables, then the defaults.

    Numbers and switches given in the app's config are checked as their text
    would be, so a bad value names its key the same way a bad variable does.
    """
    given: dict[str, Any] = {}
    for name, value in app_config.items():
        if not name.startswith("CHAT_"):
            continue
        scalar = isinstance(value, bool | int | float) and name[len("CHAT_"):] in PARSERS
        given[name] = str(value) if scalar else value
    return load(environ, given)


def _parse(variable: str, key: str, text: str) -> Any:
    try:
        return PARSERS[key](text)
    except ValueError as exc:
        raise ConfigError(f"{variable}={text!r} is invalid: {exc}") from None


def from_environment() -> dict[str, Any]:
    """Return the settings from this process's environment."""
    return load(os.environ)
