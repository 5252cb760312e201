"""Reading file data for replication: holes and zero chunks skipped, block hashes and deltas."""
from __future__ import annotations

import errno
import os

import pytest
import xxhash
from hypothesis import given, settings, strategies as st

from osam.sentinel import reader as reader_module
from osam.sentinel.reader import block_hashes, changed_blocks, data_ranges, read_chunks

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


def reassemble(fd, size, chunk=MiB):
    """The file as the receiver rebuilds it: truncate to size, write the chunks."""
    image = bytearray(size)
    for offset, data in read_chunks(fd, size, chunk):
        image[offset:offset + len(data)] = data
    return bytes(image)


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
    assert list(read_chunks(fd, 4 * MiB)) == []
    assert list(data_ranges(opened(make_file(tmp_path / "empty", 0)), 0)) == []


def test_read_chunks_never_reads_holes(tmp_path, opened, monkeypatch):
    size = 64 * MiB
    pieces = [(10 * MiB, b"b" * (3 * MiB)), (40 * MiB + 123, b"c" * 5000)]
    path = make_file(tmp_path / "sparse", size, pieces)
    reads = []
    real_pread = os.pread
    monkeypatch.setattr(reader_module.os, "pread",
                        lambda fd, n, off: reads.append((off, n)) or real_pread(fd, n, off))
    fd = opened(path)
    chunks = list(read_chunks(fd, size))
    assert sum(n for _, n in reads) <= 3 * MiB + 2 * PAGE + PAGE  # the data, block-rounded
    assert all(10 * MiB <= off < 13 * MiB or 40 * MiB <= off < 41 * MiB for off, _ in reads)
    assert [off for off, _ in chunks] == [10 * MiB, 11 * MiB, 12 * MiB, 40 * MiB]
    with open(path, "rb") as f:
        assert reassemble(fd, size) == f.read()


def test_zero_chunks_inside_data_are_dropped(tmp_path, opened):
    # Written zeros are allocated data, not holes: the reader still leaves them out.
    data = bytes(3 * MiB) + b"\x01" * MiB + bytes(MiB // 2) + b"\x02"
    path = tmp_path / "zeros"
    path.write_bytes(data)
    fd = opened(path)
    assert list(data_ranges(fd, len(data))) == [(0, len(data))]
    chunks = list(read_chunks(fd, len(data)))
    assert [off for off, _ in chunks] == [3 * MiB, 4 * MiB]
    assert reassemble(fd, len(data)) == data


def test_chunks_are_cut_on_chunk_multiples(tmp_path, opened):
    chunk = 64 * 1024
    path = make_file(tmp_path / "f", MiB, [(chunk - PAGE, b"x" * (2 * PAGE))])
    fd = opened(path)
    assert [(off, len(d)) for off, d in read_chunks(fd, MiB, chunk)] == [
        (chunk - PAGE, PAGE), (chunk, PAGE)]


def test_without_seek_data_the_whole_file_is_one_range(tmp_path, opened, monkeypatch):
    def unsupported(fd, pos, how):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(reader_module.os, "lseek", unsupported)
    path = make_file(tmp_path / "f", 2 * MiB, [(MiB, b"y")])
    fd = opened(path)
    assert list(data_ranges(fd, 2 * MiB)) == [(0, 2 * MiB)]
    assert [off for off, _ in read_chunks(fd, 2 * MiB)] == [MiB]


def test_a_file_that_shrank_ends_early(tmp_path, opened):
    path = make_file(tmp_path / "f", 0, [(0, b"q" * (3 * MiB))])
    fd = opened(path)
    os.truncate(path, MiB + 10)
    chunks = list(read_chunks(fd, 3 * MiB))
    assert [(off, len(d)) for off, d in chunks] == [(0, MiB), (MiB, 10)]


def test_block_hashes_cover_every_block_including_holes(tmp_path, opened):
    block = 64 * 1024
    size = 10 * block + 77
    path = make_file(tmp_path / "f", size, [(3 * block + 5, b"data"), (size - 1, b"!")])
    fd = opened(path)
    with open(path, "rb") as f:
        content = f.read()
    expected = [xxhash.xxh3_64_digest(content[i:i + block]) for i in range(0, size, block)]
    hashes = block_hashes(fd, size, block)
    assert hashes == expected and len(hashes) == 11 and all(len(h) == 8 for h in hashes)
    assert block_hashes(fd, 0, block) == []


def test_changed_blocks_finds_edits_growth_and_merges_neighbours(tmp_path, opened):
    block = 64 * 1024
    path = tmp_path / "f"
    path.write_bytes(os.urandom(8 * block))
    fd = opened(path)
    old = block_hashes(fd, 8 * block, block)
    assert changed_blocks(fd, 8 * block, old, block) == (old, [])

    with open(path, "r+b") as f:
        f.seek(2 * block + 10)
        f.write(b"edit")
        f.seek(5 * block - 1)       # touches blocks 4 and 5
        f.write(b"xy")
        f.seek(8 * block)           # grows by half a block
        f.write(b"g" * (block // 2))
    size = os.fstat(fd).st_size
    new, ranges = changed_blocks(fd, size, old, block)
    assert len(new) == 9
    assert ranges == [(2 * block, block), (4 * block, 2 * block), (8 * block, block // 2)]
    assert changed_blocks(fd, size, new, block)[1] == []


def test_changed_blocks_when_the_file_shrank(tmp_path, opened):
    block = 64 * 1024
    path = tmp_path / "f"
    path.write_bytes(os.urandom(4 * block))
    fd = opened(path)
    old = block_hashes(fd, 4 * block, block)
    os.truncate(path, 2 * block + 1)
    new, ranges = changed_blocks(fd, 2 * block + 1, old, block)
    assert new[:2] == old[:2] and ranges == [(2 * block, 1)]


_pieces = st.lists(st.tuples(st.integers(0, 3 * MiB), st.binary(min_size=1, max_size=9000)),
                   max_size=6)


@settings(max_examples=40, deadline=None)
@given(pieces=_pieces, extra=st.integers(0, MiB), chunk_shift=st.integers(12, 20))
def test_reassembled_chunks_equal_the_file(tmp_path_factory, pieces, extra, chunk_shift):
    end = max((off + len(d) for off, d in pieces), default=0)
    size = end + extra
    path = make_file(tmp_path_factory.mktemp("prop") / "f", size, pieces)
    with open(path, "rb") as f:
        content = f.read()
    fd = os.open(path, os.O_RDONLY)
    try:
        assert reassemble(fd, size, 1 << chunk_shift) == content
        block = 1 << chunk_shift
        assert block_hashes(fd, size, block) == [
            xxhash.xxh3_64_digest(content[i:i + block]) for i in range(0, size, block)]
    finally:
        os.close(fd)
