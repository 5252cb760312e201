"""Whole-disk scans at disk speed: read a disk (a device, an image file, or either with some
byte ranges taken from a volume snapshot) in large aligned chunks on one thread while the
caller's thread hashes the chunk before, so reading never waits for hashing.

Every fixed-size block gets an xxh3-128 digest (about 20 GB/s per core here, four times
BLAKE3: bench/block_scan.py measures both) and a flag telling whether it is all zeros. The
sentinel compares digests with what the replica acknowledged; the receiver uses the same
scan to check its images against the sentinel's final manifest.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import threading
from typing import Callable, Iterator, List, Optional, Sequence

import xxhash

DIGEST_SIZE = 16
DEFAULT_BLOCK = 1 << 20
CHUNK = 8 << 20          # one read: large enough for full disk throughput, aligned for raw devices
DEPTH = 4                # chunks read ahead of the hasher
SECTOR = 4096            # raw Windows disks take only sector-aligned offsets and lengths


def digest(data) -> bytes:
    return xxhash.xxh3_128_digest(data)


_ZERO_DIGESTS: dict = {}
_ZEROS: dict = {}


def zero_digest(length: int) -> bytes:
    """The digest of `length` zero bytes (cached: a disk has at most two block lengths)."""
    d = _ZERO_DIGESTS.get(length)
    if d is None:
        d = _ZERO_DIGESTS[length] = digest(bytes(length))
    return d


def _zeros(length: int) -> bytes:
    z = _ZEROS.get(length)
    if z is None:
        z = _ZEROS[length] = bytes(length)
    return z


def valid_block_size(size: int) -> bool:
    """A power of two from 64 KiB to 4 MiB: a block travels as one frame (8 MiB at most)."""
    return 64 << 10 <= size <= 4 << 20 and size & (size - 1) == 0


@dataclasses.dataclass(frozen=True)
class Overlay:
    """Bytes [offset, offset + length) of the disk come from `path` (from its start): a volume
    snapshot standing in for the partition it was taken of."""
    offset: int
    length: int
    path: str


class DiskSource:
    """A disk to read by offset. Not thread-safe: one scan at a time."""

    def __init__(self, name: str, path: str, size: Optional[int] = None, overlays: Sequence[Overlay] = ()):
        self.name, self.path = name, path
        self.overlays = sorted(overlays, key=lambda o: o.offset)
        self._fds: dict = {}
        self.size = size if size is not None else self._measure()
        for a, b in zip(self.overlays, self.overlays[1:]):
            if a.offset + a.length > b.offset:
                raise ValueError(f"{name}: overlays {a.path} and {b.path} overlap")

    def _measure(self) -> int:
        fd = self._fd(self.path)
        size = os.lseek(fd, 0, os.SEEK_END)   # block devices and files alike
        return size

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
            # No POSIX_FADV_SEQUENTIAL: 8 MiB reads drive the readahead on their own, and the
            # doubled window made a cold scan 15% slower on a virtio disk (bench/block_scan.py).
            fd = self._fds[path] = os.open(path, flags)
        return fd

    def read_into(self, view: memoryview, offset: int) -> int:
        """Fill `view` from `offset`; fewer bytes only at the end of the disk."""
        want = min(len(view), self.size - offset)
        done = 0
        while done < want:
            pos = offset + done
            path, base, limit = self.path, 0, want - done
            for o in self.overlays:
                if o.offset <= pos < o.offset + o.length:
                    path, base, limit = o.path, o.offset, min(limit, o.offset + o.length - pos)
                    break
                if pos < o.offset:
                    limit = min(limit, o.offset - pos)
                    break
            n = _pread_into(self._fd(path), view[done:done + limit], pos - base)
            if n == 0 and path != self.path:
                # A snapshot device can be a little shorter than its partition: the rest is
                # outside the volume's file system, read it from the disk itself.
                n = _pread_into(self._fd(self.path), view[done:done + limit], pos)
            if n == 0:
                raise OSError(f"{path}: unexpected end of data at {pos - base} while reading disk {self.name}")
            done += n
        return done

    def forget(self, offset: int, length: int) -> None:
        """The scan is past these bytes: leave the page cache to the guest's own work."""
        if hasattr(os, "posix_fadvise"):
            for path, fd in self._fds.items():
                if path == self.path:
                    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    os.lseek(fd, offset, os.SEEK_SET)   # Windows: no positional reads in os
    data = os.read(fd, len(view))
    view[:len(data)] = data
    return len(data)


@dataclasses.dataclass
class ScannedChunk:
    offset: int                 # where the chunk starts on the disk (a multiple of the block size)
    data: memoryview            # the chunk's bytes, valid until release()
    block_size: int
    digests: List[bytes]        # one per block
    zero: List[bool]            # the block is all zeros
    _release: Optional[Callable[[], None]] = None

    def block(self, i: int) -> memoryview:
        return self.data[i * self.block_size:(i + 1) * self.block_size]

    def release(self) -> None:
        """Hand the buffer back to the reader; `data` must not be used afterwards."""
        if self._release is not None:
            self._release()
            self._release = None


class ScanStopped(Exception):
    pass


class BlockScanner:
    """Scans one DiskSource. `chunks()` yields ScannedChunks in disk order; each must be
    released (its buffer is reused). `stop()` from any thread ends the scan early."""

    def __init__(self, source: DiskSource, block_size: int = DEFAULT_BLOCK, chunk_size: int = CHUNK,
                 depth: int = DEPTH, forget: bool = True):
        if chunk_size % block_size or block_size % SECTOR:
            raise ValueError("the chunk size must be a multiple of the block size, itself a multiple of 4 KiB")
        self.source, self.block_size, self.chunk_size = source, block_size, chunk_size
        self.depth, self.forget = depth, forget
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def chunks(self, start: int = 0) -> Iterator[ScannedChunk]:
        start -= start % self.block_size
        free: "queue.Queue[bytearray]" = queue.Queue()
        for _ in range(self.depth):
            free.put(bytearray(self.chunk_size))
        ready: "queue.Queue[object]" = queue.Queue()
        reader = threading.Thread(target=self._read, args=(start, free, ready), name="osam-disk-read", daemon=True)
        reader.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                offset, buf, n = item
                yield self._hash(offset, buf, n, free)
        finally:
            self._stopped.set()
            # Unblock the reader if it waits for a buffer, then let it finish.
            free.put(bytearray(0))
            reader.join()

    def _read(self, offset: int, free: "queue.Queue[bytearray]", ready: "queue.Queue[object]") -> None:
        try:
            while offset < self.source.size and not self._stopped.is_set():
                buf = free.get()
                if self._stopped.is_set() or not buf:
                    break
                n = self.source.read_into(memoryview(buf), offset)
                if self.forget:
                    # The bytes are in our buffer now: drop the cached pages at once, on this
                    # thread, rather than after hashing from the other one (that raced with the
                    # readahead here and cost ~10% of a cold scan).
                    self.source.forget(offset, n)
                ready.put((offset, buf, n))
                offset += n
            ready.put(None if not self._stopped.is_set() else ScanStopped("scan stopped"))
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            ready.put(exc)

    def _hash(self, offset: int, buf: bytearray, n: int, free: "queue.Queue[bytearray]") -> ScannedChunk:
        view = memoryview(buf)[:n]
        bs = self.block_size
        digests, zero = [], []
        for pos in range(0, n, bs):
            block = view[pos:pos + bs]
            d = digest(block)
            digests.append(d)
            # A zero digest is confirmed byte for byte: a hole must never stand for data. In
            # place (a memcmp): copying the block out cost 25 times its hash, holding the GIL.
            zero.append(d == zero_digest(len(block)) and buf.startswith(_zeros(len(block)), pos, pos + len(block)))
        def release() -> None:
            free.put(buf)
        return ScannedChunk(offset, view, bs, digests, zero, release)
