"""What changed since it was last sent, kept the way the change journal's history must be
read: renames in the order they happened, and the paths to look at again, each with the time
it was first seen (for the lag). A path is looked at once per batch, whatever happened to it."""
from __future__ import annotations

import asyncio
import logging
from typing import Dict, List, Set, Tuple

from ..common.fsentry import is_under
from .journal import ChangeEvent

log = logging.getLogger("osam.sentinel.changes")


def parent_of(path: bytes) -> bytes:
    return path.rpartition(b"/")[0]


class ChangeSet:
    def __init__(self):
        self.dirty: Dict[bytes, float] = {}        # path -> monotonic time first seen
        self.renames: List[Tuple[bytes, bytes, float]] = []
        self.deferred: Dict[bytes, float] = {}     # excluded paths changed during continuous sync
        self.new_subtrees: Set[bytes] = set()      # renamed-in directories the replica lacks
        self.needs_verify = True                   # a new process has not watched the past
        self.changed = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self.dirty or self.renames)

    def mark(self, path: bytes, now: float) -> None:
        """`path` changed; so did its directory (its mtime, when it was created or removed)."""
        self.dirty.setdefault(path, now)
        if path:
            self.dirty.setdefault(parent_of(path), now)

    def record(self, ev: ChangeEvent, now: float) -> None:
        if ev.kind == "overflow":
            log.warning("change journal lost events; a verifying walk follows")
            self.needs_verify = True
            self.changed.set()
        elif ev.kind == "renamed":
            self.renames.append((ev.old_path, ev.path, now))
            # Changes queued under the old name belong to the new one now.
            for p in [p for p in self.dirty if is_under(p, ev.old_path)]:
                self.dirty.setdefault(ev.path + p[len(ev.old_path):], self.dirty.pop(p))
            # The entry itself travels as a rename; its old and new directories changed.
            self.dirty.setdefault(parent_of(ev.old_path), now)
            self.dirty.setdefault(parent_of(ev.path), now)
        else:
            self.mark(ev.path, now)

    def moved_name(self, path: bytes):
        """Where renames not yet sent move `path` to, or None when none covers it."""
        name = path
        for old, new, _ in self.renames:
            if is_under(name, old):
                name = new + name[len(old):]
        return name if name != path else None

    def oldest(self):
        """When the oldest change still waiting was first seen, or None."""
        return min(list(self.dirty.values()) + [t for _, _, t in self.renames], default=None)
