"""Which names of the source's block devices stay valid on the destination.

The replica keeps every file system's UUID and label, and LVM keeps its VG/LV names, so
UUID=, LABEL=, PARTUUID=, /dev/mapper/* and /dev/<vg>/<lv> still work after the move. Kernel
names (/dev/sda1, /dev/vda2, /dev/xvda1, /dev/nvme0n1p1) and /dev/disk/by-path, by-id names
depend on the old controller and disk serials: they are what must be replaced by UUID=.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, Optional

_UNSTABLE_DEVICE = re.compile(
    r"^/dev/(?:"
    r"(?:[shv]|xv)d[a-z]+\d*"              # sda1, vdb, hda2, xvda1
    r"|nvme\d+n\d+(?:p\d+)?"                # nvme0n1p2
    r"|mmcblk\d+(?:p\d+)?"
    r"|md\d+(?:p\d+)?|md/[^/]+"             # md arrays may come back under another number
    r"|dm-\d+"                              # dm numbers follow activation order
    r"|cciss/c\d+d\d+(?:p\d+)?"
    r"|disk/by-(?:path|id)/.+"
    r")$")


def is_unstable_device_path(spec: str) -> bool:
    """Whether a device name depends on the source's hardware (see the module docstring)."""
    return bool(_UNSTABLE_DEVICE.match(spec or ""))


class DeviceMap:
    """The source's device names and mount points → file system UUIDs, from the inventory."""

    def __init__(self, inventory: Dict[str, Any]):
        layout = inventory.get("layout") or {}
        self.by_device: Dict[str, str] = {}
        self.by_mountpoint: Dict[str, str] = {}
        for fs in _dicts(layout.get("filesystems")):
            self._add_filesystem(fs)
        for mount in _dicts(layout.get("mounts")) + _dicts(inventory.get("mounts")):
            uuid = _text(mount.get("uuid"))
            if uuid:
                self.by_mountpoint.setdefault(_text(mount.get("target")), uuid)
                self.by_device.setdefault(_text(mount.get("source")), uuid)
        self.by_device.pop("", None)
        self.by_mountpoint.pop("", None)

    def _add_filesystem(self, fs: Dict[str, Any]) -> None:
        uuid = _text(fs.get("uuid"))
        if not uuid:
            return
        # Optional other names of the same device (by-id, by-path links), when captured.
        for name in [fs.get("device")] + list(fs.get("links") or []) + list(fs.get("aliases") or []):
            if _text(name):
                self.by_device.setdefault(_text(name), uuid)
        mountpoint = _text(fs.get("mountpoint"))
        if mountpoint and fs.get("fstype") != "swap":
            self.by_mountpoint.setdefault(mountpoint, uuid)

    def uuid_for(self, device: str, mountpoint: Optional[str] = None) -> Optional[str]:
        """UUID of the file system the source knew as `device` (or mounted at `mountpoint`)."""
        uuid = self.by_device.get(device)
        if uuid is None and mountpoint and mountpoint.startswith("/"):
            uuid = self.by_mountpoint.get(mountpoint)
        return uuid


def _dicts(value: Any) -> list:
    return [v for v in (value or []) if isinstance(v, dict)] if isinstance(value, Iterable) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
