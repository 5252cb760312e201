"""Turns file-system entries into data-channel messages: whole files with their holes skipped,
or, for large files the replica already has, only the blocks whose hash changed."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import xxhash

from ..common.fsentry import FsEntry
from ..protocol import Entry, FileData, FileEnd, FileHole
from .reader import data_ranges

BLOCK = 1 << 20
# Files from this size keep per-block hashes in the index so a later change travels as a delta.
DELTA_MIN = 4 << 20
DIGEST = 8
ZERO_BLOCK = bytes(BLOCK)
ZERO_HASH = xxhash.xxh3_64_digest(ZERO_BLOCK)


def entry_message(e: FsEntry, base: Optional[Tuple[int, int]] = None) -> Entry:
    base_size, base_mtime = base if base else (-1, 0)
    return Entry(e.path, e.kind, e.mode, e.uid, e.gid, e.mtime_ns, e.size, e.rdev, e.target,
                 [tuple(x) for x in e.xattrs], base_size, base_mtime)


def _pieces_by_block(ranges, size: int) -> Dict[int, List[Tuple[int, int]]]:
    """Block number -> the (start, end) data pieces inside it; blocks that are all hole are absent."""
    pieces: Dict[int, List[Tuple[int, int]]] = {}
    for start, length in ranges:
        end = min(start + length, size)
        b = start // BLOCK
        while b * BLOCK < end:
            pieces.setdefault(b, []).append((max(start, b * BLOCK), min(end, (b + 1) * BLOCK)))
            b += 1
    return pieces


class FileSender:
    """Yields the messages for one regular file; `hashes` holds its block digests afterwards
    (for files of DELTA_MIN or more), `data_bytes` what was read and sent."""

    def __init__(self, fd: int, entry: FsEntry, *, old_hashes: Optional[bytes] = None,
                 base: Optional[Tuple[int, int]] = None, allocated: Optional[int] = None):
        self.fd, self.entry = fd, entry
        # A file with as many bytes allocated as it is long has no holes: no need to ask.
        self.dense = allocated is not None and allocated >= entry.size
        self.delta = old_hashes is not None and base is not None
        self.old_hashes = old_hashes or b""
        self.base = base if self.delta else None
        self.keep_hashes = entry.size >= DELTA_MIN
        self.hashes: Optional[bytes] = None
        self.data_bytes = 0

    def messages(self):
        e, fd, size = self.entry, self.fd, self.entry.size
        yield entry_message(e, self.base)
        ranges = [(0, size)] if self.dense and size else data_ranges(fd, size)
        pieces = _pieces_by_block(ranges, size)
        track = self.keep_hashes or self.delta
        digests = bytearray()
        for b in range((size + BLOCK - 1) // BLOCK) if track else sorted(pieces):
            off = b * BLOCK
            n = min(BLOCK, size - off)
            ps = pieces.get(b, ())
            # A file that shrinks while read yields short blocks: the entry's size holds
            # (the tail becomes a hole) and the journal sends the file again.
            block = os.pread(fd, n, off) if ps else None
            if track:
                if block:
                    digests += xxhash.xxh3_64_digest(block)
                else:
                    digests += ZERO_HASH if n == BLOCK else xxhash.xxh3_64_digest(ZERO_BLOCK[:n])
                if self.delta:
                    if self.old_hashes[b * DIGEST:(b + 1) * DIGEST] == digests[-DIGEST:]:
                        continue
                    # The base may hold data where this block now has holes.
                    pos = off
                    for lo, hi in ps:
                        if lo > pos:
                            yield FileHole(pos, lo - pos)
                        pos = hi
                    if pos < off + n:
                        yield FileHole(pos, off + n - pos)
            for lo, hi in ps:
                data = block[lo - off:hi - off]
                if data:
                    self.data_bytes += len(data)
                    yield FileData(lo, data)
        self.hashes = bytes(digests) if self.keep_hashes else None
        yield FileEnd(True)
