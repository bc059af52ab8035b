"""A host app whose on_offline hook appends each call to the file CHAT_TEST_OFFLINE_LOG names, one JSON line each."""

import json
import os

from flask import Flask

from chat import Chat

app = Flask(__name__)
chat = Chat(app)


@chat.on_offline
def gone(user: str, unread: dict[str, int]) -> None:
    with open(os.environ["CHAT_TEST_OFFLINE_LOG"], "a") as log:
        log.write(json.dumps({"user": user, "unread": unread, "pid": os.getpid()}) + "\n")
