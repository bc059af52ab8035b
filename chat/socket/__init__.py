"""One WebSocket connection after its handshake: the socket taken over, its reader, lifecycle, outbox and gate.

May import backends, protocol and config; never fanout, rooms or web.
"""
