"""Helpers shared by the test suites (unit, integration and end-to-end)."""
from __future__ import annotations

import os
import pathlib
import re
import tempfile

__all__ = ["is_root", "ROOT_SKIP_REASON", "DISK_TMP_BASE_ENV", "disk_tmp_base",
           "mount_fstype", "new_disk_tmpdir", "NotOnDisk"]

ROOT_SKIP_REASON = (
    "needs root (effective uid 0): creates device nodes, sets foreign owners, "
    "trusted.*/security.* xattrs; run the suite as root to cover it"
)

DISK_TMP_BASE_ENV = "OSAM_TEST_TMPDIR"
DEFAULT_DISK_TMP_BASE = "/var/tmp"
MEMORY_FS_TYPES = frozenset({"tmpfs", "ramfs"})


class NotOnDisk(Exception):
    """The configured temp base is missing or on a memory file system (reason in str())."""


def is_root() -> bool:
    """True when the test process runs with effective uid 0."""
    return os.geteuid() == 0


def disk_tmp_base() -> str:
    return os.environ.get(DISK_TMP_BASE_ENV, DEFAULT_DISK_TMP_BASE)


def mount_fstype(path) -> str:
    """File-system type of the mount holding ``path`` (longest matching mount point)."""
    path = os.path.realpath(os.fsdecode(path))
    best, fstype = "", "unknown"
    with open("/proc/self/mounts", "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3:
                continue
            # /proc/self/mounts escapes space, tab, newline and backslash as \ooo
            mnt = os.fsdecode(re.sub(rb"\\([0-7]{3})",
                                     lambda m: bytes([int(m.group(1), 8)]), fields[1]))
            inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, fstype = mnt, os.fsdecode(fields[2])
    return fstype


def new_disk_tmpdir(name: str) -> pathlib.Path:
    """Create an empty directory on a real disk file system under ``$OSAM_TEST_TMPDIR``
    (default ``/var/tmp``). Raises :class:`NotOnDisk` when that is missing or on
    tmpfs/ramfs. The caller removes it (``tests.util.trees.remove_tree``)."""
    base = disk_tmp_base()
    if not os.path.isdir(base):
        raise NotOnDisk(f"disk temp base {base!r} does not exist (set ${DISK_TMP_BASE_ENV})")
    fstype = mount_fstype(base)
    if fstype in MEMORY_FS_TYPES:
        raise NotOnDisk(f"{base!r} is on {fstype}, not a disk file system; set "
                        f"${DISK_TMP_BASE_ENV} to a directory on ext4/xfs/btrfs")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
    return pathlib.Path(tempfile.mkdtemp(prefix=f"osam-test-{name}-", dir=base))
