"""A guest's replica as disks: one raw image per source disk under `<replica_dir>/disks/`,
built from the layout the sentinel captured, attached to loop devices and mounted at
`<replica_dir>/root` in the source's mount order, so file-level sync writes into them.

The images are made once per migration (state.json records it, written atomically); mount()
and unmount() may run any number of times, also after the receiver was killed with the
images still attached (they are found by their backing files and released first).

While mounted, each replica file system holds a staging directory (STAGING_NAME) at its
root: the replica store writes new content there and renames it into place, which only
works within one file system. unmount() removes them and restores the directory's mtime.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from ..common.atomic import atomic_write
from . import filesystems, loop, lvm
from .command import StorageError, run
from .partition_table import partition_number, write_partition_table

STAGING_NAME = ".osam-staging"
IMAGE_SUFFIX = ".raw"
_DISK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
STATE_VERSION = 1


def default_image_path(replica_dir: str, disk_name: str) -> str:
    """Where a disk's image goes unless the destination places it elsewhere (a datastore)."""
    return os.path.join(os.path.abspath(replica_dir), "disks", disk_name + IMAGE_SUFFIX)


def layout_digest(layout: Dict[str, Any]) -> str:
    keep = {k: layout.get(k) for k in ("disks", "filesystems", "lvm")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


class ReplicaDisks:
    def __init__(self, replica_dir: str, layout: Dict[str, Any], image_paths: Optional[Dict[str, str]] = None):
        self.replica_dir = os.path.abspath(replica_dir)
        self._image_paths = dict(image_paths or {})   # disk name -> image file elsewhere (a datastore)
        self.layout = layout or {}
        self.disks_dir = os.path.join(self.replica_dir, "disks")
        self.root = os.path.join(self.replica_dir, "root")
        self.state_path = os.path.join(self.disks_dir, "state.json")
        self._disks = {d["name"]: d for d in self.layout.get("disks") or []}
        self._lvm = lvm.VolumeGroups(self.layout.get("lvm") or {}, self.replica_dir)
        self.devices: Dict[str, str] = {}        # disk name -> loop device while attached

    # -- checks ---------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a layout this receiver cannot rebuild, before anything is created."""
        if not self._disks:
            raise StorageError("the guest reported no disks: its layout is needed for a disk replica "
                               "(is the sentinel too old, or did its layout probe fail?)")
        for name, disk in self._disks.items():
            if not _DISK_NAME.match(name):
                raise StorageError(f"disk name {name!r} cannot name an image file")
            if not isinstance(disk.get("size"), int) or disk["size"] <= 0:
                raise StorageError(f"disk {name}: no size")
        for fs in self._filesystems():
            filesystems.check_supported(fs)
            self._parent_disk(fs["parent"])
            if fs in self._mounted() and not filesystems.kernel_supports(fs["fstype"]) \
                    and not filesystems.can_write_offline(fs["fstype"]):
                raise StorageError(f"{fs['device']}: this receiver's kernel cannot mount {fs['fstype']}")
        self._lvm.check()
        mounts = [fs["mountpoint"] for fs in self._mounted()]
        if "/" not in mounts:
            raise StorageError("the layout has no file system mounted at /")

    # -- building -------------------------------------------------------------------------
    def image_path(self, name: str) -> str:
        return self._image_paths.get(name) or default_image_path(self.replica_dir, name)

    def images(self) -> List[str]:
        return [self.image_path(name) for name in self._disks]

    def created(self) -> bool:
        state = self._state()
        return state.get("digest") == layout_digest(self.layout) and state.get("created", False)

    def create(self) -> None:
        """Build the images: sparse files, partition tables, LVM, file systems. Idempotent:
        once state.json says they exist for this layout, nothing is rebuilt."""
        if self.created():
            return
        self.check()
        self.unmount()
        os.makedirs(self.disks_dir, mode=0o700, exist_ok=True)
        for name, disk in self._disks.items():
            image = self.image_path(name)
            os.makedirs(os.path.dirname(image), exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(image)
            with open(image, "xb") as f:       # sparse: no block is allocated until written
                f.truncate(disk["size"])
            if disk.get("partition_table"):
                write_partition_table(disk["partition_table"], image)
        try:
            self._attach()
            self._lvm.create(self._node)
            self._lvm.activate(self._node, self._image_offset)
            for fs in self._filesystems():
                filesystems.make_filesystem(fs, self._node(fs["parent"]))
        finally:
            self._release()
        self._save_state({"version": STATE_VERSION, "digest": layout_digest(self.layout), "created": True})

    # -- mounting -------------------------------------------------------------------------
    def mount(self) -> None:
        """Attach the images and mount the file systems at root/ in the source's order."""
        if not self.created():
            raise StorageError(f"{self.replica_dir}: the replica's disks are not created yet")
        self.unmount()
        self._attach()
        try:
            self._lvm.activate(self._node, self._image_offset)
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            for fs in self._mounted():
                target = self._target(fs["mountpoint"])
                os.makedirs(target, mode=0o755, exist_ok=True)
                if self._offline(fs):
                    tree = self._offline_tree(fs)
                    os.makedirs(tree, mode=0o755, exist_ok=True)
                    run(["mount", "--bind", tree, target])
                else:
                    run(["mount", "-t", fs["fstype"], *filesystems.mount_options(fs["fstype"]),
                         self._node(fs["parent"]), target])
                staging = os.path.join(target, STAGING_NAME)
                _keep_mtime(target, lambda: os.makedirs(staging, mode=0o700, exist_ok=True))
        except BaseException:
            self.unmount()
            raise

    def mounted(self) -> bool:
        return os.path.ismount(self.root)

    def mount_points(self) -> List[bytes]:
        """The replica file systems' mount points relative to root (b"" for root itself)."""
        return [os.fsencode(fs["mountpoint"].strip("/")) for fs in self._mounted()]

    def unmount(self) -> None:
        """Unmount and detach everything of this replica, whatever state a crash left.
        File systems kept as trees (see _offline) are written into their images here."""
        for target in reversed(_mounts_under(self.root)):
            staging = os.path.join(target, STAGING_NAME)
            if os.path.isdir(staging) and not os.path.islink(staging):
                _keep_mtime(target, lambda: _remove_tree(staging))
            run(["umount", target])
        offline = [fs for fs in self._mounted() if self._offline(fs) and os.path.isdir(self._offline_tree(fs))]
        self._release()
        if offline and self.created():
            self._attach()
            try:
                for fs in offline:
                    image, offset = self._image_offset(fs["parent"])
                    filesystems.write_offline(fs, self._node(fs["parent"]), f"{image}@@{offset}",
                                              self._offline_tree(fs), STAGING_NAME)
            finally:
                self._release()

    def _offline(self, fs: Dict[str, Any]) -> bool:
        """A file system this kernel cannot mount is replicated into a directory and written
        into its image on unmount (vfat ESPs on kernels without vfat)."""
        return (not filesystems.kernel_supports(fs["fstype"]) and filesystems.can_write_offline(fs["fstype"])
                and fs["parent"].get("kind") in ("partition", "disk"))

    def _offline_tree(self, fs: Dict[str, Any]) -> str:
        return os.path.join(self.replica_dir, "offline", fs.get("uuid") or fs["mountpoint"].strip("/").replace("/", "_"))

    def device_map(self) -> Dict[str, Any]:
        """What the fix-up needs inside its chroot: the boot disk and each UUID's device."""
        boot = (self.layout.get("boot") or {}).get("boot_disk") or next(iter(self._disks), "")
        by_uuid = {fs["uuid"]: self._node(fs["parent"]) for fs in self._filesystems() if fs.get("uuid")}
        nodes = sorted(set(self.devices.values()) | set(by_uuid.values()) | set(self._partition_nodes()))
        return {"boot_disk": self.devices.get(boot, ""), "by_uuid": by_uuid, "nodes": nodes,
                "mapper": self._lvm.mapper_nodes()}

    # -- internals ------------------------------------------------------------------------
    def _filesystems(self) -> List[Dict[str, Any]]:
        return [fs for fs in self.layout.get("filesystems") or [] if fs.get("fstype")]

    def _mounted(self) -> List[Dict[str, Any]]:
        mounted = [fs for fs in self._filesystems()
                   if fs.get("mountpoint") and fs["fstype"] != "swap"]
        for fs in mounted:
            _check_mountpoint(fs["mountpoint"])
        return sorted(mounted, key=lambda fs: (fs["mountpoint"].rstrip("/").count("/"), fs["mountpoint"]))

    def _target(self, mountpoint: str) -> str:
        return os.path.join(self.root, mountpoint.strip("/")) if mountpoint != "/" else self.root

    def _parent_disk(self, parent: Dict[str, Any]) -> Optional[str]:
        kind = parent.get("kind")
        if kind in ("partition", "disk"):
            if parent.get("disk") not in self._disks:
                raise StorageError(f"file system on unknown disk {parent.get('disk')!r}")
            return parent["disk"]
        if kind == "lv":
            return None
        raise StorageError(f"file system parent {parent!r} is not a partition, disk or LV")

    def _node(self, parent: Dict[str, Any]) -> str:
        kind = parent.get("kind")
        if kind == "disk":
            return self.devices[parent["disk"]]
        if kind == "partition":
            return f"{self.devices[parent['disk']]}p{int(parent['number'])}"
        if kind == "lv":
            return self._lvm.lv_node(parent["vg"], parent["lv"])
        raise StorageError(f"cannot place a file system on {parent!r}")

    def _image_offset(self, parent: Dict[str, Any]) -> Tuple[str, int]:
        """The image file holding a partition or whole disk, and the byte offset it starts at."""
        disk = self._disks[parent["disk"]]
        image = self.image_path(parent["disk"])
        if parent.get("kind") == "disk":
            return image, 0
        table = disk.get("partition_table") or {}
        sector = int(table.get("sectorsize") or disk.get("logical_sector_size") or 512)
        for part in table.get("partitions", []):
            if partition_number(part) == int(parent["number"]):
                return image, int(part["start"]) * sector
        raise StorageError(f"disk {parent['disk']} has no partition {parent['number']}")

    def _partition_nodes(self) -> List[str]:
        nodes = []
        for name, disk in self._disks.items():
            for part in (disk.get("partition_table") or {}).get("partitions", []):
                if name in self.devices:
                    nodes.append(f"{self.devices[name]}p{partition_number(part)}")
        return nodes

    def _attach(self) -> None:
        for name, disk in self._disks.items():
            device = loop.attach(self.image_path(name))
            self.devices[name] = device
            numbers = [partition_number(p) for p in (disk.get("partition_table") or {}).get("partitions", [])
                       if str(p.get("type", "")).lower() not in ("5", "f", "85")]   # extended: no node
            loop.partition_nodes(device, numbers)

    def _release(self) -> None:
        self._lvm.deactivate()
        images = {os.path.realpath(p) for p in self.images()}
        for device in _loop_devices():
            if os.path.realpath(loop.backing_file(device)) in images:
                loop.detach(device)
        self.devices.clear()

    def _state(self) -> Dict[str, Any]:
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return {}

    def _save_state(self, state: Dict[str, Any]) -> None:
        atomic_write(self.state_path, json.dumps(state, sort_keys=True).encode())


def _check_mountpoint(mountpoint: str) -> None:
    parts = mountpoint.split("/")
    if not mountpoint.startswith("/") or ".." in parts or "\0" in mountpoint or STAGING_NAME in parts:
        raise StorageError(f"mount point {mountpoint!r} cannot be recreated in the replica")


def _keep_mtime(directory: str, change) -> None:
    """Make a change inside `directory` without changing its times (they are the guest's)."""
    st = os.stat(directory)
    change()
    os.utime(directory, ns=(st.st_atime_ns, st.st_mtime_ns))


def _remove_tree(path: str) -> None:
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            full = os.path.join(dirpath, name)
            os.unlink(full) if os.path.islink(full) else os.rmdir(full)
    os.rmdir(path)


def _mounts_under(root: str) -> List[str]:
    """Mount points at or below root, parents first (from this process's mountinfo)."""
    root = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            point = _unescape(line.split()[4].decode("utf-8", "surrogateescape"))
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: (p.count("/"), p))


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _loop_devices() -> List[str]:
    return ["/dev/" + os.path.basename(p) for p in glob.glob("/sys/block/loop*")]
