"""Accepting mutually authenticated connections. The TLS handshake runs inside our own accept
callback (plain TCP listener + start_tls) rather than in asyncio's listener, so every refused
peer costs exactly one clear log line instead of a traceback in the loop's exception handler."""
from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Awaitable, Callable, Iterable

from ..pki import IdentityError, identity_from_cert
from . import admission
from .connection import (READ_LIMIT, Connection, close_writer, peer_certificate_der, peer_of,
                         set_nodelay, widen_buffers)
from .refusal import describe_handshake_error, is_hangup

Handler = Callable[[Connection], Awaitable[None]]


async def serve(host: str, port: int, ssl_ctx: ssl.SSLContext, handler: Handler, *,
                allowed_roles: Iterable[str], log: logging.Logger,
                handshake_timeout: float = 10.0, admission_line: bool = True) -> asyncio.Server:
    """Listen on host:port (0 picks a free port; read it from the returned server's sockets)
    and run `await handler(conn)` for each peer whose certificate role is in `allowed_roles`.

    `admission_line=False` is for HTTP listeners, whose clients expect the server to stay
    silent until they speak; osam's own links keep it on (see `admission`)."""
    if not hasattr(asyncio.StreamWriter, "start_tls"):
        raise RuntimeError("osam.transport.serve needs Python 3.11 or newer (StreamWriter.start_tls)")
    allowed = frozenset(allowed_roles)
    live = set()

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer)
        set_nodelay(writer)
        live.add(writer)
        try:
            await _serve_one(reader, writer, peer)
        finally:
            live.discard(writer)

    async def _serve_one(reader, writer, peer) -> None:
        conn = await _handshake(reader, writer, peer, ssl_ctx, allowed, log,
                                handshake_timeout, admission_line)
        if conn is None:
            return
        try:
            await handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.info("connection %s (%s) lost: %s", peer, conn.identity, str(exc) or type(exc).__name__)
        except Exception:
            log.exception("handler failed for %s (%s)", peer, conn.identity)
        finally:
            await conn.close()

    server = await asyncio.start_server(on_accept, host, port, limit=READ_LIMIT)
    server.osam_live_writers = live
    return server


def close_server(server: asyncio.Server) -> None:
    """Stop listening and drop every connection now: a daemon that is told to stop does not
    wait for peers to finish a polite TLS close (its durable state is already on disk)."""
    server.close()
    for writer in list(getattr(server, "osam_live_writers", ())):
        writer.transport.abort()


async def _handshake(reader, writer, peer, ssl_ctx, allowed, log, timeout, admission_line):
    """The admitted Connection, or None after logging why the peer was refused."""
    # The client speaks first: bytes the plain stream reads before start_tls takes over would
    # be lost to TLS and the handshake would hang. Stop reading before anything can yield, and
    # await start_tls directly (its timeout argument, not wait_for, which would yield first).
    writer.transport.pause_reading()
    try:
        await writer.start_tls(ssl_ctx, ssl_handshake_timeout=timeout)
    except (OSError, EOFError) as exc:   # ssl.SSLError is an OSError
        if isinstance(exc, ConnectionAbortedError) and "taking longer" in str(exc):
            reason = f"TLS handshake timed out after {timeout:g}s"
        else:
            reason = describe_handshake_error(exc)
        # Port probes hang up before saying anything: worth a line, not a warning.
        log.log(logging.INFO if is_hangup(exc) else logging.WARNING, "refused %s: %s", peer, reason)
        writer.transport.abort()
        return None
    try:
        der = peer_certificate_der(writer)
        identity = identity_from_cert(der)
        if identity.role not in allowed:
            raise IdentityError(f"role {identity.role} not allowed here")
    except (IdentityError, OSError, ValueError) as exc:
        log.warning("refused %s: %s", peer, exc)
        if admission_line:
            writer.write(admission.refusal_line(str(exc)))
        await close_writer(writer)
        return None
    widen_buffers(writer)
    if admission_line:
        writer.write(admission.ADMITTED)
    log.info("accepted %s: %s %s (%s)", peer, identity.role, identity.name, identity.fingerprint[:23])
    return Connection(reader, writer, identity, peer, der)


def bound_port(server: asyncio.Server) -> int:
    """The port a server listens on; useful after serve(..., port=0, ...)."""
    return server.sockets[0].getsockname()[1]
