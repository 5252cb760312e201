"""The sentinel's file sender against the receiver's applier, in one process: the messages a file
becomes, through the wire encoding, applied to a real replica store."""
import os
import random

import pytest

from osam.common.fsentry import REGULAR, FsEntry
from osam.protocol import (Checkpoint, CheckpointAck, FileData, FileHole, FrameDecoder, Resend,
                           SyncBegin, decode)
from osam.receiver.applier import Applier, Refused
from osam.receiver.checkpoint import CheckpointJournal
from osam.receiver.store import ReplicaStore
from osam.sentinel import reader
from osam.sentinel.sender import BLOCK, DELTA_MIN, FileSender

MiB = 1 << 20


def entry_for(path: str, rel: bytes) -> FsEntry:
    st = os.lstat(path)
    return FsEntry(rel, REGULAR, st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size)


def send(path, rel, applier, **kw):
    """Run the sender on `path` and apply every message, through encode and decode."""
    fd = os.open(path, os.O_RDONLY)
    try:
        sender = FileSender(fd, entry_for(path, rel), **kw)
        msgs = list(sender.messages())
    finally:
        os.close(fd)
    for m in msgs:
        for frame in FrameDecoder().feed(m.encode()):
            replies = applier.handle(decode(frame))
            assert not [r for r in replies if isinstance(r, Resend)], replies
    return sender, msgs


def data_ranges(path):
    """(offset, length) of each data extent, as the sentinel's reader sees them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(reader.data_ranges(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


@pytest.fixture
def applier(tmp_path):
    store = ReplicaStore(tmp_path / "replica")
    a = Applier("g", store, CheckpointJournal(tmp_path / "replica" / "checkpoint.json"))
    a.handle(SyncBegin(1, "full"))
    yield a
    store.close()


def test_sparse_file_keeps_its_holes_and_sends_only_data(tmp_path, applier):
    src = tmp_path / "sparse.img"
    with open(src, "wb") as f:
        f.truncate(40 * MiB)
        f.seek(MiB + 4096)
        f.write(b"a" * 300_000)
        f.seek(20 * MiB)
        f.write(random.Random(1).randbytes(MiB))
    sender, msgs = send(src, b"sparse.img", applier)
    replica = tmp_path / "replica" / "root" / "sparse.img"
    assert replica.read_bytes() == src.read_bytes()
    assert data_ranges(replica) == data_ranges(src)
    assert sender.data_bytes == sum(length for _, length in data_ranges(src))
    assert sender.hashes is not None and len(sender.hashes) == 40 * 8  # one digest per block


def test_changed_large_file_travels_as_a_delta_with_holes_punched(tmp_path, applier):
    src = tmp_path / "disk.img"
    rnd = random.Random(2)
    src.write_bytes(rnd.randbytes(8 * MiB))
    first, _ = send(src, b"disk.img", applier)
    st = os.stat(src)
    base = (st.st_size, st.st_mtime_ns)
    with open(src, "r+b") as f:  # change 4 KiB in block 5, punch block 2, grow by half a block
        f.seek(5 * BLOCK + 100)
        f.write(b"z" * 4096)
        f.seek(8 * MiB)
        f.write(b"tail" * 1024)
    fd = os.open(src, os.O_RDWR)
    import fcntl  # noqa: F401  (fallocate comes from ctypes below)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.fallocate(fd, 0x01 | 0x02, ctypes.c_long(2 * BLOCK), ctypes.c_long(BLOCK)) == 0
    os.close(fd)
    second, msgs = send(src, b"disk.img", applier, old_hashes=first.hashes, base=base)
    data = [m for m in msgs if isinstance(m, FileData)]
    holes = [m for m in msgs if isinstance(m, FileHole)]
    assert sum(len(m.data) for m in data) == BLOCK + 4096  # block 5 and the new tail only
    assert [(h.offset, h.length) for h in holes] == [(2 * BLOCK, BLOCK)]
    replica = tmp_path / "replica" / "root" / "disk.img"
    assert replica.read_bytes() == src.read_bytes()
    assert data_ranges(replica) == data_ranges(src)


def test_delta_on_a_changed_base_asks_for_the_whole_file(tmp_path, applier):
    src = tmp_path / "big.bin"
    src.write_bytes(random.Random(3).randbytes(DELTA_MIN))
    first, _ = send(src, b"big.bin", applier)
    replica = tmp_path / "replica" / "root" / "big.bin"
    os.utime(replica, ns=(1, 1))  # the replica is not the version the sentinel thinks
    fd = os.open(src, os.O_RDONLY)
    sender = FileSender(fd, entry_for(src, b"big.bin"), old_hashes=first.hashes, base=(DELTA_MIN, 12345))
    replies = []
    for m in sender.messages():
        replies += applier.handle(m)
    os.close(fd)
    assert len(replies) == 1 and isinstance(replies[0], Resend) and replies[0].path == b"big.bin"


def test_checkpoint_is_acknowledged_after_it_is_durable(tmp_path, applier):
    (durable,) = applier.handle(Checkpoint(7, b"some/cursor", {"bytes_done": 1}))
    ack = durable()
    assert ack == CheckpointAck(7)
    state = CheckpointJournal(tmp_path / "replica" / "checkpoint.json").load()
    assert state["seq"] == 7 and state["sync_id"] == 1


def test_data_outside_the_declared_size_is_refused(tmp_path, applier):
    src = tmp_path / "small"
    src.write_bytes(b"hello")
    _, msgs = send(src, b"small", applier)
    applier.handle(msgs[0])
    with pytest.raises(Refused, match="outside"):
        applier.handle(FileData(3, b"too long"))
