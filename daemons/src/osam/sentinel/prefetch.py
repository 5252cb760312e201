"""Reads and encodes small files on a few threads ahead of the walk. On a cold cache the latency
of opening and reading many small files, not bandwidth, bounds a full sync; pread, xxhash and
lz4 release the GIL, so the threads overlap all three with the main loop's work."""
from __future__ import annotations

import asyncio
import errno
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, NamedTuple, Optional

from ..common.fsentry import FsEntry
from .sender import DELTA_MIN, FileSender

PREFETCH_MAX = DELTA_MIN   # larger files stream from the main loop, block by block
WORKERS = 4


class Encoded(NamedTuple):
    frames: List[bytes]
    data_bytes: int
    hashes: Optional[bytes]


_GONE = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR)


def open_for_read(path: bytes) -> Optional[int]:
    """A read-only fd that does not follow a final symlink; None when the file is gone or was
    replaced since the walk (the journal reports what came instead)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    for extra in (os.O_NOATIME, 0):
        try:
            return os.open(path, flags | extra)
        except OSError as exc:
            if exc.errno == errno.EPERM and extra:  # O_NOATIME on a file we do not own
                continue
            if exc.errno in _GONE:
                return None
            raise
    return None


def encode_file(path: bytes, entry: FsEntry, allocated: int, compress: bool) -> Optional[Encoded]:
    fd = open_for_read(path)
    if fd is None:
        return None
    try:
        sender = FileSender(fd, entry, allocated=allocated)
        frames = [m.encode(compress) for m in sender.messages()]
    finally:
        os.close(fd)
    return Encoded(frames, sender.data_bytes, sender.hashes)


def encode_batch(root: bytes, items, compress: bool) -> List[Optional[Encoded]]:
    return [encode_file(os.path.join(root, entry.path), entry, allocated, compress) for entry, allocated in items]


class Slot:
    """One file's place in a batch; `await slot.result()` gives its Encoded (None: vanished)."""

    __slots__ = ("prefetcher", "future", "index")

    def __init__(self, prefetcher: "Prefetcher"):
        self.prefetcher, self.future, self.index = prefetcher, None, 0

    async def result(self) -> Optional[Encoded]:
        if self.future is None:
            self.prefetcher.flush()
        return (await self.future)[self.index]

    def cancel(self) -> None:
        if self.future is not None:
            self.future.cancel()


class Prefetcher:
    """Files go to the threads in batches: one hand-over per batch, not per file, keeps the
    threads and the event loop from taking turns at the GIL for every small file."""

    BATCH_FILES = 32
    BATCH_BYTES = 1 << 20

    def __init__(self, root: bytes, workers: int = WORKERS):
        self.root = root
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="osam-read")
        self.compress = True
        self._items: list = []
        self._slots: List[Slot] = []
        self._bytes = 0

    @staticmethod
    def wants(entry: FsEntry, st) -> bool:
        return st.st_nlink == 1 and entry.size < PREFETCH_MAX

    def add(self, entry: FsEntry, st) -> Slot:
        slot = Slot(self)
        self._items.append((entry, st.st_blocks * 512))
        self._slots.append(slot)
        self._bytes += entry.size
        if len(self._items) >= self.BATCH_FILES or self._bytes >= self.BATCH_BYTES:
            self.flush()
        return slot

    def flush(self) -> None:
        if not self._items:
            return
        future = asyncio.get_running_loop().run_in_executor(
            self.pool, encode_batch, self.root, self._items, self.compress)
        for i, slot in enumerate(self._slots):
            slot.future, slot.index = future, i
        self._items, self._slots, self._bytes = [], [], 0

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
