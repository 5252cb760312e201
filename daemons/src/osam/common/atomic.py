"""Durable small-file writes: a reader sees either the old file or the whole new one, never
a torn mix, even if the process or the machine dies half-way (temp + fsync + rename +
fsync of the directory, as borg's SaveFile does)."""
from __future__ import annotations

import os
import tempfile
from typing import Union

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

TEMP_SUFFIX = ".tmp"


def fsync_dir(path: PathLike) -> None:
    """Make a directory's entries (a created, renamed or removed name) durable."""
    if not hasattr(os, "O_DIRECTORY"):
        return  # Windows: a directory cannot be opened to sync; NTFS journals the rename itself
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_prefix(path: PathLike) -> str:
    """Prefix of the temp files atomic_write leaves beside `path` while it writes."""
    return "." + os.path.basename(os.fsdecode(path)) + "."


def atomic_write(path: PathLike, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically and durably; the file gets `mode`."""
    target = os.fsdecode(path)
    directory = os.path.dirname(target) or "."
    fd, temp = tempfile.mkstemp(dir=directory, prefix=temp_prefix(target), suffix=TEMP_SUFFIX)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    # The rename itself is only durable once the directory is.
    fsync_dir(directory)
