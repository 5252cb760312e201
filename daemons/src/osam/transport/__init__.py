"""The only place that touches sockets and TLS: mutually authenticated asyncio streams between
sentinel, gateway and receiver (and admin clients of the receiver's API)."""
from __future__ import annotations

from .client import connect
from .connection import Connection, HandshakeRefused, TransportError
from .contexts import client_context, server_context
from .server import bound_port, close_server, serve

__all__ = ["Connection", "HandshakeRefused", "TransportError", "bound_port", "client_context",
           "close_server", "connect", "serve", "server_context"]
