"""Creating a PKI directory (`init_pki`) and a certificate per guest (`issue_sentinel`)."""
from __future__ import annotations

import datetime
import secrets
from pathlib import Path
from typing import Iterable, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..common.atomic import atomic_write
from . import layout
from .certs import build_ca, build_leaf, cert_pem, key_pem, utcnow, validity
from .errors import CertificateRefused, PkiError
from .identity import ADMIN, GATEWAY, RECEIVER, SENTINEL, identity_from_cert
from .verify import verify_certificate

DEFAULT_SANS = ("localhost", "127.0.0.1")
DEFAULT_DAYS = 825           # the longest life browsers accept for a leaf; kept for familiarity
DEFAULT_CA_DAYS = 3650       # outlives the leaves, so sentinels issued late stay verifiable
PRIVATE, PUBLIC = 0o600, 0o644


def init_pki(dir, *, sans: Iterable[str] = DEFAULT_SANS, days: int = DEFAULT_DAYS,
             ca_days: int = DEFAULT_CA_DAYS, force: bool = False) -> None:
    """Create the CA, receiver/gateway/admin certificates and the two API tokens in `dir`."""
    pki_dir = Path(dir)
    ca_crt, ca_key_path = layout.ca_paths(pki_dir)
    if not force and (ca_crt.exists() or ca_key_path.exists()):
        raise PkiError(
            f"{pki_dir} already holds a CA ({ca_crt.name}); refusing to replace it and orphan every "
            "certificate it signed. Use force=True (osam pki init --force) to start over.")
    sans = list(sans)
    if not sans:
        raise PkiError("the receiver and gateway certificates need at least one SAN")
    _check_days(days)
    _check_days(ca_days)
    pki_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    ca_cert, ca_key = build_ca(days=ca_days)
    not_before, not_after = validity(days)
    for role in (RECEIVER, GATEWAY, ADMIN):
        is_server = role != ADMIN
        cert, key = build_leaf(ca_cert, ca_key, role=role, name=role, not_before=not_before,
                               not_after=not_after, server_auth=is_server,
                               sans=sans if is_server else ())
        _write_pair(*layout.cert_and_key(pki_dir, role), cert, key)
    for token in (layout.API_TOKEN, layout.API_TOKEN_RO):
        atomic_write(pki_dir / token, (secrets.token_urlsafe(32) + "\n").encode("ascii"), PRIVATE)
    # The CA goes last: an interrupted init leaves no CA behind, so a plain re-run works.
    _write_pair(ca_crt, ca_key_path, ca_cert, ca_key)


def issue_sentinel(dir, name: str, *, days: int = DEFAULT_DAYS,
                   force: bool = False) -> Tuple[Path, Path]:
    """Write sentinels/NAME.crt/.key; an existing, still valid pair is kept unless `force`."""
    pki_dir = Path(dir)
    layout.check_sentinel_name(name)
    _check_days(days)
    crt_path, key_path = layout.cert_and_key(pki_dir, SENTINEL, name)
    ca_cert, ca_key = load_ca_pair(pki_dir)
    if not force and is_current(crt_path, key_path, ca_cert, SENTINEL, name):
        return crt_path, key_path
    crt_path.parent.mkdir(mode=0o700, exist_ok=True)
    not_before, not_after = validity(days)
    cert, key = build_leaf(ca_cert, ca_key, role=SENTINEL, name=name, not_before=not_before,
                           not_after=not_after, server_auth=False)
    _write_pair(crt_path, key_path, cert, key)
    return crt_path, key_path


def load_ca_pair(pki_dir) -> tuple:
    ca_crt, ca_key = layout.ca_paths(pki_dir)
    if not ca_crt.exists() or not ca_key.exists():
        raise PkiError(f"{pki_dir} holds no CA ({ca_crt.name}, {ca_key.name}): run `osam pki init` first")
    cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    return cert, key


def is_current(crt_path: Path, key_path: Path, ca_cert: x509.Certificate, role: str, name: str,
               now: Optional[datetime.datetime] = None) -> bool:
    """True when the pair exists, matches, is signed by `ca_cert`, names role/name and is valid."""
    try:
        cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        verify_certificate(cert, ca_cert, roles=(role,), now=now or utcnow())
    except (OSError, ValueError, TypeError, CertificateRefused):
        return False
    same_key = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return same_key and identity_from_cert(cert).name == name


def _write_pair(crt_path: Path, key_path: Path, cert, key) -> None:
    atomic_write(key_path, key_pem(key), PRIVATE)   # key first: a certificate never lacks its key
    atomic_write(crt_path, cert_pem(cert), PUBLIC)


def _check_days(days: int) -> None:
    if not isinstance(days, int) or days < 1:
        raise PkiError(f"validity must be a positive number of days, not {days!r}")
