"""The daemons speak systemd's Type=notify: READY=1 once they serve, STOPPING=1 on SIGTERM. No
systemd runs as PID 1 here, so the test plays its part: it binds the notify socket itself."""
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.site import Site, VENV_BIN, free_port

REPO = Path(__file__).resolve().parents[2]


def notifications(sock: socket.socket, until: bytes, timeout: float = 20) -> list:
    sock.settimeout(timeout)
    got = []
    while not any(until in m for m in got):
        got.append(sock.recv(4096))
    return got


@pytest.mark.parametrize("daemon", ["osam-gateway", "osam-receiver"])
def test_daemon_notifies_ready_and_stopping(daemon, disk_tmp_path):
    site = Site(disk_tmp_path / "site")
    path = str(disk_tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    argv = {
        "osam-gateway": ["--listen", f"127.0.0.1:{free_port()}", "--receiver", f"127.0.0.1:{free_port()}",
                         "--pki", str(site.pki)],
        "osam-receiver": ["--listen", f"127.0.0.1:{free_port()}", "--api", f"127.0.0.1:{free_port()}",
                          "--pki", str(site.pki), "--data", str(disk_tmp_path / "data")],
    }[daemon]
    proc = subprocess.Popen([str(VENV_BIN / daemon), *argv], env=dict(os.environ, NOTIFY_SOCKET=path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert any(b"READY=1" in m for m in notifications(sock, b"READY=1"))
        proc.send_signal(signal.SIGTERM)
        assert any(b"STOPPING=1" in m for m in notifications(sock, b"STOPPING=1"))
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
        sock.close()


def test_unit_files_are_valid():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    units = sorted((REPO / "packaging" / "systemd").glob("*.service"))
    assert {u.name for u in units} == {"vmware-hcx-osam-sentinel.service", "osam-gateway.service",
                                       "osam-receiver.service"}
    for unit in units:
        text = unit.read_text()
        assert "Type=notify" in text and "NotifyAccess=main" in text, unit.name
    # verify checks syntax and directives; missing executables (not installed here) are not errors
    result = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines()
                if line.strip() and "Command" not in line and "executable" not in line.lower()
                and "not found" not in line.lower() and "EnvironmentFile" not in line]
    assert not problems, result.stderr
