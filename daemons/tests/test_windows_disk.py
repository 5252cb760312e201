"""Opening a disk for raw reads and finding its size: on this Linux machine, the same functions
on an image file and (as root) on a loop device."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from osam.sentinel.windows.disk import disk_size, open_disk, read_at

SIZE = 8 * 1024 * 1024


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(SIZE)
        f.seek(SIZE - 512)
        f.write(b"\xabtail" + b"\0" * 507)
    return path


def test_size_of_an_image_by_path_and_by_descriptor(image):
    assert disk_size(str(image)) == SIZE
    fd = open_disk(str(image))
    try:
        assert disk_size(fd) == SIZE
        assert read_at(fd, SIZE - 512, 5) == b"\xabtail"
        with pytest.raises(OSError):
            os.write(fd, b"x")              # read-only
    finally:
        os.close(fd)


def test_a_missing_disk_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_disk(str(tmp_path / "PhysicalDrive9"))


def test_a_directory_is_no_disk(tmp_path):
    fd = os.open(str(tmp_path), os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="neither a disk nor a regular file"):
            disk_size(fd)
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("losetup") is None,
                    reason="attaching a loop device needs root and losetup")
def test_size_of_a_block_device(image):
    done = subprocess.run(["losetup", "-f", "--show", "-r", str(image)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("no loop device available: %s" % done.stderr.strip())
    device = done.stdout.strip()
    try:
        assert disk_size(device) == SIZE
        fd = open_disk(device)
        try:
            assert disk_size(fd) == SIZE
            assert read_at(fd, SIZE - 512, 5) == b"\xabtail"
        finally:
            os.close(fd)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
