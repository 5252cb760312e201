"""Build, mutate and compare file trees, to prove a replica identical to its source.

* :func:`make_rich_tree` builds a tree holding every file kind and attribute that
  replication must preserve; :func:`mutate_rich_tree` applies every change kind the
  continuous-sync tests need to the same tree.
* :func:`snapshot` records a tree; :func:`diff_trees` compares two trees (or
  snapshots) and returns readable differences, an empty list meaning identical.
* :func:`clone_tree` makes a reference copy that keeps everything the comparer checks;
  :func:`remove_tree` deletes a tree even where directories are read-only.

Paths are handled as bytes throughout so names that are not valid UTF-8 survive;
relative paths use ``b"/"`` separators and never start with it. Messages show paths
with :func:`os.fsdecode`.
"""
from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

KiB = 1024
MiB = 1024 * KiB

# Entry kinds, as `find -printf %y` spells them (same letters as osam.common.fsentry).
REGULAR, DIRECTORY, SYMLINK, FIFO, CHARDEV, BLOCKDEV, SOCKET = "f", "d", "l", "p", "c", "b", "s"
KIND_NAMES = {
    REGULAR: "regular file",
    DIRECTORY: "directory",
    SYMLINK: "symlink",
    FIFO: "fifo",
    CHARDEV: "char device",
    BLOCKDEV: "block device",
    SOCKET: "socket",
}

# Numeric owners used by the rich tree (none of them needs to exist in /etc/passwd).
UID_A, GID_A = 1234, 2345
NOBODY = 65534

# Geometry of the sparse file: 64 MiB apparent size, three data extents, ends in a hole.
SPARSE_SIZE = 64 * MiB
SPARSE_EXTENTS = ((1 * MiB, 256 * KiB), (20 * MiB, 1 * MiB), (48 * MiB, 128 * KiB))

# Directory that the exclusion tests exclude, and look-alikes that must NOT be excluded.
EXCLUDED_DIR = b"excluded"
EXCLUSION_LOOKALIKES = (b"excluded-not/kept.txt", b"excluded.txt")

# Relative paths of the notable entries, by role. mutate_rich_tree relies on them.
P = {
    "empty": b"files/empty",
    "small": b"files/small.txt",
    "big": b"files/big.bin",
    "sparse": b"sparse/holes.img",
    "deep": b"dirs/a/b/c/d/deep.txt",
    "empty_dir": b"dirs/empty",
    "to_rename": b"files/rename-me.txt",
    "to_move": b"files/move-me.txt",
    "to_delete": b"files/delete-me.txt",
    "dir_to_delete": b"dirs/delete-me",
    "dir_to_rename": b"dirs/a",
    "file_to_dir": b"files/becomes-dir",
    "dir_to_file": b"dirs/becomes-file",
    "single_to_link": b"files/single.txt",
    "touch_only": b"files/touch-only.txt",
    "trunc_shrink": b"trunc/shrink.bin",
    "trunc_grow": b"trunc/grow.bin",
    "link_rel": b"links/rel",
    "link_abs": b"links/abs",
    "link_dangling": b"links/dangling",
    "link_dir": b"links/todir",
    "link_binary": b"links/binary-target",
    "hl1": b"hl/a/first",
    "hl2": b"hl/a/second",
    "hl3": b"hl/b/third",
    "hl_dir": b"hl/b",
    "fifo": b"special/fifo",
    "chardev": b"special/char-1-3",
    "blockdev": b"special/block-7-0",
    "own_a": b"owners/u1234-g2345",
    "own_nobody": b"owners/nobody",
    "own_dir": b"owners/dir-1234",
    "own_link": b"owners/link-1234",
    "setuid": b"modes/setuid",
    "setgid": b"modes/setgid",
    "setgid_dir": b"modes/setgid-dir",
    "sticky_dir": b"modes/sticky-dir",
    "readonly": b"modes/read-only",
    "no_perms": b"modes/no-perms",
    "ro_dir": b"modes/ro-dir",
    "xattr_file": b"xattr/file",
    "xattr_dir": b"xattr/dir",
    "security_xattr": b"xattr/security",
    "trusted_xattr": b"xattr/trusted",
    "xattr_link": b"xattr/link",
    "acl_file": b"acl/file",
    "acl_dir": b"acl/dir",
    "acl_inherited": b"acl/dir/inherited.txt",
    "acl_strip": b"acl/strip-me",
    "name_latin1": b"names/caf\xe9",
    "name_ff_fe": b"names/\xff\xfe",
    "name_bad_dir": b"names/d\xe9j\xe0",
    "name_space": b"names/with space",
    "name_newline": b"names/new\nline",
    "name_dash": b"names/-rf",
    "name_ddash": b"names/--help",
    "name_long": b"names/" + b"L" * 255,
    "time_future": b"times/year-2100",
    "time_pre_epoch": b"times/pre-epoch",
}


# --------------------------------------------------------------------------- paths

def _b(path: PathArg) -> bytes:
    return os.fsencode(path)


def _j(root: bytes, rel: bytes) -> bytes:
    return os.path.join(root, rel) if rel else root


def _show(rel: bytes) -> str:
    return os.fsdecode(rel) if rel else "."


# ------------------------------------------------------------------ building blocks

def _write(path: bytes, data: bytes = b"") -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _pattern(size: int, unit: bytes = b"OSAM repetitive block 0123456789abcdef\n") -> bytes:
    return (unit * (size // len(unit) + 1))[:size]


def _nonzero_random(rng: random.Random, size: int) -> bytes:
    """Random bytes with no all-zero 512-byte run, so sparse-aware copiers keep them as data."""
    data = bytearray(rng.randbytes(size))
    data[::512] = b"\x5a" * len(data[::512])
    return bytes(data)


def _mtime_ns(rng: random.Random, base_s: int = 1_600_000_000) -> int:
    """A timestamp whose nanosecond part is not a multiple of 1000 (catches us rounding)."""
    ns = rng.randrange(1, 10**9)
    if ns % 1000 == 0:
        ns += 7
    return (base_s + rng.randrange(0, 100_000_000)) * 10**9 + ns  # always in the past


def _setfacl(path: bytes, *args: str) -> None:
    subprocess.run(["setfacl", *args, "--", path], check=True, capture_output=True)


def _have_setfacl() -> bool:
    return shutil.which("setfacl") is not None


def data_ranges(fd_or_path: Union[int, PathArg]) -> List[Tuple[int, int]]:
    """The data ranges ``[(start, end), ...]`` of a regular file, from SEEK_DATA/SEEK_HOLE.

    File systems without hole reporting give one range for the whole file.
    """
    if isinstance(fd_or_path, int):
        return _data_ranges_fd(fd_or_path)
    fd = os.open(_b(fd_or_path), os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return _data_ranges_fd(fd)
    finally:
        os.close(fd)


def _data_ranges_fd(fd: int) -> List[Tuple[int, int]]:
    size = os.fstat(fd).st_size
    ranges: List[Tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole from pos to EOF
                break
            if e.errno == errno.EINVAL:  # no SEEK_DATA support: all data
                return [(0, size)] if size else []
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        ranges.append((start, end))
        pos = end
    return ranges


# ------------------------------------------------------------------- make_rich_tree

class _Builder:
    def __init__(self, root: bytes, seed: int):
        self.root = root
        self.rng = random.Random(seed)
        self.skipped: List[str] = []
        self.mtimes: Dict[bytes, int] = {}       # non-directories: rel -> mtime_ns
        self.dirs: List[bytes] = []              # every directory made, root excluded

    def p(self, rel: bytes) -> bytes:
        return _j(self.root, rel)

    def mkdir(self, rel: bytes, mode: int = 0o755) -> None:
        parts = rel.split(b"/")
        for i in range(1, len(parts) + 1):
            sub = b"/".join(parts[:i])
            if not os.path.isdir(self.p(sub)):
                os.mkdir(self.p(sub))
                os.chmod(self.p(sub), 0o755)
                self.dirs.append(sub)
        os.chmod(self.p(rel), mode)

    def parent(self, rel: bytes) -> None:
        d = os.path.dirname(rel)
        if d and not os.path.isdir(self.p(d)):
            self.mkdir(d)

    def file(self, rel: bytes, data: bytes = b"", mode: int = 0o644) -> bytes:
        self.parent(rel)
        _write(self.p(rel), data)
        os.chmod(self.p(rel), mode)
        self.mtimes[rel] = _mtime_ns(self.rng)
        return rel

    def symlink(self, rel: bytes, target: bytes) -> bytes:
        self.parent(rel)
        os.symlink(target, self.p(rel))
        self.mtimes[rel] = _mtime_ns(self.rng)
        return rel

    def chown(self, rel: bytes, uid: int, gid: int, what: str) -> bool:
        try:
            os.chown(self.p(rel), uid, gid, follow_symlinks=False)
            return True
        except OSError as e:
            self.skipped.append(f"{what}: chown {uid}:{gid} refused ({e.strerror})")
            return False

    def xattr(self, rel: bytes, name: str, value: bytes, what: str, quiet: bool = False) -> bool:
        try:
            os.setxattr(self.p(rel), name, value, follow_symlinks=False)
            return True
        except OSError as e:
            if not quiet:
                self.skipped.append(f"{what}: setxattr {name} refused ({e.strerror})")
            return False

    def acl(self, rel: bytes, *args: str) -> bool:
        if not _have_setfacl():
            self.skipped.append(f"ACL on {_show(rel)}: setfacl not installed")
            return False
        try:
            _setfacl(self.p(rel), *args)
            return True
        except subprocess.CalledProcessError as e:
            self.skipped.append(f"ACL on {_show(rel)}: setfacl {' '.join(args)} failed: "
                                f"{e.stderr.decode(errors='replace').strip()}")
            return False

    def set_times(self, set_root: bool = False) -> None:
        for rel, ns in self.mtimes.items():
            if os.path.lexists(self.p(rel)):
                os.utime(self.p(rel), ns=(ns, ns), follow_symlinks=False)
        # Directories last, deepest first: setting a child's time never touches the
        # parent's mtime, but creating entries does, so this must come after all creation.
        for rel in sorted(self.dirs, key=lambda r: (-r.count(b"/"), r)):
            ns = _mtime_ns(self.rng, base_s=1_500_000_000)
            os.utime(self.p(rel), ns=(ns, ns), follow_symlinks=False)
        if set_root:
            ns = _mtime_ns(self.rng, base_s=1_500_000_000)
            os.utime(self.root, ns=(ns, ns))


def make_rich_tree(root: PathArg, seed: int = 1) -> dict:
    """Build under ``root`` (created if missing, else it should be empty) a tree holding
    every file kind replication must preserve.

    Root-only parts (device nodes, foreign owners, trusted.* xattrs, security.* where the
    kernel refuses) are skipped without root; what was skipped is listed in the manifest.

    Returns a manifest::

        {"root": bytes, "seed": int,
         "paths": {role: relpath, ...},          # notable entries, see trees.P
         "counts": {kind letter: n, ...},        # f d l p c b
         "sparse": {"path", "size", "data"},     # data = [(start, end), ...] as made
         "hardlinks": [[relpath, ...]],          # groups of names sharing an inode
         "excluded": b"excluded", "exclusion_lookalikes": (relpath, ...),
         "skipped": [str, ...]}                  # what could not be made, and why
    """
    root_b = _b(root)
    os.makedirs(root_b, exist_ok=True)
    b = _Builder(root_b, seed)
    rng = b.rng
    root_user = os.geteuid() == 0

    # -- regular files ----------------------------------------------------------------
    b.file(P["empty"])
    b.file(P["small"], b"hello from the source tree\n" * 3)
    big = (_nonzero_random(rng, 1 * MiB) + _pattern(1 * MiB)
           + _nonzero_random(rng, 1 * MiB + 12345))
    b.file(P["big"], big)
    b.file(P["to_rename"], b"rename me\n")
    b.file(P["to_move"], b"move me to another directory\n")
    b.file(P["to_delete"], b"delete me\n")
    b.file(P["single_to_link"], b"one name now, two after mutation\n")
    b.file(P["touch_only"], b"only the mtime changes\n")
    b.file(P["file_to_dir"], b"becomes a directory\n")
    b.file(P["trunc_shrink"], _nonzero_random(rng, 1 * MiB))
    b.file(P["trunc_grow"], _nonzero_random(rng, 64 * KiB))

    # -- sparse file: 64 MiB apparent, 3 data extents, leading and trailing holes -----
    b.parent(P["sparse"])
    fd = os.open(b.p(P["sparse"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off, length in SPARSE_EXTENTS:
            _pwrite_all(fd, _nonzero_random(rng, length), off)
        os.ftruncate(fd, SPARSE_SIZE)
    finally:
        os.close(fd)
    b.mtimes[P["sparse"]] = _mtime_ns(rng)
    sparse_data = data_ranges(b.p(P["sparse"]))
    if len(sparse_data) != len(SPARSE_EXTENTS):
        b.skipped.append(f"sparse file: file system reports data ranges {sparse_data}, "
                         "holes are not kept here")

    # -- directories ----------------------------------------------------------------------
    b.file(P["deep"], _nonzero_random(rng, 10_000))
    b.file(b"dirs/a/file-in-a", b"in a\n")
    b.file(b"dirs/a/b/file-in-b", b"in b\n")
    b.mkdir(P["empty_dir"])
    b.file(P["dir_to_delete"] + b"/x/y/file", b"doomed\n")
    b.file(P["dir_to_delete"] + b"/top", b"doomed too\n")
    b.file(P["dir_to_file"] + b"/child", b"my directory becomes a file\n")

    # -- symlinks (never to be followed) -------------------------------------------------
    b.symlink(P["link_rel"], b"../files/small.txt")
    b.symlink(P["link_abs"], b"/etc/hostname")
    b.symlink(P["link_dangling"], b"does/not/exist")
    b.symlink(P["link_dir"], b"../dirs/a")
    b.symlink(P["link_binary"], b"../names/caf\xe9")

    # -- hard links: one inode, three names across two directories ------------------------
    b.file(P["hl1"], _nonzero_random(rng, 50 * KiB), mode=0o640)
    b.parent(P["hl3"])
    os.link(b.p(P["hl1"]), b.p(P["hl2"]))
    os.link(b.p(P["hl1"]), b.p(P["hl3"]))
    b.xattr(P["hl1"], "user.osam.hardlink", b"shared by three names", "hard link xattr")

    # -- fifo and device nodes ----------------------------------------------------------
    b.parent(P["fifo"])
    os.mkfifo(b.p(P["fifo"]), 0o640)
    b.mtimes[P["fifo"]] = _mtime_ns(rng)
    for role, kind, dev in (("chardev", stat.S_IFCHR, os.makedev(1, 3)),
                            ("blockdev", stat.S_IFBLK, os.makedev(7, 0))):
        try:
            os.mknod(b.p(P[role]), 0o600 | kind, dev)
            b.mtimes[P[role]] = _mtime_ns(rng)
        except OSError as e:
            b.skipped.append(f"{role} {_show(P[role])}: mknod refused ({e.strerror}); needs root")

    # -- owners (chown BEFORE chmod: chown clears setuid/setgid) --------------------------
    b.file(P["own_a"], b"owned by 1234:2345\n")
    b.file(P["own_nobody"], b"owned by nobody\n")
    b.mkdir(P["own_dir"], 0o750)
    b.file(P["own_dir"] + b"/inside", b"inside a foreign directory\n")
    b.symlink(P["own_link"], b"u1234-g2345")
    if root_user:
        b.chown(P["own_a"], UID_A, GID_A, "owner")
        b.chown(P["own_nobody"], NOBODY, NOBODY, "owner")
        b.chown(P["own_dir"], UID_A, GID_A, "directory owner")
        b.chown(P["own_dir"] + b"/inside", NOBODY, GID_A, "owner")
        b.chown(P["own_link"], UID_A, GID_A, "symlink owner")
        b.chown(P["hl1"], UID_A, GID_A, "hard link owner")
    else:
        b.skipped.append("foreign owners (1234:2345, 65534): chown needs root")

    # -- modes ----------------------------------------------------------------------------
    b.file(P["setuid"], b"#!/bin/sh\necho setuid\n")
    b.file(P["setgid"], b"#!/bin/sh\necho setgid\n")
    if root_user:
        b.chown(P["setuid"], UID_A, GID_A, "setuid owner")
        b.chown(P["setgid"], NOBODY, GID_A, "setgid owner")
    os.chmod(b.p(P["setuid"]), 0o4755)
    os.chmod(b.p(P["setgid"]), 0o2751)
    b.mkdir(P["setgid_dir"], 0o2775)
    b.mkdir(P["sticky_dir"], 0o1777)
    b.file(P["sticky_dir"] + b"/someones-file", b"sticky\n", mode=0o666)
    b.file(P["readonly"], b"read only\n", mode=0o444)
    b.file(P["no_perms"], b"no permissions at all\n", mode=0o000 if root_user else 0o400)
    b.file(P["ro_dir"] + b"/inside-ro-dir", b"in a read-only directory\n")
    os.chmod(b.p(P["ro_dir"]), 0o555)

    # -- xattrs -----------------------------------------------------------------------------
    b.file(P["xattr_file"], b"has xattrs\n")
    b.xattr(P["xattr_file"], "user.osam.binary", bytes(range(256)), "user xattr")
    b.xattr(P["xattr_file"], "user.osam.text", b"hello", "user xattr")
    b.xattr(P["xattr_file"], "user.osam.empty", b"", "user xattr")
    b.xattr(P["xattr_file"], "user.osam.large", _nonzero_random(rng, 2000), "user xattr")
    b.mkdir(P["xattr_dir"])
    b.xattr(P["xattr_dir"], "user.osam.dir", b"\x00\x01\x02directory\xff", "user xattr")
    b.file(P["security_xattr"], b"security.* xattr where the kernel allows\n")
    b.xattr(P["security_xattr"], "security.osamtest", b"\x00sec\xff", "security xattr", quiet=True)
    b.symlink(P["xattr_link"], b"file")
    b.xattr(P["xattr_link"], "security.osamtest", b"on a symlink", "security xattr", quiet=True)
    b.file(P["trusted_xattr"], b"trusted.* xattr, root only\n")
    if root_user:
        b.xattr(P["trusted_xattr"], "trusted.osamtest", b"\x01trusted\x02", "trusted xattr")
        b.xattr(P["xattr_link"], "trusted.osamtest", b"trusted on a symlink", "trusted xattr")
    else:
        b.skipped.append("trusted.* xattrs: need root")

    # -- POSIX ACLs (after chmod: setting an ACL rewrites the group bits as the mask) ------
    b.file(P["acl_file"], b"has an access ACL\n", mode=0o640)
    b.acl(P["acl_file"], "-m", f"u:{UID_A}:rw-,g:{GID_A}:r--,m::rw-")
    b.mkdir(P["acl_dir"], 0o750)
    b.acl(P["acl_dir"], "-m", f"u:{UID_A}:rwx,g:{GID_A}:r-x")
    b.acl(P["acl_dir"], "-d", "-m", f"u::rwx,g::r-x,o::---,u:{UID_A}:rwx,g:{GID_A}:r-x")
    b.file(P["acl_inherited"], b"inherits the default ACL\n", mode=0o640)
    b.mkdir(P["acl_dir"] + b"/subdir-inherits")
    b.file(P["acl_strip"], b"ACL removed by the mutation\n")
    b.acl(P["acl_strip"], "-m", f"u:{NOBODY}:r--")

    # -- awkward names ----------------------------------------------------------------------
    for role in ("name_latin1", "name_ff_fe", "name_space", "name_newline", "name_dash",
                 "name_ddash", "name_long"):
        b.file(P[role], b"name: " + P[role] + b"\n")
    b.file(P["name_bad_dir"] + b"/\xe9t\xe9 file", b"non-UTF-8 directory and file names\n")
    b.file(b"names/unicode-\xc3\xa9\xe6\x97\xa5\xe6\x9c\xac", b"valid UTF-8, not ASCII\n")
    b.file(b"names/tab\there", b"tab\n")
    b.file(b"names/back\\slash", b"backslash\n")
    b.file(b"names/ leading space", b"leading space\n")
    b.file(b"names/trailing space ", b"trailing space\n")

    # -- timestamps at the edges ---------------------------------------------------------
    b.file(P["time_future"], b"mtime in 2100\n")
    b.file(P["time_pre_epoch"], b"mtime before 1970\n")

    # -- exclusion --------------------------------------------------------------------------
    b.file(EXCLUDED_DIR + b"/not-replicated.txt", b"excluded\n")
    b.file(EXCLUDED_DIR + b"/sub/deeper.bin", _nonzero_random(rng, 4096))
    b.symlink(EXCLUDED_DIR + b"/link", b"not-replicated.txt")
    for rel in EXCLUSION_LOOKALIKES:
        b.file(rel, b"looks like the excluded directory but is replicated\n")

    # -- timestamps last (explicit edge values override the random ones) ----------------
    b.mtimes[P["time_future"]] = 4_102_444_800 * 10**9 + 123_456_789   # 2100-01-01
    b.mtimes[P["time_pre_epoch"]] = -1_234_567_891                      # 1969-12-31
    b.set_times()

    counts: Dict[str, int] = {}
    for entry in snapshot(root_b).values():
        counts[entry.kind] = counts.get(entry.kind, 0) + 1
    return {
        "root": root_b,
        "seed": seed,
        "paths": {k: v for k, v in P.items() if os.path.lexists(b.p(v))},
        "counts": counts,
        "sparse": {"path": P["sparse"], "size": SPARSE_SIZE, "data": sparse_data},
        "hardlinks": [[P["hl1"], P["hl2"], P["hl3"]]],
        "excluded": EXCLUDED_DIR,
        "exclusion_lookalikes": EXCLUSION_LOOKALIKES,
        "skipped": b.skipped,
    }


# ----------------------------------------------------------------- mutate_rich_tree

def mutate_rich_tree(root: PathArg, seed: int = 2) -> List[str]:
    """Apply to a tree made by :func:`make_rich_tree` every change kind continuous sync
    must carry over. Returns one description per change applied (changes that need root
    are left out without it). Modified entries get the current time as mtime, as a real
    workload would, except the touch-only change which sets an explicit ns mtime."""
    root_b = _b(root)
    rng = random.Random(seed)
    done: List[str] = []
    root_user = os.geteuid() == 0

    def p(rel: bytes) -> bytes:
        return _j(root_b, rel)

    missing = [os.fsdecode(v) for k, v in P.items()
               if k in ("big", "small", "sparse", "hl1", "dir_to_rename", "xattr_file")
               and not os.path.lexists(p(v))]
    if missing:
        raise FileNotFoundError(f"{os.fsdecode(root_b)} is not a tree made by make_rich_tree "
                                f"(missing {', '.join(missing)})")

    # content
    with open(p(P["small"]), "ab") as f:
        f.write(b"appended line\n")
    done.append(f"append 14 bytes to {_show(P['small'])}")
    with open(p(P["deep"]), "ab") as f:
        f.write(_nonzero_random(rng, 5000))
    done.append(f"append 5000 bytes to {_show(P['deep'])}")
    size = os.path.getsize(p(P["big"]))
    fd = os.open(p(P["big"]), os.O_WRONLY)
    try:
        _pwrite_all(fd, _nonzero_random(rng, 64 * KiB), size // 2 - 32 * KiB)
    finally:
        os.close(fd)
    done.append(f"rewrite 64 KiB in the middle of {_show(P['big'])} (size {size} kept)")

    # truncation, and new data in a hole
    os.truncate(p(P["trunc_shrink"]), 100_003)
    done.append(f"truncate {_show(P['trunc_shrink'])} 1 MiB -> 100003 bytes")
    os.truncate(p(P["trunc_grow"]), 8 * MiB + 7)
    done.append(f"truncate {_show(P['trunc_grow'])} 64 KiB -> 8 MiB + 7 (grows with a hole)")
    fd = os.open(p(P["sparse"]), os.O_WRONLY)
    try:
        _pwrite_all(fd, _nonzero_random(rng, 64 * KiB), 32 * MiB)
    finally:
        os.close(fd)
    done.append(f"write 64 KiB into a hole of {_show(P['sparse'])} at 32 MiB")

    # new entries
    os.makedirs(p(b"new/tree/x/y"))
    _write(p(b"new/fresh.txt"), b"a new file\n")
    _write(p(b"new/tree/x/y/leaf.bin"), _nonzero_random(rng, 200 * KiB))
    os.mkdir(p(b"new/empty-dir"))
    os.symlink(b"fresh.txt", p(b"new/link"))
    os.mkfifo(p(b"new/fifo"))
    _write(p(b"new/\xe9t\xe9"), b"new non-UTF-8 name\n")
    fd = os.open(p(b"new/sparse.img"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        _pwrite_all(fd, _nonzero_random(rng, 8 * KiB), 4 * MiB)
        os.ftruncate(fd, 16 * MiB)
    finally:
        os.close(fd)
    done.append("create new/ with files, nested directories, an empty directory, a symlink, "
                "a fifo, a non-UTF-8 name and a sparse file")

    # deletions
    os.unlink(p(P["to_delete"]))
    done.append(f"delete file {_show(P['to_delete'])}")
    os.unlink(p(P["link_dangling"]))
    done.append(f"delete symlink {_show(P['link_dangling'])}")
    shutil.rmtree(p(P["dir_to_delete"]))
    done.append(f"delete directory tree {_show(P['dir_to_delete'])}")
    os.unlink(p(P["name_ddash"]))
    done.append(f"delete {_show(P['name_ddash'])}")
    os.unlink(p(P["hl2"]))
    done.append(f"unlink hard link {_show(P['hl2'])} (group shrinks)")

    # renames
    os.rename(p(P["to_rename"]), p(b"files/renamed.txt"))
    done.append(f"rename {_show(P['to_rename'])} -> files/renamed.txt")
    os.rename(p(P["to_move"]), p(b"dirs/moved-here.txt"))
    done.append(f"move {_show(P['to_move'])} -> dirs/moved-here.txt")
    os.rename(p(P["name_latin1"]), p(P["name_latin1"] + b"-renamed"))
    done.append(f"rename {_show(P['name_latin1'])} -> {_show(P['name_latin1'] + b'-renamed')}")
    os.rename(p(P["dir_to_rename"]), p(b"dirs/a-renamed"))
    done.append(f"rename directory {_show(P['dir_to_rename'])} -> dirs/a-renamed (with contents)")
    os.rename(p(P["hl_dir"]), p(b"hl/b-renamed"))
    done.append(f"rename directory {_show(P['hl_dir'])} -> hl/b-renamed (holds a hard link)")

    # type changes
    os.unlink(p(P["file_to_dir"]))
    os.mkdir(p(P["file_to_dir"]))
    _write(p(P["file_to_dir"] + b"/child"), b"was a file\n")
    done.append(f"replace file {_show(P['file_to_dir'])} by a directory")
    shutil.rmtree(p(P["dir_to_file"]))
    _write(p(P["dir_to_file"]), b"was a directory\n")
    done.append(f"replace directory {_show(P['dir_to_file'])} by a file")
    os.unlink(p(P["link_abs"]))
    _write(p(P["link_abs"]), b"was a symlink\n")
    done.append(f"replace symlink {_show(P['link_abs'])} by a file")

    # modes and owners
    os.chmod(p(P["readonly"]), 0o640)
    done.append(f"chmod {_show(P['readonly'])} 0444 -> 0640")
    os.chmod(p(P["setuid"]), 0o755)
    done.append(f"chmod {_show(P['setuid'])} 4755 -> 0755 (drop setuid)")
    os.chmod(p(P["sticky_dir"]), 0o777)
    done.append(f"chmod {_show(P['sticky_dir'])} 1777 -> 0777 (drop sticky)")
    os.chmod(p(P["small"]), 0o2755 if root_user else 0o755)
    done.append(f"chmod {_show(P['small'])} -> {'2755' if root_user else '0755'}")
    if root_user:
        os.chown(p(P["own_a"]), NOBODY, NOBODY)
        done.append(f"chown {_show(P['own_a'])} 1234:2345 -> 65534:65534")
        os.chown(p(P["own_nobody"]), UID_A, -1)
        done.append(f"chown {_show(P['own_nobody'])} uid 65534 -> 1234")
        os.chown(p(P["own_link"]), -1, NOBODY, follow_symlinks=False)
        done.append(f"chgrp symlink {_show(P['own_link'])} 2345 -> 65534")
        os.chown(p(P["own_dir"]), 0, 0)
        done.append(f"chown directory {_show(P['own_dir'])} -> 0:0")

    # xattrs
    os.setxattr(p(P["small"]), "user.osam.added", b"\x00new\xff")
    done.append(f"set xattr user.osam.added on {_show(P['small'])}")
    os.setxattr(p(P["xattr_file"]), "user.osam.text", b"changed value")
    done.append(f"change xattr user.osam.text on {_show(P['xattr_file'])}")
    os.removexattr(p(P["xattr_file"]), "user.osam.binary")
    done.append(f"remove xattr user.osam.binary from {_show(P['xattr_file'])}")
    os.setxattr(p(P["xattr_dir"]), "user.osam.dir", b"changed on a directory")
    done.append(f"change xattr user.osam.dir on directory {_show(P['xattr_dir'])}")
    try:
        os.removexattr(p(P["security_xattr"]), "security.osamtest")
        done.append(f"remove xattr security.osamtest from {_show(P['security_xattr'])}")
    except OSError:
        pass

    # ACLs
    if _have_setfacl():
        _setfacl(p(P["acl_file"]), "-m", f"u:{UID_A}:r--,u:4321:rwx")
        _setfacl(p(P["acl_file"]), "-x", f"g:{GID_A}")
        done.append(f"ACL on {_show(P['acl_file'])}: u:{UID_A} rw- -> r--, add u:4321:rwx, "
                    f"remove g:{GID_A}")
        _setfacl(p(P["acl_dir"]), "-d", "-m", "u:4321:r-x")
        done.append(f"default ACL on {_show(P['acl_dir'])}: add u:4321:r-x")
        _setfacl(p(P["acl_strip"]), "-b")
        done.append(f"remove the ACL of {_show(P['acl_strip'])}")

    # hard links
    os.link(p(P["hl1"]), p(b"hl/fourth"))
    done.append(f"new hard link hl/fourth -> {_show(P['hl1'])}")
    os.link(p(P["single_to_link"]), p(b"dirs/second-name.txt"))
    done.append(f"new hard link dirs/second-name.txt -> {_show(P['single_to_link'])} "
                "(was a single name)")

    # an mtime-only change, with nanoseconds
    ns = 1_700_000_000 * 10**9 + 987_654_321
    os.utime(p(P["touch_only"]), ns=(ns, ns))
    done.append(f"set mtime of {_show(P['touch_only'])} to {ns} ns, nothing else")
    return done


# ---------------------------------------------------------------- snapshot & compare

class Entry(NamedTuple):
    """What the comparer records for one path. ``None`` marks fields that do not apply."""
    kind: str                                   # one of KIND_NAMES
    mode: int                                   # st_mode & 0o7777
    uid: int
    gid: int
    mtime_ns: Optional[int]                     # None only for the root entry
    size: Optional[int]                         # regular files only
    sha256: Optional[str]                       # regular files only, holes read as zeros
    data: Optional[Tuple[Tuple[int, int], ...]]  # regular files: SEEK_DATA/SEEK_HOLE ranges
    target: Optional[bytes]                     # symlinks only
    rdev: Optional[Tuple[int, int]]             # device nodes: (major, minor)
    xattrs: Tuple[Tuple[str, bytes], ...]       # all namespaces, sorted by name
    links: Tuple[bytes, ...]                    # relpaths in the tree sharing this inode
                                                # (itself included), () if it is the only one


Snapshot = Dict[bytes, Entry]

_KIND_OF = {
    stat.S_IFREG: REGULAR, stat.S_IFDIR: DIRECTORY, stat.S_IFLNK: SYMLINK,
    stat.S_IFIFO: FIFO, stat.S_IFCHR: CHARDEV, stat.S_IFBLK: BLOCKDEV, stat.S_IFSOCK: SOCKET,
}


def _hash_file(path: bytes) -> Tuple[str, Tuple[Tuple[int, int], ...]]:
    flags = os.O_RDONLY | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_NOATIME)
    except PermissionError:
        fd = os.open(path, flags)  # O_NOATIME needs ownership or CAP_FOWNER
    try:
        ranges = tuple(_data_ranges_fd(fd))
        os.lseek(fd, 0, os.SEEK_SET)  # SEEK_DATA/SEEK_HOLE moved the offset
        h = hashlib.sha256()
        while True:
            chunk = os.read(fd, 1 * MiB)
            if not chunk:
                break
            h.update(chunk)
        return h.hexdigest(), ranges
    finally:
        os.close(fd)


def _xattrs(path: bytes) -> Tuple[Tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ()
        raise
    out = []
    for name in sorted(names):
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as e:
            if e.errno == errno.ENODATA:  # removed meanwhile
                continue
            raise
    return tuple(out)


def snapshot(root: PathArg, *, include_root: bool = False) -> Snapshot:
    """Record every entry below ``root`` (never following symlinks) as
    ``{relpath (bytes): Entry}``. The root directory itself is left out, unless
    ``include_root`` is set: then it is recorded under ``b""`` without its mtime."""
    root_b = _b(root)
    st = os.lstat(root_b)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{os.fsdecode(root_b)} is not a directory")
    raw: Dict[bytes, Tuple[os.stat_result, Entry]] = {}

    def record(rel: bytes, path: bytes, st: os.stat_result) -> None:
        kind = _KIND_OF.get(stat.S_IFMT(st.st_mode), "?")
        size = sha = data = target = rdev = None
        if kind == REGULAR:
            size = st.st_size
            sha, data = _hash_file(path)
        elif kind == SYMLINK:
            target = os.readlink(path)
        elif kind in (CHARDEV, BLOCKDEV):
            rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        raw[rel] = (st, Entry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                              st.st_mtime_ns if rel else None, size, sha, data, target, rdev,
                              _xattrs(path), ()))

    if include_root:
        record(b"", root_b, st)
    stack = [b""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(_j(root_b, rel_dir)) as it:
            for de in it:
                rel = rel_dir + b"/" + de.name if rel_dir else de.name
                est = de.stat(follow_symlinks=False)
                record(rel, de.path, est)
                if stat.S_ISDIR(est.st_mode):
                    stack.append(rel)

    by_inode: Dict[Tuple[int, int], List[bytes]] = {}
    for rel, (est, entry) in raw.items():
        if entry.kind != DIRECTORY and est.st_nlink > 1:
            by_inode.setdefault((est.st_dev, est.st_ino), []).append(rel)
    snap: Snapshot = {rel: entry for rel, (_, entry) in sorted(raw.items())}
    for names in by_inode.values():
        if len(names) > 1:
            group = tuple(sorted(names))
            for rel in names:
                snap[rel] = snap[rel]._replace(links=group)
    return snap


# -------------------------------------------------------------------- formatting

_ACL_TAGS = {0x01: "user", 0x02: "user", 0x04: "group", 0x08: "group", 0x10: "mask", 0x20: "other"}


def format_acl(value: bytes) -> str:
    """Render a ``system.posix_acl_*`` xattr value like ``getfacl -cn`` (comma-separated)."""
    if len(value) < 4 or (len(value) - 4) % 8 or struct.unpack_from("<I", value)[0] != 2:
        return f"<undecodable ACL {value.hex()}>"
    parts = []
    for off in range(4, len(value), 8):
        tag, perm, ident = struct.unpack_from("<HHI", value, off)
        name = _ACL_TAGS.get(tag, f"tag{tag:#x}")
        qual = str(ident) if tag in (0x02, 0x08) else ""
        bits = "".join(c if perm & m else "-" for c, m in (("r", 4), ("w", 2), ("x", 1)))
        parts.append(f"{name}:{qual}:{bits}")
    return ",".join(parts)


def _fmt_xattr(name: str, value: bytes) -> str:
    if name.startswith("system.posix_acl_"):
        return format_acl(value)
    if len(value) > 48:
        return f"<{len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()[:12]}>"
    return repr(value)


def _fmt_ranges(ranges: Sequence[Tuple[int, int]]) -> str:
    return "[" + ", ".join(f"{s}-{e}" for s, e in ranges) + "]" if ranges else "[] (all hole)"


def _fmt_group(group: Iterable[bytes]) -> str:
    return "{" + ", ".join(_show(r) for r in sorted(group)) + "}"


# ---------------------------------------------------------------------- diff_trees

def _ignored(rel: bytes, prefixes: Sequence[bytes]) -> bool:
    return any(rel == pre or rel.startswith(pre + b"/") for pre in prefixes)


def _dense(e: Entry) -> bool:
    """A regular file without holes (its data ranges follow from its size alone)."""
    return e.data == (((0, e.size),) if e.size else ())


def _entry_diffs(rel: bytes, a: Entry, b: Entry) -> List[str]:
    name = _show(rel)
    if a.kind != b.kind:
        return [f"{name}: type {KIND_NAMES.get(a.kind, a.kind)} != {KIND_NAMES.get(b.kind, b.kind)}"]
    out = []
    if a.mode != b.mode:
        out.append(f"{name}: mode {a.mode:04o} != {b.mode:04o}")
    if a.uid != b.uid:
        out.append(f"{name}: uid {a.uid} != {b.uid}")
    if a.gid != b.gid:
        out.append(f"{name}: gid {a.gid} != {b.gid}")
    if a.mtime_ns != b.mtime_ns and a.mtime_ns is not None and b.mtime_ns is not None:
        out.append(f"{name}: mtime_ns {a.mtime_ns} != {b.mtime_ns} "
                   f"(off by {b.mtime_ns - a.mtime_ns} ns)")
    if a.size != b.size:
        out.append(f"{name}: size {a.size} != {b.size}")
    if a.sha256 != b.sha256:
        out.append(f"{name}: content differs (sha256 {a.sha256[:16]}... != {b.sha256[:16]}...)")
    if a.data != b.data and not (_dense(a) and _dense(b)):  # not just the size changing
        out.append(f"{name}: holes differ, data ranges {_fmt_ranges(a.data)} != "
                   f"{_fmt_ranges(b.data)}")
    if a.target != b.target:
        out.append(f"{name}: symlink target {os.fsdecode(a.target)!r} != {os.fsdecode(b.target)!r}")
    if a.rdev != b.rdev:
        out.append(f"{name}: device {a.rdev[0]}:{a.rdev[1]} != {b.rdev[0]}:{b.rdev[1]}")
    if a.xattrs != b.xattrs:
        xa, xb = dict(a.xattrs), dict(b.xattrs)
        for key in sorted(set(xa) | set(xb)):
            if key not in xb:
                out.append(f"{name}: xattr {key} only in a ({_fmt_xattr(key, xa[key])})")
            elif key not in xa:
                out.append(f"{name}: xattr {key} only in b ({_fmt_xattr(key, xb[key])})")
            elif xa[key] != xb[key]:
                out.append(f"{name}: xattr {key} differs ({_fmt_xattr(key, xa[key])} != "
                           f"{_fmt_xattr(key, xb[key])})")
    return out


def diff_trees(a: Union[PathArg, Snapshot], b: Union[PathArg, Snapshot], *,
               ignore: Iterable[PathArg] = ()) -> List[str]:
    """Compare two trees, each given as a path or as a :func:`snapshot`. Returns readable
    differences, an empty list meaning identical.

    Compared: type, content (sha256), size, hole layout (exact SEEK_DATA/SEEK_HOLE data
    ranges), mode incl. setuid/setgid/sticky, uid, gid, mtime_ns of every entry (not of the
    root), all xattrs (ACLs shown decoded), symlink targets, device numbers, and hard-link
    groups (sets of paths sharing an inode must be equal on both sides).

    ``ignore``: relative paths (str or bytes) whose entries, and everything below them,
    are left out; matching is by whole path components (``excluded`` ignores
    ``excluded/x`` but not ``excluded-not/x``).
    """
    sa = a if isinstance(a, dict) else snapshot(a)
    sb = b if isinstance(b, dict) else snapshot(b)
    prefixes = [_b(x).strip(b"/") for x in ignore]
    if prefixes:
        sa = {k: v for k, v in sa.items() if not _ignored(k, prefixes)}
        sb = {k: v for k, v in sb.items() if not _ignored(k, prefixes)}

    out: List[str] = []
    for rel in sorted(set(sa) | set(sb)):
        if rel not in sb:
            out.append(f"only in a: {_show(rel)} ({KIND_NAMES.get(sa[rel].kind, '?')})")
        elif rel not in sa:
            out.append(f"only in b: {_show(rel)} ({KIND_NAMES.get(sb[rel].kind, '?')})")
        else:
            out.extend(_entry_diffs(rel, sa[rel], sb[rel]))

    def groups(s: Snapshot) -> set:
        found = set()
        for e in s.values():
            g = frozenset(r for r in e.links if not _ignored(r, prefixes))
            if len(g) > 1:
                found.add(g)
        return found

    ga, gb = groups(sa), groups(sb)
    for g in sorted(ga - gb, key=sorted):
        out.append(f"hard links: group {_fmt_group(g)} only in a")
    for g in sorted(gb - ga, key=sorted):
        out.append(f"hard links: group {_fmt_group(g)} only in b")
    return out


# ------------------------------------------------------------------ copy & remove

def clone_tree(src: PathArg, dst: PathArg, *, tool: str = "cp") -> None:
    """Copy ``src``'s contents into ``dst`` (created if missing) keeping everything
    :func:`diff_trees` compares: ``cp -a --sparse=always`` or
    ``rsync -aHAXS --numeric-ids``. Owners, devices and trusted.* need root."""
    src_b, dst_b = _b(src), _b(dst)
    os.makedirs(dst_b, exist_ok=True)
    if tool == "cp":
        cmd = [b"cp", b"-a", b"--sparse=always", b"-T", b"--", src_b, dst_b]
    elif tool == "rsync":
        cmd = [b"rsync", b"-aHAXS", b"--numeric-ids", b"--", src_b.rstrip(b"/") + b"/",
               dst_b.rstrip(b"/") + b"/"]
    else:
        raise ValueError(f"unknown copy tool {tool!r}")
    subprocess.run(cmd, check=True, capture_output=True)


def remove_tree(root: PathArg) -> None:
    """Delete a tree, making read-only directories writable on the way."""
    root_b = _b(root)
    if not os.path.lexists(root_b):
        return

    def retry(func, path, _exc_info):
        parent = os.path.dirname(path)
        for d in (parent, path):
            try:
                if os.path.isdir(d) and not os.path.islink(d):
                    os.chmod(d, 0o700)
            except OSError:
                pass
        func(path)

    if sys.version_info >= (3, 12):
        shutil.rmtree(root_b, onexc=lambda f, p, e: retry(f, p, None))
    else:
        shutil.rmtree(root_b, onerror=retry)
