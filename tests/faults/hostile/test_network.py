"""Hostile peers over real TLS against real gateway and receiver processes, while an honest
guest keeps replicating: oversized and truncated frames, garbage hellos, silent and trickling
clients, too many connections, certificate misuse (another guest's name, a gateway's or a
foreign or expired certificate, the wrong port), replayed ciphertext; then no secret (API
tokens, private keys) in any log, `osamctl` output or API response.

Already covered elsewhere and not repeated: a foreign-CA sentinel, a client without a
certificate, a guest claiming another's name by --name, six hostile paths end to end, API
tokens (tests/e2e/test_refusals.py); every handshake refusal reason in-process
(daemons/tests/test_transport.py); API limits and timeouts (daemons/tests/test_api.py)."""
from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time

import pytest

from osam import pki
from osam.pki.testing import foreign_pki, issue_custom, issue_expired
from osam.protocol import CHANNEL_CONTROL, MAX_PAYLOAD, Forward, Register, Welcome, encode_hello
from osam.protocol.frames import HEADER
from osam.transport import HandshakeRefused, bound_port, client_context, connect, serve, server_context
from osam.transport.framed import FramedStream
from tests.e2e.site import VENV_BIN, Site, run, wait_for

TIMEOUT = 2.0            # the handshake, hello and frame timeouts the daemons run with here
PER_GUEST = 3


@pytest.fixture(scope="module")
def site(module_disk_tmp_path):
    base = module_disk_tmp_path
    s = Site(base / "site")
    s.start_receiver(extra=["--frame-timeout", str(TIMEOUT), "--handshake-timeout", str(TIMEOUT)])
    s.gateway = s._daemon("gateway", [
        VENV_BIN / "osam-gateway", "--listen", f"127.0.0.1:{s.gateway_port}",
        "--receiver", f"127.0.0.1:{s.receiver_port}", "--pki", s.pki,
        "--handshake-timeout", TIMEOUT, "--hello-timeout", TIMEOUT,
        "--max-connections-per-guest", PER_GUEST, "--max-connections-per-address", 200])
    wait_for(lambda: s._port_open(s.gateway_port), 20, "the gateway")
    try:
        # The honest guest: replicating continuously through everything below.
        s.honest_root = base / "honest"
        s.honest_root.mkdir()
        (s.honest_root / "first.txt").write_text("first\n")
        s.start_sentinel("honest", s.honest_root)
        wait_for(lambda: s.guest("honest"), 30, "the honest guest to register")
        status, body = s.api("POST", "/v1/migrations", {"guest": "honest", "switchover": "manual"})
        assert status == 201, body
        s.wait_phase("honest", "continuous_sync", 60)
        for name in ("alpha", "beta"):
            run([VENV_BIN / "osam", "pki", "issue", str(s.pki), "--sentinel", name])
        yield s
    finally:
        s.stop_all()


def honest_still_replicates(site, tag: str) -> None:
    (site.honest_root / f"{tag}.txt").write_text(tag)
    wait_for(lambda: (site.replica("honest") / f"{tag}.txt").exists(), 30, f"{tag}.txt on the honest replica")


def tls(site, role="sentinel", name="alpha"):
    if role == "gateway":
        return client_context(site.pki, "gateway")
    return client_context(site.pki, role, name)


async def _as_guest(site, name="alpha"):
    return await connect("127.0.0.1", site.gateway_port, tls(site, name=name), timeout=10)


async def _as_gateway(site):
    return await connect("127.0.0.1", site.receiver_port, tls(site, "gateway"), timeout=10,
                         expect_roles=("receiver",))


async def _closed_within(conn, seconds: float) -> bool:
    """True once the server closes the connection (EOF), reading and dropping what it sends."""
    try:
        async with asyncio.timeout(seconds):
            while await conn.reader.read(65536):
                pass
        return True
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True


def new_lines(daemon, since: int):
    return daemon.log()[since:]


def _expect_line(daemon, since, pattern, timeout=15):
    return wait_for(lambda: re.search(pattern, new_lines(daemon, since)), timeout, f"{pattern!r} in {daemon.name}'s log")


# -- oversized, truncated, garbage ---------------------------------------------------------

@pytest.mark.parametrize("where", ["gateway", "receiver"])
@pytest.mark.parametrize("attack", ["oversized", "truncated", "garbage-hello", "trickle"])
def test_bad_frames_end_that_connection_with_one_line(site, where, attack):
    daemon = site.receiver if where == "receiver" or attack in ("oversized", "truncated", "trickle") else site.gateway
    mark = len(daemon.log())

    async def go():
        conn = await (_as_guest(site) if where == "gateway" else _as_gateway(site))
        if where == "receiver":
            prefix = encode_hello(CHANNEL_CONTROL) + Forward(CHANNEL_CONTROL, _der(site, "alpha"), "x").encode()
        else:
            prefix = encode_hello(CHANNEL_CONTROL)
        if attack == "garbage-hello":
            conn.writer.write(b"GET / HTTP/1.1\r\n\r\n")
        elif attack == "oversized":
            conn.writer.write(prefix + HEADER.pack(MAX_PAYLOAD + 1, Register.TYPE, 0) + b"x" * 1000)
        elif attack == "truncated":
            conn.writer.write(prefix + HEADER.pack(1000, Register.TYPE, 0) + b"x" * 10)
        elif attack == "trickle":
            conn.writer.write(prefix + HEADER.pack(1000, Register.TYPE, 0))
            for _ in range(int(TIMEOUT * 3)):
                conn.writer.write(b"x")
                await asyncio.sleep(0.5)
        started = time.monotonic()
        closed = await _closed_within(conn, TIMEOUT * 4)
        conn.writer.transport.abort()
        return closed, time.monotonic() - started

    closed, _ = asyncio.run(go())
    assert closed, f"{attack} at the {where}: the connection stayed open"
    patterns = {
        "oversized": r"protocol error, closing: frame of \d+ bytes exceeds",
        "truncated": r"stalled mid-frame",
        "trickle": r"stalled mid-frame",
        "garbage-hello": r"refused .*(bad hello|not an osam peer)" if where == "gateway" else r"refused connection from gateway .*not an osam peer",
    }
    _expect_line(daemon, mark, patterns[attack])
    assert "Traceback" not in new_lines(site.receiver, 0) and "Traceback" not in site.gateway.log()
    honest_still_replicates(site, f"{where}-{attack}")


def _der(site, name):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    cert = x509.load_pem_x509_certificate((site.pki / "sentinels" / f"{name}.crt").read_bytes())
    return cert.public_bytes(Encoding.DER)


# -- slow clients ----------------------------------------------------------------------------

def test_silent_clients_are_timed_out(site):
    g_mark, r_mark = len(site.gateway.log()), len(site.receiver.log())

    async def go():
        # TCP only, no TLS handshake, at both daemons.
        raws = [await asyncio.open_connection("127.0.0.1", port) for port in (site.gateway_port, site.receiver_port)]
        # TLS done, then nothing: no hello at the gateway, no Forward at the receiver.
        admitted = [await _as_guest(site), await _as_gateway(site)]
        # A guest that registers and then never reads what the receiver sends.
        deaf = await _as_guest(site)
        deaf.writer.write(encode_hello(CHANNEL_CONTROL) + Register("0", {"hostname": "alpha"}, {}).encode())
        results = []
        for r, w in raws:
            try:
                async with asyncio.timeout(TIMEOUT * 4):
                    results.append(await r.read() == b"")
            except (TimeoutError, ConnectionError):
                results.append(False)
            w.transport.abort()
        for conn in admitted:
            results.append(await _closed_within(conn, TIMEOUT * 10))
            conn.writer.transport.abort()
        deaf.writer.transport.abort()
        return results

    assert asyncio.run(go()) == [True, True, True, True]
    _expect_line(site.gateway, g_mark, r"TLS handshake timed out after 2s")
    _expect_line(site.receiver, r_mark, r"TLS handshake timed out after 2s")
    _expect_line(site.gateway, g_mark, r"refused .*no hello within 2s")
    _expect_line(site.receiver, r_mark, r"refused connection from gateway")
    honest_still_replicates(site, "silent")


def test_connections_per_guest_are_limited(site):
    mark = len(site.gateway.log())

    async def go():
        held = [await _as_guest(site, "beta") for _ in range(PER_GUEST)]
        try:
            with pytest.raises(HandshakeRefused, match="already has 3 connections open"):
                await _as_guest(site, "beta")
        finally:
            for c in held:
                c.writer.transport.abort()
        await asyncio.sleep(0.5)
        again = await _as_guest(site, "beta")      # room again once they are gone
        again.writer.transport.abort()

    asyncio.run(go())
    _expect_line(site.gateway, mark, r"refused .*sentinel beta already has 3 connections open")
    honest_still_replicates(site, "per-guest")


def test_connections_per_address_are_limited_before_the_handshake(tmp_path, caplog):
    pki.init_pki(tmp_path)
    pki.issue_sentinel(tmp_path, "g1")

    async def handler(conn):
        await conn.reader.read()

    async def go():
        server = await serve("127.0.0.1", 0, server_context(tmp_path, "gateway"), handler,
                             allowed_roles=("sentinel",), log=logging.getLogger("osam.test.hostile"),
                             max_per_address=2, handshake_timeout=5)
        port = bound_port(server)
        try:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            r, w = await asyncio.open_connection("127.0.0.1", port)
            async with asyncio.timeout(5):
                assert await r.read() == b""          # dropped at once, no handshake
            for _, hw in held:
                hw.transport.abort()
            await asyncio.sleep(0.2)
            c = await connect("127.0.0.1", port, client_context(tmp_path, "sentinel", "g1"), timeout=5,
                              server_hostname="localhost")
            c.writer.transport.abort()
        finally:
            server.close()

    with caplog.at_level(logging.WARNING, "osam.test.hostile"):
        asyncio.run(go())
    assert any("connections from 127.0.0.1 already open" in r.getMessage() for r in caplog.records)


# -- certificate misuse ------------------------------------------------------------------

def test_a_guest_cannot_speak_for_another_guest(site):
    """alpha's certificate, beta's certificate bytes in a Forward frame of its own: the
    receiver sees a second Forward where the Register must be, and beta never registers."""
    mark = len(site.receiver.log())

    async def go():
        c = await _as_guest(site, "alpha")
        c.writer.write(encode_hello(CHANNEL_CONTROL) + Forward(CHANNEL_CONTROL, _der(site, "beta"), "x").encode()
                       + Register("0", {"hostname": "beta"}, {}).encode())
        closed = await _closed_within(c, 10)
        c.writer.transport.abort()
        return closed

    assert asyncio.run(go())
    _expect_line(site.receiver, mark, r"guest alpha: protocol error, closing: expected Register, got Forward")
    assert site.guest("beta") is None


@pytest.mark.parametrize("case", ["gateway-cert-as-guest", "guest-cert-at-receiver", "admin-cert-at-gateway",
                                  "foreign-ca-at-receiver", "expired-guest", "expired-gateway",
                                  "server-only-cert"])
def test_misused_certificates_are_refused_with_a_clear_line(site, tmp_path, case):
    where, ctx, line = {
        "gateway-cert-as-guest": ("gateway", lambda: tls(site, "gateway"), r"role gateway not allowed here"),
        "guest-cert-at-receiver": ("receiver", lambda: tls(site, name="alpha"), r"role sentinel not allowed here"),
        "admin-cert-at-gateway": ("gateway", lambda: client_context(site.pki, "admin"), r"role admin not allowed here"),
        "foreign-ca-at-receiver": ("receiver", lambda: _foreign(site, tmp_path), r"foreign CA"),
        "expired-guest": ("gateway", lambda: _custom(site, tmp_path, "sentinel", expired=True), r"certificate has expired"),
        "expired-gateway": ("receiver", lambda: _custom(site, tmp_path, "gateway", expired=True), r"certificate has expired"),
        "server-only-cert": ("gateway", lambda: _custom(site, tmp_path, "sentinel", client_auth=False),
                             r"certificate verify failed.*(purpose|not issued for this side)"),
    }[case]
    daemon = site.gateway if where == "gateway" else site.receiver
    port = site.gateway_port if where == "gateway" else site.receiver_port
    mark = len(daemon.log())
    with pytest.raises(HandshakeRefused):
        asyncio.run(connect("127.0.0.1", port, ctx(), timeout=10, server_hostname="localhost"))
    _expect_line(daemon, mark, r"refused .*" + line)


def _foreign(site, tmp_path):
    foreign = foreign_pki(tmp_path / "foreign")
    pki.issue_gateway(foreign) if hasattr(pki, "issue_gateway") else None
    ctx = client_context(foreign, "gateway")
    ctx.load_verify_locations(cafile=str(site.pki / "ca.crt"))   # it trusts us; we do not trust it
    return ctx


def _custom(site, tmp_path, role, *, expired=False, client_auth=True):
    if expired:
        crt, key = issue_expired(site.pki, tmp_path / "custom", "alpha" if role == "sentinel" else "gw2", role=role)
    else:
        crt, key = issue_custom(site.pki, tmp_path / "custom", "alpha", role=role, client_auth=client_auth,
                                server_auth=True)
    return client_context(site.pki, role, "alpha" if role == "sentinel" else None, cert=crt, key=key)


# -- replay ------------------------------------------------------------------------------------

def test_recorded_ciphertext_replayed_into_a_new_connection_fails_the_handshake(site):
    """A recording TCP relay captures a whole honest session (registration included); sending
    the captured client bytes again on a new connection gets nowhere: TLS 1.3 binds every
    session to fresh server randomness, so the replayed Finished does not verify."""
    mark = len(site.gateway.log())

    async def go():
        captured = bytearray()

        async def relay(reader, writer):
            up_r, up_w = await asyncio.open_connection("127.0.0.1", site.gateway_port)

            async def pump(src, dst, record):
                try:
                    while data := await src.read(65536):
                        if record:
                            captured.extend(data)
                        dst.write(data)
                        await dst.drain()
                except (ConnectionError, OSError):
                    pass
                finally:
                    dst.close()
            await asyncio.gather(pump(reader, up_w, True), pump(up_r, writer, False))

        proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        c = await connect("127.0.0.1", port, tls(site, name="alpha"), timeout=10, server_hostname="localhost")
        s = FramedStream(c.reader, c.writer, CHANNEL_CONTROL)
        await s.send(Register("0", {"hostname": "alpha", "replay": "original"}, {}))
        assert isinstance(await s.recv(timeout=10), Welcome)
        c.writer.transport.abort()
        proxy.close()
        assert len(captured) > 1000

        r, w = await asyncio.open_connection("127.0.0.1", site.gateway_port)
        w.write(bytes(captured))
        reply = b""
        try:
            async with asyncio.timeout(10):
                while data := await r.read(65536):
                    reply += data
        except (ConnectionError, TimeoutError):
            pass
        w.transport.abort()
        return reply

    reply = asyncio.run(go())
    assert b"osam admitted" not in reply and b"OSAM" not in reply   # ciphertext or an alert, nothing in clear
    _expect_line(site.gateway, mark, r"refused 127\.0\.0\.1:\d+: (TLS handshake failed|.*decrypt|.*bad record mac|.*certificate)")


# -- secrets -----------------------------------------------------------------------------------

def test_no_secret_in_logs_status_or_api_responses(site):
    """Runs last in this module: every daemon log and answer so far, after a migration."""
    from tests.faults.hostile.secrets import find_secrets, secrets_of
    secrets = secrets_of(site.pki)
    assert len(secrets) >= 4
    texts = {d.name: d.log() for d in site.daemons}
    for args in (("status",), ("guests",), ("status", "honest"), ("--json", "status")):
        out = site.osamctl(*args)
        texts[f"osamctl {' '.join(args)}"] = out.stdout + out.stderr
    for path in ("/v1/guests", "/v1/migrations", "/v1/guests/honest", "/v1/migrations/honest", "/v1/health"):
        texts[f"GET {path}"] = repr(site.api("GET", path))
    found = find_secrets(texts, secrets)
    assert found == [], found
