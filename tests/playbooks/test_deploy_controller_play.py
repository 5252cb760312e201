"""deploy.yml's first play, run as AWX runs it: it makes the site PKI on the controller with a
certificate for every guest, valid for the names the gateways and sentinels dial, and a
second run changes nothing. (The receiver, gateway and sentinel plays install systemd
services; the molecule end_to_end scenario runs them in containers.)"""
from __future__ import annotations

from cryptography import x509

from tests.playbooks.awx_runner import VENV_BIN, host, run_playbook

INVENTORY = {"all": {"hosts": {"localhost": host()}, "children": {
    "osam_receiver": {"hosts": {"receiver.dst.example.com": {"ansible_host": "192.0.2.10"}}},
    "osam_gateway": {"hosts": {"gateway.src.example.com": {"ansible_host": "198.51.100.5"}}},
    "osam_guests": {"hosts": {"web01": {}, "db01": {"osam_sentinel_name": "db01-prod"}}},
}}}


def sans(cert_path):
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in names}


def test_deploy_makes_the_site_pki_on_the_controller_once(tmp_path):
    pki = tmp_path / "pki"
    # The osam CLI of this checkout, rather than a controller venv built from a wheelhouse.
    extravars = {"osam_pki_dir": str(pki), "osam_cli": str(VENV_BIN / "osam")}
    first = run_playbook(tmp_path, "playbooks/deploy.yml", INVENTORY, extravars, cmdline="--limit localhost")

    assert first.status == "successful", first.explain()
    assert first.changed("localhost") > 0, first.explain()
    for name in ("ca.crt", "ca.key", "receiver.crt", "gateway.crt", "admin.crt", "api-token", "api-token-ro",
                 "sentinels/web01.crt", "sentinels/web01.key", "sentinels/db01-prod.crt"):
        assert (pki / name).is_file(), name
    assert {"receiver.dst.example.com", "192.0.2.10", "gateway.src.example.com", "198.51.100.5"} <= sans(
        pki / "receiver.crt")
    ca = (pki / "ca.crt").read_bytes()

    second = run_playbook(tmp_path, "playbooks/deploy.yml", INVENTORY, extravars, cmdline="--limit localhost")
    assert second.status == "successful", second.explain()
    assert second.changed("localhost") == 0, second.explain()
    assert (pki / "ca.crt").read_bytes() == ca
