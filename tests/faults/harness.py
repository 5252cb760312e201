"""A site with fault proxies on both links, and the comparisons every campaign ends with.

FaultSite is tests.e2e.site.Site with two FaultProxy instances: `sg` between the sentinels
and the gateway, `gr` between the gateway and the receiver. Data travels "up" through both.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import time
from pathlib import Path
from typing import Callable, List, Optional

from tests.e2e.site import Site, wait_for
from tests.faults.proxy import FaultProxy
from tests.util.trees import diff_trees, snapshot


class FaultSite(Site):
    def __init__(self, base: Path, seed: int):
        super().__init__(base)
        self.seed = seed
        self.sg = FaultProxy(self.gateway_port, seed=seed, name="sentinel->gateway").start()
        self.gr = FaultProxy(self.receiver_port, seed=seed + 1, name="gateway->receiver").start()
        self.gateway_via, self.receiver_via = self.sg.port, self.gr.port

    @property
    def proxies(self) -> List[FaultProxy]:
        return [self.sg, self.gr]

    def stop_all(self) -> None:
        try:
            super().stop_all()
        finally:
            for p in self.proxies:
                p.stop()

    def cuts(self) -> int:
        return self.sg.cuts + self.gr.cuts

    def wire_bytes_up(self) -> int:
        """Bytes the sentinels sent to the gateway (TLS records, compressed frames, all of it)."""
        return self.sg.bytes_up

    def phase(self, name: str) -> str:
        m = self.migration(name)
        if m["phase"] == "failed":
            raise AssertionError(f"migration {name} failed: {m['reason']}\n{self.dump_logs()}")
        return m["phase"]

    def connected(self, name: str) -> bool:
        try:
            g = self.guest(name)
        except OSError:
            return False
        return bool(g and g.get("connected"))

    def replica_image(self, name: str, disk: str) -> Path:
        return self.data / "replicas" / name / "disks" / f"{disk}.raw"


@dataclasses.dataclass
class Comparison:
    files: int
    bytes: int
    diffs: List[str]

    @property
    def ok(self) -> bool:
        return not self.diffs


def compare_tree(src: Path, replica: Path, ignore=()) -> Comparison:
    """diff_trees (content, holes, mode, owners, mtimes, xattrs, links, devices) plus the
    count of regular files and their bytes that were compared."""
    snap = snapshot(src)
    diffs = diff_trees(snap, replica, ignore=ignore)
    files = [e for e in snap.values() if e.sha256 is not None]    # regular files
    files_n, nbytes = len(files), sum(e.size for e in files)
    return Comparison(files_n, nbytes, diffs)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def compare_image(src: Path, replica: Path) -> Comparison:
    if not replica.exists():
        return Comparison(1, src.stat().st_size, [f"{replica} missing"])
    a, b = sha256(src), sha256(replica)
    diffs = [] if a == b and src.stat().st_size == replica.stat().st_size else [
        f"{replica.name}: sha256 {b[:16]} != source {a[:16]}"]
    return Comparison(1, src.stat().st_size, diffs)


def record_comparison(result, name: str, cmp_: "Comparison") -> None:
    """Add one replica's comparison to a campaign's row: what was verified, and what differed."""
    result.files_verified += cmp_.files
    result.bytes_verified += cmp_.bytes
    if not cmp_.ok:
        result.mismatches += len(cmp_.diffs)
        result.notes.append(f"{name}: " + "; ".join(cmp_.diffs[:5]))


def tree_matches(src: Path, replica: Path, ignore=()) -> bool:
    try:
        return not diff_trees(src, replica, ignore=ignore)
    except FileNotFoundError:
        return False


def image_matches(src: Path, replica: Path) -> bool:
    try:
        return replica.exists() and sha256(src) == sha256(replica)
    except FileNotFoundError:
        return False


def inject(n: int, active: Callable[[], bool], fault: Callable[[], int], settle: Callable[[], None],
           deadline: float = 120) -> int:
    """Up to n faults while active(); each fault() returns how many faults it made (0: none
    was possible, e.g. nothing open); settle() waits for recovery before the next."""
    made, end = 0, time.monotonic() + deadline
    while made < n and time.monotonic() < end and active():
        got = fault()
        made += got
        if got:
            settle()
        else:
            time.sleep(0.05)
    return made


def make_bulk(root: Path, rng: random.Random, total: int, files: int = 8) -> int:
    """Incompressible files under root (so wire bytes track data bytes); returns their bytes."""
    root.mkdir(parents=True, exist_ok=True)
    per = total // files
    for i in range(files):
        (root / f"bulk{i:02d}.bin").write_bytes(rng.randbytes(per))
    return per * files


def make_image(path: Path, rng: random.Random, size: int, fill: float = 0.5, chunk: int = 1 << 20) -> None:
    """A disk image of `size` bytes: `fill` of its 1 MiB chunks random data, the rest holes."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, chunk):
            if rng.random() < fill:
                f.seek(off)
                f.write(rng.randbytes(chunk))


def scribble(path: Path, rng: random.Random, writes: int, max_len: int = 64 << 10) -> int:
    """Random writes into an image in place (what a running guest does to its disk)."""
    size, written = path.stat().st_size, 0
    with open(path, "r+b") as f:
        for _ in range(writes):
            n = rng.randint(1, max_len)
            f.seek(rng.randrange(0, size - n))
            f.write(rng.randbytes(n))
            written += n
        f.flush()
        os.fsync(f.fileno())
    return written


def wait_until(pred, timeout: float, what: str, interval: float = 0.1):
    return wait_for(pred, timeout, what, interval)


def quiet(fn, default=None):
    try:
        return fn()
    except (OSError, AssertionError):
        return default


def first_line(s: Optional[str]) -> str:
    return (s or "").strip().splitlines()[0] if s and s.strip() else ""
