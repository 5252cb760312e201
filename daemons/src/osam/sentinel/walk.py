"""Deterministic, resumable walk of one replicated tree.

Order: depth-first pre-order, a directory before its contents, sibling names sorted as bytes.
That order equals sorting by `walk_key(relpath)`, so a walk interrupted after entry X resumes
with `start_after=X` and skips whole subtrees that lie before X without opening them.

Directories are opened relative to their parent's fd (openat style, O_NOFOLLOW), so renaming a
directory while we are inside it cannot lead the walk outside the root. Entries that vanish
mid-walk are skipped silently; the change journal or the next verifying walk catches up.

Only local disk file systems are descended: a mount point of proc, tmpfs, NFS, FUSE ... below
the root is reported as its (empty) directory, as it is recreated on the replica, but its
contents are not walked. `local_mount_filter` offers the same rule to the change journal.
"""
from __future__ import annotations

import bisect
import errno
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Iterator, List, Optional, Set, Tuple, Union

from osam.common.fsentry import DIRECTORY, FsEntry
from osam.sentinel.fsmeta import stat_entry

MOUNTINFO = "/proc/self/mountinfo"

# Not local disk file systems: kernel views, memory-backed, network, user-space (FUSE) and
# read-only media. Overlay/aufs below the root are container views of directories that are
# replicated from their own (local) file system anyway.
FOREIGN_FSTYPES = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "ramfs", "cgroup", "cgroup2", "mqueue",
    "debugfs", "tracefs", "securityfs", "pstore", "bpf", "configfs", "fusectl", "hugetlbfs",
    "autofs", "binfmt_misc", "efivarfs", "nsfs", "rpc_pipefs", "nfsd", "selinuxfs", "devfs",
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p", "afs", "lustre", "gpfs",
    "beegfs", "fuse", "sshfs", "squashfs", "iso9660", "udf", "overlay", "aufs", "zonefs",
})

_OPEN_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A directory that turned into something else (or vanished) between lstat and open.
_GONE_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP}

SkipFn = Callable[[bytes], bool]
ErrorFn = Callable[[bytes, OSError], None]
Walked = Tuple[FsEntry, os.stat_result]


def walk_key(relpath: bytes) -> Tuple[bytes, ...]:
    """Sort key that orders relpaths exactly as `walk` yields them."""
    return tuple(relpath.split(b"/")) if relpath else ()


def is_foreign_fstype(fstype: str) -> bool:
    return fstype in FOREIGN_FSTYPES or fstype.startswith("fuse.")


# ---------------------------------------------------------------- mountinfo

@dataclass(frozen=True)
class Mount:
    mount_id: int
    parent_id: int
    dev: str                # "major:minor"
    root: bytes             # the mounted file system's directory shown here (bind mounts)
    mount_point: bytes
    options: str
    fstype: str
    source: bytes
    super_options: str


_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


def unescape_mountinfo(field: bytes) -> bytes:
    r"""The kernel writes space, tab, newline and backslash in paths as \040 \011 \012 \134."""
    return _OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field)


def parse_mountinfo(text: bytes) -> List[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split(b" ")
        if len(fields) < 10:
            continue
        sep = fields.index(b"-", 6)  # optional fields (shared:N ...) end with "-"
        mounts.append(Mount(
            mount_id=int(fields[0]),
            parent_id=int(fields[1]),
            dev=fields[2].decode(),
            root=unescape_mountinfo(fields[3]),
            mount_point=unescape_mountinfo(fields[4]),
            options=fields[5].decode(),
            fstype=fields[sep + 1].decode(),
            source=unescape_mountinfo(fields[sep + 2]),
            super_options=fields[sep + 3].decode() if len(fields) > sep + 3 else "",
        ))
    return mounts


def read_mountinfo(path: str = MOUNTINFO) -> List[Mount]:
    with open(path, "rb") as f:
        return parse_mountinfo(f.read())


def relative_to(path: bytes, root: bytes) -> Optional[bytes]:
    """`path` relative to `root` (b"" for root itself), or None when outside it."""
    if root == b"/":
        return path.lstrip(b"/")
    if path == root:
        return b""
    if path.startswith(root + b"/"):
        return path[len(root) + 1:]
    return None


class LocalMountFilter:
    """Which paths below a root lie on non-local mounts.

    Called with a relpath, answers True when the path may be replicated: it is not strictly
    below a foreign mount point (the mount point itself is kept, as an empty directory)."""

    def __init__(self, root: Union[bytes, str], mountinfo: str = MOUNTINFO) -> None:
        self.root = os.path.realpath(os.fsencode(root))
        self._mountinfo = mountinfo
        self.refreshed_for: Set[int] = set()  # devices that already caused a re-read
        self.refresh()

    def refresh(self) -> None:
        """Re-read the mount table (a mount appeared while walking)."""
        fstype_at = {}
        for mount in read_mountinfo(self._mountinfo):
            rel = relative_to(mount.mount_point, self.root)
            if rel:  # the root's own file system is walked whatever its type
                fstype_at[rel] = mount.fstype  # later lines stack on top of earlier ones
        self._set_table(fstype_at)

    def _set_table(self, fstype_at: Dict[bytes, str]) -> None:
        self._fstype_at = fstype_at
        self.known: FrozenSet[bytes] = frozenset(fstype_at)
        self.foreign: FrozenSet[bytes] = frozenset(
            rel for rel, fstype in fstype_at.items() if is_foreign_fstype(fstype))

    def rebased(self, root: Union[bytes, str]) -> "LocalMountFilter":
        """The same mount table seen from `root`, a directory below (or at) this root."""
        new_root = os.path.realpath(os.fsencode(root))
        prefix = relative_to(new_root, self.root)
        if prefix is None:
            return LocalMountFilter(new_root, self._mountinfo)
        table = {}
        for path, fstype in self._fstype_at.items():
            below = relative_to(path, prefix) if prefix else path
            if below:
                table[below] = fstype
        view = object.__new__(LocalMountFilter)  # no need to read the mount table again
        view.root, view._mountinfo, view.refreshed_for = new_root, self._mountinfo, set()
        view._set_table(table)
        return view

    def is_foreign_mount(self, relpath: bytes) -> bool:
        return relpath in self.foreign

    def __call__(self, relpath: bytes) -> bool:
        if not self.foreign:
            return True
        end = relpath.rfind(b"/")
        while end > 0:
            if relpath[:end] in self.foreign:
                return False
            end = relpath.rfind(b"/", 0, end)
        return True


def local_mount_filter(root: Union[bytes, str]) -> LocalMountFilter:
    return LocalMountFilter(root)


# ---------------------------------------------------------------- the walk

class _Dir:
    """One open directory on the walk's stack."""
    __slots__ = ("fd", "relpath", "dev", "names", "pos", "cursor")

    def __init__(self, fd: int, relpath: bytes, dev: int, names: List[bytes],
                 cursor: Optional[Tuple[bytes, ...]]) -> None:
        self.fd, self.relpath, self.dev, self.names = fd, relpath, dev, names
        self.pos = 0
        # Remaining cursor components below this directory: names before cursor[0] lie
        # wholly before the cursor and are never looked at.
        self.cursor = None
        if cursor:
            self.pos = bisect.bisect_left(names, cursor[0])
            if self.pos < len(names) and names[self.pos] == cursor[0]:
                self.cursor = cursor


def _list_names(fd: int) -> List[bytes]:
    # listdir(fd) decodes with surrogateescape; fsencode restores the exact bytes.
    return sorted(os.fsencode(n) for n in os.listdir(fd))


def _raise(relpath: bytes, exc: OSError) -> None:
    raise exc


def walk(root: Union[bytes, str], *, start_after: Optional[bytes] = None,
         skip: Optional[SkipFn] = None, on_error: Optional[ErrorFn] = None,
         mounts: Optional[LocalMountFilter] = None) -> Iterator[Walked]:
    """Yield (FsEntry, lstat result) for the root (relpath b"") and everything below it.

    start_after: resume cursor; yields exactly the entries whose walk_key is greater.
    skip(relpath): True leaves the entry and its subtree out (excluded paths).
    on_error(relpath, exc): called for errors other than vanished entries (permission
    denied, I/O errors); the default raises. The walk goes on if it returns.
    mounts: the mount rule to apply (default: read /proc/self/mountinfo now); one made for
    another root (walking a subtree with the whole tree's filter) is rebased onto this one."""
    root = os.fsencode(root)
    on_error = on_error or _raise
    if mounts is None:
        mounts = local_mount_filter(root)
    elif mounts.root != os.path.realpath(root):
        mounts = mounts.rebased(root)
    cursor = walk_key(start_after) if start_after is not None else None

    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stack: List[_Dir] = []
    try:
        entry, st = stat_entry(root_fd, b".", b"")
        if cursor is None:
            yield entry, st
        stack.append(_Dir(root_fd, b"", st.st_dev, _list_names(root_fd), cursor))
        root_fd = -1  # owned by the stack now
        while stack:
            parent = stack[-1]
            if parent.pos >= len(parent.names):
                os.close(stack.pop().fd)
                continue
            name = parent.names[parent.pos]
            parent.pos += 1
            relpath = parent.relpath + b"/" + name if parent.relpath else name
            # The cursor, or one of its ancestors: already yielded, but may hold later entries.
            on_cursor_path = parent.cursor is not None
            below = parent.cursor[1:] if on_cursor_path else None
            parent.cursor = None  # every later sibling sorts after the cursor
            if skip is not None and skip(relpath):
                continue
            try:
                entry, st = stat_entry(parent.fd, name, relpath)
            except OSError as exc:
                if exc.errno not in _GONE_ERRNOS:
                    on_error(relpath, exc)
                continue
            if not on_cursor_path:
                yield entry, st
            if entry.kind == DIRECTORY and not mounts.is_foreign_mount(relpath):
                child = _open_dir(parent, name, relpath, mounts, below, on_error)
                if child is not None:
                    stack.append(child)
    finally:
        if root_fd >= 0:
            os.close(root_fd)
        for frame in stack:
            os.close(frame.fd)


def _open_dir(parent: _Dir, name: bytes, relpath: bytes, mounts: LocalMountFilter,
              cursor: Optional[Tuple[bytes, ...]], on_error: ErrorFn) -> Optional[_Dir]:
    try:
        fd = os.open(name, _OPEN_DIR_FLAGS, dir_fd=parent.fd)
    except OSError as exc:
        if exc.errno not in _GONE_ERRNOS:
            on_error(relpath, exc)
        return None
    try:
        dev = os.fstat(fd).st_dev
        if dev != parent.dev and relpath not in mounts.known and dev not in mounts.refreshed_for:
            # Mounted after the walk started (or a btrfs subvolume: re-read once per device).
            mounts.refreshed_for.add(dev)
            mounts.refresh()
            if mounts.is_foreign_mount(relpath):
                os.close(fd)
                return None
        return _Dir(fd, relpath, dev, _list_names(fd), cursor)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in _GONE_ERRNOS:
            on_error(relpath, exc)
        return None
    except BaseException:
        os.close(fd)
        raise
