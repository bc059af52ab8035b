"""The chat's test kit, as a host app's conftest.py brings it in."""

from chat.testing import chat_backend, chat_redis, chat_server, chat_settings  # noqa: F401  (pytest fixtures)
