"""The fan-out: one thread per process that hands the backend's events to every local connection's socket.

May import socket, backends, protocol and metrics; never rooms or web.
"""
