"""Rooms: the hub that admits, joins and sign-outs connections, and the one path by which every message is sent.

May import fanout, socket, backends, store, protocol, config and metrics; never web.
"""
