"""The replica's raw images as VMware disks: file names in the VM's datastore folder and the
text descriptor that turns a raw image into a VMDK without copying a byte.

A VMFS-style monolithic flat disk is two files: `NAME.vmdk`, a short text descriptor, and
`NAME-flat.vmdk`, the disk's bytes from sector 0 (exactly a raw image). The descriptor says
`createType="vmfs"` and has one extent line `RW <sectors> VMFS "NAME-flat.vmdk"`, then the
disk database: a SCSI geometry of 255 heads and 63 sectors per track, the adapter type
(VMware writes "lsilogic" for every SCSI disk, pvscsi included), a content id (CID) with
parentCID=ffffffff for a disk without parent, a disk UUID and the virtual hardware version.
No pyvmomi here.
"""
from __future__ import annotations

import hashlib
import os
import re

from ..common.atomic import atomic_write
from .base import DestinationError

SECTOR = 512
HEADS, SECTORS_PER_TRACK = 255, 63    # the geometry VMware gives SCSI disks
ADAPTER_TYPE = "lsilogic"
# The oldest virtual hardware with pvscsi: a disk marked newer than its VM's hardware is refused.
VIRTUAL_HW_VERSION = "7"
NO_PARENT = "ffffffff"
MAX_NAME = 80                           # vSphere's limit for a VM name, kept for its folder too
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def vm_file_base(vm_name: str, migration_id: str) -> str:
    """The VM's folder name and the stem of its files: its name with only letters, digits,
    '.', '_' and '-' (datastore browsers, NFS and vmkfstools all take those as they are)."""
    base = _UNSAFE.sub("_", vm_name).strip("._-")[:MAX_NAME]
    return base or "osam-" + _UNSAFE.sub("_", migration_id)[:MAX_NAME - 5]


def descriptor_name(base: str, index: int) -> str:
    return f"{base}_{index}.vmdk"


def flat_name(base: str, index: int) -> str:
    return f"{base}_{index}-flat.vmdk"


def sectors_of(size: int, what: str) -> int:
    if size <= 0 or size % SECTOR:
        raise DestinationError(f"{what}: its size {size} is not a positive multiple of {SECTOR} bytes")
    return size // SECTOR


def descriptor_text(flat_file: str, size: int, seed: str) -> str:
    """The descriptor of a `size`-byte flat extent `flat_file` (a name in the same folder).
    `seed` (migration id and disk index) makes the ids stable, so rewriting changes nothing."""
    sectors = sectors_of(size, flat_file)
    digest = hashlib.sha256(seed.encode()).digest()
    cid = digest[:4].hex()
    if cid == NO_PARENT:            # reserved: "no parent"
        cid = "fffffffe"
    uuid = bytes.fromhex("6000c2") + digest[4:17]     # VMware's disk UUIDs start 60 00 C2
    uuid_text = " ".join(f"{b:02x}" for b in uuid[:8]) + "-" + " ".join(f"{b:02x}" for b in uuid[8:])
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        f"CID={cid}\n"
        f"parentCID={NO_PARENT}\n"
        'createType="vmfs"\n'
        "\n"
        "# Extent description\n"
        f'RW {sectors} VMFS "{flat_file}"\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        f'ddb.adapterType = "{ADAPTER_TYPE}"\n'
        f'ddb.geometry.cylinders = "{max(1, sectors // (HEADS * SECTORS_PER_TRACK))}"\n'
        f'ddb.geometry.heads = "{HEADS}"\n'
        f'ddb.geometry.sectors = "{SECTORS_PER_TRACK}"\n'
        f'ddb.longContentID = "{digest[17:29].hex()}{cid}"\n'
        f'ddb.uuid = "{uuid_text}"\n'
        f'ddb.virtualHWVersion = "{VIRTUAL_HW_VERSION}"\n'
    )


def write_descriptor_file(path: str, text: str) -> bool:
    """Write the descriptor unless it already says exactly this; True when written."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    # 0644: the datastore's server (NFS) may map the receiver's user to another one.
    atomic_write(path, text.encode(), mode=0o644)
    return True


def allocated_bytes(path: str) -> int:
    """What a file already takes on its file system (0 when it does not exist)."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0
