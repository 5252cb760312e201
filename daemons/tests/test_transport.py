"""Real mutual TLS on 127.0.0.1: who gets in, and the one log line for each who does not."""
from __future__ import annotations

import asyncio
import logging
import re
import ssl

import pytest

from osam import pki
from osam.pki.testing import foreign_pki, issue_custom, issue_expired
from osam.transport import (HandshakeRefused, TransportError, bound_port, client_context, connect,
                            serve, server_context)

HOST = "127.0.0.1"
LOG = "osam.test.transport"


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    ours = tmp_path_factory.mktemp("pki")
    pki.init_pki(ours)
    pki.issue_sentinel(ours, "web01")
    foreign = foreign_pki(tmp_path_factory.mktemp("foreign"))
    pki.issue_sentinel(foreign, "web01")
    return ours, foreign


def run(coro, timeout=20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Echo:
    """Echoes length-prefixed blobs back, and remembers who called."""

    def __init__(self):
        self.conns = []

    async def __call__(self, conn):
        self.conns.append(conn)
        while True:
            try:
                header = await conn.reader.readexactly(4)
            except asyncio.IncompleteReadError:
                return
            blob = await conn.reader.readexactly(int.from_bytes(header, "big"))
            conn.writer.write(header + blob)
            await conn.writer.drain()


async def echo_once(conn, blob: bytes) -> bytes:
    conn.writer.write(len(blob).to_bytes(4, "big") + blob)
    await conn.writer.drain()
    size = int.from_bytes(await conn.reader.readexactly(4), "big")
    return await conn.reader.readexactly(size)


async def start(pki_dir, role, allowed, handler=None, **kw):
    handler = handler or Echo()
    server = await serve(HOST, 0, server_context(pki_dir, role), handler,
                         allowed_roles=allowed, log=logging.getLogger(LOG), **kw)
    return server, bound_port(server), handler


async def stop(server):
    server.close()
    await server.wait_closed()


def refusals(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOG and r.getMessage().startswith("refused")]


def wait_for_log(caplog, pattern, timeout=5.0):
    """Server-side lines may land a moment after the client has given up."""
    async def poll():
        for _ in range(int(timeout / 0.02)):
            if any(re.fullmatch(pattern, line) for line in refusals(caplog)):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no log line matching {pattern!r} in {refusals(caplog)}")
    return poll()


def test_sentinel_to_gateway_exchanges_bytes_both_ways_identified(sites):
    ours, _ = sites

    async def scenario():
        server, port, echo = await start(ours, pki.GATEWAY, {pki.SENTINEL})
        try:
            ctx = client_context(ours, pki.SENTINEL, "web01")
            async with await connect(HOST, port, ctx, timeout=5, expect_roles=[pki.GATEWAY]) as conn:
                assert await echo_once(conn, b"hello gateway") == b"hello gateway"
                assert (conn.identity.role, conn.identity.name) == ("gateway", "gateway")
                assert conn.peer == f"{HOST}:{port}"
            seen = echo.conns[0]
            assert (seen.identity.role, seen.identity.name) == ("sentinel", "web01")
            assert re.fullmatch(r"127\.0\.0\.1:\d+", seen.peer)
            # What the gateway relays lets the receiver learn the same identity.
            relayed = pki.verify_peer_certificate(seen.peer_cert_der, ours / "ca.crt")
            assert relayed == seen.identity
        finally:
            await stop(server)

    run(scenario())


def test_gateway_to_receiver_streams_multi_mebibyte_frames(sites):
    ours, _ = sites
    blob = bytes(range(256)) * (12 * 4096)   # 12 MiB, larger than every buffer limit

    async def scenario():
        server, port, echo = await start(ours, pki.RECEIVER, {pki.GATEWAY})
        try:
            ctx = client_context(ours, pki.GATEWAY)
            async with await connect("localhost", port, ctx, timeout=5) as conn:
                assert conn.identity.role == "receiver"
                for _ in range(2):
                    assert await echo_once(conn, blob) == blob
            assert echo.conns[0].identity.role == "gateway"
        finally:
            await stop(server)

    run(scenario())


def test_admin_client_reaches_receiver(sites):
    ours, _ = sites

    async def scenario():
        server, port, echo = await start(ours, pki.RECEIVER, {pki.ADMIN, pki.GATEWAY})
        try:
            async with await connect(HOST, port, client_context(ours, pki.ADMIN), timeout=5) as conn:
                assert await echo_once(conn, b"x") == b"x"
            assert echo.conns[0].identity.role == "admin"
        finally:
            await stop(server)

    run(scenario())


@pytest.mark.parametrize("case, expected", [
    ("foreign_ca", r"certificate verify failed: unable to get local issuer certificate \(foreign CA\?\)"),
    ("no_cert", r"no client certificate"),
    ("expired", r"certificate has expired"),
    ("wrong_role", r"role sentinel not allowed here"),
])
def test_server_refuses_with_one_clear_line(sites, tmp_path, caplog, case, expected):
    ours, foreign = sites
    caplog.set_level(logging.INFO, logger=LOG)
    ca = ours / "ca.crt"
    if case == "foreign_ca":
        ctx = client_context(ours, pki.SENTINEL, cert=foreign / "sentinels/web01.crt",
                             key=foreign / "sentinels/web01.key", ca=ca)
    elif case == "no_cert":
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    elif case == "expired":
        crt, key = issue_expired(ours, tmp_path, "old01")
        ctx = client_context(ours, pki.SENTINEL, cert=crt, key=key)
    else:
        ctx = client_context(ours, pki.SENTINEL, "web01")
    allowed = {pki.GATEWAY} if case == "wrong_role" else {pki.SENTINEL}

    async def scenario():
        server, port, echo = await start(ours, pki.RECEIVER, allowed)
        try:
            with pytest.raises(HandshakeRefused) as refused:
                await connect(HOST, port, ctx, timeout=5)
            await wait_for_log(caplog, rf"refused 127\.0\.0\.1:\d+: {expected}")
            assert echo.conns == []
            return str(refused.value)
        finally:
            await stop(server)

    message = run(scenario())
    assert len(refusals(caplog)) == 1
    assert [r.levelno for r in caplog.records if r.name == LOG and "refused" in r.getMessage()] \
        == [logging.WARNING]
    if case == "wrong_role":   # the reason travels back to the client too
        assert message.endswith("server refused us: role sentinel not allowed here")
    else:
        assert "before admitting us" in message or "certificate" in message


def test_client_refuses_server_from_foreign_ca(sites):
    ours, foreign = sites

    async def scenario():
        server, port, echo = await start(foreign, pki.GATEWAY, {pki.SENTINEL})
        try:
            with pytest.raises(HandshakeRefused, match=r"server certificate refused: certificate "
                               r"verify failed: .* \(foreign CA\?\)"):
                await connect(HOST, port, client_context(ours, pki.SENTINEL, "web01"), timeout=5)
            assert echo.conns == []
        finally:
            await stop(server)

    run(scenario())


def test_client_checks_server_host_name_and_role(sites):
    ours, _ = sites

    async def scenario():
        server, port, _ = await start(ours, pki.GATEWAY, {pki.SENTINEL})
        ctx = client_context(ours, pki.SENTINEL, "web01")
        try:
            with pytest.raises(HandshakeRefused, match="Hostname mismatch"):
                await connect(HOST, port, ctx, timeout=5, server_hostname="gateway.example")
            with pytest.raises(HandshakeRefused, match="server is a gateway, expected receiver"):
                await connect(HOST, port, ctx, timeout=5, expect_roles=[pki.RECEIVER])
        finally:
            await stop(server)

    run(scenario())


def test_server_certificate_cannot_be_a_client_only_one(sites, tmp_path):
    """A sentinel certificate (clientAuth only) cannot pose as a gateway."""
    ours, _ = sites
    crt, key = pki.cert_and_key(ours, pki.SENTINEL, "web01")

    async def scenario():
        ctx = server_context(ours, pki.GATEWAY, cert=crt, key=key)
        server = await serve(HOST, 0, ctx, Echo(), allowed_roles={pki.SENTINEL},
                             log=logging.getLogger(LOG))
        try:
            with pytest.raises(HandshakeRefused, match="unsuitable certificate purpose"):
                await connect(HOST, bound_port(server), client_context(ours, pki.GATEWAY), timeout=5)
        finally:
            await stop(server)

    run(scenario())


def test_silent_and_plaintext_peers_are_refused(sites, caplog):
    ours, _ = sites
    caplog.set_level(logging.INFO, logger=LOG)

    async def scenario():
        server, port, _ = await start(ours, pki.GATEWAY, {pki.SENTINEL}, handshake_timeout=0.3)
        try:
            _, probe = await asyncio.open_connection(HOST, port)   # a port probe: connect, hang up
            probe.close()
            await wait_for_log(caplog, r"refused 127\.0\.0\.1:\d+: connection closed during the TLS handshake")
            assert caplog.records[-1].levelno == logging.INFO   # not worth a warning
            _, silent = await asyncio.open_connection(HOST, port)
            await wait_for_log(caplog, r"refused 127\.0\.0\.1:\d+: TLS handshake timed out after 0\.3s")
            silent.close()
            reader, plain = await asyncio.open_connection(HOST, port)
            plain.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await reader.read() == b""   # dropped without a word
            await wait_for_log(caplog, r"refused 127\.0\.0\.1:\d+: (plain HTTP sent to a TLS port|"
                                       r"not a TLS client.*)")
            plain.close()
        finally:
            await stop(server)

    run(scenario())


def test_handler_failure_is_logged_and_closes_the_connection(sites, caplog):
    ours, _ = sites
    caplog.set_level(logging.INFO, logger=LOG)

    async def broken(conn):
        await conn.reader.readexactly(1)
        raise RuntimeError("handler bug")

    async def scenario():
        server, port, _ = await start(ours, pki.GATEWAY, {pki.SENTINEL}, handler=broken)
        try:
            conn = await connect(HOST, port, client_context(ours, pki.SENTINEL, "web01"), timeout=5)
            conn.writer.write(b"!")
            assert await conn.reader.read() == b""
            await conn.close()
        finally:
            await stop(server)

    run(scenario())
    failures = [r for r in caplog.records if r.name == LOG and r.getMessage().startswith("handler failed")]
    assert len(failures) == 1 and failures[0].exc_info[0] is RuntimeError


def test_unreachable_server_is_a_transport_error_not_a_refusal(sites):
    ours, _ = sites

    async def scenario():
        server = await asyncio.start_server(lambda r, w: None, HOST, 0)
        port = bound_port(server)
        await stop(server)   # nothing listens there any more
        with pytest.raises(TransportError, match="cannot reach") as caught:
            await connect(HOST, port, client_context(ours, pki.SENTINEL, "web01"), timeout=5)
        assert not isinstance(caught.value, HandshakeRefused)

    run(scenario())


def test_contexts_are_tls13_only_and_require_certificates(sites):
    ours, _ = sites
    for ctx in (server_context(ours, pki.RECEIVER), client_context(ours, pki.SENTINEL, "web01")):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert client_context(ours, pki.ADMIN).check_hostname
    with pytest.raises(ValueError, match="does not listen"):
        server_context(ours, pki.SENTINEL)
    with pytest.raises(pki.PkiError, match="name="):
        client_context(ours, pki.SENTINEL)
