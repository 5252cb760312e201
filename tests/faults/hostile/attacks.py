"""Hostile data-channel scripts against the receiver's Applier and its replica stores, and the
fence around them: a canary file and directory outside the replica whose every byte, mode,
time and directory listing is recorded before and compared after.

Each script is a list of messages as a hostile guest would send them after SyncBegin; some
need the replica's absolute location (symlinks pointing at the canary), so scripts are built
from a Fence. Expected outcomes: "refused" (the Applier raises Refused: the connection ends
with an Error frame), "resend" (a Resend reply: the receiver asks for the file whole), or
"harmless" (accepted, and nothing outside the replica root changed).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from osam.protocol import (BlockDisk, BlockManifest, Checkpoint, Delete, Entry, FileData, FileEnd, FileHole,
                           HardLink, Rename, Resend, SyncBegin)
from osam.receiver.applier import Applier, Refused
from osam.receiver.blockstore import BlockStore
from osam.receiver.checkpoint import CheckpointJournal
from osam.receiver.store import ReplicaStore

CANARY = b"canary: must never change\n"


def entry(path: bytes, kind: str = "f", size: int = 5, target: bytes = b"", *, mode: int = 0o644,
          uid: Optional[int] = None, gid: Optional[int] = None, mtime_ns: int = 1_000_000_000,
          rdev: int = 0, xattrs=(), base: Tuple[int, int] = (-1, 0)) -> Entry:
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    return Entry(path, kind, mode, uid, gid, mtime_ns, size, rdev, target, list(xattrs), base[0], base[1])


def file(path: bytes, data: bytes = b"owned") -> List:
    return [entry(path, size=len(data)), FileData(0, data), FileEnd(True)]


class Fence:
    """tmp/outside/{canary.txt, canary-dir/inner.txt} around tmp/replica/ (root, staging)."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.outside = self.base / "outside"
        self.canary = self.outside / "canary.txt"
        self.canary_dir = self.outside / "canary-dir"
        self.replica_dir = self.base / "replica"
        self.canary_dir.mkdir(parents=True, exist_ok=True)
        self.canary.write_bytes(CANARY)
        (self.canary_dir / "inner.txt").write_bytes(CANARY)
        os.utime(self.canary, ns=(10**18, 10**18))
        self.before = self.snapshot()

    def snapshot(self) -> Dict[str, tuple]:
        """Everything under base except the replica directory: kind, mode, owner, size, mtime,
        content of files, link targets."""
        out = {}
        for top, dirs, files in os.walk(self.base):
            if Path(top) == self.base and "replica" in dirs:
                dirs.remove("replica")
            for name in dirs + files:
                p = os.path.join(top, name)
                st = os.lstat(p)
                content = None
                if stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        content = f.read()
                elif stat.S_ISLNK(st.st_mode):
                    content = os.readlink(p)
                out[os.path.relpath(p, self.base)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                                      st.st_mtime_ns, st.st_nlink, content)
        return out

    def touched(self) -> List[str]:
        """Paths outside the replica that appeared, vanished or changed."""
        after = self.snapshot()
        return sorted(k for k in set(self.before) | set(after) if self.before.get(k) != after.get(k))


# -- file-mode scripts -------------------------------------------------------------------

def file_scripts(f: Fence) -> Dict[str, Tuple[str, List]]:
    """name -> (expected outcome, messages)."""
    out_abs = os.fsencode(f.outside)
    canary_abs = os.fsencode(f.canary)
    rel_up = b"../../../outside"         # from replica/root/x: up to base, then outside
    to_outside = entry(b"lnk", "l", 0, out_abs, mode=0o777)
    to_canary = entry(b"lnk", "l", 0, canary_abs, mode=0o777)
    to_outside_rel = entry(b"rlnk", "l", 0, rel_up, mode=0o777)
    st = os.stat(f.canary)
    s: Dict[str, Tuple[str, List]] = {
        "dotdot": ("refused", file(b"../escape")),
        "inner-dotdot": ("refused", file(b"a/../../escape")),
        "deep-dotdot": ("refused", file(b"../../../../../../../../tmp/escape")),
        "dot": ("refused", file(b"./x")),
        "absolute": ("refused", file(canary_abs)),
        "absolute-dir": ("refused", [entry(out_abs + b"/newdir", "d", 0, mode=0o755)]),
        "nul": ("refused", file(b"nul\x00../../escape")),
        "empty-component": ("refused", file(b"a//b")),
        "trailing-slash": ("refused", file(b"a/")),
        "empty-path-file": ("refused", file(b"")),
        "overlong-name": ("refused", file(b"n" * 256)),
        "overlong-path": ("refused", file(b"/".join([b"d" * 200] * 25))),
        "symlink-dir-abs-then-write-through": ("refused", [to_outside] + file(b"lnk/owned")),
        "symlink-dir-rel-then-write-through": ("refused", [to_outside_rel] + file(b"rlnk/owned")),
        "symlink-dir-then-mkdir-through": ("refused", [to_outside, entry(b"lnk/newdir", "d", 0, mode=0o755)]),
        "symlink-dir-then-symlink-through": ("refused", [to_outside, entry(b"lnk/l2", "l", 0, b"x")]),
        "symlink-dir-then-fifo-through": ("refused", [to_outside, entry(b"lnk/fifo", "p", 0)]),
        "symlink-file-then-replace": ("harmless", [to_canary] + file(b"lnk")),
        "symlink-file-then-patch-through": ("resend", [to_canary, entry(b"lnk", size=30, base=(st.st_size, st.st_mtime_ns)),
                                                       FileData(0, b"x" * 30), FileEnd(True)]),
        "symlink-file-then-chmod-as-dir": ("harmless", [to_canary, entry(b"lnk", "d", 0, mode=0o777)]),
        "symlink-then-xattrs": ("harmless", [entry(b"lnk", "l", 0, canary_abs, xattrs=[(b"trusted.x", b"y")])]),
        "dir-replaced-by-symlink-between-messages": ("refused", [
            entry(b"d", "d", 0, mode=0o755), *file(b"d/first"),
            entry(b"d", "l", 0, out_abs), *file(b"d/second")]),
        "dir-replaced-by-symlink-then-rename-into": ("refused", [
            entry(b"d", "d", 0, mode=0o755), *file(b"inside"),
            entry(b"d", "l", 0, out_abs), Rename(b"inside", b"d/moved")]),
        "rename-out-dotdot": ("refused", file(b"inside") + [Rename(b"inside", b"../moved")]),
        "rename-out-absolute": ("refused", file(b"inside") + [Rename(b"inside", out_abs + b"/moved")]),
        "rename-in-from-outside-through-symlink": ("refused", [to_outside, Rename(b"lnk/canary.txt", b"stolen")]),
        "rename-dir-in-from-outside": ("refused", [to_outside, Rename(b"lnk/canary-dir", b"stolen")]),
        "rename-over-through-symlink": ("refused", [to_outside] + file(b"inside") + [Rename(b"inside", b"lnk/canary.txt")]),
        "hardlink-target-outside-dotdot": ("refused", [HardLink(b"h", b"../outside/canary.txt")]),
        "hardlink-target-absolute": ("refused", [HardLink(b"h", canary_abs)]),
        "hardlink-target-through-symlink": ("refused", [to_outside, HardLink(b"h", b"lnk/canary.txt")]),
        "hardlink-path-through-symlink": ("refused", [to_outside] + file(b"inside") + [HardLink(b"lnk/h", b"inside")]),
        "hardlink-of-symlink-to-outside": ("harmless", [to_canary, HardLink(b"h", b"lnk")]),
        "hardlink-then-write": ("harmless", [to_canary, HardLink(b"h", b"lnk")] + file(b"h", b"overwrite")),
        "delete-through-symlink": ("harmless", [to_outside, Delete(b"lnk/canary.txt"), Delete(b"lnk/canary-dir")]),
        "delete-symlink-to-dir": ("harmless", [to_outside, Delete(b"lnk")]),
        "delete-dotdot": ("refused", [Delete(b"../outside")]),
        "delete-absolute": ("refused", [Delete(out_abs)]),
        "delete-subtree-with-escaping-links": ("harmless", [
            entry(b"t", "d", 0, mode=0o755), entry(b"t/l1", "l", 0, out_abs), entry(b"t/l2", "l", 0, canary_abs),
            entry(b"t/l3", "l", 0, rel_up), Delete(b"t")]),
        "data-past-size": ("refused", [entry(b"x", size=4), FileData(2, b"abcdef"), FileEnd(True)]),
        "data-negative-offset": ("refused", [entry(b"x", size=4), FileData(-2, b"ab"), FileEnd(True)]),
        "hole-past-size": ("refused", [entry(b"x", size=4), FileHole(0, 1 << 40), FileEnd(True)]),
        "hole-negative": ("refused", [entry(b"x", size=4), FileHole(-4096, 4096), FileEnd(True)]),
        "data-outside-a-file": ("refused", [FileData(0, b"x")]),
        "size-huge": ("refused", file(b"x") [:0] + [entry(b"x", size=1 << 62)]),
        "size-negative": ("refused", [entry(b"x", size=-1)]),
        "mode-huge": ("refused", [entry(b"x", "d", 0, mode=1 << 40)]),
        "mode-negative": ("refused", [entry(b"x", "d", 0, mode=-1)]),
        "uid-huge": ("refused", [entry(b"x", "d", 0, uid=1 << 40)]),
        "uid-negative": ("refused", [entry(b"x", "d", 0, uid=-7)]),
        "gid-huge": ("refused", [entry(b"x", "d", 0, gid=1 << 63)]),
        "mtime-huge": ("refused", [entry(b"x", "d", 0, mtime_ns=1 << 80)]),
        "mtime-huge-file": ("refused", file(b"x")[:0] + [entry(b"x", size=1, mtime_ns=-(1 << 80)), FileData(0, b"a"),
                                                         FileEnd(True)]),
        "rdev-huge": ("refused", [entry(b"x", "c", 0, rdev=1 << 70)]),
        "unknown-kind": ("refused", [entry(b"x", "Z", 0)]),
        "xattr-name-nul": ("refused", [entry(b"x", "d", 0, xattrs=[(b"user.a\x00b", b"v")])]),
        "xattr-name-empty": ("refused", [entry(b"x", "d", 0, xattrs=[(b"", b"v")])]),
        "symlink-target-nul": ("refused", [entry(b"x", "l", 0, b"a\x00b")]),
        "file-stats-not-json": ("refused", file(b"x") + [Checkpoint(1, b"", {"rate": float("nan")})]),
        "root-entry-as-file": ("refused", [entry(b"", "f", 1)]),
    }
    return s


def run_script(applier: Applier, msgs: List, sync_id: int = 1) -> Tuple[str, str]:
    """(outcome, detail) of one script: the first Refused ends it, as it ends the connection."""
    outcome, detail = "harmless", ""
    try:
        applier.handle(SyncBegin(sync_id, "full"))
        for m in msgs:
            for reply in applier.handle(m):
                if callable(reply):
                    reply()
                elif isinstance(reply, Resend):
                    outcome, detail = "resend", reply.reason
    except Refused as exc:
        applier.abort_file()
        return "refused", str(exc)
    return outcome, detail


def file_applier(f: Fence) -> Tuple[Applier, ReplicaStore]:
    store = ReplicaStore(f.replica_dir)
    return Applier("hostile", store, CheckpointJournal(f.replica_dir / "checkpoint.json")), store


# -- block-mode scripts -------------------------------------------------------------------

BS = 64 << 10
DISK_SIZE = 4 * BS


def block_scripts(f: Fence) -> Dict[str, Tuple[str, List]]:
    canary_abs = os.fsdecode(f.canary)
    return {
        "disk-dotdot": ("refused", [BlockDisk("../outside/canary.txt", DISK_SIZE, BS)]),
        "disk-absolute": ("refused", [BlockDisk(canary_abs, DISK_SIZE, BS)]),
        "disk-nul": ("refused", [BlockDisk("d0\x00", DISK_SIZE, BS)]),
        "disk-unknown": ("refused", [BlockDisk("d1", DISK_SIZE, BS)]),
        "disk-size-lies": ("refused", [BlockDisk("d0", DISK_SIZE * 2, BS)]),
        "disk-block-size-odd": ("refused", [BlockDisk("d0", DISK_SIZE, 1000)]),
        "disk-block-size-huge": ("refused", [BlockDisk("d0", DISK_SIZE, 1 << 62)]),
        "write-past-end": ("refused", [BlockDisk("d0", DISK_SIZE, BS), FileData(DISK_SIZE - 2, b"abcd")]),
        "write-far-past-end": ("refused", [BlockDisk("d0", DISK_SIZE, BS), FileData(1 << 60, b"abcd")]),
        "write-negative": ("refused", [BlockDisk("d0", DISK_SIZE, BS), FileData(-4, b"abcd")]),
        "hole-past-end": ("refused", [BlockDisk("d0", DISK_SIZE, BS), FileHole(0, DISK_SIZE + 1)]),
        "hole-negative": ("refused", [BlockDisk("d0", DISK_SIZE, BS), FileHole(-BS, BS)]),
        "data-before-disk": ("refused", [FileData(0, b"abcd")]),
        "file-entry": ("refused", file(b"etc/passwd")),
        "manifest-dotdot": ("refused", [BlockManifest("../x", BS, 0, bytes(16))]),
        "manifest-past-end": ("refused", [BlockManifest("d0", BS, 1 << 40, bytes(16))]),
        "manifest-negative": ("refused", [BlockManifest("d0", BS, -1, bytes(16))]),
        "manifest-ragged": ("refused", [BlockManifest("d0", BS, 0, bytes(15))]),
        "in-bounds": ("harmless", [BlockDisk("d0", DISK_SIZE, BS), FileData(BS, b"x" * BS),
                                   FileHole(0, BS), FileEnd(True), Checkpoint(1, b"", {})]),
    }


def block_applier(f: Fence) -> Tuple[Applier, BlockStore, Path]:
    f.replica_dir.mkdir(parents=True, exist_ok=True)
    image = f.replica_dir / "d0.raw"
    if not image.exists():
        with open(image, "wb") as fh:
            fh.truncate(DISK_SIZE)
    store = BlockStore({"d0": str(image)})
    return Applier("hostile", store, CheckpointJournal(f.replica_dir / "checkpoint.json")), store, image


def run_all(base: Path, on_result: Callable[[str, str, str, str, List[str]], None]) -> None:
    """Every script on a fresh replica; on_result(mode, name, expected, outcome+detail, touched)."""
    import shutil
    for mode, scripts, make in (("file", file_scripts, file_applier), ("block", block_scripts, block_applier)):
        for name in list(scripts(Fence(base / f"probe-{mode}"))):
            case = base / f"{mode}-{name}"
            fence = Fence(case)
            expected, msgs = scripts(fence)[name]
            made = make(fence)
            applier, store = made[0], made[1]
            try:
                try:
                    outcome, detail = run_script(applier, msgs)
                except Exception as exc:  # noqa: BLE001 - a defect: not a clean refusal
                    outcome, detail = "crashed", f"{type(exc).__name__}: {exc}"
            finally:
                applier.abort_file()
                store.close()
            on_result(mode, name, expected, f"{outcome}: {detail}", fence.touched())
            shutil.rmtree(case, ignore_errors=True)
        shutil.rmtree(base / f"probe-{mode}", ignore_errors=True)
