"""Loop devices for replica images. Without udev nothing creates partition nodes on its own,
so partitions are added with partx (BLKPG) and their nodes checked, not assumed."""
from __future__ import annotations

import os
import stat
import time
from typing import Dict, List

from .command import StorageError, run


def attach(image: str) -> str:
    """Attach `image` to a free loop device with its partitions; return the device path."""
    device = run(["losetup", "--find", "--show", "--partscan", image]).strip()
    if not device.startswith("/dev/loop"):
        raise StorageError(f"losetup returned {device!r} for {image}")
    return device


def partition_nodes(device: str, numbers: List[int], timeout: float = 10.0) -> Dict[int, str]:
    """Paths of the partitions `numbers` of `device`, adding them to the kernel if missing."""
    want = {n: f"{device}p{n}" for n in numbers}
    if numbers and not all(_is_block(p) for p in want.values()):
        try:
            run(["partx", "--add", device])
        except StorageError:
            pass   # some were there already (partx complains); the check below decides
    deadline = time.monotonic() + timeout
    while not all(_is_block(p) for p in want.values()):
        if time.monotonic() > deadline:
            missing = [p for p in want.values() if not _is_block(p)]
            raise StorageError(f"partition devices did not appear: {', '.join(missing)}")
        time.sleep(0.05)
    return want


def backing_file(device: str) -> str:
    try:
        with open(f"/sys/block/{os.path.basename(device)}/loop/backing_file") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def detach(device: str) -> None:
    if backing_file(device):
        run(["losetup", "--detach", device])


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
