"""One authenticated stream, as both ends see it, and the knobs that make it fast."""
from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Optional

from ..pki import Identity

# Large buffers let multi-MiB frames stream without a pause per 64 KiB (asyncio's defaults).
READ_LIMIT = 2 * 1024 * 1024            # StreamReader limit; it pauses the socket at twice this
TLS_READ_HIGH_WATER = 4 * 1024 * 1024   # decrypted-side buffer of the TLS layer
WRITE_HIGH_WATER = 4 * 1024 * 1024      # drain() blocks above this
WRITE_LOW_WATER = 1 * 1024 * 1024
CLOSE_TIMEOUT = 5.0                     # a peer that never answers close_notify is cut off


class TransportError(Exception):
    """A connection could not be made or was lost."""


class HandshakeRefused(TransportError):
    """TLS or admission failed: a certificate was refused, by us or by the peer."""


class Connection:
    """A TLS stream plus who is on the other end (`identity` from the peer's certificate)."""

    __slots__ = ("reader", "writer", "identity", "peer", "peer_cert_der")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 identity: Identity, peer: str, peer_cert_der: bytes):
        self.reader = reader
        self.writer = writer
        self.identity = identity
        self.peer = peer
        self.peer_cert_der = peer_cert_der

    def __repr__(self) -> str:
        return f"<Connection {self.peer} {self.identity}>"

    async def close(self) -> None:
        await close_writer(self.writer)

    async def __aenter__(self) -> "Connection":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()


def peer_of(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock: Optional[socket.socket] = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def widen_buffers(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
    try:
        transport.set_read_buffer_limits(high=TLS_READ_HIGH_WATER)
    except (AttributeError, NotImplementedError):
        pass   # Python < 3.11: the older TLS layer has no read-side limits to widen


def peer_certificate_der(writer: asyncio.StreamWriter) -> bytes:
    ssl_object: Optional[ssl.SSLObject] = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise HandshakeRefused("no peer certificate")
    return der


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
    except (asyncio.TimeoutError, OSError, EOFError):   # ssl.SSLError is an OSError
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
