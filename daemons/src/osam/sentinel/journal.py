"""Change journal: what changed under a replicated root since the last read.

After a full sync the sentinel keeps the replica current from this journal.
Two kernel back ends share one interface:

* fanotify (``journal_fanotify``): one mark per file system, no per-directory
  setup, can ignore the sentinel's own activity by pid. Needs CAP_SYS_ADMIN and
  Linux >= 5.9 (5.17 for single rename events).
* inotify (``journal_inotify``): a watch on every directory; works unprivileged
  and on old kernels.

Event contract (both back ends):

* paths are bytes relative to the root; ``b""`` is the root itself;
* ``changed``: look at this path. It may be a file, a directory (a new or
  moved-in directory must be walked), or gone again (treat as deleted);
* ``deleted``: the path and, for a directory, everything below it is gone;
* ``renamed``: ``old_path`` moved to ``path``; for a directory the whole subtree
  moves. If the caller does not hold ``old_path`` it treats this as ``changed``;
* ``overflow``: events were lost; the caller must do a verifying walk.

Events are in the order they happened, one batch per ``read_events`` call.
A batch is a history: a later ``renamed`` carries earlier changes along with
it and a later ``deleted`` cancels them. So a caller applies renames and
deletions to its pending paths, then looks at the file system once per batch,
never event by event (a directory's current contents belong to its current
name). Coalescing is the caller's job. Mounts appearing under the root after the
journal was opened are not watched.
"""
from __future__ import annotations

import abc
import ctypes
import errno
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional

from ..common.fsentry import is_under
from .walk import MOUNTINFO, read_mountinfo

log = logging.getLogger(__name__)

CHANGED = "changed"
DELETED = "deleted"
RENAMED = "renamed"
OVERFLOW = "overflow"

SkipDir = Callable[[bytes], bool]

# Errors that mean "fanotify cannot do this here": fall back to inotify.
FANOTIFY_UNAVAILABLE = frozenset({
    errno.EPERM, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
    errno.ENODEV, errno.EXDEV,
})


@dataclass(frozen=True)
class ChangeEvent:
    kind: str
    path: bytes
    old_path: Optional[bytes] = None


OVERFLOW_EVENT = ChangeEvent(OVERFLOW, b"")


class Journal(abc.ABC):
    """Common interface; use as a context manager or call ``close``."""

    backend = ""

    def __init__(self, root: bytes) -> None:
        self.root = root

    @abc.abstractmethod
    def fileno(self) -> int:
        """Readable when events are queued (for ``loop.add_reader``)."""

    @abc.abstractmethod
    def read_events(self) -> List[ChangeEvent]:
        """Drain what is queued without blocking."""

    @abc.abstractmethod
    def close(self) -> None:
        ...

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def relative(self, abspath: bytes) -> Optional[bytes]:
        """``abspath`` relative to the root, or None when outside it."""
        root = self.root
        if abspath == root:
            return b""
        prefix = root if root == b"/" else root + b"/"
        if abspath.startswith(prefix):
            return abspath[len(prefix):]
        return None


def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def raise_errno(what: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")


def mount_points_below(root: bytes, mountinfo: str = MOUNTINFO) -> List[bytes]:
    """Relative paths of the mount points strictly below ``root``, shallowest first."""
    prefix = root if root == b"/" else root + b"/"
    try:
        points = {m.mount_point for m in read_mountinfo(mountinfo)}
    except OSError:
        return []
    found = {p[len(prefix):] for p in points if p.startswith(prefix) and p != root}
    return sorted(found, key=lambda p: (p.count(b"/"), p))


def split_mounts(root: bytes, skip_dir: Optional[SkipDir]) -> "tuple[List[bytes], List[bytes]]":
    """(mount points to watch, mount points to keep off), both relative to root.

    A mount below a skipped one is skipped too, without asking.
    """
    watched: List[bytes] = []
    skipped: List[bytes] = []
    for rel in mount_points_below(root):
        if is_below_any(rel, skipped) or (skip_dir is not None and skip_dir(rel)):
            skipped.append(rel)
        else:
            watched.append(rel)
    return watched, skipped


def is_below_any(rel: bytes, prefixes: Iterable[bytes]) -> bool:
    return any(is_under(rel, p) for p in prefixes)


def join(parent: bytes, name: bytes) -> bytes:
    if not name:
        return parent
    if not parent:
        return name
    if parent.endswith(b"/"):
        return parent + name
    return parent + b"/" + name


def without_repeats(events: List[ChangeEvent]) -> List[ChangeEvent]:
    """Drop an event identical to the one just before it (write, write, close)."""
    out: List[ChangeEvent] = []
    for event in events:
        if not out or out[-1] != event:
            out.append(event)
    return out


def open_journal(root: bytes, *, prefer: str = "fanotify",
                 ignore_pids: Iterable[int] = (os.getpid(),),
                 skip_dir: Optional[SkipDir] = None) -> Journal:
    """Open a journal on ``root`` (bytes path of a directory).

    ``ignore_pids``: processes whose changes are not reported (fanotify only;
    inotify cannot tell who made a change). ``skip_dir(relpath)`` is asked about
    each mount point below the root; True keeps the journal off that file
    system and everything mounted below it.
    """
    if isinstance(root, str):
        root = os.fsencode(root)
    root = os.path.realpath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(errno.ENOTDIR, "journal root is not a directory", root)
    if prefer not in ("fanotify", "inotify"):
        raise ValueError(f"unknown journal backend {prefer!r}")
    if prefer == "fanotify":
        from .journal_fanotify import FanotifyJournal
        try:
            return FanotifyJournal(root, ignore_pids=ignore_pids, skip_dir=skip_dir)
        except OSError as exc:
            if exc.errno not in FANOTIFY_UNAVAILABLE:
                raise
            log.info("fanotify unavailable (%s); using inotify", exc)
    from .journal_inotify import InotifyJournal
    return InotifyJournal(root, skip_dir=skip_dir)
