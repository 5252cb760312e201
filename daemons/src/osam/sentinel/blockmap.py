"""What the replica has acknowledged of each disk in block mode: one xxh3-128 digest per block,
kept durably in the sentinel's state (`STATE/blocks/NAME.map`).

A map file is a 64-byte header (magic, version, disk size, block size) and one 16-byte record
per block; a record of zeros means "not known to the replica", so a new map is a sparse file.
Records are written in place, only after the receiver has made the blocks durable, and then
fsynced. That is safe without a copy of the file: each record is true on its own, so any
subset of one batch of writes surviving a crash is a true map, and a torn record (it cannot
cross a 512-byte sector) only makes its block be sent again. A header that does not match
the disk (resized, another block size) starts the map over: everything is sent again.

Beside it, `NAME.sub` holds for each block the xxh3-64 digests of its SUB_BLOCK pieces as the
replica has them, so a block that changed sends only the pieces that did (a 4 KiB write costs
16 KiB, not the whole block). It is read piecemeal, never loaded (0.05% of the disk), and
written before the map: a crash between the two leaves pieces that describe the replica and
a record one step older, which only makes a block be compared again.
"""
from __future__ import annotations

import os
import re
import struct
from typing import Dict, Iterable, List, Optional, Tuple

import xxhash

from ..common.atomic import atomic_write
from ..common.blockscan import DIGEST_SIZE

MAGIC = b"OSAMBMAP"
VERSION = 1
HEADER = struct.Struct("<8sIQI")
HEADER_SIZE = 64
UNKNOWN = bytes(DIGEST_SIZE)
SUB_BLOCK = 16 << 10
SUB_DIGEST = 8
# A block's record as the data link hands it over: (digest, piece digests or None for unknown).
Record = Tuple[bytes, Optional[bytes]]


def piece_digests(block) -> bytes:
    """The xxh3-64 digests of a block's SUB_BLOCK pieces (the last may be short)."""
    view = memoryview(block)
    return b"".join(xxhash.xxh3_64_digest(view[i:i + SUB_BLOCK]) for i in range(0, len(view), SUB_BLOCK))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def blocks_of(size: int, block_size: int) -> int:
    return (size + block_size - 1) // block_size


class BlockMap:
    def __init__(self, path: str, size: int, block_size: int):
        self.path, self.size, self.block_size = path, size, block_size
        self.sub_path = path[:-len(".map")] + ".sub" if path.endswith(".map") else path + ".sub"
        self.count = blocks_of(size, block_size)
        self.pieces = (block_size + SUB_BLOCK - 1) // SUB_BLOCK
        self.records = bytearray(self.count * DIGEST_SIZE)
        if not self._load():
            self.clear()

    def _header(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.size, self.block_size).ljust(HEADER_SIZE, b"\0")

    def _sub_header(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.size, SUB_BLOCK).ljust(HEADER_SIZE, b"\0")

    def _load(self) -> bool:
        try:
            with open(self.sub_path, "rb") as f:
                if f.read(HEADER_SIZE) != self._sub_header():
                    return False
            with open(self.path, "rb") as f:
                if f.read(HEADER_SIZE) != self._header():
                    return False
                n = f.readinto(self.records)
        except FileNotFoundError:
            return False
        # A map shorter than its disk (records never written are sparse) reads as unknown there.
        self.records[n:] = bytes(len(self.records) - n)
        return True

    def clear(self) -> None:
        """Forget everything: the replica is new (a full sync from the start)."""
        self.records[:] = bytes(len(self.records))
        for path, header, size in ((self.sub_path, self._sub_header(), self.count * self.pieces * SUB_DIGEST),
                                   (self.path, self._header(), len(self.records))):
            atomic_write(path, header)
            os.truncate(path, HEADER_SIZE + size)

    def get(self, block: int) -> bytes:
        return bytes(self.records[block * DIGEST_SIZE:(block + 1) * DIGEST_SIZE])

    def pieces_of(self, block: int) -> Optional[bytes]:
        """The piece digests the replica has for this block; None when not known."""
        if self.get(block) == UNKNOWN:
            return None
        length = self.pieces * SUB_DIGEST
        fd = os.open(self.sub_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.lseek(fd, HEADER_SIZE + block * length, os.SEEK_SET)
            data = os.read(fd, length)
        finally:
            os.close(fd)
        return data if len(data) == length and data != bytes(length) else None

    def forget(self, blocks: Iterable[int]) -> None:
        """The replica's copy of these blocks is not known (its check found them different, or
        they are being changed in place): they are sent whole."""
        self.write({b: (UNKNOWN, None) for b in blocks})

    def write(self, records: Dict[int, Record]) -> None:
        if not records:
            return
        for block, (digest, pieces) in records.items():
            if not 0 <= block < self.count or len(digest) != DIGEST_SIZE:
                raise ValueError(f"{self.path}: bad record {block}")
            if pieces is not None and len(pieces) > self.pieces * SUB_DIGEST:
                raise ValueError(f"{self.sub_path}: bad pieces of block {block}")
        length = self.pieces * SUB_DIGEST
        self._write_at(self.sub_path, {HEADER_SIZE + b * length: (pieces or b"").ljust(length, b"\0")
                                       for b, (_, pieces) in records.items()})
        self._write_at(self.path, {HEADER_SIZE + b * DIGEST_SIZE: digest for b, (digest, _) in records.items()})
        for block, (digest, _) in records.items():
            self.records[block * DIGEST_SIZE:(block + 1) * DIGEST_SIZE] = digest

    @staticmethod
    def _write_at(path: str, writes: Dict[int, bytes]) -> None:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        try:
            for offset, data in sorted(writes.items()):
                os.lseek(fd, offset, os.SEEK_SET)
                os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def manifest(self, first: int, count: int) -> bytes:
        return bytes(self.records[first * DIGEST_SIZE:(first + count) * DIGEST_SIZE])


class BlockMaps:
    """The maps of all disks; `apply` is what the data link calls with the changes a
    checkpoint covered once the receiver acknowledges them (as it does for the file index)."""

    def __init__(self, state_dir: str):
        self.dir = os.path.join(state_dir, "blocks")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.maps: Dict[str, BlockMap] = {}
        # Sent on this link, not acknowledged yet: what the replica will have once they are.
        self.pending: Dict[Tuple[str, int], Record] = {}

    def sent(self, name: str, block: int, record: Record) -> None:
        self.pending[(name, block)] = record

    def current(self, name: str, block: int) -> Record:
        """What the replica has of a block, or will have once what is in flight lands:
        (digest, piece digests or None)."""
        record = self.pending.get((name, block))
        if record is not None:
            return record
        m = self.maps[name]
        return m.get(block), m.pieces_of(block)

    def forget_pending(self) -> None:
        """A link ended with blocks in flight: the receiver may have written some of them in
        place without making them durable, so the replica's copy of those is unknown."""
        by_disk: Dict[str, List[int]] = {}
        for name, block in self.pending:
            by_disk.setdefault(name, []).append(block)
        for name, blocks in by_disk.items():
            self.maps[name].forget(blocks)
        self.pending.clear()

    def open(self, name: str, size: int, block_size: int) -> BlockMap:
        if not _NAME.match(name):
            raise ValueError(f"disk name {name!r}: use letters, digits, '.', '_' and '-'")
        m = self.maps.get(name)
        if m is None or (m.size, m.block_size) != (size, block_size):
            m = self.maps[name] = BlockMap(os.path.join(self.dir, name + ".map"), size, block_size)
        return m

    def apply(self, ops: List[tuple]) -> None:
        """("block", disk, block, digest, piece digests or None) for each block acknowledged."""
        by_disk: Dict[str, Dict[int, Record]] = {}
        for op in ops:
            if op[0] == "block":
                by_disk.setdefault(op[1], {})[op[2]] = (op[3], op[4])
        for name, records in by_disk.items():
            self.maps[name].write(records)
            for block, record in records.items():
                if self.pending.get((name, block)) == record:
                    del self.pending[(name, block)]

    def get(self, name: str) -> Optional[BlockMap]:
        return self.maps.get(name)
