"""The block device tree (lsblk): which disks there are, what sits on what, and which disks
back a given device.

lsblk nests a device under each device it sits on (a partition under its disk, an LV under
every PV partition it spans), so walking that tree gives both directions: descendants of a
disk, and the disks below any device. Only columns that util-linux 2.32 (RHEL 8) knows are
asked for, and values are normalised because older lsblk writes every JSON value as a string.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional

from osam.sentinel.layout_tools import Tools

LSBLK_ARGV = ("lsblk", "-J", "-b", "-o",
              "NAME,KNAME,MAJ:MIN,TYPE,SIZE,MODEL,SERIAL,LOG-SEC,PHY-SEC")
# lsblk TYPE "disk" devices that are never a guest's disks: compressed RAM swap and RAM disks.
NOT_GUEST_DISK_PREFIXES = ("zram", "ram")
_TRAILING_NUMBER = re.compile(r"(\d+)$")


@dataclass
class BlockDevice:
    kname: str            # the kernel's name: sda, sda1, nvme0n1p2, dm-0, loop0p1
    name: str             # lsblk's NAME: the device-mapper name for dm devices (vg0-root)
    maj_min: str
    type: str             # disk, loop, part, lvm, crypt, raid1, ...
    size: int
    model: str = ""
    serial: str = ""
    logical_sector_size: int = 512
    physical_sector_size: int = 512
    parents: List[str] = field(default_factory=list)   # knames this device sits on
    children: List[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        if self.kname.startswith("dm-"):
            return "/dev/mapper/" + self.name
        return "/dev/" + self.kname


def partition_number(kname: str) -> Optional[int]:
    """sda1 -> 1, nvme0n1p2 -> 2, loop0p3 -> 3: Linux names partitions disk[p]N."""
    found = _TRAILING_NUMBER.search(kname)
    return int(found.group(1)) if found else None


class DeviceTree:
    def __init__(self, lsblk_devices: List[Dict[str, Any]]) -> None:
        self.devices: Dict[str, BlockDevice] = {}
        self.top: List[str] = []
        for node in lsblk_devices:
            self.top.append(self._add(node, None))

    @classmethod
    def read(cls, tools: Tools) -> "DeviceTree":
        return cls(tools.json(LSBLK_ARGV)["blockdevices"])

    def _add(self, node: Dict[str, Any], parent: Optional[str]) -> str:
        kname = _text(node.get("kname") or node.get("name"))
        dev = self.devices.get(kname)
        if dev is None:
            dev = self.devices[kname] = BlockDevice(
                kname=kname, name=_text(node.get("name")) or kname,
                maj_min=_text(node.get("maj:min")), type=_text(node.get("type")),
                size=_int(node.get("size")), model=_text(node.get("model")),
                serial=_text(node.get("serial")),
                logical_sector_size=_int(node.get("log-sec"), 512),
                physical_sector_size=_int(node.get("phy-sec"), 512))
        if parent and parent not in dev.parents:
            dev.parents.append(parent)
        for child in node.get("children") or []:
            child_kname = self._add(child, kname)
            if child_kname not in dev.children:
                dev.children.append(child_kname)
        return kname

    # ---------------------------------------------------------------- lookups

    def by_maj_min(self, maj_min: str) -> Optional[BlockDevice]:
        for dev in self.devices.values():
            if dev.maj_min == maj_min:
                return dev
        return None

    def by_path(self, path: str) -> Optional[BlockDevice]:
        """A device named by a path: /dev/sda1, /dev/mapper/vg0-root, or a link to one."""
        for candidate in (path, os.path.realpath(path)):
            for dev in self.devices.values():
                if candidate in (dev.path, "/dev/" + dev.kname, "/dev/" + dev.name):
                    return dev
        return None

    # ---------------------------------------------------------------- relations

    def guest_disks(self) -> List[str]:
        """Every disk of the running machine: lsblk TYPE disk with media, no RAM devices."""
        return [k for k in self.top if self._is_guest_disk(self.devices[k])]

    @staticmethod
    def _is_guest_disk(dev: BlockDevice) -> bool:
        return (dev.type == "disk" and dev.size > 0
                and not dev.kname.startswith(NOT_GUEST_DISK_PREFIXES))

    def disks_below(self, kname: str) -> List[str]:
        """The top-level devices (disks, loop devices) that `kname` sits on, lsblk order."""
        found: List[str] = []
        todo, seen = [kname], set()
        while todo:
            current = todo.pop()
            if current in seen or current not in self.devices:
                continue
            seen.add(current)
            parents = self.devices[current].parents
            if not parents:
                found.append(current)
            todo.extend(parents)
        return [k for k in self.top if k in found]

    def subtree(self, kname: str) -> List[str]:
        """`kname` and everything on it, depth first in lsblk order."""
        order: List[str] = []
        todo = [kname]
        while todo:
            current = todo.pop()
            if current in order:
                continue
            order.append(current)
            todo.extend(reversed(self.devices[current].children))
        return order

    def with_shared_disks(self, disks: Iterable[str]) -> List[str]:
        """`disks` plus every disk that shares a device with them (a VG or RAID spanning
        disks): those disks are rebuilt together or not at all."""
        wanted = set(disks)
        selected = [k for k in self.top if k in wanted]
        grew = True
        while grew:
            grew = False
            for disk in list(selected):
                for kname in self.subtree(disk):
                    for other in self.disks_below(kname):
                        if other not in selected:
                            selected.append(other)
                            grew = True
        return [k for k in self.top if k in selected]


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
