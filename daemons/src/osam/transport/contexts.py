"""TLS contexts for every osam link: TLS 1.3 only, certificates required both ways, trust
anchored in the site pair's own CA and nothing else (no system store)."""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Optional

from ..pki import GATEWAY, RECEIVER, ca_paths, cert_and_key

SERVER_ROLES = (RECEIVER, GATEWAY)


def server_context(pki_dir, role: str, *, cert=None, key=None, ca=None) -> ssl.SSLContext:
    """The context a receiver or gateway listens with; peers must present a cert from our CA."""
    if cert is None and role not in SERVER_ROLES:
        raise ValueError(f"role {role!r} does not listen (servers: {', '.join(SERVER_ROLES)})")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.num_tickets = 0   # no session resumption: spare the post-handshake ticket writes
    return _configure(ctx, pki_dir, role, None, cert, key, ca)


def client_context(pki_dir, role: str, name: Optional[str] = None, *, cert=None, key=None,
                   ca=None) -> ssl.SSLContext:
    """The context a sentinel (by `name`), gateway or admin connects with; the server's host
    name is checked against its certificate's SANs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # check_hostname is on by default
    return _configure(ctx, pki_dir, role, name, cert, key, ca)


def _configure(ctx: ssl.SSLContext, pki_dir, role, name, cert, key, ca) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Our certificates are RFC 5280-clean (key ids, critical constraints), so hold peers to it.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if cert is None or key is None:
        own_cert, own_key = cert_and_key(pki_dir, role, name)
        cert, key = cert or own_cert, key or own_key
    ctx.load_verify_locations(cafile=str(ca or ca_paths(pki_dir)[0]))
    ctx.load_cert_chain(certfile=str(Path(cert)), keyfile=str(Path(key)))
    return ctx
