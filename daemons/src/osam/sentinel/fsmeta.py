"""Read one directory entry's metadata into an FsEntry, without ever following a symlink.

Everything is resolved relative to an open directory fd, so a concurrent rename of a parent
directory cannot make us read something outside the tree being replicated.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Dict, List, Optional, Tuple

from osam.common.fsentry import (
    BLOCKDEV, CHARDEV, DIRECTORY, FIFO, REGULAR, SOCKET, SYMLINK, FsEntry,
)

_KIND_BY_FMT = {
    stat.S_IFREG: REGULAR,
    stat.S_IFDIR: DIRECTORY,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFIFO: FIFO,
    stat.S_IFCHR: CHARDEV,
    stat.S_IFBLK: BLOCKDEV,
    stat.S_IFSOCK: SOCKET,
}

PROC_FD = b"/proc/self/fd"

# The file system keeps no xattrs at all.
_NO_XATTR_ERRNOS = {errno.ENOTSUP, errno.EOPNOTSUPP}


def kind_of(st_mode: int) -> str:
    return _KIND_BY_FMT[stat.S_IFMT(st_mode)]


def stat_entry(dir_fd: int, name: bytes, relpath: bytes) -> Tuple[FsEntry, os.stat_result]:
    """lstat `name` inside `dir_fd` and describe it as an FsEntry stored under `relpath`.

    Raises FileNotFoundError when the entry vanished meanwhile (callers skip it)."""
    st = os.lstat(name, dir_fd=dir_fd)
    kind = kind_of(st.st_mode)
    entry = FsEntry(
        path=relpath,
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if kind == REGULAR else 0,
        rdev=st.st_rdev if kind in (CHARDEV, BLOCKDEV) else 0,
        target=os.readlink(name, dir_fd=dir_fd) if kind == SYMLINK else b"",
        xattrs=read_xattrs(dir_fd, name),
    )
    return entry, st


def read_xattrs(dir_fd: int, name: bytes) -> List[Tuple[bytes, bytes]]:
    """All extended attributes of `name` in `dir_fd`, sorted by name: user.*, trusted.*,
    security.* and the POSIX ACLs (system.posix_acl_access / _default).

    os.*xattr take no dir_fd, so we go through /proc/self/fd/N: the kernel resolves that link
    to the open directory itself, and follow_symlinks=False keeps the last component unfollowed.
    Opening the entry instead would block on FIFOs and fail on symlinks."""
    path = b"%s/%d/%s" % (PROC_FD, dir_fd, name)
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTR_ERRNOS:
            return []
        if exc.errno == errno.ENOENT and not os.path.isdir(PROC_FD):
            # Otherwise every entry would look vanished and be skipped silently.
            raise RuntimeError("%s is missing (is /proc mounted?): cannot read extended "
                               "attributes" % PROC_FD.decode()) from exc
        raise
    result = []
    for xname in sorted(os.fsencode(n) for n in names):
        try:
            value = os.getxattr(path, xname, follow_symlinks=False)
        except OSError as exc:
            # Removed between list and get: it is simply not there any more.
            if exc.errno in _NO_XATTR_ERRNOS or exc.errno == errno.ENODATA:
                continue
            raise
        result.append((xname, value))
    return result


class HardLinkTracker:
    """Spots later names of an inode already seen in this walk (non-directories with
    st_nlink > 1), so the receiver can link them instead of copying the data again."""

    def __init__(self) -> None:
        self._first_path: Dict[Tuple[int, int], bytes] = {}

    def first_path(self, st: os.stat_result, relpath: bytes) -> Optional[bytes]:
        """The relpath under which this inode was first seen, or None when `relpath` is the
        first (or only) name of its inode."""
        if st.st_nlink <= 1 or stat.S_ISDIR(st.st_mode):
            return None
        key = (st.st_dev, st.st_ino)
        first = self._first_path.get(key)
        if first is None:
            self._first_path[key] = relpath
        return first

    def __len__(self) -> int:
        return len(self._first_path)
