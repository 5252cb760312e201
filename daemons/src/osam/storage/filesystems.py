"""Make a file system like the source's: same type, UUID and label, and the features the
guest's bootloader and kernel know (a receiver's newer mke2fs/mkfs.xfs defaults can enable
features an older guest kernel or GRUB cannot read, so the source's list is used, not ours)."""
from __future__ import annotations

import os
from typing import Any, Dict, List

from .command import StorageError, run

EXT = ("ext2", "ext3", "ext4")
SUPPORTED = EXT + ("xfs", "vfat", "swap")
# Runtime state the guest's kernel sets; mke2fs refuses (or must not get) them.
_EXT_STATE_FEATURES = frozenset({"needs_recovery", "orphan_present", "mmp"})
# xfs_info keys mkfs.xfs takes under -m / -i / -n.
_XFS_META = ("crc", "finobt", "rmapbt", "reflink", "bigtime", "inobtcount")
_XFS_INODE = ("sparse", "nrext64")


def mkfs_argv(fs: Dict[str, Any], device: str) -> List[str]:
    fstype = fs.get("fstype")
    options = fs.get("options") or {}
    uuid, label = fs.get("uuid") or "", fs.get("label") or ""
    if fstype in EXT:
        argv = ["mke2fs", "-F", "-q", "-t", fstype,
                "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"]
        features = [f for f in options.get("features") or [] if f not in _EXT_STATE_FEATURES]
        if features:
            argv += ["-O", "none," + ",".join(features)]
        if options.get("block_size"):
            argv += ["-b", str(int(options["block_size"]))]
        if options.get("inode_size"):
            argv += ["-I", str(int(options["inode_size"]))]
        if uuid:
            argv += ["-U", uuid]
        if label:
            argv += ["-L", label]
        return argv + [device]
    if fstype == "xfs":
        meta = [f"{k}={int(bool(options[k]))}" for k in _XFS_META if k in options]
        if uuid:
            meta.insert(0, f"uuid={uuid}")
        argv = ["mkfs.xfs", "-f", "-q", "-K"]
        if meta:
            argv += ["-m", ",".join(meta)]
        inode = [f"{k}={int(bool(options[k]))}" for k in _XFS_INODE if k in options]
        if inode:
            argv += ["-i", ",".join(inode)]
        if options.get("block_size"):
            argv += ["-b", f"size={int(options['block_size'])}"]
        if label:
            argv += ["-L", label]
        return argv + [device]
    if fstype == "vfat":
        argv = ["mkfs.vfat"]
        if options.get("fat_size"):
            argv += ["-F", str(int(options["fat_size"]))]
        volume_id = options.get("volume_id") or uuid.replace("-", "")
        if volume_id:
            argv += ["-i", volume_id]
        if label:
            argv += ["-n", label]
        return argv + [device]
    if fstype == "swap":
        argv = ["mkswap", "-f"]
        if uuid:
            argv += ["-U", uuid]
        if label:
            argv += ["-L", label]
        return argv + [device]
    raise StorageError(f"{fs.get('device')}: file system type {fstype!r} cannot be recreated in a "
                       f"disk replica (supported: {', '.join(SUPPORTED)})")


def check_supported(fs: Dict[str, Any]) -> None:
    if fs.get("fstype") not in SUPPORTED:
        raise StorageError(f"{fs.get('device')}: file system type {fs.get('fstype')!r} cannot be "
                           f"recreated in a disk replica (supported: {', '.join(SUPPORTED)})")


def make_filesystem(fs: Dict[str, Any], device: str) -> None:
    run(mkfs_argv(fs, device))


def mount_options(fstype: str) -> List[str]:
    # The source may be mounted on this very host (tests do): xfs refuses a second file
    # system with the same UUID unless told not to check.
    return ["-o", "nouuid"] if fstype == "xfs" else []


def kernel_supports(fstype: str) -> bool:
    """Whether this kernel can mount `fstype` now (built in or a module already loaded)."""
    try:
        with open("/proc/filesystems") as f:
            known = {line.split()[-1] for line in f if line.strip()}
    except OSError:
        return True     # cannot tell: let mount(8) decide
    return fstype in known


def can_write_offline(fstype: str) -> bool:
    """File systems written from a directory after the fact when the kernel cannot mount
    them: a vfat EFI system partition (small) is rebuilt with mtools from its tree."""
    return fstype == "vfat"


def write_offline(fs: Dict[str, Any], device: str, image_at: str, tree: str, skip: str) -> None:
    """Make `fs` afresh on `device` and copy `tree` into it (all but the name `skip`).
    mtools reads the file system through `image_at` ("image@@offset"): it cannot take a
    loop partition, whose geometry ioctls it does not understand."""
    make_filesystem(fs, device)
    names = sorted(n for n in os.listdir(tree) if n != skip)
    if names:
        # -s recursive, -p keep attributes, -m keep modification times, -Q stop on the first error
        run(["mcopy", "-i", image_at, "-s", "-p", "-m", "-Q",
             *[os.path.join(tree, n) for n in names], "::/"], env_extra={"MTOOLS_SKIP_CHECK": "1"})
