#!/usr/bin/env python3
"""Reference measurements ("anchors") that vmware.osam's benchmarks are compared with.

Every figure is measured on this machine, at the moment, with the same tree, so a
benchmark prints ratios rather than absolute numbers:

- ``rsync_full`` / ``rsync_incremental``: ``rsync -aHAXS --numeric-ids --delete`` over
  ssh (cipher aes128-gcm@openssh.com) to ``root@127.0.0.1`` -- what a careful admin
  would use to move a guest's files, and the yardstick for full and continuous sync;
- ``lsyncd_lag``: lsyncd (inotify + rsync, ``delay = 0``) -- the yardstick for
  continuous-sync lag: one small change, and a burst of changes;
- ``read_tree``: a plain multi-threaded walk + read, the floor for any full scan;
- ``drop_caches``: for cold-cache runs; ``compare_trees``: correctness of a copy.

Functions return seconds (float) unless said otherwise. Root is needed for
``ensure_ssh_localhost`` (root login, ownership) and ``drop_caches``.

Command line (a quick manual check)::

    python3 bench/gen_tree.py /tmp/bt 2000
    python3 bench/anchors.py /tmp/bt            # prints one JSON object
"""
from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = [
    "SSH_CIPHER",
    "RSYNC_FLAGS",
    "ensure_ssh_localhost",
    "stop_ssh_localhost",
    "rsync_full",
    "rsync_incremental",
    "drop_caches",
    "lsyncd_lag",
    "compare_trees",
    "read_tree",
    "gen_tree",
    "mutate_tree",
]

BENCH_DIR = Path(__file__).resolve().parent
SSH_CIPHER = "aes128-gcm@openssh.com"
RSYNC_FLAGS = ["-aHAXS", "--numeric-ids", "--delete"]
SSHD = "/usr/sbin/sshd"
LSYNCD = "/usr/bin/lsyncd"


def _run(cmd, *, timeout=None, capture=True, check=True, **kw):
    """subprocess.run with captured text output and a readable error."""
    p = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        err = (p.stderr or "").strip()[-2000:] if capture else ""
        raise RuntimeError(f"{shlex.join(map(str, cmd))} exited {p.returncode}: {err}")
    return p


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PermissionError(f"{what} needs root")


# --------------------------------------------------------------------------- ssh
class _SSHLocalhost:
    """An sshd on 127.0.0.1:<free port> with throw-away keys in a temp dir."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="osam-anchor-ssh-"))
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.args: list[str] = []

    def start(self) -> None:
        d = self.dir
        for name in ("host_key", "client_key"):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"osam-anchor-{name}",
                  "-f", str(d / name)])
        shutil.copyfile(d / "client_key.pub", d / "authorized_keys")
        # sshd refuses to start without its privilege separation directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        last_err = ""
        for _attempt in range(5):
            self.port = _free_port()
            cfg = d / "sshd_config"
            cfg.write_text("\n".join([
                f"ListenAddress 127.0.0.1:{self.port}",
                f"HostKey {d / 'host_key'}",
                f"PidFile {d / 'sshd.pid'}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                # the keys live under /tmp (world-writable parent)
                "StrictModes no",
                "UseDNS no",
                "PrintMotd no",
                "MaxStartups 64",
                "LogLevel ERROR",
                "Subsystem sftp internal-sftp",
                "",
            ]))
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=open(d / "sshd.log", "wb"))
            host_pub = (d / "host_key.pub").read_text().split()
            (d / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
            self.args = [
                "ssh", "-F", "/dev/null", "-p", str(self.port), "-i", str(d / "client_key"),
                "-o", f"UserKnownHostsFile={d / 'known_hosts'}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes",
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "Compression=no", "-o", "LogLevel=ERROR",
                "-c", SSH_CIPHER,
            ]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                p = _run(self.args + ["root@127.0.0.1", "true"], check=False, timeout=10)
                if p.returncode == 0:
                    return
                last_err = p.stderr.strip()
                time.sleep(0.05)
            last_err = (d / "sshd.log").read_text(errors="replace").strip() or last_err
            self.stop_proc()
        raise RuntimeError(f"sshd on 127.0.0.1 did not come up: {last_err}")

    def stop_proc(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self.stop_proc()
        shutil.rmtree(self.dir, ignore_errors=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_ssh: _SSHLocalhost | None = None


def ensure_ssh_localhost() -> list[str]:
    """Start (once per process) an sshd on 127.0.0.1 and return the ssh command args.

    The args include ``-p PORT -i KEY -o UserKnownHostsFile=... -F /dev/null -c
    aes128-gcm@openssh.com`` but no destination: append ``root@127.0.0.1 CMD``.
    Nothing outside a temp dir is touched (besides creating /run/sshd); the daemon
    and the temp dir go away at interpreter exit or on ``stop_ssh_localhost()``.
    """
    global _ssh
    if _ssh is not None and _ssh.alive():
        return list(_ssh.args)
    _need_root("ensure_ssh_localhost (root login over ssh)")
    if _ssh is not None:
        _ssh.stop()
    _ssh = _SSHLocalhost()
    try:
        _ssh.start()
    except BaseException:
        _ssh.stop()
        _ssh = None
        raise
    return list(_ssh.args)


def stop_ssh_localhost() -> None:
    global _ssh
    if _ssh is not None:
        _ssh.stop()
        _ssh = None


atexit.register(stop_ssh_localhost)


# --------------------------------------------------------------------------- rsync
def _rsync_over_ssh(src, dst, *, timeout: float | None) -> float:
    ssh = ensure_ssh_localhost()
    os.makedirs(dst, exist_ok=True)
    cmd = ["rsync", *RSYNC_FLAGS, "-e", shlex.join(ssh),
           f"{os.fspath(src).rstrip('/')}/", f"root@127.0.0.1:{os.fspath(dst).rstrip('/')}/"]
    t0 = time.perf_counter()
    _run(cmd, timeout=timeout)
    return time.perf_counter() - t0


def rsync_full(src, dst, *, fresh: bool = True, timeout: float | None = 3600) -> float:
    """Seconds for rsync -aHAXS --numeric-ids --delete over ssh of src/ into dst/.

    With ``fresh`` (default) dst is emptied first (not timed), so this is a full copy.
    """
    if fresh and os.path.lexists(dst):
        if os.path.realpath(dst) in ("/", os.path.realpath(src)):
            raise ValueError(f"refusing to empty {dst!r}")
        shutil.rmtree(dst)
    return _rsync_over_ssh(src, dst, timeout=timeout)


def rsync_incremental(src, dst, *, timeout: float | None = 3600) -> float:
    """Seconds for the same rsync into an existing copy (after e.g. ``mutate_tree``)."""
    return _rsync_over_ssh(src, dst, timeout=timeout)


def compare_trees(a, b, *, checksum: bool = False) -> list[str]:
    """Differences between trees a and b as rsync itemizes them; [] means identical.

    Compares what ``rsync -aHAXS --numeric-ids`` preserves (type, size, mtime,
    mode, owner, group, ACLs, xattrs, hard links, symlink targets) plus files
    only in b (``--delete``). ``checksum=True`` also compares contents.
    """
    cmd = ["rsync", "-naHAXS", "--numeric-ids", "--delete", "--itemize-changes"]
    if checksum:
        cmd.append("--checksum")
    p = _run(cmd + [f"{os.fspath(a).rstrip('/')}/", f"{os.fspath(b).rstrip('/')}/"], timeout=3600)
    # The top directory's own line ("./") differs only if its mtime does: keep it anyway.
    return [line for line in p.stdout.splitlines() if line.strip()]


# --------------------------------------------------------------------------- caches, reads
def drop_caches() -> float:
    """sync, then drop page cache, dentries and inodes. Best effort: warns if not allowed."""
    t0 = time.perf_counter()
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        print(f"anchors: drop_caches not possible ({e}); cold figures are warm", file=sys.stderr)
    return time.perf_counter() - t0


def read_tree(src, *, threads: int = 4, block: int = 1 << 20) -> float:
    """Seconds to walk src and read every regular file once (no hashing, no writing).

    Hard-linked files are read once; sparse files read through their holes like rsync -S.
    """
    files: list[str] = []
    seen: set[tuple[int, int]] = set()
    t0 = time.perf_counter()
    for dp, _dn, fn in os.walk(src):
        for name in fn:
            p = os.path.join(dp, name)
            st = os.lstat(p)
            if (st.st_mode & 0o170000) != 0o100000:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            files.append(p)

    def read_one(path: str) -> int:
        n = 0
        buf = bytearray(block)
        with open(path, "rb", buffering=0) as f:
            while True:
                k = f.readinto(buf)
                if not k:
                    return n
                n += k

    with ThreadPoolExecutor(threads) as ex:
        for _ in ex.map(read_one, files, chunksize=64):
            pass
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- lsyncd
_LSYNCD_CONFIG = """\
settings {{
    logfile = {log},
    statusFile = {status},
    statusInterval = 60,
    nodaemon = true,
}}
sync {{
    default.rsync,
    source = {src},
    target = {dst},
    delay = 0,
    rsync = {{
        archive = true,
        hard_links = true,
        acls = true,
        xattrs = true,
        sparse = true,
        _extra = {{ "--numeric-ids" }},
    }},
}}
"""


def _lua_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid Lua string literal here


def _wait_same(src_path: str, dst_path: str, want: bytes, deadline: float, poll: float) -> bool:
    while True:
        try:
            with open(dst_path, "rb") as f:
                if f.read() == want:
                    return True
        except FileNotFoundError:
            pass
        if time.perf_counter() > deadline:
            return False
        time.sleep(poll)


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))  # nearest-rank
    return s[k]


def lsyncd_lag(src, dst, *, n_single: int = 100, burst: int = 500, poll: float = 0.001,
               change_timeout: float = 30.0, burst_timeout: float = 300.0,
               startup_timeout: float = 1800.0) -> dict:
    """Run lsyncd (default.rsync, ``delay = 0``) from src to the local dir dst and measure:

    - ``startup_s``: its initial full sync (until lsyncd reports it finished);
    - ``single_ms_median`` / ``single_ms_p95`` / ``single_ms_max``: for ``n_single``
      small files written one after another, time from the write until the file is
      on dst with the same bytes (polled every ``poll`` s);
    - ``burst_s``: time from the first of ``burst`` new small files until all of
      them are on dst; ``burst_identical``: dst matches src afterwards (rsync check).

    Changes go into ``src/.osam-lag/``, removed at the end (src is otherwise untouched
    but for its top directory's mtime). lsyncd is stopped before returning.
    """
    src = os.path.realpath(src)
    dst = os.path.realpath(dst)
    if not shutil.which(LSYNCD):
        raise FileNotFoundError(f"{LSYNCD} not found (Debian package lsyncd)")
    os.makedirs(dst, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="osam-anchor-lsyncd-"))
    lag_rel = ".osam-lag"
    lag_src = os.path.join(src, lag_rel)
    lag_dst = os.path.join(dst, lag_rel)
    shutil.rmtree(lag_src, ignore_errors=True)
    cfg = work / "lsyncd.lua"
    cfg.write_text(_LSYNCD_CONFIG.format(
        log=_lua_str(str(work / "lsyncd.log")), status=_lua_str(str(work / "lsyncd.status")),
        src=_lua_str(src + "/"), dst=_lua_str(dst + "/")))
    # Own process group (so _stop reaches the rsyncs it runs), and it gets
    # SIGTERM if this process dies without reaching the finally below.
    proc = subprocess.Popen([LSYNCD, str(cfg)], stdin=subprocess.DEVNULL,
                            stdout=open(work / "stdout.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent)
    result: dict = {"n_single": n_single, "burst_changes": burst, "poll_ms": poll * 1000}
    try:
        # Startup: lsyncd sets its watches, runs one full rsync and logs
        # "Startup of SRC -> DST finished.". Then a marker file must come through.
        t0 = time.perf_counter()
        deadline = t0 + startup_timeout
        log = work / "lsyncd.log"
        while True:
            if proc.poll() is not None:
                raise RuntimeError("lsyncd exited: " + _tail(log, work / "stdout.log"))
            if log.exists() and "Startup of " in log.read_text(errors="replace"):
                break
            if time.perf_counter() > deadline:
                raise TimeoutError("lsyncd initial sync did not finish in time")
            time.sleep(0.01)
        result["startup_s"] = time.perf_counter() - t0
        if "finished." not in log.read_text(errors="replace"):
            raise RuntimeError("lsyncd startup sync failed: " + _tail(log))
        os.makedirs(lag_src)
        marker = os.path.join(lag_src, "ready")
        with open(marker, "wb") as f:
            f.write(b"ready\n")
        if not _wait_same(marker, os.path.join(lag_dst, "ready"), b"ready\n",
                          time.perf_counter() + change_timeout, poll):
            raise TimeoutError("lsyncd did not pick up the first change: " + _tail(log))

        # Single small changes, one at a time.
        lags = []
        payload_rnd = os.urandom(64)
        for i in range(n_single):
            name = f"single-{i:05d}.txt"
            data = b"%d " % i + payload_rnd
            t0 = time.perf_counter()
            with open(os.path.join(lag_src, name), "wb") as f:
                f.write(data)
            if not _wait_same(os.path.join(lag_src, name), os.path.join(lag_dst, name), data,
                              t0 + change_timeout, poll):
                raise TimeoutError(f"lsyncd did not copy {name} within {change_timeout} s")
            lags.append((time.perf_counter() - t0) * 1000)
        if lags:
            result["single_ms_median"] = statistics.median(lags)
            result["single_ms_p95"] = _percentile(lags, 0.95)
            result["single_ms_max"] = max(lags)

        # A burst of new small files, spread over a few directories.
        names = []
        for j in range(8):
            os.makedirs(os.path.join(lag_src, f"burst{j}"), exist_ok=True)
        t0 = time.perf_counter()
        for i in range(burst):
            rel = os.path.join(f"burst{i % 8}", f"b-{i:05d}.dat")
            with open(os.path.join(lag_src, rel), "wb") as f:
                f.write(b"%d " % i + payload_rnd * 8)
            names.append(rel)
        t_written = time.perf_counter() - t0
        pending = names
        deadline = t0 + burst_timeout
        while pending:
            pending = [n for n in pending if not _same_file(os.path.join(lag_src, n),
                                                            os.path.join(lag_dst, n))]
            if not pending:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"lsyncd left {len(pending)} of {burst} burst files behind")
            time.sleep(poll)
        result["burst_s"] = time.perf_counter() - t0
        result["burst_write_s"] = t_written
        result["burst_identical"] = not compare_trees(src, dst)
    finally:
        _stop(proc)
        shutil.rmtree(lag_src, ignore_errors=True)
        shutil.rmtree(lag_dst, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return result


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent exits (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _same_file(a: str, b: str) -> bool:
    try:
        with open(b, "rb") as fb:
            got = fb.read()
    except FileNotFoundError:
        return False
    with open(a, "rb") as fa:
        return fa.read() == got


def _tail(*paths: Path, n: int = 20) -> str:
    out = []
    for p in paths:
        try:
            out += p.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            pass
    return "\n".join(out)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # lsyncd and any rsync it runs
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --------------------------------------------------------------------------- corpus
def gen_tree(dest, nfiles: int = 50000, seed: int = 1) -> float:
    """Build the benchmark tree with bench/gen_tree.py; returns seconds."""
    t0 = time.perf_counter()
    _run([sys.executable, str(BENCH_DIR / "gen_tree.py"), os.fspath(dest), str(nfiles), str(seed)],
         capture=False)
    return time.perf_counter() - t0


def mutate_tree(tree, seed: int, fraction: float = 0.01) -> float:
    """Apply bench/mutate_tree.py (a ~1% mixed change); returns seconds."""
    t0 = time.perf_counter()
    _run([sys.executable, str(BENCH_DIR / "mutate_tree.py"), os.fspath(tree), str(seed),
          str(fraction)], capture=False)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- manual run
def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Measure the rsync / lsyncd / read anchors on TREE.")
    ap.add_argument("tree", help="source tree (e.g. made by bench/gen_tree.py)")
    ap.add_argument("--work", help="scratch dir for the copies (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=7, help="mutate_tree seed (the tree IS changed)")
    ap.add_argument("--single", type=int, default=100)
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--no-lsyncd", action="store_true")
    a = ap.parse_args(argv)
    work = Path(a.work or tempfile.mkdtemp(prefix="osam-anchors-"))
    res: dict = {"tree": a.tree}
    try:
        drop_caches()
        res["read_cold_s"] = read_tree(a.tree)
        res["read_warm_s"] = read_tree(a.tree)
        drop_caches()
        res["rsync_full_cold_s"] = rsync_full(a.tree, work / "rsync")
        res["rsync_full_identical"] = not compare_trees(a.tree, work / "rsync")
        res["rsync_noop_s"] = rsync_incremental(a.tree, work / "rsync")
        mutate_tree(a.tree, a.seed)
        res["rsync_incremental_warm_s"] = rsync_incremental(a.tree, work / "rsync")
        mutate_tree(a.tree, a.seed + 1)
        drop_caches()
        res["rsync_incremental_cold_s"] = rsync_incremental(a.tree, work / "rsync")
        res["rsync_incremental_identical"] = not compare_trees(a.tree, work / "rsync")
        if not a.no_lsyncd:
            res["lsyncd"] = lsyncd_lag(a.tree, work / "lsyncd", n_single=a.single, burst=a.burst)
    finally:
        stop_ssh_localhost()
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
