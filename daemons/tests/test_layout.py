"""The disk layout the sentinel reports for rebuilding a replica's disks: unit tests feed canned
tool outputs through the injectable `run`; one root-only test builds a real guest disk image
(GPT, ESP, ext4, swap, LVM, xfs) on a loop device and checks the layout against the tools."""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from types import SimpleNamespace

import pytest

from osam.sentinel.layout import collect_layout
from osam.sentinel.layout_devices import DeviceTree, partition_number
from osam.sentinel.layout_fs import parse_tune2fs, parse_xfs_info
from osam.sentinel.layout_tools import parse_export

GIB = 1 << 30
MIB = 1 << 20
IS_ROOT = os.geteuid() == 0


class FakeTools:
    """Stands in for subprocess.run: answers by (tool, last argument) or by tool; a tool
    without an answer is missing (FileNotFoundError), blkid finds nothing on unknown devices.
    An answer is stdout text, (returncode, stdout, stderr), or an exception to raise."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, **kwargs):
        assert kwargs.get("timeout") and kwargs.get("check") is False
        assert kwargs["env"]["LC_ALL"] == "C"  # parsed text must not be translated
        self.calls.append(argv)
        answer = self.answers.get((argv[0], argv[-1]), self.answers.get(argv[0]))
        if answer is None and argv[0] == "blkid":
            answer = (2, "", "")
        if answer is None:
            raise FileNotFoundError(2, "No such file or directory", argv[0])
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, str):
            answer = (0, answer, "")
        code, out, err = answer
        return SimpleNamespace(returncode=code, stdout=out.encode(), stderr=err.encode())

    def probed(self, tool):
        return [argv[-1] for argv in self.calls if argv[0] == tool]


def lsblk(*disks):
    return json.dumps({"blockdevices": list(disks)})


def node(name, maj_min, type_, size, children=(), kname=None, **extra):
    entry = {"name": name, "kname": kname or name, "maj:min": maj_min, "type": type_,
             "size": size, "model": None, "serial": None, "log-sec": 512, "phy-sec": 512}
    entry.update(extra)
    if children:
        entry["children"] = list(children)
    return entry


def mountinfo(tmp_path, *lines):
    path = tmp_path / "mountinfo"
    path.write_text("".join(line + "\n" for line in (
        "22 1 0:21 / /proc rw,relatime - proc proc rw",) + lines))
    return str(path)


def export(**values):
    return "".join("%s=%s\n" % item for item in values.items())


def no_lvm():
    return json.dumps({"report": [{"pv": []}]})


TUNE2FS = """tune2fs 1.47.0 (5-Feb-2023)
Filesystem volume name:   root
Filesystem UUID:          6a0d7bb4-2f0e-4c43-8a4f-1f0b1a0b9c11
Filesystem features:      has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum
Inode count:              163840
Block count:              655104
Reserved block count:     32755
Block size:               4096
Inode size:\t          256
"""

XFS_INFO_RHEL8 = """meta-data=/dev/mapper/vg0-root   isize=512    agcount=4, agsize=1081088 blks
         =                       sectsz=512   attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=0
         =                       reflink=1
data     =                       bsize=4096   blocks=4324352, imaxpct=25
         =                       sunit=0      swidth=0 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1
log      =internal log           bsize=4096   blocks=2560, version=2
         =                       sectsz=512   sunit=0 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
"""


# ---------------------------------------------------------------- BIOS, dos, ext4 + swap

SDA_DOS = {"partitiontable": {
    "label": "dos", "id": "0x8d3c2a1b", "device": "/dev/sda", "unit": "sectors",
    "sectorsize": 512, "partitions": [
        {"node": "/dev/sda1", "start": 2048, "size": 5240832, "type": "83", "bootable": True},
        {"node": "/dev/sda2", "start": 5242880, "size": 1048576, "type": "82"}]}}


def bios_machine(tmp_path):
    tools = FakeTools({
        "lsblk": lsblk(
            node("sda", "8:0", "disk", 3 * GIB, model="QEMU HARDDISK", serial="QM0001", children=[
                node("sda1", "8:1", "part", 5240832 * 512),
                node("sda2", "8:2", "part", 512 * MIB)]),
            node("sr0", "11:0", "rom", 1 * GIB),
            node("zram0", "253:0", "disk", 4 * GIB),
            node("nbd0", "43:0", "disk", 0),
            node("loop0", "7:0", "loop", 64 * MIB)),
        ("blkid", "/dev/sda"): export(PTUUID="8d3c2a1b", PTTYPE="dos"),
        ("blkid", "/dev/sda1"): export(LABEL="root", UUID="6a0d7bb4-2f0e-4c43-8a4f-1f0b1a0b9c11",
                                       VERSION="1.0", TYPE="ext4", USAGE="filesystem"),
        ("blkid", "/dev/sda2"): export(UUID="0b9f37c2-6c0e-4a39-9f0c-54b8d5f8e001", VERSION="1",
                                       TYPE="swap", USAGE="other"),
        ("sfdisk", "/dev/sda"): json.dumps(SDA_DOS),
        ("tune2fs", "/dev/sda1"): TUNE2FS,
        "pvs": no_lvm(),
    })
    table = mountinfo(tmp_path,
                      "27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro",
                      "28 27 0:25 / /run rw,nosuid - tmpfs tmpfs rw",
                      "29 27 7:0 / /snap/core/1 ro - squashfs /dev/loop0 ro")
    return tools, table


def test_bios_dos_disk_with_ext4_root_and_swap(tmp_path):
    tools, table = bios_machine(tmp_path)
    layout = collect_layout("/", tools, mountinfo=table, efi_firmware_dir=str(tmp_path / "no-efi"))
    assert layout["errors"] == []
    assert layout["root"] == "/"
    # Only real disks: not the CD-ROM, zram, an nbd without media, or loop devices.
    [disk] = layout["disks"]
    assert disk == {"name": "sda", "path": "/dev/sda", "type": "disk", "size": 3 * GIB,
                    "logical_sector_size": 512, "physical_sector_size": 512,
                    "model": "QEMU HARDDISK", "serial": "QM0001",
                    "partition_table": SDA_DOS["partitiontable"],
                    "partitions": [
                        {"number": 1, "name": "sda1", "start": 2048, "size_sectors": 5240832,
                         "size": 5240832 * 512},
                        {"number": 2, "name": "sda2", "start": 5242880, "size_sectors": 1048576,
                         "size": 512 * MIB}]}
    root, swap = layout["filesystems"]
    assert root == {"device": "/dev/sda1", "fstype": "ext4",
                    "uuid": "6a0d7bb4-2f0e-4c43-8a4f-1f0b1a0b9c11", "label": "root",
                    "size": 5240832 * 512, "mountpoint": "/",
                    "parent": {"kind": "partition", "disk": "sda", "number": 1},
                    "options": {"features": TUNE2FS.split("features:")[1].split("\n")[0].split(),
                                "block_size": 4096, "inode_size": 256, "inode_count": 163840,
                                "reserved_percent": 5.0}}
    assert swap == {"device": "/dev/sda2", "fstype": "swap",
                    "uuid": "0b9f37c2-6c0e-4a39-9f0c-54b8d5f8e001", "label": "",
                    "size": 512 * MIB, "mountpoint": None,
                    "parent": {"kind": "partition", "disk": "sda", "number": 2},
                    "options": {"version": 1}}
    assert layout["mounts"] == [{"target": "/", "source": "/dev/sda1", "device": "/dev/sda1",
                                 "fstype": "ext4", "options": "rw,relatime",
                                 "super_options": "rw,errors=remount-ro", "fs_root": "/",
                                 "uuid": "6a0d7bb4-2f0e-4c43-8a4f-1f0b1a0b9c11"}]
    assert layout["lvm"] == {"pvs": [], "vgs": [], "lvs": []}
    boot = layout["boot"]
    assert (boot["mode"], boot["boot_disk"], boot["esp"], boot["efi_files"]) == ("bios", "sda", "", [])
    assert boot["bootloader"] in ("grub2", "systemd-boot", "syslinux", "unknown")  # this machine's
    assert "/dev/loop0" not in tools.probed("blkid")
    json.dumps(layout)


def test_uefi_firmware_decides_the_mode_for_the_running_machine(tmp_path):
    tools, table = bios_machine(tmp_path)
    (tmp_path / "efi").mkdir()
    layout = collect_layout("/", tools, mountinfo=table, efi_firmware_dir=str(tmp_path / "efi"))
    assert layout["boot"]["mode"] == "uefi"


# ---------------------------------------------------------------- UEFI, GPT, ESP, /boot, LVM

GPT_TABLE = {"partitiontable": {
    "label": "gpt", "id": "5E2A4B8C-6D1F-4A0B-9C3E-7F8A1B2C3D4E", "device": "/dev/sda",
    "unit": "sectors", "firstlba": 2048, "lastlba": 41943006, "sectorsize": 512, "partitions": [
        {"node": "/dev/sda1", "start": 2048, "size": 1048576,
         "type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
         "uuid": "0F2D6A1C-1111-4B5E-8C7D-9E0A1B2C3D01", "name": "EFI System Partition"},
        {"node": "/dev/sda2", "start": 1050624, "size": 2097152,
         "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
         "uuid": "0F2D6A1C-2222-4B5E-8C7D-9E0A1B2C3D02"},
        {"node": "/dev/sda3", "start": 3147776, "size": 38795231,
         "type": "E6D6D379-F507-44C2-A23C-238F2A3DF928",
         "uuid": "0F2D6A1C-3333-4B5E-8C7D-9E0A1B2C3D03", "attrs": "LegacyBIOSBootable"}]}}
EXTENT = 4 * MIB
PV_UUID = "kdYTDD-tban-bTlO-8FqS-lfND-Az5z-ahYf0G"
VG_UUID = "wM6WEF-VmUk-dtiM-ruj6-FCLS-AsOt-vRxwji"
ROOT_LV_UUID = "Rt0000-aaaa-bbbb-cccc-dddd-eeee-ffff00"
SWAP_LV_UUID = "Sw0000-aaaa-bbbb-cccc-dddd-eeee-ffff00"


def lvm_report(kind, *rows):
    return json.dumps({"report": [{kind: list(rows)}]})


def lv_segment(name, uuid_, size_extents, le_start, extents, pe_start, dm_name):
    return {"vg_name": "vg0", "lv_name": name, "lv_uuid": uuid_,
            "lv_size": str(size_extents * EXTENT), "lv_path": "/dev/vg0/" + name,
            "lv_dm_path": "/dev/mapper/" + dm_name, "lv_attr": "-wi-ao----",
            "segtype": "linear", "seg_start_pe": str(le_start), "seg_size_pe": str(extents),
            "stripes": "1", "stripe_size": "0", "devices": "/dev/sda3(%d)" % pe_start}


def uefi_guest(tmp_path, mnt, esp_mounted=True):
    lvm_children = [node("vg0-root", "253:0", "lvm", 4223 * EXTENT, kname="dm-0"),
                    node("vg0-swap", "253:1", "lvm", 512 * EXTENT, kname="dm-1")]
    tools = FakeTools({
        "lsblk": lsblk(
            node("sda", "8:0", "disk", 20 * GIB, children=[
                node("sda1", "8:1", "part", 512 * MIB),
                node("sda2", "8:2", "part", 1 * GIB),
                node("sda3", "8:3", "part", 38795231 * 512, children=lvm_children)]),
            node("sdb", "8:16", "disk", 8 * GIB, children=[node("sdb1", "8:17", "part", 8 * GIB)])),
        ("blkid", "/dev/sda"): export(PTUUID="5e2a4b8c-6d1f-4a0b-9c3e-7f8a1b2c3d4e", PTTYPE="gpt"),
        ("blkid", "/dev/sda1"): export(LABEL_FATBOOT="ESP", LABEL="ESP", UUID="829D-A6B8",
                                       VERSION="FAT32", BLOCK_SIZE="512", TYPE="vfat"),
        ("blkid", "/dev/sda2"): export(LABEL="boot", UUID="f40a9d28-0023-4fd5-b964-93218715442a",
                                       VERSION="1.0", TYPE="ext4"),
        ("blkid", "/dev/sda3"): export(UUID=PV_UUID, VERSION="LVM2\\ 001", TYPE="LVM2_member"),
        ("blkid", "/dev/mapper/vg0-root"): export(UUID="b6aa6dd8-2add-42c4-bce9-3820d6fc1f13",
                                                  BLOCK_SIZE="512", TYPE="xfs"),
        ("blkid", "/dev/mapper/vg0-swap"): export(UUID="ff90d2b4-d299-44d5-9ca6-1356dd420fe5",
                                                  LABEL="swap", VERSION="1", TYPE="swap"),
        ("sfdisk", "/dev/sda"): json.dumps(GPT_TABLE),
        ("tune2fs", "/dev/sda2"): TUNE2FS,
        ("xfs_info", str(mnt)): XFS_INFO_RHEL8,
        "pvs": lvm_report("pv", {
            "pv_name": "/dev/sda3", "pv_uuid": PV_UUID, "vg_name": "vg0",
            "pv_size": str(4735 * EXTENT), "pe_start": str(MIB), "pv_pe_count": "4735"}),
        "vgs": lvm_report("vg", {"vg_name": "vg0", "vg_uuid": VG_UUID,
                                 "vg_extent_size": str(EXTENT), "vg_size": str(4735 * EXTENT),
                                 "vg_extent_count": "4735"}),
        # The root LV has two segments: it was extended after the swap LV was made.
        "lvs": lvm_report("seg",
                          lv_segment("root", ROOT_LV_UUID, 4223, 4000, 223, 4512, "vg0-root"),
                          lv_segment("root", ROOT_LV_UUID, 4223, 0, 4000, 0, "vg0-root"),
                          lv_segment("swap", SWAP_LV_UUID, 512, 0, 512, 4000, "vg0-swap")),
    })
    esp = "102 101 8:1 / %s/boot/efi rw,relatime - vfat /dev/sda1 rw,fmask=0077" % mnt
    table = mountinfo(
        tmp_path,
        "1 0 8:17 / / rw - ext4 /dev/sdb1 rw",  # the helper's own disk
        "100 1 253:0 / %s rw,relatime - xfs /dev/mapper/vg0-root rw,attr2,inode64" % mnt,
        "101 100 8:2 / %s/boot rw,relatime - ext4 /dev/sda2 rw" % mnt,
        *([esp] if esp_mounted else []),
        "103 100 0:40 / %s/run rw - tmpfs tmpfs rw" % mnt)
    for efi in ("EFI/debian/grubx64.efi", "EFI/debian/shimx64.efi", "EFI/BOOT/BOOTX64.EFI",
                "EFI/debian/grub.cfg"):
        path = mnt / "boot" / "efi" / efi
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"MZ")
    (mnt / "boot" / "grub").mkdir(parents=True)
    (mnt / "boot" / "grub" / "grub.cfg").write_text("set default=0\n")
    return tools, table


def test_gpt_uefi_disk_with_esp_boot_and_lvm(tmp_path):
    mnt = tmp_path / "mnt"
    tools, table = uefi_guest(tmp_path, mnt)
    layout = collect_layout(str(mnt), tools, mountinfo=table)
    assert layout["errors"] == []
    assert layout["root"] == str(mnt)
    assert layout["boot"] == {
        "mode": "uefi", "bootloader": "grub2", "boot_disk": "sda", "esp": "/boot/efi",
        "efi_files": ["/boot/efi/EFI/BOOT/BOOTX64.EFI", "/boot/efi/EFI/debian/grubx64.efi",
                      "/boot/efi/EFI/debian/shimx64.efi"]}
    [disk] = layout["disks"]  # sdb holds the helper's own root, not the guest
    assert disk["partition_table"] == GPT_TABLE["partitiontable"]
    assert [(p["number"], p["start"], p["size"]) for p in disk["partitions"]] == [
        (1, 2048, 512 * MIB), (2, 1050624, GIB), (3, 3147776, 38795231 * 512)]

    fs = {f["device"]: f for f in layout["filesystems"]}
    assert list(fs) == ["/dev/sda1", "/dev/sda2", "/dev/mapper/vg0-root", "/dev/mapper/vg0-swap"]
    assert fs["/dev/sda1"]["options"] == {"fat_size": 32, "volume_id": "829DA6B8", "sector_size": 512}
    assert (fs["/dev/sda1"]["label"], fs["/dev/sda1"]["mountpoint"]) == ("ESP", "/boot/efi")
    assert fs["/dev/sda2"]["mountpoint"] == "/boot" and fs["/dev/sda2"]["options"]["block_size"] == 4096
    root = fs["/dev/mapper/vg0-root"]
    assert (root["fstype"], root["mountpoint"], root["size"]) == ("xfs", "/", 4223 * EXTENT)
    assert root["parent"] == {"kind": "lv", "vg": "vg0", "lv": "root"}
    assert root["options"] == {
        "block_size": 4096, "sector_size": 512, "inode_size": 512, "agcount": 4, "attr": 2,
        "projid32bit": 1, "crc": 1, "finobt": 1, "sparse": 1, "rmapbt": 0, "reflink": 1,
        "imaxpct": 25, "sunit": 0, "swidth": 0, "dir_block_size": 4096, "ascii_ci": 0,
        "ftype": 1, "log_version": 2, "log_sector_size": 512, "lazy_count": 1,
        "naming_version": 2, "log_internal": True, "log_size": 2560 * 4096, "realtime": "none"}
    swap = fs["/dev/mapper/vg0-swap"]
    assert (swap["fstype"], swap["label"], swap["mountpoint"]) == ("swap", "swap", None)
    assert swap["parent"] == {"kind": "lv", "vg": "vg0", "lv": "swap"}

    lvm = layout["lvm"]
    assert lvm["pvs"] == [{"device": "/dev/sda3", "uuid": PV_UUID, "vg": "vg0",
                           "size": 4735 * EXTENT, "pe_start": MIB, "pe_count": 4735,
                           "parent": {"kind": "partition", "disk": "sda", "number": 3}}]
    assert lvm["vgs"] == [{"name": "vg0", "uuid": VG_UUID, "extent_size": EXTENT,
                           "size": 4735 * EXTENT, "extent_count": 4735}]
    root_lv, swap_lv = lvm["lvs"]
    assert (root_lv["name"], root_lv["uuid"], root_lv["size"], root_lv["segtype"],
            root_lv["dm_name"], root_lv["active"], root_lv["hidden"]) == (
        "root", ROOT_LV_UUID, 4223 * EXTENT, "linear", "vg0-root", True, False)
    assert [(s["le_start"], s["pv"], s["pe_start"], s["extents"]) for s in root_lv["segments"]] == [
        (0, "/dev/sda3", 0, 4000), (4000, "/dev/sda3", 4512, 223)]
    assert [(s["pv"], s["pe_start"], s["extents"]) for s in swap_lv["segments"]] == [
        ("/dev/sda3", 4000, 512)]

    assert [(m["target"], m["device"], m["uuid"]) for m in layout["mounts"]] == [
        ("/", "/dev/mapper/vg0-root", "b6aa6dd8-2add-42c4-bce9-3820d6fc1f13"),
        ("/boot", "/dev/sda2", "f40a9d28-0023-4fd5-b964-93218715442a"),
        ("/boot/efi", "/dev/sda1", "829D-A6B8")]
    assert not [dev for dev in tools.probed("blkid") if dev.startswith("/dev/sdb")]


def test_an_esp_in_the_partition_table_means_uefi_when_none_is_mounted(tmp_path):
    mnt = tmp_path / "mnt"
    tools, table = uefi_guest(tmp_path, mnt, esp_mounted=False)
    boot = collect_layout(str(mnt), tools, mountinfo=table)["boot"]
    assert (boot["mode"], boot["esp"], boot["efi_files"], boot["bootloader"]) == (
        "uefi", "", [], "grub2")
    # A BIOS boot partition beside it: a disk made to boot both ways, most likely by BIOS.
    gpt = json.loads(tools.answers[("sfdisk", "/dev/sda")])
    gpt["partitiontable"]["partitions"][2]["type"] = "21686148-6449-6E6F-744E-656564454649"
    tools.answers[("sfdisk", "/dev/sda")] = json.dumps(gpt)
    assert collect_layout(str(mnt), tools, mountinfo=table)["boot"]["mode"] == "bios"


# ---------------------------------------------------------------- another root: a loop disk

def test_another_root_keeps_only_the_disks_behind_it(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    tools = FakeTools({
        "lsblk": lsblk(
            node("vda", "254:0", "disk", 256 * GIB),
            node("loop3", "7:3", "loop", 700 * MIB, children=[
                node("loop3p1", "259:0", "part", 699 * MIB)]),
            node("loop4", "7:4", "loop", 64 * MIB)),
        ("blkid", "/dev/vda"): export(UUID="11111111-2222-3333-4444-555555555555", TYPE="ext4"),
        ("blkid", "/dev/loop3"): export(PTUUID="0x1234abcd", PTTYPE="dos"),
        ("blkid", "/dev/loop3p1"): export(UUID="22222222-2222-3333-4444-555555555555",
                                          TYPE="ext4"),
        ("sfdisk", "/dev/loop3"): json.dumps({"partitiontable": {
            "label": "dos", "id": "0x1234abcd", "device": "/dev/loop3", "unit": "sectors",
            "sectorsize": 512, "partitions": [
                {"node": "/dev/loop3p1", "start": 2048, "size": 1431552, "type": "83"}]}}),
        ("tune2fs", "/dev/loop3p1"): TUNE2FS,
        "pvs": no_lvm(),
    })
    table = mountinfo(tmp_path,
                      "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
                      "90 27 7:4 / %s/other rw - ext4 /dev/loop4 rw" % tmp_path,
                      "91 27 259:0 / %s rw,relatime - ext4 /dev/loop3p1 rw" % mnt)
    layout = collect_layout(str(mnt), tools, mountinfo=table)
    assert layout["errors"] == []
    assert [d["name"] for d in layout["disks"]] == ["loop3"]
    assert layout["disks"][0]["type"] == "loop"
    assert [(f["device"], f["mountpoint"], f["parent"]) for f in layout["filesystems"]] == [
        ("/dev/loop3p1", "/", {"kind": "partition", "disk": "loop3", "number": 1})]
    assert [m["target"] for m in layout["mounts"]] == ["/"]
    assert layout["boot"]["boot_disk"] == "loop3" and layout["boot"]["mode"] == "bios"
    assert tools.probed("blkid") == ["/dev/loop3", "/dev/loop3p1"]
    assert tools.probed("sfdisk") == ["/dev/loop3"]


def test_a_disk_sharing_a_volume_group_comes_along(tmp_path):
    mnt = tmp_path / "mnt"
    data = node("vg1-data", "253:2", "lvm", 30 * GIB, kname="dm-2")
    tools = FakeTools({
        "lsblk": lsblk(
            node("sda", "8:0", "disk", 10 * GIB, children=[
                node("sda1", "8:1", "part", 10 * GIB, children=[data])]),
            node("sdb", "8:16", "disk", 20 * GIB, children=[data]),
            node("sdc", "8:32", "disk", 20 * GIB)),
        "pvs": no_lvm(),
    })
    table = mountinfo(tmp_path, "91 1 253:2 / %s rw - xfs /dev/mapper/vg1-data rw" % mnt)
    layout = collect_layout(str(mnt), tools, mountinfo=table)
    assert [d["name"] for d in layout["disks"]] == ["sda", "sdb"]


# ---------------------------------------------------------------- missing and failing tools

def test_missing_lvm_tools_mean_no_lvm_not_an_error(tmp_path):
    mnt = tmp_path / "mnt"
    tools, table = uefi_guest(tmp_path, mnt)
    for tool in ("pvs", "vgs", "lvs"):
        del tools.answers[tool]
    layout = collect_layout(str(mnt), tools, mountinfo=table)
    assert layout["errors"] == []
    assert layout["lvm"] == {"pvs": [], "vgs": [], "lvs": []}
    root = [f for f in layout["filesystems"] if f["device"] == "/dev/mapper/vg0-root"][0]
    # Without lvs the dm device cannot be named as an LV, but it is still described.
    assert root["parent"] == {"kind": "lvm", "name": "vg0-root", "on": ["sda3"]}
    assert "/dev/sda3" not in [f["device"] for f in layout["filesystems"]]  # a PV, not a fs


def test_failing_lvm_report_is_an_error(tmp_path):
    mnt = tmp_path / "mnt"
    tools, table = uefi_guest(tmp_path, mnt)
    tools.answers["lvs"] = (5, "", "  Volume group vg0 is locked")
    layout = collect_layout(str(mnt), tools, mountinfo=table)
    assert [e["probe"] for e in layout["errors"]] == ["lvs"]
    assert len(layout["lvm"]["pvs"]) == 1 and layout["lvm"]["lvs"] == []


def test_failing_sfdisk_is_an_error_and_the_rest_is_filled(tmp_path):
    tools, table = bios_machine(tmp_path)
    tools.answers[("sfdisk", "/dev/sda")] = (1, "", "sfdisk: cannot open /dev/sda: Permission denied")
    layout = collect_layout("/", tools, mountinfo=table, efi_firmware_dir=str(tmp_path / "no-efi"))
    assert layout["errors"] == [{"probe": "sfdisk /dev/sda", "error": (
        "ToolFailed: sfdisk exited 1: sfdisk: cannot open /dev/sda: Permission denied")}]
    [disk] = layout["disks"]
    assert disk["partition_table"] is None and disk["size"] == 3 * GIB
    # Partitions still come from lsblk, without their start sector.
    assert [(p["number"], p["start"], p["size"]) for p in disk["partitions"]] == [
        (1, None, 5240832 * 512), (2, None, 512 * MIB)]
    assert [f["fstype"] for f in layout["filesystems"]] == ["ext4", "swap"]
    assert layout["mounts"] and layout["boot"]["boot_disk"] == "sda"


def test_unreadable_device_and_failing_tune2fs(tmp_path):
    tools, table = bios_machine(tmp_path)
    tools.answers[("blkid", "/dev/sda2")] = (2, "", "blkid: error: /dev/sda2: Operation not permitted")
    tools.answers[("tune2fs", "/dev/sda1")] = subprocess.TimeoutExpired(["tune2fs"], 30)
    layout = collect_layout("/", tools, mountinfo=table, efi_firmware_dir=str(tmp_path / "no-efi"))
    assert [e["probe"] for e in layout["errors"]] == ["blkid /dev/sda2", "ext4 options /dev/sda1"]
    assert "Operation not permitted" in layout["errors"][0]["error"]
    [root] = layout["filesystems"]
    assert root["uuid"] and root["options"] == {}


def test_no_lsblk_no_layout(tmp_path):
    with pytest.raises(FileNotFoundError):
        collect_layout("/", FakeTools({}), mountinfo=mountinfo(tmp_path))


def test_btrfs_mount_found_by_its_source(tmp_path):
    mnt = tmp_path / "mnt"
    tools = FakeTools({
        "lsblk": lsblk(node("vdb", "254:16", "disk", 8 * GIB)),
        ("blkid", "/dev/vdb"): export(UUID="33333333-2222-3333-4444-555555555555",
                                      UUID_SUB="44444444-2222-3333-4444-555555555555",
                                      TYPE="btrfs"),
    })
    table = mountinfo(tmp_path,  # btrfs shows an anonymous device number
                      "91 1 0:45 /@ %s rw - btrfs /dev/vdb rw,subvol=/@" % mnt,
                      "92 91 0:45 /@home %s/home rw - btrfs /dev/vdb rw,subvol=/@home" % mnt)
    layout = collect_layout(str(mnt), tools, mountinfo=table)
    assert [(m["target"], m["fs_root"]) for m in layout["mounts"]] == [("/", "/@"), ("/home", "/@home")]
    [fs] = layout["filesystems"]
    assert fs["parent"] == {"kind": "disk", "disk": "vdb"} and fs["mountpoint"] == "/"
    assert fs["options"] == {"uuid_sub": "44444444-2222-3333-4444-555555555555"}
    assert layout["disks"][0]["partition_table"] is None and tools.probed("sfdisk") == []


# ---------------------------------------------------------------- parsers and boot loaders

def test_old_lsblk_writes_every_value_as_a_string():
    tree = DeviceTree([{"name": "sda", "kname": "sda", "maj:min": "8:0", "type": "disk",
                        "size": "1073741824", "log-sec": "4096", "phy-sec": "4096",
                        "model": "Virtual disk    ", "serial": None,
                        "children": [{"name": "sda1", "kname": "sda1", "maj:min": "8:1",
                                      "type": "part", "size": "1072693248"}]}])
    sda = tree.devices["sda"]
    assert (sda.size, sda.logical_sector_size, sda.model, sda.serial) == (GIB, 4096, "Virtual disk", "")
    assert tree.disks_below("sda1") == ["sda"] and tree.subtree("sda") == ["sda", "sda1"]


def test_partition_numbers():
    names = ("sda1", "nvme0n1p12", "mmcblk0p2", "loop0p3")
    assert [partition_number(n) for n in names] == [1, 12, 2, 3]


def test_parse_export_unescapes():
    assert parse_export("VERSION=LVM2\\ 001\nLABEL=a\\$b\nbroken\n") == {"VERSION": "LVM2 001", "LABEL": "a$b"}


def test_parse_tune2fs_without_features():
    assert parse_tune2fs("Filesystem features:      (none)\nBlock size: 1024\n") == {
        "features": [], "block_size": 1024}


def test_parse_xfs_info_of_a_recent_xfsprogs():
    options = parse_xfs_info("""meta-data=/dev/loop0p5           isize=512    agcount=4, agsize=25728 blks
         =                       sectsz=512   attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=0
         =                       reflink=1    bigtime=1 inobtcount=1 nrext64=0
data     =                       bsize=4096   blocks=102912, imaxpct=25
         =                       sunit=0      swidth=0 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1
log      =external               bsize=4096   blocks=16384, version=2
         =                       sectsz=512   sunit=0 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
""")
    assert (options["bigtime"], options["inobtcount"], options["nrext64"]) == (1, 1, 0)
    assert options["log_internal"] is False and options["log_size"] == 16384 * 4096


@pytest.mark.parametrize("files, expected", [
    (["boot/grub2/grub.cfg"], "grub2"),
    (["boot/efi/loader/loader.conf", "boot/efi/EFI/systemd/systemd-bootx64.efi"], "systemd-boot"),
    (["boot/extlinux/extlinux.conf"], "syslinux"),
    (["boot/vmlinuz"], "unknown"),
])
def test_boot_loader_detection(tmp_path, files, expected):
    mnt = tmp_path / "mnt"
    for name in files + ["boot/efi/EFI/.keep"]:
        (mnt / name).parent.mkdir(parents=True, exist_ok=True)
        (mnt / name).write_text("")
    tools = FakeTools({"lsblk": lsblk(node("vda", "254:0", "disk", GIB, children=[
        node("vda1", "254:1", "part", 100 * MIB), node("vda2", "254:2", "part", 900 * MIB)]))})
    table = mountinfo(tmp_path, "91 1 254:2 / %s rw - ext4 /dev/vda2 rw" % mnt,
                      "92 91 254:1 / %s/boot/efi rw - vfat /dev/vda1 rw" % mnt)
    boot = collect_layout(str(mnt), tools, mountinfo=table)["boot"]
    assert boot["bootloader"] == expected and boot["mode"] == "uefi"


# ---------------------------------------------------------------- a real guest disk (root)

IMAGE_TOOLS = ("losetup", "partx", "sfdisk", "blkid", "mkfs.vfat", "mkfs.ext4", "mkswap",
               "mkfs.xfs", "tune2fs", "pvcreate", "vgcreate", "vgcfgbackup", "vgcfgrestore",
               "pvs", "lvs", "mount", "umount")
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
SWAP_TYPE = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
LVM_TYPE = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
# xfs wants at least 300 MiB; the image is sparse, so its 800 MiB cost little.
IMAGE_LAYOUT = """label: gpt
size=32MiB, type=%s, name="EFI System Partition"
size=96MiB, type=%s, name=root
size=16MiB, type=%s, name=swap
size=320MiB, type=%s, name=lvm
type=%s, name=srv
""" % (ESP_TYPE, LINUX_TYPE, SWAP_TYPE, LVM_TYPE, LINUX_TYPE)
# LVM never touches the host's own volume groups (--devices), keeps no backup of the test VG
# in /etc/lvm, and with no udev here it makes its device nodes itself.
LVM_CONFIG = ("backup{backup=0 archive=0} "
              "activation{udev_sync=0 udev_rules=0 verify_udev_operations=1}")


def sh(*argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs).stdout


def kernel_has(fstype):
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == fstype for line in f if line.strip())


def device_mapper_works():
    try:
        return subprocess.run(["dmsetup", "version"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def lvm_uuid():
    """LVM's UUID form: 32 characters in groups of 6-4-4-4-4-4-6."""
    chars = uuid.uuid4().hex
    return "-".join(chars[a:b] for a, b in ((0, 6), (6, 10), (10, 14), (14, 18), (18, 22),
                                            (22, 26), (26, 32)))


def add_two_segment_lv(vg, pv, lvm, workdir, lv_uuid):
    """The LV is written into the VG's metadata and restored (vgcfgrestore needs no
    device-mapper, lvcreate does): 76 extents in two segments, a gap of 2 extents between."""
    backup = str(workdir / "vg.txt")
    sh("vgcfgbackup", *lvm, "-f", backup, vg)
    text = open(backup).read()
    lv = """
\tlogical_volumes {
\t\tdata {
\t\t\tid = "%s"
\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]
\t\t\tflags = []
\t\t\tsegment_count = 2
\t\t\tsegment1 {
\t\t\t\tstart_extent = 0
\t\t\t\textent_count = 50
\t\t\t\ttype = "striped"
\t\t\t\tstripe_count = 1
\t\t\t\tstripes = ["pv0", 0]
\t\t\t}
\t\t\tsegment2 {
\t\t\t\tstart_extent = 50
\t\t\t\textent_count = 26
\t\t\t\ttype = "striped"
\t\t\t\tstripe_count = 1
\t\t\t\tstripes = ["pv0", 52]
\t\t\t}
\t\t}
\t}
""" % lv_uuid
    end = text.rindex("}")
    with open(backup, "w") as f:
        f.write(text[:end] + lv + text[end:])
    sh("vgcfgrestore", *lvm, "-f", backup, vg)


@pytest.fixture
def guest_disk(tmp_path):
    """A 800 MiB GPT guest disk on a loop device, mounted at tmp_path/mnt the way a guest
    mounts it: ext4 root, ESP at /boot/efi (vfat, when this kernel mounts vfat), swap, an
    LVM PV whose VG holds an LV `data` (xfs at /data when device-mapper works here), and an
    xfs /srv partition."""
    missing = [tool for tool in IMAGE_TOOLS if not any(
        os.access(os.path.join(d, tool), os.X_OK) for d in os.environ["PATH"].split(":") + ["/sbin", "/usr/sbin"])]
    if missing:
        pytest.skip("needs %s to build a guest disk" % ", ".join(missing))
    image, mnt = tmp_path / "guest.img", tmp_path / "mnt"
    with open(image, "wb") as f:
        f.truncate(800 * MIB)
    sh("sfdisk", "-q", str(image), input=IMAGE_LAYOUT)
    facts = {"mnt": mnt, "vg": "osamtestvg" + uuid.uuid4().hex[:8], "lv_uuid": lvm_uuid()}
    mounted, activated = [], False
    loop = sh("losetup", "-fP", "--show", str(image)).strip()
    try:
        subprocess.run(["partx", "-a", loop], capture_output=True)  # no udev: make the nodes
        part = ["%sp%d" % (loop, n) for n in range(1, 6)]
        assert all(os.path.exists(p) for p in part), "no partition nodes for %s" % loop
        facts.update(loop=loop, part=part)
        sh("mkfs.vfat", "-n", "OSAMESP", part[0])
        sh("mkfs.ext4", "-q", "-L", "osamroot", part[1])
        sh("mkswap", "-L", "osamswap", part[2])
        sh("mkfs.xfs", "-q", "-L", "osamsrv", part[4])
        lvm = ["--devices", part[3], "--config", LVM_CONFIG]
        facts["lvm"] = lvm
        sh("pvcreate", "-q", *lvm, part[3])
        sh("vgcreate", "-q", *lvm, facts["vg"], part[3])
        add_two_segment_lv(facts["vg"], part[3], lvm, tmp_path, facts["lv_uuid"])

        def mount(device, target, fstype):
            os.makedirs(target, exist_ok=True)
            sh("mount", "-t", fstype, device, str(target))
            mounted.append(target)

        mount(part[1], mnt, "ext4")
        (mnt / "boot" / "grub").mkdir(parents=True)
        (mnt / "boot" / "grub" / "grub.cfg").write_text("set default=0\n")
        facts["esp_mounted"] = kernel_has("vfat")
        if facts["esp_mounted"]:
            mount(part[0], mnt / "boot" / "efi", "vfat")
            (mnt / "boot" / "efi" / "EFI" / "debian").mkdir(parents=True)
            (mnt / "boot" / "efi" / "EFI" / "debian" / "grubx64.efi").write_bytes(b"MZ")
        facts["srv_mounted"] = kernel_has("xfs")
        if facts["srv_mounted"]:
            mount(part[4], mnt / "srv", "xfs")
        facts["lv_mounted"] = kernel_has("xfs") and device_mapper_works()
        if facts["lv_mounted"]:
            sh("vgchange", *lvm, "-ay", facts["vg"])
            activated = True
            lv_device = "/dev/mapper/%s-data" % facts["vg"]
            assert os.path.exists(lv_device), "vgchange made no %s" % lv_device
            sh("mkfs.xfs", "-q", "-L", "osamdata", lv_device)
            mount(lv_device, mnt / "data", "xfs")
            facts["lv_device"] = lv_device
        yield facts
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], capture_output=True)
        if activated:
            subprocess.run(["vgchange", *facts["lvm"], "-an", facts["vg"]], capture_output=True)
            subprocess.run(["dmsetup", "remove", "--noudevsync", "%s-data" % facts["vg"]],
                           capture_output=True)
        subprocess.run(["partx", "-d", loop], capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)


def blkid(device):
    return parse_export(sh("blkid", "-p", "-o", "export", device))


@pytest.mark.skipif(not IS_ROOT, reason="needs root: builds a guest disk on a loop device "
                                        "with LVM and mounts its file systems")
def test_layout_of_a_real_guest_disk(guest_disk):
    facts, part = guest_disk, guest_disk["part"]
    layout = collect_layout(str(facts["mnt"]))
    assert layout["errors"] == []
    json.dumps(layout)

    loop_name = os.path.basename(facts["loop"])
    [disk] = layout["disks"]
    assert (disk["name"], disk["path"], disk["size"]) == (loop_name, facts["loop"], 800 * MIB)
    table = json.loads(sh("sfdisk", "--json", facts["loop"]))["partitiontable"]
    assert disk["partition_table"] == table
    assert table["id"].lower() == blkid(facts["loop"])["PTUUID"]
    for entry, device in zip(table["partitions"], part):
        assert entry["uuid"].lower() == blkid(device)["PART_ENTRY_UUID"]
    assert [(p["number"], p["name"], p["size"]) for p in disk["partitions"]] == [
        (n + 1, os.path.basename(device), int(sh("blockdev", "--getsize64", device)))
        for n, device in enumerate(part)]

    fs = {f["device"]: f for f in layout["filesystems"]}
    expected = [part[0], part[1], part[2], part[4]] + (
        [facts["lv_device"]] if facts["lv_mounted"] else [])
    assert sorted(fs) == sorted(expected)
    for device in expected:
        probe = blkid(device)
        assert (fs[device]["fstype"], fs[device]["uuid"], fs[device]["label"]) == (
            probe["TYPE"], probe["UUID"], probe.get("LABEL", "")), device
        assert fs[device]["size"] == int(sh("blockdev", "--getsize64", device))
    assert fs[part[1]]["mountpoint"] == "/" and fs[part[2]]["mountpoint"] is None
    assert fs[part[0]]["mountpoint"] == ("/boot/efi" if facts["esp_mounted"] else None)
    assert fs[part[4]]["mountpoint"] == ("/srv" if facts["srv_mounted"] else None)
    assert fs[part[1]]["parent"] == {"kind": "partition", "disk": loop_name, "number": 2}
    features = sh("tune2fs", "-l", part[1]).split("Filesystem features:")[1].split("\n")[0].split()
    assert fs[part[1]]["options"]["features"] == features
    assert fs[part[0]]["options"]["fat_size"] == int(blkid(part[0])["VERSION"][3:])
    assert fs[part[0]]["options"]["volume_id"] == blkid(part[0])["UUID"].replace("-", "")
    assert fs[part[4]]["options"]["crc"] == 1 and fs[part[4]]["options"]["block_size"] == 4096

    lvm = layout["lvm"]
    pv_uuid = sh("pvs", *facts["lvm"], "--noheadings", "-o", "pv_uuid", part[3]).strip()
    vg_uuid = sh("vgs", *facts["lvm"], "--noheadings", "-o", "vg_uuid", facts["vg"]).strip()
    assert [(pv["device"], pv["uuid"], pv["vg"], pv["parent"]) for pv in lvm["pvs"]] == [
        (part[3], pv_uuid, facts["vg"], {"kind": "partition", "disk": loop_name, "number": 4})]
    assert [(vg["name"], vg["uuid"], vg["extent_size"]) for vg in lvm["vgs"]] == [
        (facts["vg"], vg_uuid, 4 * MIB)]
    [lv] = lvm["lvs"]
    assert (lv["name"], lv["vg"], lv["uuid"], lv["size"], lv["dm_name"]) == (
        "data", facts["vg"], facts["lv_uuid"], 76 * 4 * MIB, "%s-data" % facts["vg"])
    assert [(s["le_start"], s["pv"], s["pe_start"], s["extents"]) for s in lv["segments"]] == [
        (0, part[3], 0, 50), (50, part[3], 52, 26)]
    if facts["lv_mounted"]:
        assert fs[facts["lv_device"]]["parent"] == {"kind": "lv", "vg": facts["vg"], "lv": "data"}

    targets = ["/"] + (["/boot/efi"] if facts["esp_mounted"] else []) + (
        ["/data"] if facts["lv_mounted"] else []) + (["/srv"] if facts["srv_mounted"] else [])
    assert [m["target"] for m in layout["mounts"]] == targets
    boot = layout["boot"]
    assert (boot["mode"], boot["bootloader"], boot["boot_disk"]) == ("uefi", "grub2", loop_name)
    if facts["esp_mounted"]:
        assert boot["efi_files"] == ["/boot/efi/EFI/debian/grubx64.efi"]
