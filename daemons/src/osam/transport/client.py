"""Connecting to a receiver or gateway; returns only once the server has admitted us."""
from __future__ import annotations

import asyncio
import ssl
import time
from typing import Iterable, Optional

from ..pki import IdentityError, identity_from_cert
from . import admission
from .connection import (READ_LIMIT, Connection, HandshakeRefused, TransportError, close_writer,
                         peer_certificate_der, set_nodelay, widen_buffers)
from .refusal import describe_handshake_error


async def connect(host: str, port: int, ssl_ctx: ssl.SSLContext, *, timeout: float,
                  server_hostname: Optional[str] = None,
                  expect_roles: Optional[Iterable[str]] = None,
                  admission_line: bool = True) -> Connection:
    """A Connection whose `identity` is the server's. `server_hostname` (default: `host`) is
    checked against the server certificate's SANs; `expect_roles` pins what the server must be.
    Raises HandshakeRefused when either side refuses a certificate, TransportError otherwise."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    deadline = time.monotonic() + timeout
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_ctx, limit=READ_LIMIT,
                                    server_hostname=server_hostname or host),
            timeout)
    except asyncio.TimeoutError:
        raise TransportError(f"{where}: no TLS connection within {timeout:g}s") from None
    except ssl.SSLCertVerificationError as exc:
        raise HandshakeRefused(f"{where}: server certificate refused: "
                               f"{describe_handshake_error(exc)}") from None
    except ssl.SSLError as exc:
        raise HandshakeRefused(f"{where}: {describe_handshake_error(exc)}") from None
    except OSError as exc:
        raise TransportError(f"cannot reach {where}: {exc.strerror or exc}") from None

    try:
        set_nodelay(writer)
        der = peer_certificate_der(writer)
        identity = identity_from_cert(der)
        if expect_roles is not None and identity.role not in tuple(expect_roles):
            raise HandshakeRefused(f"{where}: server is a {identity.role}, expected "
                                   f"{' or '.join(expect_roles)}")
        if admission_line:
            await _await_admission(reader, where, max(0.0, deadline - time.monotonic()))
        widen_buffers(writer)
    except IdentityError as exc:
        await close_writer(writer)
        raise HandshakeRefused(f"{where}: server certificate refused: {exc}") from None
    except BaseException:
        await close_writer(writer)
        raise
    return Connection(reader, writer, identity, where, der)


async def _await_admission(reader: asyncio.StreamReader, where: str, timeout: float) -> None:
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except asyncio.TimeoutError:
        raise TransportError(f"{where}: server did not admit us within the timeout") from None
    except (OSError, EOFError, ValueError) as exc:   # ValueError: line over the reader's limit
        raise HandshakeRefused(f"{where}: {describe_handshake_error(exc)}") from None
    if not line:
        raise HandshakeRefused(f"{where}: server closed the connection before admitting us "
                               "(our certificate refused? the server's log says why)")
    try:
        admitted, reason = admission.parse(line)
    except ValueError as exc:
        raise TransportError(f"{where}: {exc} (not an osam server?)") from None
    if not admitted:
        raise HandshakeRefused(f"{where}: server refused us: {reason}")
