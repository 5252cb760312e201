"""What the site refuses, end to end over real TLS: certificates from another CA or none, a guest
claiming another guest's name, hostile paths in data frames, and API calls without the right token."""
import asyncio
import shutil
import ssl
import socket

import pytest

from osam.protocol import (CHANNEL_CONTROL, CHANNEL_DATA, Entry, Error, FileData, FileEnd, Register,
                           SyncBegin, Welcome)
from osam.transport import client_context, connect
from osam.transport.framed import FramedStream, LinkClosed
from tests.e2e.site import Site, run, VENV_BIN, wait_for


@pytest.fixture
def site(disk_tmp_path):
    s = Site(disk_tmp_path / "site")
    s.start_receiver()
    s.start_gateway()
    try:
        yield s
    finally:
        s.stop_all()


def test_sentinel_with_a_foreign_ca_certificate_is_refused(site, disk_tmp_path):
    foreign = disk_tmp_path / "foreign-pki"
    run([VENV_BIN / "osam", "pki", "init", str(foreign)])
    run([VENV_BIN / "osam", "pki", "issue", str(foreign), "--sentinel", "intruder"])
    shutil.copy(site.pki / "ca.crt", foreign / "ca.crt")  # it trusts our gateway, we do not trust it
    guest = disk_tmp_path / "g"
    guest.mkdir()
    site._daemon("sentinel-intruder", [VENV_BIN / "osam-sentinel", "--gateway", f"127.0.0.1:{site.gateway_port}",
                                       "--pki", foreign, "--name", "intruder", "--root", guest,
                                       "--state", disk_tmp_path / "st", "--etc", disk_tmp_path / "etc"])
    wait_for(lambda: "certificate verify failed" in site.gateway.log(), 20, "the gateway to refuse the sentinel")
    line = next(l for l in site.gateway.log().splitlines() if "certificate verify failed" in l)
    assert "refused" in line and "foreign CA" in line, line
    assert site.guest("intruder") is None


def test_client_without_a_certificate_is_refused(site):
    ctx = ssl.create_default_context(cafile=str(site.pki / "ca.crt"))
    with socket.create_connection(("127.0.0.1", site.gateway_port)) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"OSAM")
                if not tls.recv(100):
                    raise ConnectionError("closed")
    wait_for(lambda: "no client certificate" in site.gateway.log() or "certificate" in site.gateway.log(),
             10, "the refusal log line")


def test_a_guest_is_its_certificate_not_the_name_it_claims(site, disk_tmp_path):
    run([VENV_BIN / "osam", "pki", "issue", str(site.pki), "--sentinel", "alpha"])
    # beta's certificate files hold alpha's identity
    shutil.copy(site.pki / "sentinels" / "alpha.crt", site.pki / "sentinels" / "beta.crt")
    shutil.copy(site.pki / "sentinels" / "alpha.key", site.pki / "sentinels" / "beta.key")
    guest = disk_tmp_path / "g"
    guest.mkdir()
    site._daemon("sentinel-beta", [VENV_BIN / "osam-sentinel", "--gateway", f"127.0.0.1:{site.gateway_port}",
                                   "--pki", site.pki, "--name", "beta", "--root", guest,
                                   "--state", disk_tmp_path / "st", "--etc", disk_tmp_path / "etc"])
    wait_for(lambda: site.guest("alpha"), 20, "the guest to register")
    assert site.guest("beta") is None


async def _hostile_session(site, frames):
    """Speak the protocol as guest alpha through the gateway; returns what the receiver said."""
    ctx = client_context(site.pki, "sentinel", "alpha")
    c = await connect("127.0.0.1", site.gateway_port, ctx, timeout=10)
    control = FramedStream(c.reader, c.writer, CHANNEL_CONTROL)
    await control.send(Register("0", {"hostname": "alpha"}, {}))
    assert isinstance(await control.recv(timeout=10), Welcome)
    d = await connect("127.0.0.1", site.gateway_port, ctx, timeout=10)
    data = FramedStream(d.reader, d.writer, CHANNEL_DATA)
    await data.flush()
    assert isinstance(await data.recv(timeout=10), Welcome)
    await data.send(SyncBegin(1, "full"))
    for f in frames:
        data.queue(f)
    await data.flush()
    replies = []
    try:
        while True:
            replies.append(await data.recv(timeout=10))
    except (LinkClosed, asyncio.TimeoutError):
        pass
    await data.close()
    await control.close()
    return replies


def entry(path, kind="f", size=5, target=b""):
    return Entry(path, kind, 0o644, 0, 0, 1_000_000_000, size, 0, target, [], -1, 0)


@pytest.mark.parametrize("frames", [
    [entry(b"../escape"), FileData(0, b"owned"), FileEnd(True)],
    [entry(b"a/../../escape"), FileData(0, b"owned"), FileEnd(True)],
    [entry(b"/tmp/escape"), FileData(0, b"owned"), FileEnd(True)],
    [entry(b"nul\x00name"), FileData(0, b"owned"), FileEnd(True)],
    [entry(b"link", "l", 0, b"../../.."), entry(b"link/escape"), FileData(0, b"owned"), FileEnd(True)],
    [entry(b"ok"), FileData(10, b"beyond the declared size"), FileEnd(True)],
], ids=["dotdot", "inner-dotdot", "absolute", "nul", "through-symlink", "outside-size"])
def test_hostile_names_are_refused_and_nothing_lands_outside(site, frames, need_root):
    run([VENV_BIN / "osam", "pki", "issue", str(site.pki), "--sentinel", "alpha"])
    replies = asyncio.run(_hostile_session(site, frames))
    assert any(isinstance(r, Error) and r.code == "refused" for r in replies), replies
    replica_dir = site.data / "replicas" / "alpha"
    escaped = [p for p in site.base.rglob("*escape*")] + [p for p in site.data.rglob("escape")]
    assert not escaped, escaped
    assert "refused data" in site.receiver.log()
    assert replica_dir.exists()


def test_api_refuses_missing_wrong_and_read_only_tokens(site):
    assert site.api("GET", "/v1/guests", token="")[0] == 401
    assert site.api("GET", "/v1/guests", token="not-the-token")[0] == 401
    ro = (site.pki / "api-token-ro").read_text().strip()
    assert site.api("GET", "/v1/guests", token=ro)[0] == 200
    assert site.api("POST", "/v1/migrations", {"guest": "x", "switchover": "manual"}, token=ro)[0] == 403
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        site.api("GET", "/v1/guests", cert=False)
    logs = site.receiver.log()
    for secret in ((site.pki / "api-token").read_text().strip(), ro):
        assert secret not in logs
