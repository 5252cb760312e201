"""The private PKI of an osam site pair: one CA, a certificate per daemon and per guest, each
carrying its role (subject OU) apart from its name (subject CN)."""
from __future__ import annotations

from .errors import CertificateRefused, PkiError
from .identity import (ADMIN, GATEWAY, RECEIVER, ROLES, SENTINEL, Identity, IdentityError,
                       fingerprint_of, identity_from_cert)
from .issue import DEFAULT_DAYS, DEFAULT_SANS, init_pki, issue_sentinel
from .layout import ca_paths, cert_and_key, check_sentinel_name, read_token
from .verify import verify_peer_certificate

__all__ = [
    "ADMIN", "GATEWAY", "RECEIVER", "ROLES", "SENTINEL",
    "CertificateRefused", "DEFAULT_DAYS", "DEFAULT_SANS", "Identity", "IdentityError", "PkiError",
    "ca_paths", "cert_and_key", "check_sentinel_name", "fingerprint_of", "identity_from_cert",
    "init_pki", "issue_sentinel", "read_token", "verify_peer_certificate",
]
