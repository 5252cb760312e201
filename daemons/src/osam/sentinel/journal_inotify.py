"""inotify change journal: a watch on every directory below the root.

inotify cannot tell who made a change, so the sentinel's own activity is
reported too. That is harmless: the sentinel only reads, and reads emit
IN_ACCESS / IN_OPEN / IN_CLOSE_NOWRITE, none of which is subscribed.

Watches follow inodes, so a renamed directory keeps its watches and only the
wd -> path map is rewritten. A directory that appears (mkdir, moved in) gets
its watches as soon as its event is read; anything created in it before that
is found by listing it, and reported as changed.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
from typing import Dict, List, Optional, Set

from ..common.fsentry import is_under
from .journal import (
    CHANGED, DELETED, OVERFLOW_EVENT, RENAMED, ChangeEvent, Journal, SkipDir,
    is_below_any, join, libc, raise_errno, split_mounts, without_repeats,
)

log = logging.getLogger(__name__)

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE
              | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
              | IN_DONT_FOLLOW | IN_ONLYDIR | IN_EXCL_UNLINK)
CHANGE_BITS = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE

EVENT_HEADER = struct.Struct("=iIII")   # wd mask cookie len
READ_SIZE = 256 * 1024
MAX_EVENTS_PER_READ = 65536


class InotifyJournal(Journal):
    backend = "inotify"

    def __init__(self, root: bytes, *, skip_dir: Optional[SkipDir] = None) -> None:
        super().__init__(root)
        self._libc = libc()
        self._libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise_errno("inotify_init1")
        self._path_of: Dict[int, bytes] = {}   # wd -> directory, relative to root
        self._wd_of: Dict[bytes, int] = {}
        self._limit_warned = False
        _, self.skipped_mounts = split_mounts(root, skip_dir)
        try:
            lost: List[ChangeEvent] = []
            self._watch_tree(b"", lost, report=False)
            if b"" not in self._wd_of:
                raise_errno(f"inotify_add_watch {os.fsdecode(root)}")
        except BaseException:
            self.close()
            raise
        self._startup = lost   # an overflow if the watch limit was already hit

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def watch_count(self) -> int:
        return len(self._wd_of)

    # --- watches -----------------------------------------------------------

    def _watch_tree(self, rel: bytes, out: List[ChangeEvent], report: bool) -> None:
        """Watch ``rel`` and every directory below it; report what is in them if asked.

        The watch goes on before the listing, so an entry is either listed or
        shows up as an event (possibly both).
        """
        stack = [rel]
        while stack:
            current = stack.pop()
            if is_below_any(current, self.skipped_mounts) and current:
                continue
            if not self._add_watch(current, out):
                continue
            try:
                entries = list(os.scandir(join(self.root, current) if current else self.root))
            except OSError:
                continue   # gone or replaced again; its own events say so
            for entry in entries:
                child = join(current, entry.name)
                if report:
                    out.append(ChangeEvent(CHANGED, child))
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(child)
                except OSError:
                    pass

    def _add_watch(self, rel: bytes, out: List[ChangeEvent]) -> bool:
        path = join(self.root, rel) if rel else self.root
        wd = self._libc.inotify_add_watch(self._fd, path, WATCH_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code == errno.ENOSPC:
                if not self._limit_warned:
                    log.warning("inotify watch limit reached (fs.inotify.max_user_watches); "
                                "changes below %r will need a verifying walk", path)
                    self._limit_warned = True
                out.append(OVERFLOW_EVENT)
            return False
        stale = self._path_of.get(wd)
        if stale is not None and self._wd_of.get(stale) == wd:
            del self._wd_of[stale]
        self._path_of[wd] = rel
        self._wd_of[rel] = wd
        return True

    def _unwatch_tree(self, rel: bytes) -> None:
        for path in [p for p in self._wd_of if is_under(p, rel)]:
            wd = self._wd_of.pop(path)
            self._path_of.pop(wd, None)
            self._libc.inotify_rm_watch(self._fd, wd)

    def _move_tree(self, old: bytes, new: bytes) -> None:
        self._unwatch_paths_at(new)
        moved = [p for p in self._wd_of if is_under(p, old)]
        for path in moved:
            wd = self._wd_of.pop(path)
            target = new + path[len(old):]
            self._wd_of[target] = wd
            self._path_of[wd] = target

    def _check_moved_dir(self, rel: bytes, out: List[ChangeEvent]) -> None:
        """Make sure the directory now at ``rel`` is the one whose watches moved there.

        Watches are added when an event is read, not when it happened: a
        directory created and renamed before we looked was never watched, and
        one created, renamed and created again got the watch of the second.
        """
        path = join(self.root, rel)
        wd = self._libc.inotify_add_watch(self._fd, path, WATCH_MASK)
        if wd < 0 or self._wd_of.get(rel) == wd:
            return   # gone again (its own events follow), or consistent
        if rel in self._wd_of:
            # What the replica got under the old name may belong elsewhere.
            out.append(ChangeEvent(DELETED, rel))
            out.append(ChangeEvent(CHANGED, rel))
            self._unwatch_paths_at(rel)
        self._watch_tree(rel, out, report=True)

    def _unwatch_paths_at(self, rel: bytes) -> None:
        # A directory replaced by a rename: its watches are gone with it.
        for path in [p for p in self._wd_of if is_under(p, rel)]:
            self._path_of.pop(self._wd_of.pop(path), None)

    # --- reading -----------------------------------------------------------

    def read_events(self) -> List[ChangeEvent]:
        out, self._startup = self._startup, []
        raw = self._drain()
        if raw and raw[-1][1] & IN_MOVED_FROM:
            raw.extend(self._drain())   # the matching IN_MOVED_TO may be right behind
        destinations: Set[int] = {cookie for _, mask, cookie, _ in raw if mask & IN_MOVED_TO}
        moving: Dict[int, bytes] = {}   # cookie -> old relative path
        for wd, mask, cookie, name in raw:
            self._apply(wd, mask, cookie, name, destinations, moving, out)
        return without_repeats(out)

    def _drain(self) -> List[tuple]:
        events: List[tuple] = []
        while len(events) < MAX_EVENTS_PER_READ:
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                break
            if not data:
                break
            offset = 0
            while offset + EVENT_HEADER.size <= len(data):
                wd, mask, cookie, length = EVENT_HEADER.unpack_from(data, offset)
                start = offset + EVENT_HEADER.size
                name = data[start:start + length].split(b"\0", 1)[0]
                events.append((wd, mask, cookie, name))
                offset = start + length
        return events

    def _apply(self, wd: int, mask: int, cookie: int, name: bytes,
               destinations: Set[int], moving: Dict[int, bytes], out: List[ChangeEvent]) -> None:
        if mask & IN_Q_OVERFLOW:
            out.append(OVERFLOW_EVENT)
            return
        parent = self._path_of.get(wd)
        if mask & IN_IGNORED:
            if parent is not None:
                self._path_of.pop(wd, None)
                if self._wd_of.get(parent) == wd:
                    del self._wd_of[parent]
            return
        if parent is None:
            return   # a watch already removed
        if not name:
            self._apply_self(parent, mask, out)
            return
        rel = join(parent, name)
        is_dir = bool(mask & IN_ISDIR)
        if mask & IN_MOVED_FROM:
            if cookie in destinations:
                moving[cookie] = rel
                return
            out.append(ChangeEvent(DELETED, rel))
            if is_dir:
                self._unwatch_tree(rel)
        elif mask & IN_MOVED_TO:
            old = moving.pop(cookie, None)
            if old is not None:
                out.append(ChangeEvent(RENAMED, rel, old))
                if is_dir:
                    self._move_tree(old, rel)
                    self._check_moved_dir(rel, out)
                else:
                    self._unwatch_paths_at(rel)
            else:
                out.append(ChangeEvent(CHANGED, rel))
                if is_dir:
                    self._watch_tree(rel, out, report=True)
        elif mask & IN_DELETE:
            out.append(ChangeEvent(DELETED, rel))
        elif mask & CHANGE_BITS:
            out.append(ChangeEvent(CHANGED, rel))
            if is_dir and mask & IN_CREATE:
                self._watch_tree(rel, out, report=True)

    def _apply_self(self, rel: bytes, mask: int, out: List[ChangeEvent]) -> None:
        """An event about a watched directory itself."""
        if rel == b"" and mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
            log.warning("journal root %r was deleted, moved or unmounted", self.root)
            out.append(OVERFLOW_EVENT)
        elif mask & IN_UNMOUNT:
            out.append(OVERFLOW_EVENT)
        elif mask & CHANGE_BITS:
            out.append(ChangeEvent(CHANGED, rel))
        # IN_DELETE_SELF / IN_MOVE_SELF of a subdirectory: its parent reports it.
