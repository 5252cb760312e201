"""`osam demo`: a real local migration. A receiver, a gateway and a sentinel run as separate
processes on loopback with a fresh PKI; a sample guest tree is migrated through full,
continuous and final sync while it changes, and the replica is checked against the source."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from ..pki import init_pki, issue_sentinel

GUEST = "demo-guest"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_sample_tree(root: Path, files: int = 400, seed: int = 7) -> None:
    """A small guest-like tree: configs, binaries, logs, links and a sparse disk image."""
    rnd = random.Random(seed)
    for d in ("etc/app", "usr/lib/app", "var/log/app", "var/lib/app/data", "home/ops"):
        (root / d).mkdir(parents=True, exist_ok=True)
    dirs = [p for p in root.rglob("*") if p.is_dir()]
    for i in range(files):
        d = rnd.choice(dirs)
        size = int(2 ** rnd.uniform(8, 17))
        (d / f"file{i:04d}.dat").write_bytes(rnd.randbytes(size // 2) + b"x" * (size - size // 2))
    (root / "etc/app/app.conf").write_text("listen = 0.0.0.0:8080\nworkers = 4\n")
    os.symlink("../../etc/app/app.conf", root / "usr/lib/app/app.conf")
    os.link(root / "etc/app/app.conf", root / "home/ops/app.conf.hardlink")
    with open(root / "var/lib/app/disk.img", "wb") as f:
        f.truncate(256 << 20)
        f.seek(64 << 20)
        f.write(rnd.randbytes(1 << 20))
    os.chmod(root / "home/ops", 0o700)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            st = p.lstat()
            h.update(os.fsencode(p.relative_to(root)))
            h.update(f"{st.st_mode:o} {st.st_uid} {st.st_gid} {st.st_mtime_ns}".encode())
            if p.is_symlink():
                h.update(os.fsencode(os.readlink(p)))
            elif p.is_file():
                h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


class _Api:
    def __init__(self, port: int, pki: Path):
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.port = port
        self.token = (pki / "api-token").read_text().strip()

    def __call__(self, method: str, path: str, body=None):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=10)
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None,
                         {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()


def run_demo(workdir: str, keep_running: bool = False) -> int:
    work = Path(workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    pki, src, data, logs = work / "pki", work / "guest-root", work / "receiver-data", work / "logs"
    logs.mkdir()
    print(f"== sample guest tree at {src}")
    make_sample_tree(src)
    init_pki(pki)
    issue_sentinel(pki, GUEST)
    rport, aport, gport = _free_port(), _free_port(), _free_port()
    py = sys.executable
    procs = []

    def start(name, module, *args):
        log = open(logs / f"{name}.log", "wb")
        procs.append(subprocess.Popen([py, "-m", module, *map(str, args)], stdout=log, stderr=subprocess.STDOUT))
        log.close()

    try:
        start("receiver", "osam.receiver.main", "--listen", f"127.0.0.1:{rport}", "--api", f"127.0.0.1:{aport}",
              "--pki", pki, "--data", data, "--replica-format", "tree")
        start("gateway", "osam.gateway.main", "--listen", f"127.0.0.1:{gport}", "--receiver", f"127.0.0.1:{rport}",
              "--pki", pki)
        etc = work / "sentinel-etc"
        (etc / "etc").mkdir(parents=True)
        (etc / "etc" / "sync.params").write_text("max_retry_interval=8\n")
        (etc / "excluded_paths").write_text("/var/log\n")
        start("sentinel", "osam.sentinel.main", "--gateway", f"127.0.0.1:{gport}", "--pki", pki, "--name", GUEST,
              "--root", src, "--state", work / "sentinel-state", "--etc", etc)
        api = _Api(aport, pki)
        _wait(lambda: _try(lambda: api("GET", f"/v1/guests/{GUEST}")[0] == 200), 30, "the guest to register")
        print(f"== receiver, gateway and sentinel running (logs in {logs})")
        status, m = api("POST", "/v1/migrations", {"guest": GUEST, "switchover": "manual"})
        if status not in (200, 201):
            raise RuntimeError(f"cannot start the migration: {m}")
        m = _follow(api, "continuous_sync")
        print("== the guest keeps running: writing changes during continuous sync")
        (src / "etc/app/app.conf").write_text("listen = 0.0.0.0:8080\nworkers = 8\n")
        (src / "var/lib/app/data/new-records.db").write_bytes(os.urandom(300_000))
        (src / "var/log/app/app.log").write_text("excluded path: carried by the final sync only\n")
        time.sleep(1)
        api("POST", f"/v1/migrations/{GUEST}/switchover", {})
        print("== switchover requested: quiesce, final sync")
        m = _follow(api, "completed")
        replica = data / "replicas" / GUEST / "root"
        same = _tree_digest(src) == _tree_digest(replica)
        print(f"== migration {m['phase']}: {m['files_done']} entries, {m['bytes_done']} bytes")
        print(f"== replica {'identical to' if same else 'DIFFERENT from'} the source")
        print(f"replica: {replica}")
        return 0 if same else 1
    finally:
        if not keep_running:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def _try(fn):
    try:
        return fn()
    except (OSError, ssl.SSLError, http.client.HTTPException):
        return False


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _follow(api, phase: str) -> dict:
    last = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status, m = api("GET", f"/v1/migrations/{GUEST}")
        line = (f"   {m['phase']:<16} {m['bytes_done'] or 0:>12} / {m['bytes_total'] or 0} bytes"
                f"  lag {m['lag'] or 0:.3f}s")
        if line != last:
            print(line, flush=True)
            last = line
        if m["phase"] == "failed":
            raise RuntimeError(f"migration failed: {m['reason']}")
        if m["phase"] == phase:
            return m
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {phase}")
