"""Who a certificate speaks for. The role lives in the subject's OU and the name in its CN:
two separate attributes, so a guest called "gateway" is still only a sentinel."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from .errors import PkiError

SENTINEL, GATEWAY, RECEIVER, ADMIN = "sentinel", "gateway", "receiver", "admin"
ROLES = (SENTINEL, GATEWAY, RECEIVER, ADMIN)
ORGANIZATION = "vmware.osam"


class IdentityError(PkiError):
    """The certificate does not name exactly one known role and one name."""


@dataclasses.dataclass(frozen=True)
class Identity:
    role: str          # one of ROLES
    name: str          # sentinels: the guest's name; others: the role or site name
    fingerprint: str   # "sha256:" + hex digest of the DER certificate, pin-able

    def __str__(self) -> str:
        return f"{self.role} {self.name}"


def fingerprint_of(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


def subject_for(role: str, name: str) -> x509.Name:
    if role not in ROLES:
        raise IdentityError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])


def _only_value(subject: x509.Name, oid: x509.ObjectIdentifier, label: str) -> str:
    values = subject.get_attributes_for_oid(oid)
    if len(values) != 1:
        raise IdentityError(f"certificate subject must carry exactly one {label}, found {len(values)}")
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def identity_from_cert(cert_or_der: Union[x509.Certificate, bytes]) -> Identity:
    if isinstance(cert_or_der, (bytes, bytearray, memoryview)):
        der = bytes(cert_or_der)
        cert = x509.load_der_x509_certificate(der)
    else:
        cert = cert_or_der
        der = cert.public_bytes(Encoding.DER)
    role = _only_value(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU (role)")
    if role not in ROLES:
        raise IdentityError(f"certificate role {role!r} is not an osam role")
    name = _only_value(cert.subject, NameOID.COMMON_NAME, "CN (name)")
    return Identity(role=role, name=name, fingerprint=fingerprint_of(der))
