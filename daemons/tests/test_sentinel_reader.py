"""Reading file data for replication: holes found with SEEK_DATA are never read, and what the
sender makes of a file rebuilds it exactly, holes and block digests included."""
from __future__ import annotations

import errno
import os

import pytest
import xxhash
from hypothesis import given, settings, strategies as st

from osam.common.fsentry import REGULAR, FsEntry
from osam.protocol import FileData, FileEnd
from osam.sentinel import reader as reader_module
from osam.sentinel.reader import data_ranges
from osam.sentinel.sender import BLOCK, DELTA_MIN, FileSender

MiB = 1 << 20
PAGE = 4096


def make_file(path, size, pieces=()):
    """A sparse file of `size` bytes with data only where `pieces` (offset, bytes) say."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in pieces:
            f.seek(offset)
            f.write(data)
    return path


@pytest.fixture
def opened():
    fds = []

    def open_ro(path):
        fd = os.open(path, os.O_RDONLY)
        fds.append(fd)
        return fd

    yield open_ro
    for fd in fds:
        os.close(fd)


def test_data_ranges_follow_the_holes(tmp_path, opened):
    size = 16 * MiB
    path = make_file(tmp_path / "sparse", size,
                     [(5 * MiB, b"a" * PAGE), (size - 100, b"z" * 100)])
    fd = opened(path)
    assert list(data_ranges(fd, size)) == [(5 * MiB, PAGE), (size - PAGE, PAGE)]


def test_a_file_without_data_has_no_ranges(tmp_path, opened):
    fd = opened(make_file(tmp_path / "hole", 4 * MiB))
    assert list(data_ranges(fd, 4 * MiB)) == []
    assert list(data_ranges(opened(make_file(tmp_path / "empty", 0)), 0)) == []


def test_without_seek_data_the_whole_file_is_one_range(tmp_path, opened, monkeypatch):
    def unsupported(fd, pos, how):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(reader_module.os, "lseek", unsupported)
    path = make_file(tmp_path / "f", 2 * MiB, [(MiB, b"y")])
    assert list(data_ranges(opened(path), 2 * MiB)) == [(0, 2 * MiB)]


def test_the_sender_never_reads_a_hole(tmp_path, opened, monkeypatch):
    path = make_file(tmp_path / "f", 64 * MiB, [(10 * MiB, b"d" * MiB)])
    reads = []
    real_pread = os.pread
    monkeypatch.setattr("osam.sentinel.sender.os.pread",
                        lambda fd, n, off: reads.append((off, n)) or real_pread(fd, n, off))
    st_ = os.stat(path)
    entry = FsEntry(b"f", REGULAR, 0o644, 0, 0, st_.st_mtime_ns, st_.st_size)
    list(FileSender(opened(path), entry, allocated=st_.st_blocks * 512).messages())
    assert reads == [(10 * MiB, BLOCK)]


def rebuild(path, size, allocated):
    """What the receiver makes of the sender's messages: (content, data offsets, digests)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        sender = FileSender(fd, FsEntry(b"f", REGULAR, 0o644, 0, 0, 1, size), allocated=allocated)
        image, written = bytearray(size), []
        for msg in sender.messages():
            if isinstance(msg, FileData):
                image[msg.offset:msg.offset + len(msg.data)] = msg.data
                written.append((msg.offset, len(msg.data)))
            else:
                assert not isinstance(msg, FileEnd) or msg.ok
        return bytes(image), written, sender.hashes
    finally:
        os.close(fd)


_pieces = st.lists(st.tuples(st.integers(0, 6 * MiB), st.binary(min_size=1, max_size=9000)),
                   max_size=6)


@settings(max_examples=40, deadline=None)
@given(pieces=_pieces, extra=st.integers(0, MiB))
def test_the_sender_rebuilds_any_sparse_file_exactly(tmp_path_factory, pieces, extra):
    end = max((off + len(d) for off, d in pieces), default=0)
    size = end + extra
    path = make_file(tmp_path_factory.mktemp("prop") / "f", size, pieces)
    content = path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    ranges = list(data_ranges(fd, size))
    os.close(fd)
    image, written, hashes = rebuild(path, size, os.stat(path).st_blocks * 512)
    assert image == content
    # only data ranges travel: everything sent lies inside one
    for off, n in written:
        assert any(s <= off and off + n <= s + length for s, length in ranges), (off, n)
    if size >= DELTA_MIN:
        assert hashes == b"".join(xxhash.xxh3_64_digest(content[i:i + BLOCK]) for i in range(0, size, BLOCK))
    else:
        assert hashes is None
