"""A block-mode replica: the guest's disks as raw images, written in place.

Blocks go straight into the image (no staging): an image is consistent only once the final
sync has ended and its manifest checked out, and until then the sentinel's map counts a block
as replicated only after the checkpoint covering it is durable here (sync() before the ack),
so whatever a crash tears is sent again. Zero blocks arrive as holes and are punched.

The guest chooses nothing on the receiver's side: disks are the ones its registered
inventory named (the images were made to their sizes), and each write is bounded by them.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from ..common.blockscan import DIGEST_SIZE, BlockScanner, DiskSource, valid_block_size
from .store import StoreError, _punch_hole

# Mismatched block numbers reported per disk (enough to repair, bounded for the reply).
MAX_REPORTED = 4096


class DiskWriter:
    """One open disk, as a FileWriter is one open file."""

    def __init__(self, store: "BlockStore", name: str, fd: int):
        self.store, self.name, self.fd = store, name, fd
        self.written = 0

    def write(self, offset: int, data) -> int:
        view = memoryview(data)
        n_total = len(view)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n
        self.written += n_total
        return n_total

    def punch(self, offset: int, length: int) -> None:
        _punch_hole(self.fd, offset, length)

    def commit(self) -> int:
        return self.written

    def abort(self) -> None:
        """Blocks already written stay: the checkpoint that did not come has them resent."""


class BlockStore:
    kind = "blocks"

    def __init__(self, images: Dict[str, str]):
        self.images = dict(images)
        self._fds: Dict[str, int] = {}
        self._manifests: Dict[str, Dict[int, bytes]] = {}
        self._manifest_block_size: Dict[str, int] = {}

    def open_disk(self, name: str, size: int, block_size: int) -> DiskWriter:
        path = self.images.get(name)
        if path is None:
            raise StoreError(f"disk {name!r} is not one of this guest's ({', '.join(sorted(self.images)) or 'none'})")
        if not valid_block_size(block_size):
            raise StoreError(f"block size {block_size} is not a power of two from 64 KiB to 4 MiB")
        fd = self._fd(name)
        actual = os.fstat(fd).st_size
        if size != actual:
            raise StoreError(f"disk {name!r} is {size} bytes on the guest but its image is {actual}: "
                             "the guest's disks changed since it registered")
        return DiskWriter(self, name, fd)

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = os.open(self.images[name], os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        return fd

    # -- the final manifest --------------------------------------------------------------
    def begin_sync(self) -> None:
        self._manifests.clear()
        self._manifest_block_size.clear()

    def add_manifest(self, name: str, block_size: int, first: int, digests: bytes) -> None:
        if name not in self.images:
            raise StoreError(f"manifest for unknown disk {name!r}")
        if not valid_block_size(block_size) or len(digests) % DIGEST_SIZE or first < 0:
            raise StoreError(f"malformed manifest for disk {name!r}")
        if self._manifest_block_size.setdefault(name, block_size) != block_size:
            raise StoreError(f"manifest for disk {name!r} changes its block size")
        size = os.fstat(self._fd(name)).st_size
        count = len(digests) // DIGEST_SIZE
        if (first + count - 1) * block_size >= size and count:
            raise StoreError(f"manifest for disk {name!r} goes past its end")
        blocks = self._manifests.setdefault(name, {})
        for i in range(count):
            blocks[first + i] = digests[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE]

    def has_manifest(self) -> bool:
        return bool(self._manifests)

    def verify_manifests(self) -> dict:
        """Blocking: read every image and compare each block with the manifest. Every block of
        a disk must be in it (a gap would be a block nobody vouched for)."""
        result: dict = {"disks": {}, "mismatched": {}, "ok": True}
        for name in sorted(self.images):
            expected = self._manifests.get(name, {})
            block_size = self._manifest_block_size.get(name)
            size = os.fstat(self._fd(name)).st_size
            if block_size is None:
                result["ok"] = False
                result["disks"][name] = {"error": "no manifest"}
                continue
            count = (size + block_size - 1) // block_size
            bad: List[int] = [b for b in range(count) if b not in expected]
            checked = 0
            source = DiskSource(name, self.images[name], size)
            try:
                for chunk in BlockScanner(source, block_size, forget=False).chunks():
                    for i, d in enumerate(chunk.digests):
                        block = chunk.offset // block_size + i
                        want: Optional[bytes] = expected.get(block)
                        if want is not None and want != d:
                            bad.append(block)
                        checked += 1
                    chunk.release()
            finally:
                source.close()
            bad.sort()
            result["disks"][name] = {"blocks": count, "checked": checked, "mismatched": len(bad)}
            if bad:
                result["ok"] = False
                result["mismatched"][name] = bad[:MAX_REPORTED]
        return result

    # -- what the applier expects of a store ---------------------------------------------
    def sync(self) -> None:
        for fd in self._fds.values():
            os.fsync(fd)

    def flush_dir_times(self) -> None:
        pass

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
