"""Run govmomi's vSphere API simulator (vcsim, built by ``scripts/build-vcsim.sh``) for tests.

A :class:`Vcsim` is one simulated vCenter on ``127.0.0.1`` with a port of its own, TLS, one
user and password, and this inventory by default::

    DC0                                   datacenter
      host/DC0_H0                         standalone host (compute resource)
      host/DC0_C0                         cluster of DC0_C0_H0..H2, resource pool "Resources"
      datastore LocalDS_0                 a local folder (ds.info.url) under Vcsim.datastore_root
      network "VM Network", DC0_DVPG0     a standard and a distributed port group (DVS0)
      vm/DC0_H0_VM0, DC0_C0_RP0_VM0, ...  four VMs, two per compute resource

:meth:`Vcsim.start` returns once it answers; :meth:`Vcsim.stop` logs out the sessions
:meth:`Vcsim.connect` opened, stops it (SIGTERM: it removes its datastore folders, then
SIGKILL after a grace) and reports what it left behind. A start takes well under a second:
start one per test or per module rather than sharing state between unrelated tests.
"""
from __future__ import annotations

import os
import re
import selectors
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.util.processes import stop_group

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-vcsim.sh"
BUILD_TIMEOUT = 600        # a cold build takes ~40 s on 2 cores
START_TIMEOUT = 15.0       # until it prints its URL and answers
STOP_GRACE = 10.0          # after SIGTERM, before SIGKILL
DEBIAN_PACKAGES = ("golang-go", "golang-github-vmware-govmomi-dev")
GO_SOURCES = Path("/usr/share/gocode/src/github.com/vmware/govmomi/simulator")
# The version the simulator announces; pyvmomi 9 then speaks vim.version.v8_0_2_0, the API of
# the vSphere 8 targets. The simulated inventory itself is the same whatever is announced.
API_VERSION = "8.0.2.0"
DEFAULT_USER = "administrator@vsphere.local"
# What the binary prints once it listens.
URL_LINE = re.compile(r"^export GOVC_URL=(?P<url>\S+) GOVC_SIM_PID=(?P<pid>\d+)\s*$")
# Inventory sizes the binary takes (see vcsim -h), by keyword argument of Vcsim.
INVENTORY_FLAGS = {"dc": "-dc", "cluster": "-cluster", "host": "-host", "standalone_host": "-standalone-host",
                   "ds": "-ds", "pg": "-pg", "pool": "-pool", "vm": "-vm", "folder": "-folder"}


class VcsimUnavailable(Exception):
    """No simulator binary, and none can be built here (the reason in str())."""


def cached_binary() -> Path:
    """Where build-vcsim.sh keeps the binary of its current recipe (built or not)."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT), "path"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def ensure_binary(rebuild: bool = False) -> tuple[Path, str]:
    """The simulator binary, built first when missing (or when ``rebuild``); returns it and the
    build script's output. Raises :class:`VcsimUnavailable` when it cannot be built here."""
    path = cached_binary()
    if path.exists() and not rebuild:
        return path, f"vcsim {path}: up to date\n"
    if not GO_SOURCES.is_dir() or not _which("go"):
        raise VcsimUnavailable(
            f"vcsim is not built ({path}) and cannot be here: Debian packages {' '.join(DEBIAN_PACKAGES)} "
            "are missing; run scripts/setup.sh as root")
    env = dict(os.environ, OSAM_REBUILD_IMAGES="1" if rebuild else "0")
    # A session of its own: when stopped (timeout, Ctrl-C), SIGTERM reaches go build too, and
    # the script's trap then removes its scratch directory and the half-built binary.
    proc = subprocess.Popen(["bash", str(BUILD_SCRIPT), "build"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=BUILD_TIMEOUT)
    except BaseException as e:
        output = stop_group(proc)
        if isinstance(e, subprocess.TimeoutExpired):
            raise RuntimeError(f"scripts/build-vcsim.sh build: no binary after {BUILD_TIMEOUT}s:\n{output}") from e
        raise
    if proc.returncode != 0 or not path.exists():
        raise RuntimeError(f"scripts/build-vcsim.sh build failed (exit {proc.returncode}):\n{output}")
    return path, output


def _which(name: str) -> bool:
    return any(os.access(os.path.join(d, name), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep) if d)


def unverified_ssl_context() -> ssl.SSLContext:
    """A TLS context that accepts the simulator's certificate without checking it.

    Test-only: vcsim serves Go's built-in test certificate for 127.0.0.1, self-signed and with a
    private key published in Go's sources, so checking it would prove nothing. Product code
    talking to a real vCenter must verify its certificate (or pin its thumbprint) instead."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Vcsim:
    """One simulator process. ``workdir`` must exist and be empty; it receives the
    datastore folders (``datastore_root``) and vcsim's log (``log_path``)."""

    def __init__(self, binary: Path, workdir: Path, user: str = DEFAULT_USER, password: str | None = None,
                 api_version: str = API_VERSION, **inventory: int):
        unknown = set(inventory) - set(INVENTORY_FLAGS)
        if unknown:
            raise TypeError(f"unknown inventory sizes {sorted(unknown)}; known: {sorted(INVENTORY_FLAGS)}")
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.datastore_root = self.workdir / "datastores"   # vcsim's $TMPDIR: its govcsim-* folders
        self.log_path = self.workdir / "vcsim.log"
        self.user = user
        self.password = password if password is not None else os.urandom(9).hex()
        self.api_version = api_version
        self.inventory = inventory
        self.url = ""        # https://127.0.0.1:PORT/sdk, no credentials
        self.host = ""
        self.port = 0
        self.pid = 0
        self.start_seconds = 0.0   # from exec to answering HTTPS
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._sessions: list = []

    # ------------------------------------------------------------ process
    def start(self) -> "Vcsim":
        self.datastore_root.mkdir()
        args = [str(self.binary), "-l", "127.0.0.1:0", "-username", self.user, "-password", self.password,
                "-api-version", self.api_version]
        for name, count in self.inventory.items():
            args += [INVENTORY_FLAGS[name], str(count)]
        self._log = open(self.log_path, "wb")
        t0 = time.monotonic()
        try:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=self._log, env=dict(os.environ, TMPDIR=str(self.datastore_root)))
            line = self._read_url_line(t0 + START_TIMEOUT)
            m = URL_LINE.match(line)
            if not m:
                raise RuntimeError(f"vcsim printed {line!r}, not its URL line; log: {self.log_tail()}")
            printed = urllib.parse.urlsplit(m.group("url"))
            self.pid = int(m.group("pid"))
            self.host, self.port = printed.hostname, printed.port
            self.url = f"{printed.scheme}://{self.host}:{self.port}{printed.path}"
            self._wait_answering(t0 + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _read_url_line(self, deadline: float) -> str:
        sel = selectors.DefaultSelector()
        sel.register(self._proc.stdout, selectors.EVENT_READ)
        try:
            buf = b""
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"vcsim printed no URL within {START_TIMEOUT}s; log: {self.log_tail()}")
                if sel.select(left):
                    chunk = os.read(self._proc.stdout.fileno(), 4096)
                    if not chunk:
                        self._proc.wait(timeout=STOP_GRACE)
                        raise RuntimeError(f"vcsim exited ({self._proc.returncode}) before listening; "
                                           f"log: {self.log_tail()}")
                    buf += chunk
            return buf.decode(errors="replace").splitlines()[0]
        finally:
            sel.close()

    def _wait_answering(self, deadline: float) -> None:
        """Until GET /about answers over TLS (it listens before it prints, so at once in practice)."""
        about = f"https://{self.host}:{self.port}/about"
        while True:
            try:
                with urllib.request.urlopen(about, context=unverified_ssl_context(), timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"vcsim does not answer {about}: {e}; log: {self.log_tail()}") from e
            if self._proc.poll() is not None:
                raise RuntimeError(f"vcsim exited ({self._proc.returncode}); log: {self.log_tail()}")
            time.sleep(0.02)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> list[str]:
        """Stop the simulator (idempotent); returns what it left in ``datastore_root``
        (nothing after a SIGTERM: it removes its folders)."""
        from pyVim.connect import Disconnect
        for si in self._sessions:
            try:
                Disconnect(si)
            except Exception:  # the session or the process is gone already: nothing to log out
                pass
        self._sessions.clear()
        if self._proc is not None:
            for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, None)):
                if self._proc.poll() is not None:
                    break
                self._proc.send_signal(sig)
                try:
                    self._proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    continue
            self._proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return sorted(os.listdir(self.datastore_root)) if self.datastore_root.is_dir() else []

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------ clients
    def connect(self, user: str | None = None, password: str | None = None):
        """A logged-in pyvmomi ``vim.ServiceInstance`` (SmartConnect: it negotiates the API
        version). Logged out when the simulator stops; ``pyVim.connect.Disconnect`` earlier is fine."""
        from pyVim.connect import SmartConnect
        si = SmartConnect(host=self.host, port=self.port, user=self.user if user is None else user,
                          pwd=self.password if password is None else password,
                          sslContext=unverified_ssl_context(), httpConnectionTimeout=30)
        self._sessions.append(si)
        return si

    def datastore_url(self, path: str, datacenter: str, datastore: str) -> str:
        """The datastore HTTP API's URL of ``path`` (relative to the datastore's top)."""
        query = urllib.parse.urlencode({"dcPath": datacenter, "dsName": datastore})
        return f"https://{self.host}:{self.port}/folder/{urllib.parse.quote(path)}?{query}"

    def http(self, method: str, url: str, si=None, data: bytes | None = None) -> tuple[int, bytes]:
        """An HTTPS request to the simulator, with ``si``'s session cookie when given; returns the
        status and the body (also for error statuses)."""
        headers = {"Cookie": si._stub.cookie} if si is not None else {}
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=unverified_ssl_context(), timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def __repr__(self) -> str:
        return f"Vcsim({self.url or 'not started'}, pid={self.pid or None})"
