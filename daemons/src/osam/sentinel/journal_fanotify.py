"""fanotify change journal: one FAN_MARK_FILESYSTEM mark per file system.

Events carry directory file handles plus a name, never paths. A handle is
turned into a path with ``open_by_handle_at`` and ``/proc/self/fd`` when the
batch is read, so it gives the directory's *current* path. To report the path
each event had when it happened, a batch is resolved after the queue ran empty
(so no unread directory rename precedes the resolution; see
``_resolve_settled`` for the last few events), and directory renames inside
the batch are undone backwards over the events that came before them.

Events caused by ``ignore_pids`` (the sentinel's own reads and writes) and
events outside the root are dropped; events that name no directory (link
count changes, self events) are dropped too, their path events cover them.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
from typing import Dict, Iterable, List, Optional, Tuple

from ..common.fsentry import is_under
from .journal import (
    CHANGED, DELETED, OVERFLOW_EVENT, RENAMED, ChangeEvent, Journal, SkipDir,
    join, libc, raise_errno, split_mounts, without_repeats,
)

log = logging.getLogger(__name__)

# fanotify_init flags
FAN_CLOEXEC = 0x01
FAN_NONBLOCK = 0x02
FAN_CLASS_NOTIF = 0x00
FAN_UNLIMITED_QUEUE = 0x10
FAN_REPORT_FID = 0x200
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_TARGET_FID = 0x1000
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME

# fanotify_mark flags
FAN_MARK_ADD = 0x01
FAN_MARK_FILESYSTEM = 0x100

# event mask bits
FAN_MODIFY = 0x02
FAN_ATTRIB = 0x04
FAN_CLOSE_WRITE = 0x08
FAN_MOVED_FROM = 0x40
FAN_MOVED_TO = 0x80
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_Q_OVERFLOW = 0x4000
FAN_RENAME = 0x10000000
FAN_ONDIR = 0x40000000

CONTENT_OR_META = FAN_MODIFY | FAN_ATTRIB | FAN_CLOSE_WRITE | FAN_CREATE | FAN_MOVED_TO
GONE = FAN_DELETE | FAN_MOVED_FROM
BASE_MASK = FAN_MODIFY | FAN_ATTRIB | FAN_CLOSE_WRITE | FAN_CREATE | FAN_DELETE | FAN_ONDIR
RENAME_MASK = BASE_MASK | FAN_RENAME                         # Linux >= 5.17
PAIRLESS_MASK = BASE_MASK | FAN_MOVED_FROM | FAN_MOVED_TO    # older kernels
# Events that move directories, and so change what a handle resolves to.
DIR_MOVES = FAN_RENAME | FAN_MOVED_FROM | FAN_MOVED_TO

# info record types
INFO_DFID_NAME = 2
INFO_DFID = 3
INFO_OLD_DFID_NAME = 10
INFO_NEW_DFID_NAME = 12

METADATA = struct.Struct("=IBBHQii")   # event_len vers reserved metadata_len mask fd pid
INFO_HEADER = struct.Struct("=BBH")    # info_type pad len
HANDLE_HEADER = struct.Struct("=Ii")   # handle_bytes handle_type
FANOTIFY_METADATA_VERSION = 3
AT_FDCWD = -100
READ_SIZE = 256 * 1024
MAX_EVENTS_PER_READ = 65536
RESOLVE_ROUNDS = 8

# A file handle as the kernel reports it: (fsid, struct file_handle bytes).
Handle = Tuple[bytes, bytes]


class _Statfs(ctypes.Structure):
    _fields_ = [
        ("f_type", ctypes.c_long), ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_uint64), ("f_bfree", ctypes.c_uint64),
        ("f_bavail", ctypes.c_uint64), ("f_files", ctypes.c_uint64),
        ("f_ffree", ctypes.c_uint64), ("f_fsid", ctypes.c_int * 2),
        ("f_rest", ctypes.c_long * 16),
    ]


class _RawEvent:
    """One kernel event: mask, pid, and the (handle, name) records it carries."""

    __slots__ = ("mask", "pid", "dir", "name", "old_dir", "old_name")

    def __init__(self, mask: int, pid: int) -> None:
        self.mask = mask
        self.pid = pid
        self.dir: Optional[Handle] = None
        self.name = b""
        self.old_dir: Optional[Handle] = None
        self.old_name = b""


class FanotifyJournal(Journal):
    backend = "fanotify"

    def __init__(self, root: bytes, *, ignore_pids: Iterable[int] = (),
                 skip_dir: Optional[SkipDir] = None) -> None:
        super().__init__(root)
        self._ignore = frozenset(ignore_pids)
        self._libc = libc()
        # fsid -> a directory on that file system. Opened only while a batch is
        # resolved: a long-lived fd would keep the mount busy (no umount).
        self._mount_points: Dict[bytes, bytes] = {}
        self._mount_fds: Dict[bytes, int] = {}
        self._fd = -1
        try:
            for name in ("fanotify_init", "fanotify_mark", "open_by_handle_at"):
                if not hasattr(self._libc, name):
                    raise OSError(errno.ENOSYS, f"{name} missing from the C library")
            self._libc.fanotify_mark.argtypes = [
                ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
            self._fd, self._single_renames = self._init_group()
            watched, skipped = split_mounts(root, skip_dir)
            self.skipped_mounts = skipped
            for rel in [b""] + watched:
                self._mark(join(root, rel) if rel else root)
        except BaseException:
            self.close()
            raise
        self._unsettled: List[bytes] = []   # see _resolve_settled
        self._lost = False                  # queue overflow seen while resolving

    # --- setup -------------------------------------------------------------

    def _init_group(self) -> Tuple[int, bool]:
        """Open the group; True when FAN_RENAME gives single rename events."""
        base = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE
        event_flags = os.O_RDONLY | getattr(os, "O_LARGEFILE", 0)
        # The target fid makes events for different inodes under one name
        # distinct, so the kernel does not merge e.g. an unlink with a later
        # create of the same name into one event of unknown order.
        for report, renames in ((FAN_REPORT_DFID_NAME | FAN_REPORT_FID | FAN_REPORT_TARGET_FID, True),
                                (FAN_REPORT_DFID_NAME, False)):
            fd = self._libc.fanotify_init(base | report, event_flags)
            if fd >= 0:
                return fd, renames
            if ctypes.get_errno() != errno.EINVAL:
                break
        raise_errno("fanotify_init")
        raise AssertionError("unreachable")

    def _mark(self, path: bytes) -> None:
        fsid = self._fsid_of(path)
        if fsid in self._mount_points:
            return
        self._mount_points[fsid] = path
        mask = RENAME_MASK if self._single_renames else PAIRLESS_MASK
        if self._libc.fanotify_mark(self._fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM,
                                    mask, AT_FDCWD, path) == 0:
            return
        if ctypes.get_errno() == errno.EINVAL and self._single_renames and len(self._mount_points) == 1:
            # Kernel knows the report flags but not FAN_RENAME: pair-less renames.
            self._single_renames = False
            if self._libc.fanotify_mark(self._fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM,
                                        PAIRLESS_MASK, AT_FDCWD, path) == 0:
                return
        raise_errno(f"fanotify_mark {os.fsdecode(path)}")

    def _fsid_of(self, path: bytes) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return self._fsid(fd)
        finally:
            os.close(fd)

    def _fsid(self, fd: int) -> bytes:
        buf = _Statfs()
        fstatfs = getattr(self._libc, "fstatfs64", None) or self._libc.fstatfs
        if fstatfs(fd, ctypes.byref(buf)) != 0:
            raise_errno("fstatfs")
        return struct.pack("=ii", buf.f_fsid[0], buf.f_fsid[1])

    def _open_mounts(self) -> bool:
        """Open a directory on each marked file system; False if one is gone."""
        intact = True
        for fsid, path in self._mount_points.items():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                intact = False
                continue
            if self._fsid(fd) == fsid:
                self._mount_fds[fsid] = fd
            else:
                os.close(fd)
                intact = False
        if not intact:
            log.warning("a file system under journal root %r was unmounted or replaced", self.root)
        return intact

    def _close_mounts(self) -> None:
        for fd in self._mount_fds.values():
            os.close(fd)
        self._mount_fds = {}

    # --- interface ---------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        self._close_mounts()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read_events(self) -> List[ChangeEvent]:
        batch, overflow = self._drain()
        if not batch and not overflow:
            return []
        paths: Dict[Handle, Optional[bytes]] = {}
        overflow = not self._open_mounts() or overflow
        try:
            settled_upto, stormy = self._resolve_settled(batch, paths)
            overflow = overflow or stormy or self._lost
            self._lost = False
        finally:
            self._close_mounts()
        groups = self._translate(batch, paths)
        events = self._revisit_moved(groups)
        self._unsettled = [ev.path for group in groups[settled_upto:] for ev in group
                           if ev.kind != "overflow"]
        if overflow:
            events.append(OVERFLOW_EVENT)
        return without_repeats(events)

    def _resolve_settled(self, batch: List[_RawEvent],
                         paths: Dict[Handle, Optional[bytes]]) -> Tuple[int, bool]:
        """Resolve the batch's handles after the queue ran empty.

        A directory moved after the batch but before its resolution would
        give paths newer than the events. So: resolve, then look at what came
        in meanwhile; if that moved a directory, take it into the batch and
        resolve again. Events that arrived without moving one are taken in
        and resolved without a further check; their index is returned, and
        their paths are revisited should the next batch move a directory over
        them. Returns (that index, True if directories kept moving).
        """
        for _ in range(RESOLVE_ROUNDS):
            self._resolve_all(batch, paths)
            more = self._drain_into(batch)
            if not more:
                return len(batch), False
            if not any(ev.mask & FAN_ONDIR and ev.mask & DIR_MOVES for ev in more):
                self._resolve_all(batch, paths)
                return len(batch) - len(more), False
            paths.clear()
        self._resolve_all(batch, paths)
        return 0, True

    def _drain_into(self, batch: List[_RawEvent]) -> List[_RawEvent]:
        more, lost = self._drain()
        batch.extend(more)
        self._lost = self._lost or lost   # an overflow read here belongs to this batch
        return more

    def _revisit_moved(self, groups: List[List[ChangeEvent]]) -> List[ChangeEvent]:
        """Flatten; after a rename, say 'changed' for last batch's unsettled paths under it."""
        events: List[ChangeEvent] = []
        unsettled = self._unsettled
        for group in groups:
            events.extend(group)
            if not unsettled:
                continue
            for ev in group:
                if ev.kind == RENAMED:
                    prefix = ev.path + b"/"
                    events.extend(ChangeEvent(CHANGED, u) for u in unsettled
                                  if u == ev.path or u.startswith(prefix))
        return events

    # --- reading -----------------------------------------------------------

    def _drain(self) -> Tuple[List[_RawEvent], bool]:
        """Parse queued events until the queue is empty; (events, overflowed)."""
        events: List[_RawEvent] = []
        overflow = False
        while len(events) < MAX_EVENTS_PER_READ:
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                break
            if not data:
                break
            overflow = self._parse(data, events) or overflow
        return events, overflow

    def _parse(self, data: bytes, out: List[_RawEvent]) -> bool:
        overflow = False
        view = memoryview(data)
        offset = 0
        while offset + METADATA.size <= len(data):
            event_len, vers, _, meta_len, mask, fd, pid = METADATA.unpack_from(data, offset)
            if vers != FANOTIFY_METADATA_VERSION or event_len < METADATA.size:
                log.warning("fanotify metadata version %d not understood", vers)
                return True
            if fd >= 0:
                os.close(fd)   # not expected with fid reporting; never leak it
            end = offset + event_len
            if mask & FAN_Q_OVERFLOW:
                overflow = True
            elif pid not in self._ignore:
                ev = _RawEvent(mask, pid)
                self._parse_info(view, offset + meta_len, end, ev)
                if ev.dir is not None:
                    out.append(ev)
            offset = end
        return overflow

    @staticmethod
    def _parse_info(view: memoryview, pos: int, end: int, ev: _RawEvent) -> None:
        while pos + INFO_HEADER.size <= end:
            info_type, _, length = INFO_HEADER.unpack_from(view, pos)
            if length < INFO_HEADER.size:
                return
            record_end = pos + length
            if info_type in (INFO_DFID_NAME, INFO_DFID, INFO_OLD_DFID_NAME, INFO_NEW_DFID_NAME):
                fsid = bytes(view[pos + 4:pos + 12])
                handle_bytes, _ = HANDLE_HEADER.unpack_from(view, pos + 12)
                handle_end = pos + 12 + HANDLE_HEADER.size + handle_bytes
                handle = (fsid, bytes(view[pos + 12:handle_end]))
                name = bytes(view[handle_end:record_end]).split(b"\0", 1)[0]
                if name == b".":
                    name = b""   # an event on the directory itself
                if info_type == INFO_OLD_DFID_NAME:
                    ev.old_dir, ev.old_name = handle, name
                elif info_type == INFO_NEW_DFID_NAME or ev.dir is None:
                    ev.dir, ev.name = handle, name
            pos = record_end

    # --- handles to paths --------------------------------------------------

    def _resolve_all(self, batch: List[_RawEvent], paths: Dict[Handle, Optional[bytes]]) -> None:
        for ev in batch:
            for handle in (ev.dir, ev.old_dir):
                if handle is not None and handle not in paths:
                    paths[handle] = self._resolve(handle)

    def _resolve(self, handle: Handle) -> Optional[bytes]:
        """Current absolute path of a directory handle; None if it is gone."""
        mount_fd = self._mount_fds.get(handle[0])
        if mount_fd is None:
            return None   # a file system we did not mark (or skipped)
        buf = ctypes.create_string_buffer(handle[1], len(handle[1]))
        fd = self._libc.open_by_handle_at(mount_fd, buf, os.O_PATH | os.O_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            if code not in (errno.ESTALE, errno.ENOENT):
                log.warning("cannot resolve a directory handle: %s", os.strerror(code))
            return None
        try:
            path = os.readlink(b"/proc/self/fd/%d" % fd)
        except OSError:
            return None
        finally:
            os.close(fd)
        if not path.startswith(b"/") or (path.endswith(b" (deleted)") and not os.path.lexists(path)):
            return None
        return path

    # --- events to changes -------------------------------------------------

    def _translate(self, batch: List[_RawEvent],
                   paths: Dict[Handle, Optional[bytes]]) -> List[List[ChangeEvent]]:
        """Changes for each raw event; worked newest first to undo directory renames."""
        undo: List[Tuple[bytes, bytes]] = []   # (new, old) absolute, newest first
        out: List[List[ChangeEvent]] = []

        def at_event_time(handle: Optional[Handle]) -> Optional[bytes]:
            path = paths.get(handle) if handle is not None else None
            if path is None:
                return None
            for new, old in undo:
                if is_under(path, new):
                    path = old + path[len(new):]
            return path

        for ev in reversed(batch):
            parent = at_event_time(ev.dir)
            full = join(parent, ev.name) if parent is not None else None
            if ev.mask & FAN_RENAME:
                old_parent = at_event_time(ev.old_dir)
                old_full = join(old_parent, ev.old_name) if old_parent is not None else None
                out.append(self._rename(old_full, full))
                if ev.mask & FAN_ONDIR and old_full is not None and full is not None:
                    undo.append((full, old_full))
            else:
                out.append(self._change(ev.mask, full) if full is not None else [])
        out.reverse()
        return out

    def _rename(self, old_full: Optional[bytes], new_full: Optional[bytes]) -> List[ChangeEvent]:
        # An end in a directory that is already gone counts as outside: moved
        # into a deleted directory is deleted, out of one is new.
        old = self.relative(old_full) if old_full is not None else None
        new = self.relative(new_full) if new_full is not None else None
        if old == b"" or new == b"":
            log.warning("journal root %r was renamed or replaced", self.root)
            return [OVERFLOW_EVENT]
        if old is not None and new is not None:
            return [ChangeEvent(RENAMED, new, old)]
        if old is not None:
            return [ChangeEvent(DELETED, old)]
        if new is not None:
            return [ChangeEvent(CHANGED, new)]
        # Both ends outside the root, or in directories already gone (whose
        # deletion is reported on its own).
        return []

    def _change(self, mask: int, full: bytes) -> List[ChangeEvent]:
        rel = self.relative(full)
        if rel is None:
            return []
        if mask & GONE:
            if rel == b"":
                log.warning("journal root %r was deleted or moved away", self.root)
                return [OVERFLOW_EVENT]
            # The kernel merges events on one inode and name, so a delete may
            # hide an earlier or later create: say both, the caller looks.
            gone = [ChangeEvent(DELETED, rel)]
            return gone + [ChangeEvent(CHANGED, rel)] if mask & CONTENT_OR_META else gone
        return [ChangeEvent(CHANGED, rel)]
