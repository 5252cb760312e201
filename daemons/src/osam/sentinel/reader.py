"""Where a regular file holds data: its holes are never read, and stay holes on the replica."""
from __future__ import annotations

import errno
import os
from typing import Iterator, Tuple

Range = Tuple[int, int]  # (offset, length)

# SEEK_DATA/SEEK_HOLE unsupported by this file system (or by the platform).
_NO_SEEK_DATA_ERRNOS = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}
_SEEK_DATA = getattr(os, "SEEK_DATA", None)
_SEEK_HOLE = getattr(os, "SEEK_HOLE", None)


def data_ranges(fd: int, size: int) -> Iterator[Range]:
    """The (offset, length) ranges of `fd` that hold data, within the first `size` bytes.

    File systems without SEEK_DATA yield one range covering everything; the kernel's generic
    fallback does the same for file systems that do not track holes."""
    if size <= 0:
        return
    if _SEEK_DATA is None:
        yield 0, size
        return
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, _SEEK_DATA)
            end = min(os.lseek(fd, start, _SEEK_HOLE), size) if start < size else size
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole (or EOF, the file shrank) from here on
                return
            if exc.errno in _NO_SEEK_DATA_ERRNOS and offset == 0:
                yield 0, size
                return
            raise
        if start >= size:
            return
        yield start, end - start
        offset = end
