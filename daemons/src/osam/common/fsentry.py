"""One file-system entry as replication sees it: what the sentinel reads, the wire carries
and the receiver applies. Paths are bytes relative to the replicated root (never starting
with "/"), so names that are not valid UTF-8 survive unchanged."""
from __future__ import annotations

import dataclasses
from typing import List, Tuple

# Entry kinds: one letter each, as `find -printf %y` spells them.
REGULAR, DIRECTORY, SYMLINK, FIFO, CHARDEV, BLOCKDEV, SOCKET = "f", "d", "l", "p", "c", "b", "s"
KINDS = (REGULAR, DIRECTORY, SYMLINK, FIFO, CHARDEV, BLOCKDEV, SOCKET)


@dataclasses.dataclass
class FsEntry:
    path: bytes                 # relative to the root, b"" is the root itself
    kind: str                   # one of KINDS
    mode: int                   # permission bits incl. setuid/setgid/sticky (st_mode & 0o7777)
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0               # regular files: st_size (apparent size, holes included)
    rdev: int = 0               # device nodes
    target: bytes = b""         # symlinks: the link's target, never followed
    xattrs: List[Tuple[bytes, bytes]] = dataclasses.field(default_factory=list)  # incl. system.posix_acl_*, security.*


def is_under(path: bytes, top: bytes) -> bool:
    """`path` is `top` or lies below it (both relative, as entries name them)."""
    return path == top or path.startswith(top + b"/")
