"""The help desk's chat, served by the chat's test kit on memory and on a real redis-server."""

from __future__ import annotations

import urllib.request

import pytest

from chat.client import Refused
from examples.helpdesk import CLOSING, create_app


def test_visitors_chat_links_are_refused_and_the_desk_announces(chat_server, chat_settings):
    """Two visitors see each other's messages, a link is refused, and the host's announcement reaches both."""
    served = chat_server(create_app(chat_settings))
    ann = served.client("help", name="ann")
    bob = served.client("help", name="bob")
    assert sorted(bob.users) == ["ann", "bob"]

    asked = ann.send("where is my order?")
    question = bob.wait(lambda frame: frame.get("state") == 2)
    assert (question["id"], question["name"], question["message"]) == (asked, "ann", "where is my order?")

    with pytest.raises(Refused) as refused:
        ann.send("see https://example.com")
    assert refused.value.code == "rejected"

    with urllib.request.urlopen(urllib.request.Request(served.url + "/closing", method="POST"), timeout=5) as answer:
        assert answer.status == 202
    for visitor in (ann, bob):
        told = visitor.wait(lambda frame: frame.get("state") == 2 and frame["name"] == "desk")
        assert told["message"] == CLOSING
    assert [frame["message"] for frame in bob.history()["messages"]] == ["where is my order?", CLOSING]
