"""Block-level replication of whole disks (Windows guests, and Linux disks on request).

Every pass reads each disk from start to end (common.blockscan) and sends the blocks whose
digest differs from what the replica acknowledged (blockmap): all of them in the full sync,
the changed ones in each continuous pass, and once more after quiesce in the final sync,
reading the snapshotted volumes where the quiesce made snapshots. Blocks that are all zeros
travel as holes, so they stay holes in the replica. The final sync ends with a manifest of
every block's digest; the receiver checks its images against it, and blocks it finds
different are sent again (at most REPAIR_ROUNDS times) before the sync may succeed.

Same control protocol as file mode: a disk is opened with BlockDisk and closed with FileEnd,
its blocks are FileData and FileHole, and a checkpoint's cursor ("DISK\\0OFFSET") is where an
interrupted full sync resumes.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from typing import List, Optional, Sequence, Tuple

from ..common.blockscan import (CHUNK, DEFAULT_BLOCK, BlockScanner, DiskSource, Overlay, ScannedChunk,
                                ScanStopped, digest, zero_digest)
from ..protocol import BlockDisk, BlockManifest, FileData, FileEnd, FileHole
from .blockmap import SUB_BLOCK, SUB_DIGEST, UNKNOWN, BlockMap, BlockMaps, piece_digests
from .config import SentinelConfig
from .datalink import DataLink

log = logging.getLogger("osam.sentinel.blocks")

CHECKPOINT_BYTES = 32 << 20        # of changed data sent
CHECKPOINT_SCANNED = 1 << 30       # of disk read, so a quiet disk still records its progress
CHECKPOINT_SECONDS = 2.0
MANIFEST_BLOCKS = 1 << 16          # digests per BlockManifest frame (1 MiB)
REPAIR_ROUNDS = 3
SCAN_CHUNK = CHUNK
# Seconds between the end of one continuous pass and the start of the next: each pass reads
# every disk whole, so back to back they would keep the guest's disks busy all the time.
RESCAN_INTERVAL = 60.0


@dataclasses.dataclass(frozen=True)
class BlockDiskSpec:
    name: str       # the replica's image is named after it
    path: str       # a block device, an image file, or \\.\PhysicalDriveN
    size: int


class BlockStats:
    def __init__(self, total: int = 0):
        self.bytes_scanned = 0          # of this pass
        self.bytes_total = total        # the disks' sizes
        self.blocks_sent = self.bytes_changed = self.holes = 0
        self.bytes_sent = 0
        self.passes = 0

    def as_dict(self) -> dict:
        # bytes_done/bytes_total/files_* keep the receiver's progress columns meaningful.
        return {"bytes_done": self.bytes_scanned, "bytes_total": self.bytes_total,
                "files_done": self.blocks_sent, "files_total": 0, "bytes_sent": self.bytes_sent,
                "blocks_sent": self.blocks_sent, "bytes_changed": self.bytes_changed,
                "holes": self.holes, "passes": self.passes}


class _NoChanges:
    """File mode's change set, as the agent sees it: block mode has no journal to lose."""
    needs_verify = False


class ChunkFeed:
    """A BlockScanner run on its own thread, its chunks handed to the event loop in order."""

    def __init__(self, scanner: BlockScanner, start: int):
        self.scanner = scanner
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.thread = threading.Thread(target=self._run, args=(start,), name="osam-disk-hash", daemon=True)
        self.thread.start()
        self.ended = False

    def _run(self, start: int) -> None:
        put = lambda item: self.loop.call_soon_threadsafe(self.queue.put_nowait, item)  # noqa: E731
        try:
            for chunk in self.scanner.chunks(start):
                put(chunk)
        except BaseException as exc:  # noqa: BLE001 - raised on the loop
            put(exc)
        else:
            put(None)

    async def next(self) -> Optional[ScannedChunk]:
        item = await self.queue.get()
        if item is None or isinstance(item, BaseException):
            self.ended = True
            if isinstance(item, BaseException):
                raise item
        return item

    async def close(self) -> None:
        """Stop early: hand every buffer back so the reader can see the stop and end."""
        self.scanner.stop()
        while not self.ended:
            try:
                chunk = await self.next()
            except ScanStopped:
                break
            if chunk is not None:
                chunk.release()
        await self.loop.run_in_executor(None, self.thread.join)


class BlockReplicator:
    def __init__(self, disks: Sequence[BlockDiskSpec], config: SentinelConfig, state_dir: str,
                 block_size: int = DEFAULT_BLOCK, rescan_interval: float = RESCAN_INTERVAL):
        self.disks = list(disks)
        self.config = config
        self.block_size = block_size
        self.rescan_interval = rescan_interval
        self.index = BlockMaps(state_dir)       # what the data link updates on acknowledgements
        self.changes = _NoChanges()
        self.stats = BlockStats(sum(d.size for d in self.disks))
        self.phase = "idle"
        self.overlays: List[dict] = []          # from the quiesce: snapshots to read instead
        self.last_pass_started: Optional[float] = None
        self.pass_started: Optional[float] = None

    # -- what the agent calls ------------------------------------------------------------
    def resend(self, path: bytes) -> None:
        log.warning("the receiver asked to resend %r, which block mode never sends", path)

    def quiesced(self, report: dict) -> None:
        self.overlays = [o for o in report.get("overlays") or [] if isinstance(o, dict)]

    def progress(self, link: Optional[DataLink]) -> dict:
        d = self.stats.as_dict()
        d["phase"] = self.phase
        now = time.monotonic()
        # A change is on the replica at the latest when the first pass after it ends.
        d["lag"] = round(now - self.last_pass_started, 4) if self.last_pass_started else 0.0
        d["mode"] = "block"
        return d

    async def full_sync(self, link: DataLink, sync_id: int, cursor: Optional[bytes]) -> dict:
        self.phase = "full_sync"
        start_disk, start_offset = self._parse_cursor(cursor)
        if start_disk is None:
            for d in self.disks:
                self._map(d).clear()
            start_disk, start_offset = 0, 0
        self.stats = BlockStats(self.stats.bytes_total)
        await self._begin(link, sync_id, "full")
        self.pass_started = time.monotonic()
        for i, disk in enumerate(self.disks[start_disk:], start_disk):
            await self._scan(link, disk, start_offset if i == start_disk else 0)
        self._pass_done()
        return await self._end(link, sync_id)

    async def continuous_sync(self, link: DataLink, sync_id: int, stop: asyncio.Event,
                              first_pass_done=None) -> dict:
        self.phase = "continuous_sync"
        await self._begin(link, sync_id, "continuous")
        interval = self.rescan_interval
        while not stop.is_set():
            self.stats = BlockStats(self.stats.bytes_total)
            self.pass_started = time.monotonic()
            for disk in self.disks:
                if not await self._scan(link, disk, 0, stop=stop):
                    break
            else:
                self._pass_done()
                await link.checkpoint(b"", self.stats.as_dict())
                if first_pass_done:
                    first_pass_done()
                    first_pass_done = None
                try:
                    await asyncio.wait_for(stop.wait(), timeout=interval)
                except asyncio.TimeoutError:
                    pass
        return await self._end(link, sync_id)

    async def final_sync(self, link: DataLink, sync_id: int, verify: bool = False) -> dict:
        """After quiesce: one more pass (from the snapshots where there are some), then the
        manifest; blocks the receiver finds different are sent again."""
        self.phase = "final_sync"
        self.stats = BlockStats(self.stats.bytes_total)
        await self._begin(link, sync_id, "final")
        self.pass_started = time.monotonic()
        for disk in self.disks:
            await self._scan(link, disk, 0, overlays=self._overlays_of(disk))
        self._pass_done()
        for round_ in range(REPAIR_ROUNDS + 1):
            # The manifest is the map once everything sent is acknowledged, so wait for that.
            await link.checkpoint(b"", self.stats.as_dict())
            await link.drain()
            for disk in self.disks:
                self._send_manifest(link, disk)
            result = await self._end(link, sync_id)
            manifest = result.get("manifest") if isinstance(result, dict) else None
            if isinstance(manifest, dict) and manifest.get("ok") is True:
                return result
            mismatched = _mismatched(manifest)
            if not mismatched:
                raise OSError(f"the receiver could not check the replica against the manifest: {manifest!r}")
            total = sum(len(b) for b in mismatched.values())
            if round_ == REPAIR_ROUNDS:
                raise OSError(f"the replica still differs from the source in {total} blocks after "
                              f"{REPAIR_ROUNDS} repairs ({', '.join(sorted(mismatched))})")
            log.warning("the replica differs from the source in %d blocks: sending them again", total)
            await link.begin(sync_id, "final")
            for disk in self.disks:
                if disk.name in mismatched:
                    await self._resend_blocks(link, disk, mismatched[disk.name])
        raise AssertionError("unreachable")

    # -- passes --------------------------------------------------------------------------
    def _map(self, disk: BlockDiskSpec) -> BlockMap:
        return self.index.open(disk.name, disk.size, self.block_size)

    def _overlays_of(self, disk: BlockDiskSpec) -> List[Overlay]:
        return [Overlay(int(o["offset"]), int(o["length"]), str(o["path"]))
                for o in self.overlays if o.get("disk") == disk.name]

    def _pass_done(self) -> None:
        self.stats.passes += 1
        self.last_pass_started = self.pass_started

    async def _scan(self, link: DataLink, disk: BlockDiskSpec, start: int, *,
                    overlays: Sequence[Overlay] = (), stop: Optional[asyncio.Event] = None) -> bool:
        """Send what changed on one disk from `start`; False when `stop` ended it early."""
        bmap = self._map(disk)
        source = DiskSource(disk.name, disk.path, disk.size, overlays)
        feed = ChunkFeed(BlockScanner(source, self.block_size, max(SCAN_CHUNK, self.block_size)), start)
        writer = _DiskWriter(link, disk, self.block_size, self.stats)
        marks = _Marks(self.stats)
        finished = False
        try:
            writer.open()
            while True:
                if stop is not None and stop.is_set():
                    break
                chunk = await feed.next()
                if chunk is None:
                    finished = True
                    break
                try:
                    first = chunk.offset // self.block_size
                    changed = {}
                    for i, d in enumerate(chunk.digests):
                        had, had_pieces = self.index.current(disk.name, first + i)
                        if had != d:
                            changed[i] = had_pieces
                    # Written ahead: blocks about to change in place are unknown until their
                    # checkpoint is acknowledged, so a sentinel killed meanwhile sends them whole.
                    bmap.forget(b for b in (first + i for i in changed) if bmap.get(b) != UNKNOWN)
                    for i, d in enumerate(chunk.digests):
                        block = first + i
                        if i not in changed:
                            writer.end_hole()
                            continue
                        had_pieces = changed[i]
                        data = chunk.block(i)
                        if chunk.zero[i]:
                            writer.hole(block, len(data))
                            pieces = zero_pieces(len(data))
                        else:
                            pieces = piece_digests(data)
                            writer.data(block, data, had_pieces, pieces)
                            await link.maybe_flush()
                        self._sent(link, disk, block, d, pieces)
                    self.stats.bytes_scanned += len(chunk.data)
                    end = chunk.offset + len(chunk.data)
                finally:
                    chunk.release()
                if marks.due():
                    writer.close()
                    await link.checkpoint(_cursor(disk.name, end), self.stats.as_dict())
                    marks.reset()
                    writer.open()
        finally:
            if not feed.ended:
                await feed.close()
            source.close()
        writer.close()
        return finished

    async def _resend_blocks(self, link: DataLink, disk: BlockDiskSpec, blocks: List[int]) -> None:
        bmap = self._map(disk)
        bmap.forget(blocks)
        source = DiskSource(disk.name, disk.path, disk.size, self._overlays_of(disk))
        writer = _DiskWriter(link, disk, self.block_size, self.stats)
        try:
            writer.open()
            buf = bytearray(self.block_size)
            for block in sorted(set(blocks)):
                offset = block * self.block_size
                n = source.read_into(memoryview(buf), offset)
                data = memoryview(buf)[:n]
                d = digest(data)
                if d == zero_digest(n) and data.tobytes() == bytes(n):
                    writer.hole(block, n)
                    writer.end_hole()
                    pieces = zero_pieces(n)
                else:
                    writer.data(block, data)
                    pieces = piece_digests(data)
                self._sent(link, disk, block, d, pieces)
        finally:
            source.close()
        writer.close()

    def _sent(self, link: DataLink, disk: BlockDiskSpec, block: int, d: bytes, pieces: bytes) -> None:
        self.index.sent(disk.name, block, (d, pieces))
        link.note_change(("block", disk.name, block, d, pieces))

    async def _begin(self, link: DataLink, sync_id: int, kind: str) -> None:
        # Whatever an earlier link left in flight may or may not be in the replica's images.
        self.index.forget_pending()
        await link.begin(sync_id, kind)

    def _send_manifest(self, link: DataLink, disk: BlockDiskSpec) -> None:
        bmap = self._map(disk)
        for first in range(0, bmap.count, MANIFEST_BLOCKS):
            count = min(MANIFEST_BLOCKS, bmap.count - first)
            link.queue(BlockManifest(disk.name, self.block_size, first, bmap.manifest(first, count)))

    async def _end(self, link: DataLink, sync_id: int) -> dict:
        self.stats.bytes_sent = link.stream.bytes_out
        return await link.end(sync_id, self.stats.as_dict())

    def _parse_cursor(self, cursor: Optional[bytes]) -> Tuple[Optional[int], int]:
        """(disk index, offset) an interrupted full sync resumes at; (None, 0) to start over."""
        if not cursor:
            return None, 0
        name, _, offset = cursor.partition(b"\0")
        names = [d.name.encode() for d in self.disks]
        if name not in names or not offset.isdigit():
            log.warning("cannot resume at %r (disks changed?): starting over", cursor)
            return None, 0
        return names.index(name), int(offset)


def _cursor(disk: str, offset: int) -> bytes:
    return b"%s\0%d" % (disk.encode(), offset)


def _mismatched(manifest) -> dict:
    mismatched = manifest.get("mismatched") if isinstance(manifest, dict) else None
    if not isinstance(mismatched, dict):
        return {}
    return {k: [b for b in v if isinstance(b, int)] for k, v in mismatched.items() if isinstance(v, list) and v}


def _changed_runs(had: Optional[bytes], now: Optional[bytes], length: int) -> List[Tuple[int, int]]:
    """Byte ranges of a block to send: the runs of pieces whose digests differ, or all of it."""
    if had is None or now is None or len(had) != len(now):
        return [(0, length)]
    runs: List[Tuple[int, int]] = []
    for i in range(0, len(now), SUB_DIGEST):
        if had[i:i + SUB_DIGEST] != now[i:i + SUB_DIGEST]:
            start = i // SUB_DIGEST * SUB_BLOCK
            end = min(start + SUB_BLOCK, length)
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
    return runs


_ZERO_PIECES: dict = {}


def zero_pieces(length: int) -> bytes:
    if length not in _ZERO_PIECES:
        _ZERO_PIECES[length] = piece_digests(bytes(length))
    return _ZERO_PIECES[length]


class _Marks:
    """When the next checkpoint is due."""

    def __init__(self, stats: BlockStats):
        self.stats = stats
        self.reset()

    def reset(self) -> None:
        self.at, self.changed, self.scanned = time.monotonic(), self.stats.bytes_changed, self.stats.bytes_scanned

    def due(self) -> bool:
        s = self.stats
        return (s.bytes_changed - self.changed >= CHECKPOINT_BYTES or s.bytes_scanned - self.scanned >= CHECKPOINT_SCANNED
                or time.monotonic() - self.at >= CHECKPOINT_SECONDS)


class _DiskWriter:
    """The frames of one open disk: changed blocks, and runs of zero blocks as one hole each."""

    def __init__(self, link: DataLink, disk: BlockDiskSpec, block_size: int, stats: BlockStats):
        self.link, self.disk, self.block_size, self.stats = link, disk, block_size, stats
        self.hole_start: Optional[int] = None
        self.hole_end = 0
        self.is_open = False

    def open(self) -> None:
        self.link.queue(BlockDisk(self.disk.name, self.disk.size, self.block_size))
        self.is_open = True

    def data(self, block: int, data: memoryview, had: Optional[bytes] = None, now: Optional[bytes] = None) -> None:
        """A changed block: whole, or only its pieces that differ from what the replica has
        (`had`, `now`: piece digests) when it is known."""
        self.end_hole()
        offset = block * self.block_size
        for start, end in _changed_runs(had, now, len(data)):
            self.link.queue(FileData(offset + start, data[start:end]))
            self.stats.bytes_changed += end - start
        self.stats.blocks_sent += 1

    def hole(self, block: int, length: int) -> None:
        offset = block * self.block_size
        if self.hole_start is not None and self.hole_end != offset:
            self.end_hole()
        if self.hole_start is None:
            self.hole_start = offset
        self.hole_end = offset + length
        self.stats.holes += 1

    def end_hole(self) -> None:
        if self.hole_start is not None:
            self.link.queue(FileHole(self.hole_start, self.hole_end - self.hole_start))
            self.hole_start = None

    def close(self) -> None:
        if self.is_open:
            self.end_hole()
            self.link.queue(FileEnd(True))
            self.is_open = False
