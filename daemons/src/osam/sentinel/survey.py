"""A quick survey of the tree on a few threads, beside a full sync: it gives the totals that
progress and ETA need, and, running ahead of the sender's walk in roughly the same order, it
pulls inodes into the cache so the walk's lstat and listxattr calls do not wait on the disk
one at a time."""
from __future__ import annotations

import os
import stat
import threading
from typing import Callable, List, Tuple

THREADS = 4


def totals_from_file_systems(root: bytes, local_mounts) -> Tuple[int, int]:
    """(entries, bytes in use) of the file systems mounted at `root` and at each local mount
    below it, from statvfs: instant, where a survey would walk everything a second time."""
    entries = used = 0
    for rel in (b"",) + tuple(local_mounts):
        st = os.statvfs(os.path.join(root, rel) if rel else root)
        entries += st.f_files - st.f_ffree
        used += (st.f_blocks - st.f_bfree) * st.f_frsize
    return entries, used


def survey(root: bytes, is_foreign_mount: Callable[[bytes], bool], threads: int = THREADS) -> Tuple[int, int]:
    """(entries, bytes of data) below root, the root included; unreadable parts are skipped."""
    todo: List[bytes] = [b""]
    cond = threading.Condition()
    busy = [0]
    totals = [1, 0]
    linked = set()   # (dev, ino) of files with several names: their data travels once

    def visit(rel: bytes) -> List[bytes]:
        files = size = 0
        subdirs = []
        try:
            with os.scandir(os.path.join(root, rel) if rel else root) as it:
                entries = sorted(it, key=lambda de: de.name)
            for de in entries:
                files += 1
                st = de.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    if st.st_nlink > 1:
                        with cond:
                            if (st.st_dev, st.st_ino) in linked:
                                continue
                            linked.add((st.st_dev, st.st_ino))
                    size += min(st.st_size, st.st_blocks * 512)
                elif stat.S_ISDIR(st.st_mode):
                    child = rel + b"/" + de.name if rel else de.name
                    if not is_foreign_mount(child):
                        subdirs.append(child)
        except OSError:
            pass
        with cond:
            totals[0] += files
            totals[1] += size
        return subdirs

    def worker() -> None:
        while True:
            with cond:
                while not todo and busy[0]:
                    cond.wait()
                if not todo:
                    cond.notify_all()
                    return
                rel = todo.pop()
                busy[0] += 1
            subdirs = visit(rel)
            with cond:
                todo.extend(reversed(subdirs))  # lowest names next: the sender's walk order
                busy[0] -= 1
                cond.notify_all()

    workers = [threading.Thread(target=worker, name="osam-survey", daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return totals[0], totals[1]
