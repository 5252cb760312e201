"""What the replica has acknowledged of each disk in block mode: one xxh3-128 digest per block,
kept durably in the sentinel's state (`STATE/blocks/NAME.map`).

A map file is a 64-byte header (magic, version, disk size, block size) and one 16-byte record
per block; a record of zeros means "not known to the replica", so a new map is a sparse file.
Records are written in place, only after the receiver has made the blocks durable, and then
fsynced. That is safe without a copy of the file: each record is true on its own, so any
subset of one batch of writes surviving a crash is a true map, and a torn record (it cannot
cross a 512-byte sector) only makes its block be sent again. A header that does not match
the disk (resized, another block size) starts the map over: everything is sent again.
"""
from __future__ import annotations

import os
import re
import struct
from typing import Dict, Iterable, List, Optional

from ..common.atomic import atomic_write
from ..common.blockscan import DIGEST_SIZE

MAGIC = b"OSAMBMAP"
VERSION = 1
HEADER = struct.Struct("<8sIQI")
HEADER_SIZE = 64
UNKNOWN = bytes(DIGEST_SIZE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def blocks_of(size: int, block_size: int) -> int:
    return (size + block_size - 1) // block_size


class BlockMap:
    def __init__(self, path: str, size: int, block_size: int):
        self.path, self.size, self.block_size = path, size, block_size
        self.count = blocks_of(size, block_size)
        self.records = bytearray(self.count * DIGEST_SIZE)
        if not self._load():
            self.clear()

    def _header(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.size, self.block_size).ljust(HEADER_SIZE, b"\0")

    def _load(self) -> bool:
        try:
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
        atomic_write(self.path, self._header())
        os.truncate(self.path, HEADER_SIZE + len(self.records))

    def get(self, block: int) -> bytes:
        return bytes(self.records[block * DIGEST_SIZE:(block + 1) * DIGEST_SIZE])

    def forget(self, blocks: Iterable[int]) -> None:
        """These blocks are not what the replica has (its check said so): send them again."""
        self.write({b: UNKNOWN for b in blocks})

    def write(self, records: Dict[int, bytes]) -> None:
        if not records:
            return
        fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        try:
            for block, digest in sorted(records.items()):
                if not 0 <= block < self.count or len(digest) != DIGEST_SIZE:
                    raise ValueError(f"{self.path}: bad record {block}")
                self.records[block * DIGEST_SIZE:(block + 1) * DIGEST_SIZE] = digest
                os.lseek(fd, HEADER_SIZE + block * DIGEST_SIZE, os.SEEK_SET)
                os.write(fd, digest)
            os.fsync(fd)
        finally:
            os.close(fd)

    def manifest(self, first: int, count: int) -> bytes:
        return bytes(self.records[first * DIGEST_SIZE:(first + count) * DIGEST_SIZE])

    def complete(self) -> bool:
        """Every block has a record the replica acknowledged."""
        return all(self.records[i:i + DIGEST_SIZE] != UNKNOWN for i in range(0, len(self.records), DIGEST_SIZE))


class BlockMaps:
    """The maps of all disks; `apply` is what the data link calls with the changes a
    checkpoint covered once the receiver acknowledges them (as it does for the file index)."""

    def __init__(self, state_dir: str):
        self.dir = os.path.join(state_dir, "blocks")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.maps: Dict[str, BlockMap] = {}

    def open(self, name: str, size: int, block_size: int) -> BlockMap:
        if not _NAME.match(name):
            raise ValueError(f"disk name {name!r}: use letters, digits, '.', '_' and '-'")
        m = self.maps.get(name)
        if m is None or (m.size, m.block_size) != (size, block_size):
            m = self.maps[name] = BlockMap(os.path.join(self.dir, name + ".map"), size, block_size)
        return m

    def apply(self, ops: List[tuple]) -> None:
        by_disk: Dict[str, Dict[int, bytes]] = {}
        for op in ops:
            if op[0] == "block":
                by_disk.setdefault(op[1], {})[op[2]] = op[3]
        for name, records in by_disk.items():
            self.maps[name].write(records)

    def get(self, name: str) -> Optional[BlockMap]:
        return self.maps.get(name)
