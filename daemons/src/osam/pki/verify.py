"""Checking a certificate relayed by the gateway: the receiver learns a guest's identity from the
guest's own certificate, so it re-does the checks TLS did at the gateway against its own CA."""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Iterable, Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from .certs import utcnow
from .errors import CertificateRefused
from .identity import ROLES, Identity, IdentityError, identity_from_cert


def load_ca(ca_cert_path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(ca_cert_path).read_bytes())


def verify_peer_certificate(der: bytes, ca_cert_path, *, roles: Iterable[str] = ROLES,
                            now: Optional[datetime.datetime] = None) -> Identity:
    """The Identity in a DER client certificate issued by our CA, or CertificateRefused."""
    try:
        cert = x509.load_der_x509_certificate(bytes(der))
    except ValueError as exc:
        raise CertificateRefused(f"not a DER certificate: {exc}") from None
    return verify_certificate(cert, load_ca(ca_cert_path), roles=roles, now=now)


def verify_certificate(cert: x509.Certificate, ca: x509.Certificate, *,
                       roles: Iterable[str] = ROLES,
                       now: Optional[datetime.datetime] = None) -> Identity:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateRefused("not issued by our CA (foreign CA?)") from None
    now = now or utcnow()
    if now < cert.not_valid_before_utc:
        raise CertificateRefused(f"certificate is not yet valid (from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC)")
    if now > cert.not_valid_after_utc:
        raise CertificateRefused(f"certificate has expired ({cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)")
    if _is_ca(cert):
        raise CertificateRefused("a CA certificate cannot identify a peer")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in _extended_usages(cert):
        raise CertificateRefused("certificate is not for client authentication (no clientAuth usage)")
    try:
        identity = identity_from_cert(cert)
    except IdentityError as exc:
        raise CertificateRefused(str(exc)) from None
    roles = tuple(roles)
    if identity.role not in roles:
        raise CertificateRefused(f"role {identity.role} not allowed here")
    return identity


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _extended_usages(cert: x509.Certificate) -> list:
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []
