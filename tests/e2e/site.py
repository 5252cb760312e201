"""A whole osam site on loopback for end-to-end tests: real receiver, gateway and sentinel
processes with a fresh PKI, an HTTPS API client, and cleanup of every process started."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Daemon:
    def __init__(self, name: str, argv: list, log_path: Path, env=None):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    def start(self) -> "Daemon":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        log.close()
        return self

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Site:
    # Ports the gateway and the sentinels connect to instead of the receiver's and the
    # gateway's own (a fault proxy in between); None: straight to them.
    receiver_via = None
    gateway_via = None

    def __init__(self, base: Path):
        self.base = base
        self.pki = base / "pki"
        self.data = base / "data"
        self.logs = base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.receiver_port, self.api_port, self.gateway_port = free_port(), free_port(), free_port()
        self.daemons = []
        self.sentinels = {}
        run([VENV_BIN / "osam", "pki", "init", str(self.pki)])

    # -- processes -----------------------------------------------------------------------
    def _daemon(self, name, argv, env=None) -> Daemon:
        d = Daemon(name, [str(a) for a in argv], self.logs / f"{name}.log", env)
        self.daemons.append(d)
        return d.start()

    def start_receiver(self, env=None, replica_format: str = None, extra=()) -> Daemon:
        self.replica_format = replica_format or getattr(self, "replica_format", "tree")
        self.receiver_extra = list(extra) or getattr(self, "receiver_extra", [])
        self.receiver = self._daemon("receiver", [
            VENV_BIN / "osam-receiver", "--listen", f"127.0.0.1:{self.receiver_port}",
            "--api", f"127.0.0.1:{self.api_port}", "--pki", self.pki, "--data", self.data,
            "--replica-format", self.replica_format, *self.receiver_extra], env)
        wait_for(lambda: self._port_open(self.api_port), 20, "the receiver's API")
        return self.receiver

    def start_gateway(self, extra=()) -> Daemon:
        self.gateway_extra = list(extra) or getattr(self, "gateway_extra", [])
        self.gateway = self._daemon("gateway", [
            VENV_BIN / "osam-gateway", "--listen", f"127.0.0.1:{self.gateway_port}",
            "--receiver", f"127.0.0.1:{self.receiver_via or self.receiver_port}", "--pki", self.pki,
            "--inventory", self.base / "gateway-inventory.json", *self.gateway_extra])
        wait_for(lambda: self._port_open(self.gateway_port), 20, "the gateway")
        return self.gateway

    def start_sentinel(self, name: str, root: Path, etc: Path = None, extra=(), state: Path = None) -> Daemon:
        run([VENV_BIN / "osam", "pki", "issue", str(self.pki), "--sentinel", name])
        etc = etc or self.base / f"etc-{name}"
        etc.mkdir(parents=True, exist_ok=True)
        d = self._daemon(f"sentinel-{name}", [
            VENV_BIN / "osam-sentinel", "--gateway", f"127.0.0.1:{self.gateway_via or self.gateway_port}", "--pki", self.pki,
            "--name", name, "--root", root, "--state", state or self.base / f"state-{name}", "--etc", etc,
            "--retry-min", "0.2", "--retry-max", "1", *extra])
        self.sentinels[name] = d
        return d

    def start_all(self, name: str, root: Path, etc: Path = None) -> None:
        self.start_receiver()
        self.start_gateway()
        self.start_sentinel(name, root, etc)
        wait_for(lambda: self.guest(name), 30, f"guest {name} to register")

    def stop_all(self) -> None:
        for d in reversed(self.daemons):
            d.stop()

    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def replica(self, name: str) -> Path:
        return self.data / "replicas" / name / "root"

    # -- API -----------------------------------------------------------------------------
    def api(self, method: str, path: str, body=None, token: str = None, cert: bool = True):
        """One API call; the default identity keeps its connection open between calls."""
        default = token is None and cert
        if token is None:
            token = (self.pki / "api-token").read_text().strip()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in (1, 2):
            conn = self._api_conn if default and self._api_conn else self._connect(cert)
            try:
                conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (ConnectionError, http.client.HTTPException, ssl.SSLError, OSError):
                conn.close()
                self._api_conn = None
                if attempt == 2 or not default:
                    raise
                continue
            if default:
                self._api_conn = conn
            else:
                conn.close()
            return resp.status, json.loads(data) if data else None

    _api_conn = None

    def _connect(self, cert: bool) -> http.client.HTTPSConnection:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if cert:
            ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return http.client.HTTPSConnection("127.0.0.1", self.api_port, context=ctx, timeout=10)

    def osamctl(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "osamctl"), "--api", f"https://127.0.0.1:{self.api_port}",
                               "--pki", str(self.pki), *args], capture_output=True, text=True, timeout=60)

    def guest(self, name: str):
        status, body = self.api("GET", f"/v1/guests/{name}")
        return body if status == 200 else None

    def migration(self, name: str) -> dict:
        status, body = self.api("GET", f"/v1/migrations/{name}")
        assert status == 200, body
        return body

    def wait_phase(self, name: str, phase: str, timeout: float = 120) -> dict:
        def reached():
            m = self.migration(name)
            if m["phase"] == "failed" and phase != "failed":
                raise AssertionError(f"migration failed: {m['reason']}\n{self.dump_logs()}")
            return m if m["phase"] == phase else None
        return wait_for(reached, timeout, f"{name} to reach {phase}", 0.1)

    def dump_logs(self) -> str:
        return "\n".join(f"--- {d.name} ---\n{d.log()[-4000:]}" for d in self.daemons)


def run(argv, **kw):
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, **kw)
