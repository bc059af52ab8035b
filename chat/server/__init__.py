"""The chat's gunicorn workers: stock gunicorn's, plus a request-head deadline and sockets the route may take.

May import socket and config; nothing imports it but gunicorn.conf.py.
"""
