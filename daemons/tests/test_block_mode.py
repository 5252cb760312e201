"""Block mode without a network: the sentinel's BlockReplicator and a real DataLink on one end
of a socket pair, the receiver's Applier on a BlockStore of real image files on the other."""
import asyncio
import hashlib
import os
import socket

import pytest

from osam.common.blockscan import BlockScanner, DiskSource, Overlay, digest, zero_digest
from osam.protocol import (CHANNEL_DATA, BlockDisk, BlockManifest, Entry, FileData, FileEnd, FileHole,
                           SyncBegin)
from osam.receiver.applier import Applier, Refused
from osam.receiver.blockstore import BlockStore
from osam.receiver.checkpoint import CheckpointJournal
from osam.sentinel.block_replicator import BlockDiskSpec, BlockReplicator
from osam.sentinel.blockmap import SUB_BLOCK, BlockMap, BlockMaps, piece_digests
from osam.sentinel.config import SentinelConfig
from osam.sentinel.datalink import DataLink
from osam.transport.framed import FramedStream, LinkClosed

BS = 64 << 10
MiB = 1 << 20


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def make_disk(path, size=8 * MiB, seed=1) -> None:
    """Data in some blocks, zeros (holes) elsewhere, a partial tail block."""
    import random
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for block in (0, 1, 5, 17, 40, 41, 42, 100):
            if (block + 1) * BS > size - 1000:
                continue
            f.seek(block * BS)
            f.write(rnd.randbytes(BS))
        f.seek(size - 1000)
        f.write(rnd.randbytes(1000))


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


# -- the scanner -------------------------------------------------------------------------

def test_scan_digests_every_block_and_flags_zero_ones(tmp_path):
    disk = tmp_path / "d.img"
    make_disk(disk, size=8 * MiB + 4096)
    data = disk.read_bytes()
    seen = []
    for chunk in BlockScanner(DiskSource("d", str(disk)), BS, chunk_size=4 * BS).chunks():
        for i, d in enumerate(chunk.digests):
            off = chunk.offset + i * BS
            block = data[off:off + BS]
            assert d == digest(block)
            assert chunk.zero[i] == (block == bytes(len(block)))
            seen.append(off)
        chunk.release()
    assert seen == list(range(0, len(data), BS))


def test_scan_reads_overlaid_ranges_from_the_snapshot(tmp_path):
    disk, snap = tmp_path / "d.img", tmp_path / "snap"
    make_disk(disk, size=2 * MiB)
    snap.write_bytes(b"\x07" * (3 * BS))
    source = DiskSource("d", str(disk), overlays=[Overlay(5 * BS, 3 * BS, str(snap))])
    view = bytearray(2 * MiB)
    source.read_into(memoryview(view), 0)
    live = disk.read_bytes()
    assert view[:5 * BS] == live[:5 * BS]
    assert view[5 * BS:8 * BS] == b"\x07" * (3 * BS)
    assert view[8 * BS:] == live[8 * BS:]


def test_a_scan_stopped_half_way_ends_cleanly(tmp_path):
    disk = tmp_path / "d.img"
    make_disk(disk, size=16 * MiB)
    scanner = BlockScanner(DiskSource("d", str(disk)), BS, chunk_size=4 * BS, depth=2)
    chunks = scanner.chunks()
    first = next(chunks)
    first.release()
    chunks.close()       # the consumer walks away: the reader thread must end, not hang


# -- the map -----------------------------------------------------------------------------

def test_the_map_survives_a_restart_and_starts_over_when_the_disk_changes(tmp_path):
    path = str(tmp_path / "d.map")
    m = BlockMap(path, 10 * BS, BS)
    pieces = piece_digests(b"\x07" * BS)
    m.write({3: (b"\x01" * 16, pieces), 9: (b"\x02" * 16, None)})
    again = BlockMap(path, 10 * BS, BS)
    assert again.get(3) == b"\x01" * 16 and again.get(9) == b"\x02" * 16 and again.get(0) == bytes(16)
    assert again.pieces_of(3) == pieces and again.pieces_of(9) is None and again.pieces_of(0) is None
    resized = BlockMap(path, 11 * BS, BS)
    assert resized.get(3) == bytes(16) and resized.pieces_of(3) is None  # a resized disk is sent whole again
    with pytest.raises(ValueError):
        resized.write({11: (b"\x01" * 16, None)})


def test_disk_names_cannot_reach_outside_the_state_directory(tmp_path):
    maps = BlockMaps(str(tmp_path))
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            maps.open(bad, BS, BS)


# -- the receiver's store ----------------------------------------------------------------

def applier_on(tmp_path, images):
    return Applier("g", BlockStore(images), CheckpointJournal(str(tmp_path / "checkpoint.json")))


def test_block_replicas_refuse_file_entries_and_writes_past_the_disk(tmp_path):
    image = tmp_path / "r.raw"
    image.write_bytes(bytes(4 * BS))
    a = applier_on(tmp_path, {"d0": str(image)})
    a.handle(SyncBegin(1, "full"))
    with pytest.raises(Refused, match="file-mode|block-mode"):
        a.handle(Entry(b"etc/passwd", "f", 0o644, 0, 0, 0, 1, 0, b"", [], -1, 0))
    with pytest.raises(Refused, match="not one of this guest's"):
        a.handle(BlockDisk("../../etc", 4 * BS, BS))
    with pytest.raises(Refused, match="image is"):
        a.handle(BlockDisk("d0", 5 * BS, BS))
    a.handle(BlockDisk("d0", 4 * BS, BS))
    with pytest.raises(Refused, match="outside"):
        a.handle(FileData(4 * BS - 10, b"x" * 11))
    assert image.stat().st_size == 4 * BS


def test_file_replicas_refuse_block_messages(tmp_path):
    from osam.receiver.store import ReplicaStore
    a = Applier("g", ReplicaStore(str(tmp_path / "rep")), CheckpointJournal(str(tmp_path / "c.json")))
    a.handle(SyncBegin(1, "full"))
    with pytest.raises(Refused):
        a.handle(BlockDisk("d0", BS, BS))


def test_a_hole_is_punched_and_data_lands_in_place(tmp_path):
    image = tmp_path / "r.raw"
    image.write_bytes(b"\x09" * (4 * BS))
    a = applier_on(tmp_path, {"d0": str(image)})
    a.handle(SyncBegin(1, "full"))
    a.handle(BlockDisk("d0", 4 * BS, BS))
    a.handle(FileHole(BS, 2 * BS))
    a.handle(FileData(3 * BS, b"\x05" * BS))
    a.handle(FileEnd(True))
    got = image.read_bytes()
    assert got == b"\x09" * BS + bytes(2 * BS) + b"\x05" * BS
    assert allocated(image) <= 2 * BS + 8192


# -- sentinel and receiver together ------------------------------------------------------

async def pair(maps):
    a, b = socket.socketpair()
    r1, w1 = await asyncio.open_connection(sock=a)
    r2, w2 = await asyncio.open_connection(sock=b)
    return DataLink(FramedStream(r1, w1, CHANNEL_DATA), maps, lambda p: None), FramedStream(r2, w2, CHANNEL_DATA)


async def serve(peer, applier, sent, tamper=None):
    try:
        while True:
            msg = await peer.recv()
            sent.append(msg)
            if tamper:
                tamper(msg)
            for reply in applier.handle(msg):
                await peer.send(reply() if callable(reply) else reply)
    except LinkClosed:
        await peer.close()      # the link drops: the sentinel sees it


class Site:
    def __init__(self, tmp_path, size=8 * MiB):
        self.disk = tmp_path / "source.img"
        make_disk(self.disk, size)
        self.image = tmp_path / "replica.raw"
        with open(self.image, "wb") as f:
            f.truncate(size)
        self.state = tmp_path / "state"
        self.journal = str(tmp_path / "checkpoint.json")
        self.spec = BlockDiskSpec("d0", str(self.disk), size)

    def replicator(self):
        return BlockReplicator([self.spec], SentinelConfig(), str(self.state), BS, rescan_interval=0.05)

    def run(self, action, tamper=None):
        """Run one sync against a fresh receiver connection; returns (result, messages sent)."""
        async def go():
            r = self.replicator()
            store = BlockStore({"d0": str(self.image)})
            link, peer = await pair(r.index)
            sent = []
            server = asyncio.ensure_future(serve(peer, Applier("g", store, CheckpointJournal(self.journal)), sent, tamper))
            try:
                result = await action(r, link)
            finally:
                await link.close()
                await peer.close()
                server.cancel()
                store.close()
            return result, sent
        return asyncio.run(go())


def data_frames(sent):
    return [m for m in sent if isinstance(m, FileData)]


def test_full_sync_copies_the_disk_exactly_and_leaves_zero_blocks_as_holes(tmp_path):
    site = Site(tmp_path)
    result, sent = site.run(lambda r, link: r.full_sync(link, 1, None))
    assert sha(site.image) == sha(site.disk)
    assert len(data_frames(sent)) == 9             # the 8 data blocks and the tail
    assert allocated(site.image) <= 9 * BS + 64 * 1024
    assert result["blocks_sent"] == 9


def test_a_continuous_pass_sends_only_the_changed_blocks(tmp_path):
    site = Site(tmp_path)
    site.run(lambda r, link: r.full_sync(link, 1, None))
    with open(site.disk, "r+b") as f:
        f.seek(5 * BS + 100)
        f.write(b"changed")          # inside a data block
        f.seek(60 * BS)
        f.write(b"new data")         # in a block that was a hole
        f.seek(40 * BS)
        f.write(bytes(BS))           # a data block zeroed: becomes a hole again

    async def one_pass(r, link):
        stop = asyncio.Event()
        return await r.continuous_sync(link, 2, stop, first_pass_done=stop.set)
    _, sent = site.run(one_pass)
    # Only the 16 KiB pieces that changed travel, not the blocks around them.
    assert sorted((m.offset, len(m.data)) for m in data_frames(sent)) == [(5 * BS, SUB_BLOCK), (60 * BS, SUB_BLOCK)]
    assert [(m.offset, m.length) for m in sent if isinstance(m, FileHole)] == [(40 * BS, BS)]
    assert sha(site.image) == sha(site.disk)
    # Nothing changed since: the next pass sends nothing.
    _, sent = site.run(one_pass)
    assert data_frames(sent) == []


def test_an_interrupted_full_sync_resumes_at_its_cursor(tmp_path, monkeypatch):
    import osam.sentinel.block_replicator as br
    monkeypatch.setattr(br, "CHECKPOINT_SCANNED", 2 * MiB)   # checkpoint every 2 MiB read
    monkeypatch.setattr(br, "SCAN_CHUNK", MiB)
    site = Site(tmp_path, size=8 * MiB)

    def drop_after_first_checkpoint(msg, seen=[]):
        from osam.protocol import Checkpoint
        if isinstance(msg, Checkpoint):
            seen.append(msg)
            if len(seen) == 2:
                raise LinkClosed("cut")

    async def full(r, link):
        with pytest.raises((LinkClosed, ConnectionError, OSError)):
            await r.full_sync(link, 1, None)
    site.run(full, tamper=drop_after_first_checkpoint)
    state = CheckpointJournal(site.journal).load()
    from osam.receiver.checkpoint import decode_cursor
    cursor = decode_cursor(state["cursor"])
    assert cursor.startswith(b"d0\0") and int(cursor.split(b"\0")[1]) >= 2 * MiB
    result, sent = site.run(lambda r, link: r.full_sync(link, 1, cursor))
    assert min(m.offset for m in data_frames(sent)) >= int(cursor.split(b"\0")[1])
    assert sha(site.image) == sha(site.disk)


def test_the_final_sync_repairs_blocks_the_manifest_finds_wrong(tmp_path):
    site = Site(tmp_path)
    site.run(lambda r, link: r.full_sync(link, 1, None))
    # The replica's image is damaged behind everyone's back (a bad disk, an operator).
    with open(site.image, "r+b") as f:
        f.seek(17 * BS + 5)
        f.write(b"rot")
    with open(site.disk, "r+b") as f:      # and the source changed once more before quiesce
        f.seek(60 * BS)
        f.write(b"last words")
    result, sent = site.run(lambda r, link: r.final_sync(link, 3))
    assert result["manifest"]["ok"] is True
    # The change once, then the bad block once: nothing else was sent again.
    assert [m.offset for m in data_frames(sent)] == [60 * BS, 17 * BS]
    assert any(isinstance(m, BlockManifest) for m in sent)
    assert sha(site.image) == sha(site.disk)
    assert CheckpointJournal(site.journal).load()["manifest_ok"] is True


def test_the_final_sync_fails_when_the_replica_keeps_differing(tmp_path):
    site = Site(tmp_path)
    site.run(lambda r, link: r.full_sync(link, 1, None))

    def corrupt_every_write(msg):
        if isinstance(msg, FileData) and msg.offset == 17 * BS:
            msg.data = b"\xff" * len(msg.data)

    with open(site.image, "r+b") as f:
        f.seek(17 * BS)
        f.write(b"rot")

    async def final(r, link):
        with pytest.raises(OSError, match="still differs"):
            await r.final_sync(link, 3)
    site.run(final, tamper=corrupt_every_write)
    assert CheckpointJournal(site.journal).load()["manifest_ok"] is False


def test_zero_digest_is_the_digest_of_zeros():
    assert zero_digest(BS) == digest(bytes(BS))


def test_small_writes_across_a_block_send_only_their_pieces(tmp_path):
    site = Site(tmp_path)
    site.run(lambda r, link: r.full_sync(link, 1, None))
    with open(site.disk, "r+b") as f:
        for offset in (BS + 10, BS + SUB_BLOCK - 2, BS + 3 * SUB_BLOCK + 5):   # two pieces touched, one run
            f.seek(offset)
            f.write(b"abcd")

    async def one_pass(r, link):
        stop = asyncio.Event()
        return await r.continuous_sync(link, 2, stop, first_pass_done=stop.set)
    result, sent = site.run(one_pass)
    assert [(m.offset, len(m.data)) for m in data_frames(sent)] == [
        (BS, 2 * SUB_BLOCK), (BS + 3 * SUB_BLOCK, SUB_BLOCK)]
    assert result["bytes_changed"] == 3 * SUB_BLOCK
    assert sha(site.image) == sha(site.disk)


def test_blocks_in_flight_when_the_sentinel_dies_are_sent_whole_again(tmp_path):
    """The receiver writes blocks in place before their checkpoint: after a link drop or a
    sentinel restart, the sentinel must not trust what it last had acknowledged for them."""
    site = Site(tmp_path)
    site.run(lambda r, link: r.full_sync(link, 1, None))
    original = site.disk.read_bytes()[5 * BS:5 * BS + 12]
    with open(site.disk, "r+b") as f:
        f.seek(5 * BS)
        f.write(b"first change")

    def drop_at_the_checkpoint(msg):
        from osam.protocol import Checkpoint
        if isinstance(msg, Checkpoint):
            raise LinkClosed("cut")

    async def pass_then_drop(r, link):
        stop = asyncio.Event()
        with pytest.raises((LinkClosed, ConnectionError, OSError)):
            await r.continuous_sync(link, 2, stop, first_pass_done=stop.set)
    site.run(pass_then_drop, tamper=drop_at_the_checkpoint)
    # The piece reached the image, its checkpoint was never acknowledged.
    assert site.image.read_bytes()[5 * BS:5 * BS + 12] == b"first change"
    with open(site.disk, "r+b") as f:       # back to what was last acknowledged
        f.seek(5 * BS)
        f.write(original)

    async def one_pass(r, link):
        stop = asyncio.Event()
        return await r.continuous_sync(link, 3, stop, first_pass_done=stop.set)
    # A new sentinel process: nothing in memory says the block was in flight.
    _, sent = site.run(one_pass)
    assert [(m.offset, len(m.data)) for m in data_frames(sent)] == [(5 * BS, BS)]
    assert sha(site.image) == sha(site.disk), "a block the replica got unacknowledged was left stale"
