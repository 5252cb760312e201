"""Certificates no real deployment should hold, for tests: expired, not yet valid, server-only,
or signed by a foreign CA. Production code never imports this module."""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Iterable, Optional, Tuple

from .certs import build_leaf, utcnow
from .identity import SENTINEL
from .issue import DEFAULT_SANS, _write_pair, init_pki, load_ca_pair


def issue_custom(pki_dir, dest_dir, name: str, *, role: str = SENTINEL,
                 not_before: Optional[datetime.datetime] = None,
                 not_after: Optional[datetime.datetime] = None,
                 client_auth: bool = True, server_auth: bool = False,
                 sans: Iterable[str] = ()) -> Tuple[Path, Path]:
    """Sign NAME with pki_dir's CA, with any validity and usages; write dest_dir/NAME.crt/.key."""
    ca_cert, ca_key = load_ca_pair(pki_dir)
    now = utcnow()
    not_before = not_before or now - datetime.timedelta(hours=1)
    not_after = not_after or now + datetime.timedelta(days=1)
    cert, key = build_leaf(ca_cert, ca_key, role=role, name=name, not_before=not_before,
                           not_after=not_after, server_auth=server_auth,
                           client_auth=client_auth, sans=sans)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    crt_path, key_path = dest / f"{name}.crt", dest / f"{name}.key"
    _write_pair(crt_path, key_path, cert, key)
    return crt_path, key_path


def issue_expired(pki_dir, dest_dir, name: str, *, role: str = SENTINEL) -> Tuple[Path, Path]:
    now = utcnow()
    return issue_custom(pki_dir, dest_dir, name, role=role,
                        not_before=now - datetime.timedelta(days=30),
                        not_after=now - datetime.timedelta(days=1))


def foreign_pki(dir, *, sans: Iterable[str] = DEFAULT_SANS) -> Path:
    """A complete, independent PKI: its certificates look right but our CA never signed them."""
    init_pki(dir, sans=sans, force=True)
    return Path(dir)
