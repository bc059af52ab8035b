"""Settings: defaults, CHAT_* variables, test values, and clear errors."""

from __future__ import annotations

import pytest

from chat import config, create_app


def test_defaults():
    """With no variables every setting has its documented default."""
    settings = config.load({})
    assert settings["BACKEND_URL"] == "memory://"
    assert settings["HEARTBEAT_INTERVAL"] == 5.0
    assert settings["RATE_LIMIT"] == (5.0, 20.0)
    assert settings["COMPRESSION"] is False
    assert settings["MAX_MESSAGE_BYTES"] == 65536


def test_environment_then_test_config():
    """CHAT_* variables override defaults, and the test mapping overrides both."""
    settings = config.load(
        {"CHAT_HEARTBEAT_INTERVAL": "2.5", "CHAT_RATE_LIMIT": "10,30", "CHAT_COMPRESSION": "on"},
        {"HEARTBEAT_INTERVAL": 1},
    )
    assert settings["HEARTBEAT_INTERVAL"] == 1
    assert settings["RATE_LIMIT"] == (10.0, 30.0)
    assert settings["COMPRESSION"] is True


def test_redis_url_is_used_when_no_backend_is_set():
    """REDIS_URL, as a Heroku add-on sets it, selects the Redis backend."""
    assert config.load({"REDIS_URL": "redis://h:1/0"})["BACKEND_URL"] == "redis://h:1/0"
    chosen = config.load({"REDIS_URL": "redis://h:1/0", "CHAT_BACKEND_URL": "memory://"})
    assert chosen["BACKEND_URL"] == "memory://"


def test_origins_and_rate_off():
    """Origins are a trimmed lower-case list; a rate limit can be turned off."""
    settings = config.load({"CHAT_ALLOWED_ORIGINS": "https://A.example/, http://b.example", "CHAT_RATE_LIMIT": "off"})
    assert settings["ALLOWED_ORIGINS"] == ("https://a.example", "http://b.example")
    assert settings["RATE_LIMIT"] is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHAT_HEARTBEAT_INTERVAL", "soon"),
        ("CHAT_HEARTBEAT_INTERVAL", "0"),
        ("CHAT_HEARTBEAT_INTERVAL", "nan"),
        ("CHAT_PING_INTERVAL", "inf"),
        ("CHAT_RATE_LIMIT", "nan,5"),
        ("CHAT_MAX_MESSAGE_BYTES", "-5"),
        ("CHAT_RATE_LIMIT", "fast"),
        ("CHAT_COMPRESSION", "maybe"),
        ("CHAT_BACKEND_URL", "postgres://x"),
        ("CHAT_MAX_CONNECTIONS", "0"),
        ("CHAT_ROOM_EXPIRY", "soon"),
        ("CHAT_ROOM_EXPIRY", "-1d"),
        ("CHAT_HEADER_TIMEOUT", "0"),
        ("CHAT_METRICS_TOKEN", "short"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, variable, value):
    """A bad value stops create_app with a message that names the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(config.ConfigError, match=variable):
        create_app()


def test_proxy_is_trusted_by_default_on_heroku():
    """On Heroku (DYNO is set) forwarded headers are trusted unless CHAT_TRUST_PROXY says otherwise."""
    assert config.load({})["TRUST_PROXY"] is False
    assert config.load({"DYNO": "web.1"})["TRUST_PROXY"] is True
    assert config.load({"DYNO": "web.1", "CHAT_TRUST_PROXY": "off"})["TRUST_PROXY"] is False


def test_durations_take_units_and_tokens_are_kept():
    """Room expiry reads 90, 10m, 24h or 7d; the metrics token is kept as given; both default sensibly."""
    assert [config.load({"CHAT_ROOM_EXPIRY": text})["ROOM_EXPIRY"] for text in ("90", "10m", "24h", "7d")] == [
        90, 600, 86400, 604800,
    ]
    assert config.load({})["ROOM_EXPIRY"] == 604800 and config.load({})["METRICS_TOKEN"] is None
    assert config.load({"CHAT_METRICS_TOKEN": "x" * 20})["METRICS_TOKEN"] == "x" * 20
    assert config.load({})["HEADER_TIMEOUT"] == 10
