"""The site PKI: what init/issue write, how identities read back, and what verification refuses."""
from __future__ import annotations

import datetime
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from osam import pki
from osam.pki.certs import new_key
from osam.pki.issue import load_ca_pair
from osam.pki.testing import foreign_pki, issue_custom, issue_expired

KEYS_AND_TOKENS = ["ca.key", "receiver.key", "gateway.key", "admin.key", "api-token", "api-token-ro"]
CERTS = ["ca.crt", "receiver.crt", "gateway.crt", "admin.crt"]
OSAM = Path(sys.executable).with_name("osam")


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def der(path) -> bytes:
    return load(path).public_bytes(Encoding.DER)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def usages(cert):
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    pki.init_pki(root)
    pki.issue_sentinel(root, "web01")
    return root


def test_init_writes_every_file_keys_and_tokens_private(site):
    for name in KEYS_AND_TOKENS:
        assert mode(site / name) == 0o600, name
    for name in CERTS:
        assert mode(site / name) == 0o644, name
    assert not [p for p in site.iterdir() if p.name.endswith(".tmp")]


def test_tokens_are_distinct_urlsafe_32_bytes(site):
    rw, ro = pki.read_token(site / "api-token"), pki.read_token(site / "api-token-ro")
    assert rw != ro
    for token in (rw, ro):
        assert len(token) == 43 and set(token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_ca_is_a_pathlen_zero_ca(site):
    constraints = load(site / "ca.crt").extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0


@pytest.mark.parametrize("role, want", [
    ("receiver", {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
    ("gateway", {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
    ("admin", {ExtendedKeyUsageOID.CLIENT_AUTH}),
])
def test_site_certificates_carry_role_usage_and_issuer(site, role, want):
    cert = load(site / f"{role}.crt")
    assert usages(cert) == want
    assert pki.identity_from_cert(cert).role == role
    cert.verify_directly_issued_by(load(site / "ca.crt"))
    assert isinstance(cert.public_key().curve, type(new_key().curve))
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_server_sans_default_to_localhost_and_loopback(site):
    sans = load(site / "receiver.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_custom_sans_and_days(tmp_path):
    pki.init_pki(tmp_path, sans=["gw.example.com", "10.1.2.3", "::1"], days=30)
    cert = load(tmp_path / "gateway.crt")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["gw.example.com"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.1.2.3", "::1"]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life == datetime.timedelta(days=30)


def test_init_refuses_to_replace_a_ca_unless_forced(tmp_path):
    pki.init_pki(tmp_path)
    before = der(tmp_path / "ca.crt")
    with pytest.raises(pki.PkiError, match="already holds a CA.*force"):
        pki.init_pki(tmp_path)
    assert der(tmp_path / "ca.crt") == before
    pki.init_pki(tmp_path, force=True)
    assert der(tmp_path / "ca.crt") != before


def test_sentinel_identity_is_role_and_guest_name(site):
    crt, key = pki.cert_and_key(site, pki.SENTINEL, "web01")
    assert crt == site / "sentinels" / "web01.crt" and mode(key) == 0o600
    identity = pki.identity_from_cert(der(crt))
    assert (identity.role, identity.name) == ("sentinel", "web01")
    assert identity.fingerprint == pki.fingerprint_of(der(crt))
    assert usages(load(crt)) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_a_guest_named_like_a_role_is_still_a_sentinel(site):
    crt, _ = pki.issue_sentinel(site, "gateway")
    identity = pki.identity_from_cert(der(crt))
    assert (identity.role, identity.name) == ("sentinel", "gateway")


def test_issue_sentinel_keeps_a_valid_one_and_force_reissues(site):
    crt, _ = pki.issue_sentinel(site, "keep01")
    first = der(crt)
    assert der(pki.issue_sentinel(site, "keep01")[0]) == first
    assert der(pki.issue_sentinel(site, "keep01", force=True)[0]) != first


def test_issue_sentinel_replaces_an_expired_one(site, tmp_path):
    crt, key = issue_expired(site, site / "sentinels", "old01")
    stale = der(crt)
    assert pki.issue_sentinel(site, "old01") == (crt, key)
    assert der(crt) != stale
    pki.verify_peer_certificate(der(crt), site / "ca.crt")


@pytest.mark.parametrize("name", ["", "../x", "a/b", "-web", ".hidden", "a b", "x" * 64, "wéb"])
def test_issue_sentinel_refuses_names_that_are_not_host_names(site, name):
    with pytest.raises(pki.PkiError, match="invalid sentinel name"):
        pki.issue_sentinel(site, name)


@pytest.mark.parametrize("name", ["web01", "db-1.example.com", "A_b", "x" * 63, "9"])
def test_host_names_are_accepted(name):
    assert pki.check_sentinel_name(name) == name


def test_issue_without_a_ca_says_what_to_do(tmp_path):
    with pytest.raises(pki.PkiError, match="osam pki init"):
        pki.issue_sentinel(tmp_path, "web01")


# --- verify_peer_certificate ---------------------------------------------------------------

def test_verify_accepts_our_sentinel(site):
    crt, _ = pki.cert_and_key(site, pki.SENTINEL, "web01")
    identity = pki.verify_peer_certificate(der(crt), site / "ca.crt", roles=[pki.SENTINEL])
    assert (identity.role, identity.name) == ("sentinel", "web01")


def test_verify_refuses_a_foreign_ca(site, tmp_path):
    foreign = foreign_pki(tmp_path)
    crt, _ = pki.issue_sentinel(foreign, "web01")
    with pytest.raises(pki.CertificateRefused, match=r"not issued by our CA \(foreign CA\?\)"):
        pki.verify_peer_certificate(der(crt), site / "ca.crt")


def test_verify_refuses_expired_and_not_yet_valid(site, tmp_path):
    crt, _ = issue_expired(site, tmp_path, "old02")
    with pytest.raises(pki.CertificateRefused, match="certificate has expired") as refused:
        pki.verify_peer_certificate(der(crt), site / "ca.crt")
    assert refused.value.reason.startswith("certificate has expired")
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)
    crt, _ = issue_custom(site, tmp_path, "early", not_before=soon,
                          not_after=soon + datetime.timedelta(days=1))
    with pytest.raises(pki.CertificateRefused, match="not yet valid"):
        pki.verify_peer_certificate(der(crt), site / "ca.crt")


def test_verify_refuses_wrong_usage_role_and_ca(site, tmp_path):
    crt, _ = issue_custom(site, tmp_path, "srv", role=pki.GATEWAY, client_auth=False, server_auth=True)
    with pytest.raises(pki.CertificateRefused, match="no clientAuth usage"):
        pki.verify_peer_certificate(der(crt), site / "ca.crt")
    with pytest.raises(pki.CertificateRefused, match="role admin not allowed here"):
        pki.verify_peer_certificate(der(site / "admin.crt"), site / "ca.crt", roles=[pki.SENTINEL])
    with pytest.raises(pki.CertificateRefused, match="CA certificate"):
        pki.verify_peer_certificate(der(site / "ca.crt"), site / "ca.crt")
    with pytest.raises(pki.CertificateRefused, match="not a DER certificate"):
        pki.verify_peer_certificate(b"\x30\x03junk", site / "ca.crt")


def test_identity_needs_exactly_one_known_role(site):
    ca_key = load_ca_pair(site)[1]
    ca = load(site / "ca.crt")
    now = datetime.datetime.now(datetime.timezone.utc)

    def signed(subject):
        key = new_key()
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                .sign(ca_key, hashes.SHA256()))

    no_role = signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web01")]))
    with pytest.raises(pki.IdentityError, match="exactly one OU"):
        pki.identity_from_cert(no_role)
    odd_role = signed(x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "root"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, "web01")]))
    with pytest.raises(pki.IdentityError, match="not an osam role"):
        pki.identity_from_cert(odd_role)


# --- the `osam pki` command ------------------------------------------------------------------

def osam(*args):
    assert OSAM.exists(), f"{OSAM} missing: pip install --no-deps -e daemons"
    return subprocess.run([str(OSAM), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_cli_init_and_issue_end_to_end(tmp_path):
    site = tmp_path / "pki"
    done = osam("pki", "init", site, "--san", "gw.example", "--san", "192.0.2.7", "--days", "90")
    assert done.returncode == 0, done.stderr
    for name in KEYS_AND_TOKENS + CERTS:
        assert f"wrote {site / name}" in done.stdout
    for name in KEYS_AND_TOKENS:
        assert mode(site / name) == 0o600
    sans = load(site / "gateway.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["gw.example"]

    again = osam("pki", "init", site)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.startswith("osam: error: ") and "already holds a CA" in again.stderr
    assert osam("pki", "init", site, "--force").returncode == 0

    issued = osam("pki", "issue", site, "--sentinel", "web01")
    assert issued.returncode == 0, issued.stderr
    assert f"wrote {site / 'sentinels/web01.crt'}" in issued.stdout
    assert mode(site / "sentinels/web01.key") == 0o600
    assert "kept" in osam("pki", "issue", site, "--sentinel", "web01").stdout
    assert "wrote" in osam("pki", "issue", site, "--sentinel", "web01", "--force").stdout

    bad = osam("pki", "issue", site, "--sentinel", "../etc")
    assert bad.returncode == 2 and "invalid sentinel name" in bad.stderr
    assert osam().returncode == 2
