"""Replica disks built from a layout: real images, loop devices, mkfs and mounts (root only).

The layout is written out here as the sentinel reports it, for a GPT disk with an EFI
system partition, an ext4 root, swap and an LVM PV whose VG holds an xfs LV, plus a second
disk with a dos label. The checks read the images back with the system's own tools."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from osam.storage.command import StorageError
from osam.storage.replica_disks import STAGING_NAME, ReplicaDisks

pytestmark = [pytest.mark.need_root, pytest.mark.slow]

MiB = 1 << 20
GPT_ID = "6A3C8B10-1F0E-4C53-9D2B-0B1C2D3E4F50"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
LVM = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
EXT4_FEATURES = ["has_journal", "ext_attr", "resize_inode", "dir_index", "filetype", "extent",
                 "64bit", "flex_bg", "sparse_super", "large_file", "huge_file", "dir_nlink",
                 "extra_isize", "metadata_csum"]


def _layout():
    parts = [
        {"node": "/dev/sda1", "start": 2048, "size": 65536, "type": ESP,
         "uuid": "11111111-0000-4000-8000-000000000001", "name": "EFI System"},
        {"node": "/dev/sda2", "start": 67584, "size": 819200, "type": LINUX,
         "uuid": "11111111-0000-4000-8000-000000000002"},
        {"node": "/dev/sda3", "start": 886784, "size": 131072, "type": SWAP,
         "uuid": "11111111-0000-4000-8000-000000000003"},
        {"node": "/dev/sda5", "start": 1017856, "size": 800768, "type": LVM,
         "uuid": "11111111-0000-4000-8000-000000000005"},
    ]
    return {
        "root": "/",
        "boot": {"mode": "uefi", "bootloader": "grub2", "boot_disk": "sda", "efi_files": []},
        "disks": [
            {"name": "sda", "path": "/dev/sda", "size": 1024 * MiB, "logical_sector_size": 512,
             "partition_table": {"label": "gpt", "id": GPT_ID, "device": "/dev/sda", "unit": "sectors",
                                 "firstlba": 2048, "lastlba": 2097118, "sectorsize": 512, "partitions": parts}},
            {"name": "sdb", "path": "/dev/sdb", "size": 64 * MiB, "logical_sector_size": 512,
             "partition_table": {"label": "dos", "id": "0x5eed0b0e", "device": "/dev/sdb", "unit": "sectors",
                                 "sectorsize": 512,
                                 "partitions": [{"node": "/dev/sdb1", "start": 2048, "size": 129024, "type": "83"}]}},
        ],
        "filesystems": [
            {"device": "/dev/sda1", "fstype": "vfat", "uuid": "4A1B-2C3D", "label": "ESP",
             "mountpoint": "/boot/efi", "parent": {"kind": "partition", "disk": "sda", "number": 1},
             "options": {"fat_size": 16, "volume_id": "4A1B2C3D"}},
            {"device": "/dev/sda2", "fstype": "ext4", "uuid": "2b7f5e7c-57f5-4b3e-9e76-0c1f0f0a0001",
             "label": "rootfs", "mountpoint": "/", "parent": {"kind": "partition", "disk": "sda", "number": 2},
             "options": {"features": EXT4_FEATURES + ["needs_recovery"], "block_size": 4096, "inode_size": 256}},
            {"device": "/dev/sda3", "fstype": "swap", "uuid": "2b7f5e7c-57f5-4b3e-9e76-0c1f0f0a0003",
             "label": "swap", "mountpoint": None, "parent": {"kind": "partition", "disk": "sda", "number": 3}},
            {"device": "/dev/mapper/vg0-data", "fstype": "xfs", "uuid": "2b7f5e7c-57f5-4b3e-9e76-0c1f0f0a0004",
             "label": "data", "mountpoint": "/srv/data", "parent": {"kind": "lv", "vg": "vg0", "lv": "data"},
             "options": {"crc": 1, "finobt": 1, "reflink": 1, "bigtime": 1, "inobtcount": 1, "sparse": 1}},
            {"device": "/dev/sdb1", "fstype": "ext2", "uuid": "2b7f5e7c-57f5-4b3e-9e76-0c1f0f0a0005",
             "label": "", "mountpoint": "/var/log/old", "parent": {"kind": "partition", "disk": "sdb", "number": 1},
             "options": {}},
        ],
        "lvm": {
            "pvs": [{"device": "/dev/sda5", "uuid": "Pv0000-aaaa-bbbb-cccc-dddd-eeee-ffffff", "vg": "vg0",
                     "size": 800768 * 512, "pe_start": MiB,
                     "parent": {"kind": "partition", "disk": "sda", "number": 5}}],
            "vgs": [{"name": "vg0", "uuid": "Vg0000-aaaa-bbbb-cccc-dddd-eeee-ffffff", "extent_size": 4 * MiB,
                     "size": 388 * MiB}],
            "lvs": [{"name": "data", "vg": "vg0", "uuid": "Lv0000-aaaa-bbbb-cccc-dddd-eeee-ffffff",
                     "size": 320 * MiB, "segtype": "linear", "dm_name": "vg0-data",
                     "segments": [{"pv": "/dev/sda5", "pe_start": 2, "extents": 80}]}],
        },
        "mounts": [],
    }


def _sh(*argv) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _blkid(device: str) -> dict:
    out = _sh("blkid", "-p", "-o", "export", device)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture
def disks(disk_tmp_path):
    d = ReplicaDisks(str(disk_tmp_path / "replica"), _layout())
    try:
        yield d
    finally:
        d.unmount()
        assert not any(str(disk_tmp_path) in line for line in _sh("losetup", "-a").splitlines())


def test_images_have_the_sources_identifiers_and_mount_in_order(disks):
    disks.create()
    sda, sdb = disks.image_path("sda"), disks.image_path("sdb")
    assert os.path.getsize(sda) == 1024 * MiB and os.path.getsize(sdb) == 64 * MiB
    assert os.stat(sda).st_blocks * 512 < 200 * MiB, "images are sparse"
    table = json.loads(_sh("sfdisk", "--json", sda))["partitiontable"]
    assert table["id"] == GPT_ID
    assert [(p["node"][-1], p["start"], p["size"], p["type"], p["uuid"]) for p in table["partitions"]] == \
        [(p["node"][-1], p["start"], p["size"], p["type"], p["uuid"]) for p in _layout()["disks"][0]["partition_table"]["partitions"]]
    assert table["partitions"][0]["name"] == "EFI System"
    assert json.loads(_sh("sfdisk", "--json", sdb))["partitiontable"]["id"] == "0x5eed0b0e"

    disks.mount()
    root = disks.root
    devices = disks.device_map()
    by_uuid = devices["by_uuid"]
    for fs in _layout()["filesystems"]:
        info = _blkid(by_uuid[fs["uuid"]])
        assert info["TYPE"] == fs["fstype"] and info["UUID"] == fs["uuid"], fs["device"]
        assert info.get("LABEL", "") == fs["label"], fs["device"]
    features = _sh("tune2fs", "-l", by_uuid[_layout()["filesystems"][1]["uuid"]])
    assert "metadata_csum" in features and "orphan_file" not in features
    assert devices["boot_disk"] == disks.devices["sda"]
    assert devices["mapper"] == {"vg0-data": by_uuid["2b7f5e7c-57f5-4b3e-9e76-0c1f0f0a0004"]}
    mounted = [line.split()[4] for line in open("/proc/self/mountinfo") if f" {root}" in line]
    assert mounted == [root, f"{root}/boot/efi", f"{root}/srv/data", f"{root}/var/log/old"]
    assert disks.mount_points() == [b"", b"boot/efi", b"srv/data", b"var/log/old"]
    for point in mounted:
        assert os.path.isdir(os.path.join(point, STAGING_NAME))

    # The VG's metadata is the source's: LVM reads back its UUIDs without activating anything.
    pv_node = f"{disks.devices['sda']}p5"
    lvs = _sh("lvs", "--devices", pv_node, "--noheadings", "-o", "vg_name,vg_uuid,lv_name,lv_uuid,seg_pe_ranges")
    assert "Vg0000-aaaa-bbbb-cccc-dddd-eeee-ffffff" in lvs and "Lv0000-aaaa-bbbb-cccc-dddd-eeee-ffffff" in lvs
    assert f"{pv_node}:2-81" in lvs

    # Data written through the mounts survives an unmount/mount cycle; staging leaves no trace.
    with open(f"{root}/srv/data/file", "wb") as f:
        f.write(b"x" * 100000)
    os.makedirs(f"{root}/boot/efi/EFI/debian")
    with open(f"{root}/boot/efi/EFI/debian/grubx64.efi", "wb") as f:
        f.write(b"MZ" + bytes(5000))
    before = os.stat(f"{root}/srv/data").st_mtime_ns
    disks.unmount()
    assert not os.path.ismount(root)
    # The ESP is in its image (written through the kernel, or with mtools where it has no vfat).
    esp_image = f"{disks.image_path('sda')}@@{2048 * 512}"
    listing = subprocess.run(["mdir", "-i", esp_image, "-b", "::/EFI/debian"], capture_output=True, text=True,
                             env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    assert "GRUBX64.EFI" in listing.stdout.upper(), listing
    assert STAGING_NAME.upper() not in subprocess.run(["mdir", "-i", esp_image, "-b", "-a", "::/"], capture_output=True,
                                                     text=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout.upper()
    disks.mount()
    assert os.path.getsize(f"{root}/boot/efi/EFI/debian/grubx64.efi") == 5002
    with open(f"{root}/srv/data/file", "rb") as f:
        assert f.read() == b"x" * 100000
    disks.unmount()
    disks.mount()
    assert os.stat(f"{root}/srv/data").st_mtime_ns == before, "staging must not change the guest's directory times"


def test_create_is_idempotent_and_survives_a_crash_while_attached(disks):
    disks.create()
    disks.mount()
    with open(f"{disks.root}/kept", "w") as f:
        f.write("still here")
    # A new receiver process knows nothing of the old one's loop devices and mounts.
    again = ReplicaDisks(disks.replica_dir, _layout())
    again.create()                      # already created: nothing rebuilt
    again.mount()                       # releases what the "dead" one left, then mounts
    assert open(f"{again.root}/kept").read() == "still here"
    again.unmount()


def test_layouts_it_cannot_rebuild_are_refused_before_anything_is_made(disk_tmp_path):
    layout = _layout()
    layout["filesystems"][1]["fstype"] = "btrfs"
    with pytest.raises(StorageError, match="btrfs"):
        ReplicaDisks(str(disk_tmp_path / "r1"), layout).create()
    layout = _layout()
    layout["lvm"]["lvs"][0]["segments"] = [{"pv": "/dev/sda5", "pe_start": 2, "extents": 40},
                                           {"pv": "/dev/sda5", "pe_start": 60, "extents": 40}]
    with pytest.raises(StorageError, match="contiguous"):
        ReplicaDisks(str(disk_tmp_path / "r2"), layout).create()
    layout = _layout()
    layout["disks"][0]["name"] = "../evil"
    with pytest.raises(StorageError, match="cannot name an image"):
        ReplicaDisks(str(disk_tmp_path / "r3"), layout).create()
    layout = _layout()
    layout["filesystems"][0]["mountpoint"] = "/boot/../../escape"
    with pytest.raises(StorageError, match="mount point"):
        ReplicaDisks(str(disk_tmp_path / "r4"), layout).create()
    assert not (disk_tmp_path / "r1" / "disks").exists()
