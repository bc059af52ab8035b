"""The chat as a Flask extension: ``Chat``, its mount on an app, the page, the /ws route, the HTTP API, identities.

Owns what touches Flask's request and app.  May import rooms, fanout, socket, backends, store, protocol,
config and metrics.
"""
