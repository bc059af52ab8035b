"""Example host apps of the chat, and their tests."""
