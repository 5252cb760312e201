"""Accepting mutually authenticated connections. The TLS handshake runs inside our own accept
callback (plain TCP listener + start_tls) rather than in asyncio's listener, so every refused
peer costs exactly one clear log line instead of a traceback in the loop's exception handler."""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from typing import Awaitable, Callable, Iterable, Optional

from ..pki import IdentityError, identity_from_cert
from . import admission
from .connection import (READ_LIMIT, Connection, close_writer, peer_certificate_der, peer_of,
                         set_nodelay, widen_buffers)
from .refusal import describe_handshake_error, is_hangup

Handler = Callable[[Connection], Awaitable[None]]


async def serve(host: str, port: int, ssl_ctx: ssl.SSLContext, handler: Handler, *,
                allowed_roles: Iterable[str], log: logging.Logger,
                handshake_timeout: float = 10.0, admission_line: bool = True,
                max_per_address: Optional[int] = None,
                max_per_identity: Optional[int] = None) -> asyncio.Server:
    """Listen on host:port (0 picks a free port; read it from the returned server's sockets)
    and run `await handler(conn)` for each peer whose certificate role is in `allowed_roles`.

    `admission_line=False` is for HTTP listeners, whose clients expect the server to stay
    silent until they speak; osam's own links keep it on (see `admission`).

    `max_per_address` bounds the connections open at once from one IP address (checked before
    the TLS handshake, so a flood of half-open handshakes cannot pile up); `max_per_identity`
    those of one certificate identity (role and name). None: no limit."""
    if not hasattr(asyncio.StreamWriter, "start_tls"):
        raise RuntimeError("osam.transport.serve needs Python 3.11 or newer (StreamWriter.start_tls)")
    allowed = frozenset(allowed_roles)
    live = set()
    by_address: Counter = Counter()
    by_identity: Counter = Counter()

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer)
        address = _address_of(writer)
        if max_per_address is not None and by_address[address] >= max_per_address:
            log.warning("refused %s: %d connections from %s already open (the limit)", peer,
                        by_address[address], address)
            writer.transport.abort()
            return
        set_nodelay(writer)
        live.add(writer)
        by_address[address] += 1
        try:
            await _serve_one(reader, writer, peer)
        finally:
            live.discard(writer)
            _release(by_address, address)

    async def _serve_one(reader, writer, peer) -> None:
        conn = await _handshake(reader, writer, peer, ssl_ctx, allowed, log,
                                handshake_timeout, admission_line, by_identity, max_per_identity)
        if conn is None:
            return
        key = (conn.identity.role, conn.identity.name)
        try:
            await handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.info("connection %s (%s) lost: %s", peer, conn.identity, str(exc) or type(exc).__name__)
        except Exception:
            log.exception("handler failed for %s (%s)", peer, conn.identity)
        finally:
            _release(by_identity, key)
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


def _address_of(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


def _release(counter: Counter, key) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


async def _handshake(reader, writer, peer, ssl_ctx, allowed, log, timeout, admission_line,
                     by_identity: Counter, max_per_identity: Optional[int]):
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
        key = (identity.role, identity.name)
        if max_per_identity is not None and by_identity[key] >= max_per_identity:
            raise IdentityError(f"{identity.role} {identity.name} already has {by_identity[key]} "
                                "connections open (the limit)")
        by_identity[key] += 1
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
