"""Where each file lives in a PKI directory; the one place that knows the names.

    ca.crt ca.key                      the site pair's private CA (pathlen 0)
    receiver.crt/.key gateway.crt/.key server + client auth, SANs from `osam pki init --san`
    admin.crt/.key                     client auth: osamctl and Ansible calling the REST API
    api-token api-token-ro             REST API bearer tokens (read-write, read-only)
    sentinels/NAME.crt/.key            one client certificate per guest
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Tuple

from .errors import PkiError
from .identity import ADMIN, GATEWAY, RECEIVER, ROLES, SENTINEL

CA_CERT, CA_KEY = "ca.crt", "ca.key"
API_TOKEN, API_TOKEN_RO = "api-token", "api-token-ro"
SENTINELS_DIR = "sentinels"
SITE_ROLES = (RECEIVER, GATEWAY, ADMIN)   # one certificate each, named after the role

_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def check_sentinel_name(name: str) -> str:
    if not isinstance(name, str) or not _HOST_NAME.match(name) or name in (".", ".."):
        raise PkiError(
            f"invalid sentinel name {name!r}: use a host name of 1-63 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit")
    return name


def ca_paths(pki_dir) -> Tuple[Path, Path]:
    pki_dir = Path(pki_dir)
    return pki_dir / CA_CERT, pki_dir / CA_KEY


def cert_and_key(pki_dir, role: str, name: Optional[str] = None) -> Tuple[Path, Path]:
    """The certificate and key a daemon of `role` presents (sentinels need their `name`)."""
    pki_dir = Path(pki_dir)
    if role == SENTINEL:
        if not name:
            raise PkiError("a sentinel's certificate is chosen by its name: pass name=")
        stem = pki_dir / SENTINELS_DIR / check_sentinel_name(name)
    elif role in SITE_ROLES:
        stem = pki_dir / role
    else:
        raise PkiError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    return stem.with_name(stem.name + ".crt"), stem.with_name(stem.name + ".key")


def read_token(path) -> str:
    """An API token file's value, without the trailing newline."""
    return Path(path).read_text(encoding="ascii").strip()
