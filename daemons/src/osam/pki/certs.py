"""Building keys and certificates in memory (ECDSA P-256, SHA-256); no files here."""
from __future__ import annotations

import datetime
import ipaddress
from typing import Iterable, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .identity import ORGANIZATION, subject_for

# Certificates start a little in the past so a peer whose clock lags still accepts them.
CLOCK_SKEW = datetime.timedelta(minutes=5)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def general_name(san: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        return x509.DNSName(san)


def build_ca(*, days: int, common_name: str = "osam CA",
             not_before: Optional[datetime.datetime] = None
             ) -> Tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = new_key()
    start = not_before or utcnow() - CLOCK_SKEW
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def build_leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *,
               role: str, name: str, not_before: datetime.datetime,
               not_after: datetime.datetime, server_auth: bool, client_auth: bool = True,
               sans: Iterable[str] = ()
               ) -> Tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = new_key()
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server_auth else []) + \
             ([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_for(role, name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    sans = list(sans)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([general_name(s) for s in sans]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def validity(days: int) -> Tuple[datetime.datetime, datetime.datetime]:
    start = utcnow() - CLOCK_SKEW
    return start, start + datetime.timedelta(days=days)
