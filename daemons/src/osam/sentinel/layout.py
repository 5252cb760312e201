"""The guest's disk layout: what the receiver needs to rebuild a replica's disks, one raw image
per source disk of the same size, with the same partition table (identifiers included), file
systems of the same type, UUID, label and features, swap and LVM.

Which disks: with root "/" every disk of the machine (lsblk TYPE disk with media; not loop,
zram or RAM devices, and md/dm devices are not disks). With another root (a guest disk
mounted on a helper) only the disks, loop devices included, that back the local file systems
mounted at or below root, plus any disk sharing a VG or array with them. Paths of mounts are
in guest terms: "/" is root itself, "/boot" is root + "/boot".

    layout = {
      "root": "/",                    # the sentinel's --root, as given
      "boot": {"mode": "bios" | "uefi",   # see layout_boot
               "bootloader": "grub2" | "systemd-boot" | "syslinux" | "unknown",
               "boot_disk": "sda",    # the disk holding /boot (or /), "" when unknown
               "esp": "/boot/efi",    # guest mount point of the EFI system partition, or ""
               "efi_files": ["/boot/efi/EFI/debian/grubx64.efi", ...]},
      "disks": [{"name": "sda", "path": "/dev/sda", "type": "disk" | "loop",
                 "size": bytes, "logical_sector_size": 512, "physical_sector_size": 512,
                 "model": "", "serial": "",
                 "partition_table": sfdisk --json's "partitiontable", verbatim (label, id,
                     device, unit, firstlba/lastlba, sectorsize, partitions[{node, start,
                     size, type, uuid?, name?, attrs?, bootable?}]), or None without one,
                 "partitions": [{"number": 1, "name": "sda1", "start": sector or None,
                                 "size_sectors": n, "size": bytes}]}],
      "filesystems": [{"device": "/dev/sda1", "fstype": "ext4", "uuid": "", "label": "",
                       "size": bytes (of the partition, LV or disk),
                       "mountpoint": "/boot" or None (guest terms),
                       "parent": PARENT, "options": {...}}],   # options: see layout_fs
      "lvm": {"pvs": [{"device", "uuid", "vg", "size", "pe_start" (bytes), "pe_count",
                       "parent": PARENT}],
              "vgs": [{"name", "uuid", "extent_size" (bytes), "size", "extent_count"}],
              "lvs": [...]},                                   # see layout_lvm
      "mounts": [{"target": "/boot", "source": "/dev/sda1", "device": "/dev/sda1",
                  "fstype": "ext4", "options": "rw,relatime", "super_options": "rw",
                  "fs_root": "/", "uuid": ""}],   # sorted by target; fs_root is the
                                                  # mounted directory of the file system
                                                  # (bind mounts, btrfs subvolumes)
      "errors": [{"probe": "sfdisk /dev/sda", "error": "..."}],
    }

    PARENT = {"kind": "partition", "disk": "sda", "number": 1}
           | {"kind": "lv", "vg": "vg0", "lv": "root"}
           | {"kind": "disk", "disk": "sdb"}                   # no partition table
           | {"kind": "crypt" | "raid1" | ..., "name": "luks-1234", "on": ["sda2"]}

Only lsblk failing (or an unreadable mount table) fails the whole layout; any other tool
that fails leaves its part empty and adds an entry to "errors".
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from osam.sentinel.layout_boot import EFI_FIRMWARE_DIR, collect_boot
from osam.sentinel.layout_devices import BlockDevice, DeviceTree, partition_number
from osam.sentinel.layout_fs import filesystem_options, probe_device
from osam.sentinel.layout_lvm import collect_lvm
from osam.sentinel.layout_tools import Run, Tools
from osam.sentinel.walk import MOUNTINFO, Mount, is_foreign_fstype, read_mountinfo, relative_to

# Signatures that are not file systems of their own: a PV is described under "lvm".
REPORTED_ELSEWHERE = frozenset({"LVM2_member"})


@dataclass
class GuestMount:
    target: str           # guest terms
    mount: Mount
    device: BlockDevice


def collect_layout(root: str = "/", run: Run = subprocess.run, *, mountinfo: str = MOUNTINFO,
                   efi_firmware_dir: str = EFI_FIRMWARE_DIR) -> Dict[str, Any]:
    """The layout of the disks behind `root` (schema above). `run` runs every external
    command; `mountinfo` and `efi_firmware_dir` let tests stand in for /proc and /sys."""
    tools = Tools(run)
    tree = DeviceTree.read(tools)
    host_root = os.path.realpath(root)
    mounts = local_mounts(host_root, read_mountinfo(mountinfo), tree)
    disks = select_disks(tree, host_root, mounts)
    nodes = _unique(k for disk in disks for k in tree.subtree(disk))
    mounts = [m for m in mounts if m.device.kname in nodes]
    probes = {k: tools.attempt("blkid " + tree.devices[k].path,
                               lambda k=k: probe_device(tools, tree.devices[k].path), {})
              for k in nodes}

    def describe_pv(name: str) -> Optional[Dict[str, Any]]:
        dev = tree.by_path(name)
        return parent_of(dev, {}) if dev is not None and dev.kname in nodes else None

    lvm = collect_lvm(tools, describe_pv)
    lv_by_dm_name = {lv["dm_name"]: lv for lv in lvm["lvs"] if lv["dm_name"]}
    mount_entries = sorted((mount_entry(m, probes) for m in mounts), key=lambda m: m["target"])
    disk_entries = [disk_entry(tools, tree, tree.devices[d], probes[d]) for d in disks]
    booted_from = boot_disk(tree, mounts)
    boot_table = next((d["partition_table"] for d in disk_entries if d["name"] == booted_from),
                      None)
    return {
        "root": root,
        "boot": collect_boot(root, mount_entries, booted_from, boot_table, efi_firmware_dir),
        "disks": disk_entries,
        "filesystems": filesystems(tools, tree, nodes, probes, mounts, lv_by_dm_name),
        "lvm": lvm,
        "mounts": mount_entries,
        "errors": tools.errors,
    }


# ---------------------------------------------------------------- mounts and disks

def local_mounts(host_root: str, mounts: Sequence[Mount], tree: DeviceTree) -> List[GuestMount]:
    """Mounts at or below `host_root` of block devices lsblk knows, in mount table order."""
    found = []
    for mount in mounts:
        rel = relative_to(mount.mount_point, os.fsencode(host_root))
        if rel is None or is_foreign_fstype(mount.fstype):
            continue
        # btrfs reports an anonymous device number: fall back to the source's name.
        device = tree.by_maj_min(mount.dev) or tree.by_path(_text(mount.source))
        if device is not None:
            found.append(GuestMount("/" + _text(rel), mount, device))
    return found


def select_disks(tree: DeviceTree, host_root: str, mounts: Sequence[GuestMount]) -> List[str]:
    if host_root == "/":
        return tree.guest_disks()
    return tree.with_shared_disks(
        disk for m in mounts for disk in tree.disks_below(m.device.kname))


def boot_disk(tree: DeviceTree, mounts: Sequence[GuestMount]) -> str:
    for target in ("/boot", "/"):
        for m in mounts:
            if m.target == target:
                disks = tree.disks_below(m.device.kname)
                return disks[0] if disks else ""
    return ""


def mount_entry(m: GuestMount, probes: Dict[str, Dict[str, str]]) -> Dict[str, Any]:
    return {"target": m.target, "source": _text(m.mount.source), "device": m.device.path,
            "fstype": m.mount.fstype, "options": m.mount.options,
            "super_options": m.mount.super_options, "fs_root": _text(m.mount.root),
            "uuid": probes.get(m.device.kname, {}).get("UUID", "")}


def disk_entry(tools: Tools, tree: DeviceTree, disk: BlockDevice,
               probe: Dict[str, str]) -> Dict[str, Any]:
    table = None
    has_partitions = any(tree.devices[c].type == "part" for c in disk.children)
    if probe.get("PTTYPE") or has_partitions:
        table = tools.attempt("sfdisk " + disk.path, lambda: tools.json(
            ["sfdisk", "--json", disk.path])["partitiontable"])
    return {"name": disk.kname, "path": disk.path, "type": disk.type, "size": disk.size,
            "logical_sector_size": disk.logical_sector_size,
            "physical_sector_size": disk.physical_sector_size,
            "model": disk.model, "serial": disk.serial,
            "partition_table": table, "partitions": partitions(tree, disk, table)}


def partitions(tree: DeviceTree, disk: BlockDevice,
               table: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """From the partition table; without one (sfdisk failed) from lsblk, start unknown."""
    if table:
        sector = table.get("sectorsize") or disk.logical_sector_size
        return [{"number": partition_number(os.path.basename(p["node"])),
                 "name": os.path.basename(p["node"]), "start": p["start"],
                 "size_sectors": p["size"], "size": p["size"] * sector}
                for p in table.get("partitions", [])]
    parts = [tree.devices[c] for c in disk.children if tree.devices[c].type == "part"]
    return [{"number": partition_number(p.kname), "name": p.kname, "start": None,
             "size_sectors": p.size // disk.logical_sector_size, "size": p.size}
            for p in parts]


# ---------------------------------------------------------------- file systems

def filesystems(tools: Tools, tree: DeviceTree, nodes: Sequence[str],
                probes: Dict[str, Dict[str, str]], mounts: Sequence[GuestMount],
                lv_by_dm_name: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    found = []
    for kname in nodes:
        probe = probes[kname]
        fstype = probe.get("TYPE", "")
        if not fstype or fstype in REPORTED_ELSEWHERE:
            continue
        dev = tree.devices[kname]
        mount = main_mount(kname, mounts)
        host_mount_point = _text(mount.mount.mount_point) if mount else None
        options = tools.attempt(
            "%s options %s" % (fstype, dev.path),
            lambda: filesystem_options(tools, fstype, dev.path, probe, host_mount_point), {})
        found.append({"device": dev.path, "fstype": fstype, "uuid": probe.get("UUID", ""),
                      "label": probe.get("LABEL", ""), "size": dev.size,
                      "mountpoint": mount.target if mount else None,
                      "parent": parent_of(dev, lv_by_dm_name), "options": options})
    return found


def main_mount(kname: str, mounts: Sequence[GuestMount]) -> Optional[GuestMount]:
    """The mount of a device's whole file system (not a bind mount or subvolume) nearest
    the root."""
    own = [m for m in mounts if m.device.kname == kname]
    own.sort(key=lambda m: (m.mount.root != b"/", len(m.target), m.target))
    return own[0] if own else None


def parent_of(dev: BlockDevice, lv_by_dm_name: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    if not dev.parents:
        return {"kind": "disk", "disk": dev.kname}
    if dev.type == "part":
        return {"kind": "partition", "disk": dev.parents[0],
                "number": partition_number(dev.kname)}
    lv = lv_by_dm_name.get(dev.name)
    if lv is not None:
        return {"kind": "lv", "vg": lv["vg"], "lv": lv["name"]}
    return {"kind": dev.type or "dm", "name": dev.name, "on": list(dev.parents)}


def _unique(items) -> List[str]:
    return list(dict.fromkeys(items))


def _text(raw: bytes) -> str:
    """JSON-safe even for names that are not UTF-8 (as the inventory's mounts)."""
    return raw.decode("utf-8", "backslashreplace")
