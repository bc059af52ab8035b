"""An app whose on_message hook needs the app's context, served by gunicorn for the handover tests."""

from flask import Flask, current_app

from chat import Chat

app = Flask("handover")
chat = Chat(app)


@chat.on_message
def tag(sender, room, text):
    """Prefix every message with the app's name, which only an app context can tell."""
    return f"{current_app.name}: {text}"
