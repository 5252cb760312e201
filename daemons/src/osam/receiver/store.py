"""The guest's replica tree on the receiver, written from FsEntry records and file content.

Layout of `replica_dir`: `root/` is the replica of the guest's tree, `staging/` holds
everything not yet in place (same file system, emptied on open, so a killed receiver never
leaves a torn or half-written file inside `root`), `lock` keeps a second receiver out.
A replica made of disks has several file systems mounted below `root/` (`mounts`); each
then has its own staging directory at its root (STAGING_NAME), because a rename cannot
cross file systems, and that name is reserved there.

The guest is not trusted: its paths and symlinks must never make the receiver touch
anything outside `root`. Every path is validated, then resolved one component at a time
with O_NOFOLLOW relative to the previous directory's descriptor; all operations take
directory descriptors (`dir_fd=`), so a symlink inside the replica is never followed.
A final component that is a symlink is replaced, never written through.

New content is staged and renamed over its target (atomic replace). Durability is batched:
`sync()` flushes the whole file system once, before the caller records a checkpoint.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import stat
from typing import Dict, Iterator, List, Optional, Set, Tuple, Union

from osam.common.fsentry import (
    BLOCKDEV, CHARDEV, DIRECTORY, FIFO, REGULAR, SOCKET, SYMLINK, FsEntry)

NAME_MAX = 255
PATH_MAX = 4096

# O_PATH suffices to walk through a directory; O_RDONLY is needed to change its attributes.
_DIR_WALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_NODE_TYPES = {CHARDEV: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK, SOCKET: stat.S_IFSOCK}
_COPY_CHUNK = 1 << 20

Parts = Tuple[bytes, ...]
Staged = Tuple[int, bytes]      # (staging directory fd, name in it)
STAGING_NAME = b".osam-staging"
Xattrs = List[Tuple[bytes, bytes]]


class StoreError(Exception):
    """An operation on the replica could not be done as asked."""


class UnsafePath(StoreError):
    """A path that could reach outside the replica root, or is not a valid relative path."""


class MissingEntry(StoreError):
    """A parent directory, a rename source or a link target is not in the replica."""


class NotADirectory(StoreError):
    """A parent component exists in the replica but is not a directory."""


class BaseMismatch(StoreError):
    """The replica file is not the version a delta was computed against: resend it whole."""


def split_path(path: bytes, *, allow_root: bool = False) -> Parts:
    """Validate a guest-relative path and return its components (() for the root)."""
    if not isinstance(path, bytes):
        raise UnsafePath(f"path must be bytes, got {type(path).__name__}: {path!r}")
    if path == b"":
        if allow_root:
            return ()
        raise UnsafePath("the empty path (the replica root itself) is not allowed here")
    if len(path) > PATH_MAX:
        raise UnsafePath(f"path longer than {PATH_MAX} bytes: {path[:64]!r}...")
    if b"\0" in path:
        raise UnsafePath(f"path contains a NUL byte: {path!r}")
    if path.startswith(b"/"):
        raise UnsafePath(f"absolute path: {path!r}")
    parts = tuple(path.split(b"/"))
    for part in parts:
        if part == b"":
            raise UnsafePath(f"empty path component: {path!r}")
        if part in (b".", b".."):
            raise UnsafePath(f"{part.decode()!r} component: {path!r}")
        if len(part) > NAME_MAX:
            raise UnsafePath(f"component longer than {NAME_MAX} bytes: {part[:64]!r}... in {path[:64]!r}")
    return parts


def _join(parts: Parts) -> bytes:
    return b"/".join(parts)


def _is_under(key: bytes, prefix: bytes) -> bool:
    return key == prefix or (prefix == b"" or key.startswith(prefix + b"/"))


# --- Linux calls the os module lacks -----------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syncfs.argtypes = [ctypes.c_int]
_fallocate = getattr(_libc, "fallocate64", _libc.fallocate)
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def _syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range (it reads as zeros); writes zeros where holes are unsupported."""
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
        raise OSError(err, os.strerror(err))
    zeros = bytes(min(length, _COPY_CHUNK))
    end = offset + length
    while offset < end:
        offset += os.pwrite(fd, zeros[:end - offset], offset)


# --- helpers on descriptors ------------------------------------------------------------

def _replace_xattrs(target: Union[int, bytes], wanted: Xattrs) -> None:
    """Make the extended attributes exactly `wanted` (an fd, or a path never followed)."""
    kw = {} if isinstance(target, int) else {"follow_symlinks": False}
    want = dict(wanted)
    for name in os.listxattr(target, **kw):
        if os.fsencode(name) not in want:
            try:
                os.removexattr(target, name, **kw)
            except OSError as exc:
                if exc.errno != errno.ENODATA:
                    raise
    for name, value in want.items():
        os.setxattr(target, name, value, 0, **kw)


def _set_fd_attributes(fd: int, e: FsEntry) -> None:
    # chown first: it clears setuid/setgid and security.capability, which come after.
    # chmod after the ACL xattrs so the mode is exactly e.mode whatever the ACL said.
    os.fchown(fd, e.uid, e.gid)
    _replace_xattrs(fd, e.xattrs)
    os.fchmod(fd, e.mode)
    os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))


def _open_subdir_or_unlink(parent_fd: int, name: Union[str, bytes]) -> Optional[int]:
    """Open `name` if it is a real directory; otherwise unlink it (a symlink is never followed)."""
    try:
        return os.open(name, _DIR_OPEN, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
    os.unlink(name, dir_fd=parent_fd)
    return None


def _empty_dir(top_fd: int) -> None:
    """Remove everything inside the directory open at `top_fd`, never following a symlink.
    Depth-first with an explicit stack: one open descriptor per level, no recursion limit."""
    stack: List[Tuple[int, Iterator[str], str]] = [(top_fd, iter(os.listdir(top_fd)), "")]
    try:
        while stack:
            fd, names, _ = stack[-1]
            for name in names:
                child = _open_subdir_or_unlink(fd, name)
                if child is not None:
                    try:
                        entries = iter(os.listdir(child))
                    except BaseException:
                        os.close(child)
                        raise
                    stack.append((child, entries, name))
                    break
            else:
                _, _, name = stack.pop()
                if stack:
                    os.close(fd)
                    os.rmdir(name, dir_fd=stack[-1][0])
    finally:
        for fd, _, _ in stack[1:]:
            os.close(fd)


def _remove_at(parent_fd: int, name: bytes) -> Optional[str]:
    """Remove a file, node, symlink or whole directory subtree.
    Returns "d" for a directory, "-" for anything else, None if nothing was there."""
    try:
        fd = _open_subdir_or_unlink(parent_fd, name)
    except FileNotFoundError:
        return None
    if fd is None:
        return "-"
    try:
        _empty_dir(fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)
    return "d"


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    end = offset + length
    try:
        while offset < end:
            n = os.copy_file_range(src, dst, end - offset, offset, offset)
            if n == 0:
                return
            offset += n
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while offset < end:
        data = os.pread(src, min(_COPY_CHUNK, end - offset), offset)
        if not data:
            return
        view = memoryview(data)
        while view:
            n = os.pwrite(dst, view, offset)
            view, offset = view[n:], offset + n


def _copy_data_ranges(src: int, dst: int, size: int) -> None:
    """Copy the data ranges of `src` into `dst`, leaving its holes as holes."""
    offset = 0
    while offset < size:
        try:
            data = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:    # only a hole remains
                break
            raise
        hole = os.lseek(src, data, os.SEEK_HOLE)
        _copy_range(src, dst, data, hole - data)
        offset = hole
    os.ftruncate(dst, size)


class FileWriter:
    """New content for one regular file, staged until commit() renames it into place."""

    def __init__(self, store: "ReplicaStore", entry: FsEntry, parts: Parts, staged: Staged, fd: int):
        self.entry = entry
        self.written = 0
        self._store = store
        self._parts = parts
        self._staged: Optional[Staged] = staged
        self._fd: Optional[int] = fd

    def write(self, offset: int, data: bytes) -> int:
        fd = self._open_fd()
        view = memoryview(data)
        start = offset
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
        self.written += offset - start
        return offset - start

    def punch(self, offset: int, length: int) -> None:
        """Make a range read as zeros without allocating it (a hole that replaced data)."""
        _punch_hole(self._open_fd(), offset, length)

    def commit(self) -> int:
        """Set size and attributes, then atomically replace the replica file. Returns bytes written."""
        fd = self._open_fd()
        try:
            os.ftruncate(fd, self.entry.size)       # trailing holes stay holes
            _set_fd_attributes(fd, self.entry)
            os.close(fd)
            self._fd = None
            self._store._install(self._staged, self._parts)
        except BaseException:
            self.abort()
            raise
        self._staged = None
        return self.written

    def abort(self) -> None:
        """Drop the staged content; the replica file is left as it was."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._staged:
            self._store._discard(self._staged)
            self._staged = None

    def _open_fd(self) -> int:
        if self._fd is None:
            raise StoreError(f"{self.entry.path!r}: writer already committed or aborted")
        return self._fd

    def __enter__(self) -> "FileWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()        # a no-op after commit()


class ReplicaStore:
    """One guest's replica tree. Not thread-safe: drive it from one thread (a FileWriter's
    write() may run anywhere). OSErrors of the file system itself (EPERM, ENOSPC) propagate."""

    kind = "files"

    def __init__(self, replica_dir: Union[str, bytes, "os.PathLike[str]"],
                 mounts: Optional[List[bytes]] = None):
        self.replica_dir = os.fsdecode(replica_dir)
        self._stagings: List[Tuple[Parts, int]] = []   # (mount point, its staging fd), deepest first
        os.makedirs(self.replica_dir, mode=0o700, exist_ok=True)
        self._counter = itertools.count()
        self._dir_mtimes: Dict[bytes, int] = {}     # wanted mtime of each applied directory
        self._dirty: Set[bytes] = set()             # applied directories changed since
        self._dir_cache: Optional[Tuple[Parts, int]] = None  # see _cached_dir
        self._lock_fd = self._staging_fd = self._root_fd = -1
        try:
            self._lock_fd = os.open(os.path.join(self.replica_dir, "lock"),
                                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"{self.replica_dir} is in use by another receiver") from None
            self._root_fd = self._open_subdir("root")
            if mounts is None:
                self._staging_fd = self._open_subdir("staging")
                if os.fstat(self._root_fd).st_dev != os.fstat(self._staging_fd).st_dev:
                    raise StoreError(f"{self.replica_dir}: root and staging must be on the same file system")
                self._stagings = [((), self._staging_fd)]
            else:
                self._open_mount_stagings(mounts)
            for _, fd in self._stagings:
                _empty_dir(fd)
        except BaseException:
            self.close()
            raise

    def _open_subdir(self, name: str) -> int:
        path = os.path.join(self.replica_dir, name)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        try:
            return os.open(path, _DIR_OPEN)
        except OSError as exc:
            raise StoreError(f"{path}: not a usable directory ({exc.strerror})") from None

    def _open_mount_stagings(self, mounts: List[bytes]) -> None:
        for mount in sorted(mounts, key=lambda m: len(split_path(m, allow_root=True)), reverse=True):
            parts = split_path(mount, allow_root=True)
            top = self._open_dir(parts, last=_DIR_OPEN)
            try:
                fd = os.open(STAGING_NAME, _DIR_OPEN, dir_fd=top)
            except OSError as exc:
                raise StoreError(f"{self.replica_dir}/root/{os.fsdecode(mount)}: no staging directory "
                                 f"{os.fsdecode(STAGING_NAME)} ({exc.strerror}): is the replica mounted?") from None
            finally:
                os.close(top)
            self._stagings.append((parts, fd))

    def close(self) -> None:
        self._drop_dir_cache()
        for _, fd in self._stagings:
            if fd != self._staging_fd:
                os.close(fd)
        self._stagings = []
        for attr in ("_staging_fd", "_root_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)

    def __enter__(self) -> "ReplicaStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- public operations ---------------------------------------------------------------

    def apply_entry(self, e: FsEntry) -> None:
        """Create or update anything but file content.

        Directories are updated in place; symlinks, fifos, sockets and device nodes are
        built in staging and renamed over the target. A regular file entry only updates
        the attributes of the replica file in place, which must exist with e.size bytes
        (else BaseMismatch: send the content through open_file)."""
        if e.kind == DIRECTORY:
            self._apply_dir(e, self._parts(e.path, allow_root=True))
        elif e.kind == REGULAR:
            self._apply_file_attributes(e, self._parts(e.path))
        elif e.kind in (SYMLINK, FIFO, CHARDEV, BLOCKDEV, SOCKET):
            self._apply_node(e, self._parts(e.path))
        else:
            raise StoreError(f"{e.path!r}: unknown entry kind {e.kind!r}")

    def open_file(self, e: FsEntry, *, base: Optional[Tuple[int, int]] = None) -> FileWriter:
        """Stage new content for a regular file; with base=(size, mtime_ns) the staged file
        starts as a copy of the replica file, which must be exactly that version."""
        if e.kind != REGULAR:
            raise StoreError(f"{e.path!r}: open_file takes regular files, not kind {e.kind!r}")
        parts = self._parts(e.path)
        staged = self._stage(parts)
        fd = os.open(staged[1], os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=staged[0])
        try:
            if base is not None:
                with self._parent(parts) as (parent, name):
                    src = self._open_regular(parent, name, parts, base)
                try:
                    _copy_data_ranges(src, fd, base[0])
                finally:
                    os.close(src)
        except BaseException:
            os.close(fd)
            self._discard(staged)
            raise
        return FileWriter(self, e, parts, staged, fd)

    def hardlink(self, path: bytes, target: bytes) -> None:
        """Make `path` another name of the replica's `target` (atomically replacing `path`)."""
        parts, target_parts = self._parts(path), self._parts(target)
        if parts == target_parts:
            return
        with self._parent(target_parts) as (parent, name):
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise MissingEntry(f"hard link target {target!r} is not in the replica") from None
            if stat.S_ISDIR(st.st_mode):
                raise StoreError(f"hard link target {target!r} is a directory")
            staged = self._stage(parts)
            os.link(name, staged[1], src_dir_fd=parent, dst_dir_fd=staged[0], follow_symlinks=False)
        try:
            with self._parent(parts) as (parent, name):
                with contextlib.suppress(FileNotFoundError):
                    current = os.stat(name, dir_fd=parent, follow_symlinks=False)
                    if (current.st_dev, current.st_ino) == (st.st_dev, st.st_ino):
                        self._discard(staged)   # already linked: rename would keep both names
                        return
                self._install_at(parent, name, staged, parts)
        except BaseException:
            self._discard(staged)
            raise

    def delete(self, path: bytes) -> None:
        """Remove a file, symlink, node or directory subtree. Absent is fine, and so is a
        parent that is not a directory (a symlink, a file): the path then names nothing."""
        parts = self._parts(path)
        try:
            with self._parent(parts) as (parent, name):
                removed = _remove_at(parent, name)
        except (MissingEntry, NotADirectory, UnsafePath):
            return
        if removed == "d":
            self._forget_dirs(parts)
        if removed:
            self._touch_parent(parts)

    def rename(self, old: bytes, new: bytes) -> None:
        """Atomically move `old` to `new`, replacing whatever `new` was; both parents must exist."""
        old_parts, new_parts = self._parts(old), self._parts(new)
        if old_parts == new_parts:
            return
        if new_parts[:len(old_parts)] == old_parts:
            raise StoreError(f"cannot move {old!r} inside itself ({new!r})")
        if old_parts[:len(new_parts)] == new_parts:
            raise StoreError(f"cannot move {old!r} over its own ancestor {new!r}")
        with self._parent(old_parts) as (old_parent, old_name), \
                self._parent(new_parts) as (new_parent, new_name):
            try:
                os.rename(old_name, new_name, src_dir_fd=old_parent, dst_dir_fd=new_parent)
            except FileNotFoundError:
                raise MissingEntry(f"rename source {old!r} is not in the replica") from None
            except OSError as exc:
                # A directory at `new` that is not empty, or a file/directory kind clash.
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                    raise
                if _remove_at(new_parent, new_name) == "d":
                    self._forget_dirs(new_parts)
                os.rename(old_name, new_name, src_dir_fd=old_parent, dst_dir_fd=new_parent)
            moved_dir = stat.S_ISDIR(os.stat(new_name, dir_fd=new_parent, follow_symlinks=False).st_mode)
        if moved_dir:
            self._forget_dirs(new_parts)     # an empty directory replaced by rename itself
            self._move_dirs(old_parts, new_parts)
        self._touch_parent(old_parts)
        self._touch_parent(new_parts)

    def flush_dir_times(self) -> None:
        """Re-apply the recorded mtimes of directories whose contents changed since."""
        for key in sorted(self._dirty, key=lambda k: k.count(b"/") + bool(k), reverse=True):
            try:
                fd = self._open_dir(split_path(key, allow_root=True), last=_DIR_OPEN)
            except StoreError:
                continue        # removed or replaced since: nothing to restore
            try:
                mtime = self._dir_mtimes[key]
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)
        self._dirty.clear()

    def sync(self) -> None:
        """Make everything written so far durable (one syncfs per file system, not an fsync per file)."""
        _syncfs(self._root_fd)
        for _, fd in self._stagings:
            if fd != self._staging_fd:
                _syncfs(fd)

    # --- kinds ---------------------------------------------------------------------------

    def _apply_dir(self, e: FsEntry, parts: Parts) -> None:
        if not parts:
            fd = os.open(".", _DIR_OPEN, dir_fd=self._root_fd)
        else:
            with self._parent(parts) as (parent, name):
                try:
                    os.mkdir(name, 0o700, dir_fd=parent)
                    self._touch_parent(parts)
                except FileExistsError:
                    if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                        os.unlink(name, dir_fd=parent)      # a file or symlink where the directory goes
                        os.mkdir(name, 0o700, dir_fd=parent)
                        self._touch_parent(parts)
                fd = os.open(name, _DIR_OPEN, dir_fd=parent)
        try:
            _set_fd_attributes(fd, e)
        finally:
            os.close(fd)
        key = _join(parts)
        self._dir_mtimes[key] = e.mtime_ns
        self._dirty.discard(key)

    def _apply_node(self, e: FsEntry, parts: Parts) -> None:
        sfd, name = staged = self._stage(parts)
        if e.kind == SYMLINK:
            os.symlink(e.target, name, dir_fd=sfd)
        elif e.kind == FIFO:
            os.mkfifo(name, 0o600, dir_fd=sfd)
        else:
            os.mknod(name, 0o600 | _NODE_TYPES[e.kind], e.rdev, dir_fd=sfd)
        try:
            os.chown(name, e.uid, e.gid, dir_fd=sfd, follow_symlinks=False)
            # xattr calls take no dir_fd: name the staged node through the pinned staging fd.
            _replace_xattrs(b"/proc/self/fd/%d/%s" % (sfd, name), e.xattrs)
            if e.kind != SYMLINK:       # symlink modes mean nothing on Linux
                os.chmod(name, e.mode, dir_fd=sfd)
            os.utime(name, ns=(e.mtime_ns, e.mtime_ns), dir_fd=sfd, follow_symlinks=False)
            self._install(staged, parts)
        except BaseException:
            self._discard(staged)
            raise

    def _apply_file_attributes(self, e: FsEntry, parts: Parts) -> None:
        with self._parent(parts) as (parent, name):
            fd = self._open_regular(parent, name, parts, None)
        try:
            if os.fstat(fd).st_size != e.size:
                raise BaseMismatch(f"{e.path!r}: replica size differs from {e.size}; send the content")
            _set_fd_attributes(fd, e)
        finally:
            os.close(fd)

    def _open_regular(self, parent: int, name: bytes, parts: Parts,
                      base: Optional[Tuple[int, int]]) -> int:
        """Open the replica's regular file for reading, never opening a device or fifo.
        With `base`, the file must have exactly that (size, mtime_ns)."""
        try:
            pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except FileNotFoundError:
            raise BaseMismatch(f"{_join(parts)!r}: not in the replica") from None
        try:
            st = os.fstat(pfd)
            if not stat.S_ISREG(st.st_mode):
                raise BaseMismatch(f"{_join(parts)!r}: not a regular file in the replica")
            if base is not None and (st.st_size, st.st_mtime_ns) != tuple(base):
                raise BaseMismatch(f"{_join(parts)!r}: replica has size/mtime "
                                   f"{(st.st_size, st.st_mtime_ns)}, the delta expects {tuple(base)}")
            # Re-open the very inode checked above (O_PATH descriptors cannot be read).
            return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(pfd)

    # --- placing staged entries ------------------------------------------------------------

    def _parts(self, path: bytes, *, allow_root: bool = False) -> Parts:
        """split_path, refusing the staging directories of a disk replica's file systems."""
        parts = split_path(path, allow_root=allow_root)
        if STAGING_NAME in parts and self._staging_fd < 0:
            i = parts.index(STAGING_NAME)
            if any(mount == parts[:i] for mount, _ in self._stagings):
                raise UnsafePath(f"{path!r}: {os.fsdecode(STAGING_NAME)} at the top of a file system "
                                 f"is reserved for the receiver")
        return parts

    def _stage(self, parts: Parts) -> Staged:
        """A fresh name in the staging directory of the file system `parts` will land on."""
        for mount, fd in self._stagings:
            if parts[:len(mount)] == mount and len(parts) > len(mount):
                return fd, b"%d.%d" % (os.getpid(), next(self._counter))
        raise StoreError(f"{_join(parts)!r}: no replica file system holds it")

    def _discard(self, staged: Staged) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged[1], dir_fd=staged[0])

    def _install(self, staged: Staged, parts: Parts) -> None:
        if len(parts) == 1:
            self._install_at(self._root_fd, parts[0], staged, parts)
        else:
            self._install_at(self._cached_dir(parts[:-1]), parts[-1], staged, parts)

    def _cached_dir(self, parts: Parts) -> int:
        """The fd of directory `parts`, kept open while files land in it one after another
        (a walk sends a directory's files together), so each costs one lookup, not one per
        path component. Dropped whenever that directory or one above it is moved or removed."""
        if self._dir_cache is not None and self._dir_cache[0] == parts:
            return self._dir_cache[1]
        fd = self._open_dir(parts)
        self._drop_dir_cache()
        self._dir_cache = (parts, fd)
        return fd

    def _drop_dir_cache(self, under: Optional[bytes] = None) -> None:
        if self._dir_cache is not None and (under is None or _is_under(_join(self._dir_cache[0]), under)):
            os.close(self._dir_cache[1])
            self._dir_cache = None

    def _install_at(self, parent: int, name: bytes, staged: Staged, parts: Parts) -> None:
        sfd, staged_name = staged
        self._remember_mtime(parent, parts)
        try:
            os.rename(staged_name, name, src_dir_fd=sfd, dst_dir_fd=parent)
        except IsADirectoryError:
            # The kind changed from directory: rename cannot replace one with a non-directory.
            if _remove_at(parent, name) == "d":
                self._forget_dirs(parts)
            os.rename(staged_name, name, src_dir_fd=sfd, dst_dir_fd=parent)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            raise StoreError(f"{_join(parts)!r}: its directory is on another file system than "
                             f"{self.replica_dir}/staging (a mount inside the replica root)") from None
        self._touch_parent(parts)

    # --- resolving paths without following symlinks -----------------------------------------

    @contextlib.contextmanager
    def _parent(self, parts: Parts) -> Iterator[Tuple[int, bytes]]:
        """Yield (fd of the parent directory, final name) for a non-root path."""
        if len(parts) == 1:
            self._remember_mtime(self._root_fd, parts)
            yield self._root_fd, parts[0]
            return
        fd = self._open_dir(parts[:-1])
        try:
            self._remember_mtime(fd, parts)
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def _open_dir(self, parts: Parts, last: int = _DIR_WALK) -> int:
        """Open the replica directory `parts`, one component at a time, following no symlink."""
        if not parts:
            return os.open(".", last, dir_fd=self._root_fd)
        fd = self._root_fd
        try:
            for i, name in enumerate(parts):
                try:
                    child = os.open(name, last if i == len(parts) - 1 else _DIR_WALK, dir_fd=fd)
                except OSError as exc:
                    raise self._walk_error(fd, parts, i, exc) from None
                if fd != self._root_fd:
                    os.close(fd)
                fd = child
        except BaseException:
            if fd != self._root_fd:
                os.close(fd)
            raise
        return fd

    @staticmethod
    def _walk_error(dir_fd: int, parts: Parts, i: int, exc: OSError) -> Exception:
        path, prefix = _join(parts), _join(parts[:i + 1])
        if exc.errno == errno.ENOENT:
            return MissingEntry(f"{path!r}: directory {prefix!r} does not exist in the replica")
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                mode = os.stat(parts[i], dir_fd=dir_fd, follow_symlinks=False).st_mode
            except OSError:
                mode = 0
            if stat.S_ISLNK(mode):
                return UnsafePath(f"{path!r}: {prefix!r} is a symlink in the replica; refusing to follow it")
            return NotADirectory(f"{path!r}: {prefix!r} is not a directory in the replica")
        return exc

    # --- directory mtimes ------------------------------------------------------------------

    def _remember_mtime(self, parent: int, parts: Parts) -> None:
        """Before anything changes in a directory this store has not applied itself (a receiver
        restarted since), keep the mtime the replica gave it, so the change does not move it."""
        key = _join(parts[:-1])
        if key not in self._dir_mtimes:
            self._dir_mtimes[key] = os.fstat(parent).st_mtime_ns

    def _touch_parent(self, parts: Parts) -> None:
        key = _join(parts[:-1])
        if key in self._dir_mtimes:
            self._dirty.add(key)

    def _forget_dirs(self, parts: Parts) -> None:
        prefix = _join(parts)
        self._drop_dir_cache(under=prefix)
        for key in [k for k in self._dir_mtimes if _is_under(k, prefix)]:
            del self._dir_mtimes[key]
            self._dirty.discard(key)

    def _move_dirs(self, old: Parts, new: Parts) -> None:
        old_prefix, new_prefix = _join(old), _join(new)
        self._drop_dir_cache(under=old_prefix)
        for key in [k for k in self._dir_mtimes if _is_under(k, old_prefix)]:
            moved = new_prefix + key[len(old_prefix):]
            self._dir_mtimes[moved] = self._dir_mtimes.pop(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._dirty.add(moved)
