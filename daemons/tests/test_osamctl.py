"""osamctl against a real receiver API on loopback, with mutual TLS as the receiver runs it."""
import asyncio
import datetime as dt
import io
import ipaddress
import json
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from osam.cli import osamctl
from osam.cli.osamctl import main
from osam.controller import Controller
from osam.receiver.api import handle_api_connection

TOKEN = "osamctl-test-token-0123456789"


# -- a throwaway PKI ----------------------------------------------------------------------------

def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, issuer_name, issuer_key, key, *, ca=False, server=False):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path, certificate=None, key=None):
    if certificate is not None:
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def make_pki(directory, common_name="osam test CA"):
    """DIR/ca.crt, admin.crt/key, api-token for osamctl; receiver.crt/key for the server."""
    directory.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(common_name, _name(common_name), ca_key, ca_key, ca=True)
    _write(directory / "ca.crt", ca)
    for name, server in (("receiver", True), ("admin", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(directory / f"{name}.crt", _certificate(name, ca.subject, ca_key, key, server=server))
        _write(directory / f"{name}.key", key=key)
    (directory / "api-token").write_text(TOKEN + "\n")
    return directory


# -- a receiver API on loopback, in its own event loop thread -----------------------------------

class ApiServer:
    def __init__(self, controller, pki):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki / "receiver.crt", pki / "receiver.key")
        context.load_verify_locations(cafile=pki / "ca.crt")
        context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS, as the transport layer does it
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def serve(reader, writer):
            await handle_api_connection(reader, writer, controller=controller,
                                        tokens={TOKEN: "rw"}, log=None)

        async def start():
            return await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"

    def stop(self):
        async def close():
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


@pytest.fixture
def ctl(tmp_path):
    controller = Controller(str(tmp_path / "data" / "controller.sqlite"))
    controller.register_guest("web01", {"os": "debian"}, "0.1.0")
    controller.register_guest("db01", {"os": "windows"}, "0.1.0")
    yield controller
    controller.close()


@pytest.fixture
def server(ctl, pki):
    running = ApiServer(ctl, pki)
    yield running
    running.stop()


def run(server, pki, capsys, *args):
    code = main(["--api", server.url, "--pki", str(pki), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- commands -----------------------------------------------------------------------------------

def test_status_json_is_one_object(server, pki, ctl, capsys):
    ctl.start_migration("web01")
    ctl.advance("web01", "full_sync")
    ctl.update_progress("web01", bytes_done=512, bytes_total=1024, files_done=3, files_total=9)
    code, out, err = run(server, pki, capsys, "status", "web01", "--json")
    assert code == 0 and err == ""
    status = json.loads(out)
    assert isinstance(status, dict)
    assert (status["guest"], status["phase"], status["bytes_done"], status["bytes_total"]) == (
        "web01", "full_sync", 512, 1024)


def test_status_table_and_details(server, pki, ctl, capsys):
    ctl.start_migration("web01", "immediate")
    ctl.advance("web01", "full_sync")
    ctl.update_progress("web01", bytes_done=250, bytes_total=1000, lag=1.25)
    ctl.start_migration("db01", "at", at="2030-01-01T00:00:00Z")
    code, out, _ = run(server, pki, capsys, "status")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["GUEST", "PHASE", "DONE", "RATE", "ETA", "LAG", "SWITCHOVER",
                                "UPDATED"]
    assert lines[1].startswith("db01") and "at 2030-01-01T00:00:00.000Z" in lines[1]
    assert lines[2].split()[:3] == ["web01", "full_sync", "25.0%"] and "1.2s" in lines[2]
    code, out, _ = run(server, pki, capsys, "status", "web01")
    assert code == 0 and "phase:       full_sync" in out and "registered -> full_sync" in out


# A BIOS guest: one dos disk with an ext4 root and swap (the sentinel's layout, abridged).
BIOS_LAYOUT = {
    "root": "/",
    "boot": {"mode": "bios", "bootloader": "grub2", "boot_disk": "sda", "esp": "",
             "efi_files": []},
    "disks": [{"name": "sda", "path": "/dev/sda", "size": 3 << 30,
               "partition_table": {"label": "dos", "id": "0x8d3c2a1b", "partitions": []},
               "partitions": []}],
    "filesystems": [
        {"device": "/dev/sda2", "fstype": "swap", "mountpoint": None},
        {"device": "/dev/sda1", "fstype": "ext4", "mountpoint": "/"}],
    "lvm": {"pvs": [], "vgs": [], "lvs": []},
    "mounts": [{"target": "/", "source": "/dev/sda1", "fstype": "ext4"}],
    "errors": [],
}


def test_guests_table(server, pki, ctl, capsys):
    ctl.register_guest("web01", {"os": "debian", "layout": BIOS_LAYOUT, "replication": {"mode": "file"}}, "0.1.0")
    ctl.start_migration("web01")
    code, out, _ = run(server, pki, capsys, "guests")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["NAME", "CONNECTED", "AGENT", "MIGRATION"]
    assert lines[0].split()[-1] == "LAYOUT"
    assert lines[1].split()[:3] == ["db01", "yes", "0.1.0"] and lines[1].endswith(" -")
    assert lines[2].split()[:4] == ["web01", "yes", "0.1.0", "registered"]
    assert lines[0].split()[-2] == "MODE" and " file " in lines[2]
    assert lines[2].endswith("  disks: sda 3.0 GiB dos; fs: / ext4, swap; boot: bios grub2")
    code, out, _ = run(server, pki, capsys, "guests", "--json")
    guests = json.loads(out)
    assert [guest["name"] for guest in guests] == ["db01", "web01"]
    assert guests[1]["inventory"]["layout"] == BIOS_LAYOUT


def test_layout_summary_of_a_uefi_guest_with_lvm():
    layout = {
        "boot": {"mode": "uefi", "bootloader": "systemd-boot"},
        "disks": [{"name": "nvme0n1", "size": 20 << 30, "partition_table": {"label": "gpt"}},
                  {"name": "sdb", "size": 512 << 20, "partition_table": None}],
        "filesystems": [{"fstype": "xfs", "mountpoint": "/"},
                        {"fstype": "vfat", "mountpoint": "/boot/efi"},
                        {"fstype": "swap", "mountpoint": None},
                        {"fstype": "ext4", "mountpoint": None}],  # unmounted: not shown
        "lvm": {"vgs": [{"name": "rhel"}]},
        "errors": [{"probe": "sfdisk /dev/sdb", "error": "..."}],
    }
    assert osamctl.layout_summary(layout) == (
        "disks: nvme0n1 20.0 GiB gpt, sdb 512.0 MiB; fs: / xfs, /boot/efi vfat, swap; "
        "lvm: rhel; boot: uefi systemd-boot; 1 error(s)")
    assert osamctl.layout_summary(None) == osamctl.layout_summary({}) == "-"


def test_migrate_is_idempotent_and_conflicts_are_errors(server, pki, ctl, capsys):
    code, out, _ = run(server, pki, capsys, "migrate", "web01", "--switchover", "at=2030-01-01T00:00:00Z")
    assert code == 0 and "started" in out and ctl.migration("web01")["switchover"] == "at"
    code, out, _ = run(server, pki, capsys, "migrate", "web01", "--switchover", "at=2030-01-01T00:00:00Z")
    assert code == 0 and "already active" in out
    code, _, err = run(server, pki, capsys, "migrate", "web01")
    assert code == 1 and err.startswith("osamctl: HTTP 409") and err.count("\n") == 1


def test_migrate_wait(server, pki, ctl, capsys):
    def drive():
        time.sleep(0.2)
        ctl.advance("web01", "full_sync")
        time.sleep(0.2)
        ctl.advance("web01", "continuous_sync")
    driver = threading.Thread(target=drive)
    driver.start()
    code, out, _ = run(server, pki, capsys, "migrate", "web01", "--wait", "continuous_sync",
                       "--interval", "0.05")
    driver.join()
    assert code == 0 and "web01 reached continuous_sync" in out


def test_switchover_and_abort(server, pki, ctl, capsys):
    ctl.start_migration("web01")
    code, out, _ = run(server, pki, capsys, "switchover", "web01")
    assert code == 0 and "requested" in out and ctl.migration("web01")["switchover_requested"]
    code, out, _ = run(server, pki, capsys, "switchover", "web01", "--at", "2031-02-03T04:05:06Z")
    assert code == 0 and ctl.migration("web01")["switchover_at"] == "2031-02-03T04:05:06.000Z"
    code, out, _ = run(server, pki, capsys, "switchover", "web01", "--cancel")
    assert code == 0 and ctl.migration("web01")["switchover"] == "manual"
    code, out, _ = run(server, pki, capsys, "abort", "web01")
    assert code == 0 and "aborted" in out
    assert ctl.migration("web01")["reason"] == "aborted by operator"
    code, _, err = run(server, pki, capsys, "abort", "web01")
    assert code == 1 and "HTTP 409" in err


def test_a_window_end_with_migrate_and_switchover(server, pki, ctl, capsys):
    code, out, err = run(server, pki, capsys, "migrate", "web01", "--switchover", "at=2030-01-01T02:00:00Z",
                         "--window-end", "2030-01-01T04:00:00Z")
    assert code == 0, err
    assert "switchover at 2030-01-01T02:00:00.000Z until 2030-01-01T04:00:00.000Z" in out
    assert ctl.migration("web01")["switchover_window_end"] == "2030-01-01T04:00:00.000Z"
    code, out, _ = run(server, pki, capsys, "migrate", "web01", "--switchover", "at=2030-01-01T02:00:00Z",
                       "--window-end", "2030-01-01T04:00:00Z")
    assert code == 0 and "already active" in out
    code, out, _ = run(server, pki, capsys, "status")
    assert "at 2030-01-01T02:00:00.000Z until 2030-01-01T04:00:00.000Z" in out.splitlines()[1]
    code, out, err = run(server, pki, capsys, "switchover", "web01", "--at", "2031-01-01T02:00:00+01:00",
                         "--window-end", "2031-01-01T03:00:00+01:00")
    assert code == 0, err
    assert out == ("switchover of web01: at 2031-01-01T01:00:00.000Z until 2031-01-01T02:00:00.000Z, "
                   "phase registered\n")
    code, _, err = run(server, pki, capsys, "switchover", "web01", "--at", "2031-01-01T02:00:00Z",
                       "--window-end", "2031-01-01T01:00:00Z")
    assert code == 1 and "HTTP 400" in err and "must be after at" in err


def test_status_shows_a_missed_window_until_a_new_time(server, pki, ctl, capsys):
    ctl.start_migration("web01", "at", at="2020-01-01T02:00:00Z", window_end="2020-01-01T04:00:00Z")
    ctl.advance("web01", "full_sync")
    ctl.advance("web01", "continuous_sync")
    code, out, _ = run(server, pki, capsys, "status", "web01")
    assert code == 0
    assert ("switchover:  at 2020-01-01T02:00:00.000Z until 2020-01-01T04:00:00.000Z (window missed)"
            in out.splitlines())
    assert ("note:        switchover window 2020-01-01T02:00:00.000Z to 2020-01-01T04:00:00.000Z missed: "
            "waiting for a new time") in out.splitlines()
    code, out, _ = run(server, pki, capsys, "status")
    assert "(window missed)" in out.splitlines()[1]
    code, out, _ = run(server, pki, capsys, "switchover", "web01", "--at", "2030-01-01T00:00:00Z")
    assert code == 0 and "missed" not in out
    code, out, _ = run(server, pki, capsys, "status", "web01")
    assert "note:" not in out and "switchover:  at 2030-01-01T00:00:00.000Z" in out


def advance_through_a_migration(ctl):
    """Play a receiver: sync with progress, switch over, complete."""
    time.sleep(0.1)
    ctl.advance("web01", "full_sync")
    for done in (0, 300, 600, 1000):
        ctl.update_progress("web01", bytes_done=done, bytes_total=1000, lag=0.5)
        time.sleep(0.08)
    ctl.advance("web01", "continuous_sync")
    ctl.request_switchover("web01")
    for phase in ("quiesce", "final_sync", "fixup", "replica_vm", "tools", "replica_on", "source_off", "network",
                  "completed"):
        time.sleep(0.08)
        ctl.advance("web01", phase)


def test_follow_without_a_terminal_prints_plain_lines(server, pki, ctl, capsys):
    ctl.start_migration("web01")
    driver = threading.Thread(target=advance_through_a_migration, args=(ctl,))
    driver.start()
    code, out, _ = run(server, pki, capsys, "status", "web01", "--follow", "--interval", "0.03")
    driver.join()
    lines = out.splitlines()
    assert code == 0 and "\r" not in out
    assert lines[0].startswith("web01  registered") and lines[-1].startswith("web01  completed")
    assert len(lines) == len(set(lines))  # a line only when something changed
    assert any("full_sync" in line and "%" in line for line in lines)


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_follow_on_a_terminal_redraws_a_bar(server, pki, ctl):
    ctl.start_migration("web01")
    driver = threading.Thread(target=advance_through_a_migration, args=(ctl,))
    driver.start()
    terminal = FakeTerminal()
    code = main(["--api", server.url, "--pki", str(pki), "status", "web01", "--follow",
                 "--interval", "0.03"], out=terminal)
    driver.join()
    screen = terminal.getvalue()
    assert code == 0 and screen.count("\r") > 3 and screen.endswith("\n")
    assert "[#" in screen and "ETA" in screen and "lag 0.5s" in screen
    assert screen.rstrip().rsplit("\r", 1)[-1].startswith("web01  completed")


def test_follow_of_a_failed_migration_exits_1(server, pki, ctl, capsys):
    ctl.start_migration("web01")
    ctl.fail("web01", "source disk vanished")
    code, _, err = run(server, pki, capsys, "status", "web01", "--follow", "--json")
    assert code == 1 and "source disk vanished" in err


# -- errors -------------------------------------------------------------------------------------

def test_connection_refused(pki, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["--api", f"https://127.0.0.1:{port}", "--pki", str(pki), "guests"])
    err = capsys.readouterr().err
    assert code == 1 and "connection refused" in err and err.count("\n") == 1


def test_tls_failure_with_another_ca(server, tmp_path, capsys):
    stranger = make_pki(tmp_path / "other", "another CA")
    code = main(["--api", server.url, "--pki", str(stranger), "guests"])
    err = capsys.readouterr().err
    assert code == 1 and "TLS failure" in err and err.count("\n") == 1


def test_server_name_must_match_the_certificate(server, pki, capsys):
    code, _, err = run(server, pki, capsys, "--server-name", "receiver.example", "guests")
    assert code == 1 and "TLS failure" in err


def test_wrong_token_is_401(server, pki, tmp_path, capsys):
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    code, _, err = run(server, pki, capsys, "--token-file", str(wrong), "guests")
    assert code == 1 and "HTTP 401" in err and TOKEN not in err


def test_unknown_guest_is_a_clear_404(server, pki, capsys):
    code, _, err = run(server, pki, capsys, "status", "nosuch", "--json")
    assert code == 1 and "HTTP 404" in err and "nosuch" in err


def test_missing_pki_files(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "api-token").write_text(TOKEN)
    code = main(["--api", "https://127.0.0.1:1", "--pki", str(tmp_path / "empty"), "guests"])
    assert code == 1 and "ca.crt" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    [],
    ["guests"],  # no --api / --pki
    ["--api", "https://h:1", "--pki", "p", "migrate", "web01", "--switchover", "later"],
    ["--api", "https://h:1", "--pki", "p", "switchover", "web01", "--at", "x", "--cancel"],
    ["--api", "https://h:1", "--pki", "p", "status", "--follow"],
    ["--api", "https://h:1", "--pki", "p", "migrate", "web01", "--wait", "soon"],
    ["--api", "https://h:1", "--pki", "p", "migrate", "web01", "--window-end", "2030-01-01T00:00:00Z"],
    ["--api", "https://h:1", "--pki", "p", "migrate", "web01", "--switchover", "immediate",
     "--window-end", "2030-01-01T00:00:00Z"],
    ["--api", "https://h:1", "--pki", "p", "switchover", "web01", "--window-end", "2030-01-01T00:00:00Z"],
    ["--api", "https://h:1", "--pki", "p", "switchover", "web01", "--cancel",
     "--window-end", "2030-01-01T00:00:00Z"],
])
def test_usage_errors_exit_2(argv, monkeypatch, capsys):
    monkeypatch.delenv("OSAM_API", raising=False)
    monkeypatch.delenv("OSAM_PKI", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


def test_options_after_the_command(server, pki, ctl, capsys):
    code = main(["guests", "--api", server.url, "--pki", str(pki)])
    assert code == 0 and "web01" in capsys.readouterr().out


def test_bad_api_url(pki, capsys):
    assert main(["--api", "http://127.0.0.1:1", "--pki", str(pki), "guests"]) == 1
    assert "https://HOST:PORT" in capsys.readouterr().err


def test_formatting_helpers():
    assert osamctl.human_bytes(1536) == "1.5 KiB"
    assert osamctl.human_duration(3725) == "1h02m"
    line = osamctl.progress_line({"guest": "g", "phase": "full_sync", "bytes_done": 50,
                                  "bytes_total": 100, "rate": 2048.0, "eta": 65, "lag": 0.25}, 80)
    assert "[" in line and "50.0%" in line and "2.0 KiB/s" in line and "ETA 1m05s" in line
    assert len(line) <= 80
