"""The fault proxy itself: bytes pass intact, cuts deliver exactly what they promise, stalls,
latency and the bandwidth cap hold. Timing bounds are one-sided (a fault can only make things
slower) or generous, so a busy machine does not make them flake."""
from __future__ import annotations

import os
import random
import socket
import threading
import time

import pytest

from tests.faults.proxy import DOWN, UP, FaultProxy


class Server:
    """A one-thread TCP server on 127.0.0.1: 'echo', 'sink' (keeps what it reads) or
    'source' (sends `payload`, then closes)."""

    def __init__(self, mode: str, payload: bytes = b""):
        self.mode, self.payload = mode, payload
        self.received = bytearray()
        self.done = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            with conn:
                if self.mode == "source":
                    try:
                        conn.sendall(self.payload)
                    except OSError:
                        pass
                    conn.settimeout(10)
                    try:
                        while conn.recv(65536):
                            pass
                    except OSError:
                        pass
                    return
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    self.received += data
                    if self.mode == "echo":
                        conn.sendall(data)
        except OSError:
            pass
        finally:
            self.done.set()

    def close(self):
        self.sock.close()


@pytest.fixture
def servers():
    made = []

    def make(mode, payload=b""):
        s = Server(mode, payload)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


@pytest.fixture
def proxies():
    made = []

    def make(port, seed=1):
        p = FaultProxy(port, seed=seed, name="test", verbose=False).start()
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


def connect(port) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    return s


def recv_all(s: socket.socket) -> bytes:
    out = bytearray()
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        out += data
    return bytes(out)


def test_data_passes_intact_both_ways(servers, proxies):
    server = servers("echo")
    proxy = proxies(server.port)
    payload = os.urandom(1 << 20)
    with connect(proxy.port) as s:
        threading.Thread(target=s.sendall, args=(payload,), daemon=True).start()
        got = bytearray()
        while len(got) < len(payload):
            data = s.recv(65536)
            assert data, "closed early"
            got += data
    assert bytes(got) == payload
    assert proxy.bytes_up == proxy.bytes_down == len(payload)
    assert proxy.connections == 1 and proxy.cuts == 0


@pytest.mark.parametrize("offset", [0, 1, 100_000, 65536 * 3])
def test_a_cut_upstream_delivers_exactly_n_bytes_then_closes_both_sides(servers, proxies, offset):
    server = servers("sink")
    proxy = proxies(server.port)
    proxy.cut_at(offset, UP)
    payload = os.urandom(600_000)
    with connect(proxy.port) as s:
        try:
            s.sendall(payload)
        except OSError:
            pass  # the proxy closed while we were still sending
        assert recv_all(s) == b""      # our side is closed too
    assert server.done.wait(20)
    assert bytes(server.received) == payload[:offset]
    assert proxy.bytes_up == offset and proxy.cuts == 1


def test_a_cut_downstream_delivers_exactly_n_bytes(servers, proxies):
    payload = os.urandom(500_000)
    server = servers("source", payload)
    proxy = proxies(server.port)
    proxy.cut_at(123_457, DOWN)
    with connect(proxy.port) as s:
        assert recv_all(s) == payload[:123_457]
    assert server.done.wait(20)  # the server's side was closed as well
    assert proxy.cuts == 1 and proxy.bytes_down == 123_457


def test_cut_rules_by_connection_index_and_next(servers, proxies):
    payload = os.urandom(100_000)
    server = servers("source", payload)
    proxy = proxies(server.port)
    proxy.cut_at(10, DOWN, which=1)
    proxy.cut_at(20, DOWN, which="next")   # the first connection (index 0)
    got = []
    for _ in range(3):
        with connect(proxy.port) as s:
            got.append(len(recv_all(s)))
    assert got == [20, 10, len(payload)]
    assert proxy.cuts == 2 and proxy.connections == 3


def test_cut_in_and_cut_all_act_on_open_connections(servers, proxies):
    server = servers("echo")
    proxy = proxies(server.port)
    with connect(proxy.port) as s:
        s.sendall(b"x" * 1000)
        assert recv_exact(s, 1000)
        assert proxy.cut_in(500, UP) == 1
        s.sendall(b"y" * 2000)
        recv_all(s)                        # closed (the echo of the 500 may not make it back)
    assert server.done.wait(20)
    assert bytes(server.received) == b"x" * 1000 + b"y" * 500
    assert proxy.bytes_up == 1500
    with connect(proxy.port) as s:
        s.sendall(b"z")
        assert recv_exact(s, 1) == b"z"
        assert proxy.cut_all() == 1
        assert recv_all(s) == b""
    assert proxy.cuts == 2


def recv_exact(s, n) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = s.recv(n - len(out))
        assert data, "closed early"
        out += data
    return bytes(out)


def test_cut_after_a_time(servers, proxies):
    server = servers("echo")
    proxy = proxies(server.port)
    proxy.cut_after(0.3)
    with connect(proxy.port) as s:
        t0 = time.monotonic()
        assert recv_all(s) == b""
        assert time.monotonic() - t0 >= 0.25
    assert proxy.cuts == 1


def test_link_down_refuses_then_comes_back(servers, proxies):
    server = servers("echo")
    proxy = proxies(server.port)
    with connect(proxy.port) as s:
        s.sendall(b"a")
        recv_exact(s, 1)
        assert proxy.set_down(True) == 1
        assert recv_all(s) == b""
    with connect(proxy.port) as s:
        assert recv_all(s) == b""
    assert proxy.refused == 1
    proxy.set_down(False)
    with connect(proxy.port) as s:
        s.sendall(b"back")
        assert recv_exact(s, 4) == b"back"


def test_a_stall_delays_then_resumes(servers, proxies):
    server = servers("echo")
    proxy = proxies(server.port)
    with connect(proxy.port) as s:
        proxy.stall(1.0)
        t0 = time.monotonic()
        s.sendall(b"hello")
        assert recv_exact(s, 5) == b"hello"
        assert time.monotonic() - t0 >= 0.9
        s.sendall(b"again")              # resumed: no stall now
        assert recv_exact(s, 5) == b"again"


def test_latency_is_added_each_way(servers, proxies):
    server = servers("echo")
    proxy = proxies(server.port)
    proxy.set_latency(0.3)
    with connect(proxy.port) as s:
        t0 = time.monotonic()
        s.sendall(b"ping")
        assert recv_exact(s, 4) == b"ping"
        assert time.monotonic() - t0 >= 0.55


def test_bandwidth_cap(servers, proxies):
    """512 KiB at 256 KiB/s cannot take less than ~2 s; all of it arrives."""
    server = servers("sink")
    proxy = proxies(server.port)
    proxy.set_bandwidth(256 << 10)
    payload = os.urandom(512 << 10)
    t0 = time.monotonic()
    with connect(proxy.port) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        assert server.done.wait(60)
    elapsed = time.monotonic() - t0
    assert bytes(server.received) == payload
    assert 1.6 <= elapsed < 60, elapsed
    assert proxy.bytes_up == len(payload)


def test_random_choices_replay_from_the_seed(servers, proxies):
    server = servers("echo")
    a, b = proxies(server.port, seed=42), proxies(server.port, seed=42)
    draws = [a.random_offset(0, 1 << 30) for _ in range(5)]
    assert draws == [b.random_offset(0, 1 << 30) for _ in range(5)]
    ref = random.Random(42)
    assert draws == [ref.randint(0, 1 << 30) for _ in range(5)]
