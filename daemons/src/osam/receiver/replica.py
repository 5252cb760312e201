"""Where a guest's replica lives on the receiver, in one of two formats.

`block`: raw images the guest's whole disks are copied into block by block (Windows guests,
or Linux guests in block mode), whatever the receiver's format: nothing to build but sparse
files of the disks' sizes, nothing mounted while they sync.

`disk` (the default): raw images with the source's disks, partition tables and file systems
(osam.storage), mounted while the migration syncs, fixed up for VMware's virtual hardware
after the final sync, then unmounted: what the destination boots. `tree`: a plain directory
of the guest's files, for tests and the demo; nothing to boot, so no fix-up.

Every method here blocks (mkfs, mount, chroot): the session runs them off the event loop.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, List, Optional

from ..common.atomic import atomic_write
from ..storage.replica_disks import ReplicaDisks, default_image_path
from .blockstore import BlockStore
from .store import ReplicaStore

log = logging.getLogger("osam.receiver")

DISK, TREE, BLOCK = "disk", "tree", "block"
FORMATS = (DISK, TREE)      # what the receiver is told to make of file-mode guests
VM_FILE = "vm.json"
FIXUP_REPORT = "fixup-report.json"


def vmware_mac(seed: str, index: int) -> str:
    """A stable address in VMware's range for manually assigned MACs (00:50:56:00-3F:xx:xx)."""
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    return "00:50:56:%02x:%02x:%02x" % (digest[0] & 0x3F, digest[1], digest[2])


def hardware_nics(inventory: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The source's physical NICs in the kernel's order: each gets a vmxnet3 NIC. The same
    rule the network fix-up pairs them by, so NIC i here is the one it maps source NIC i to."""
    from ..fixup.context import FixupContext, Runner, Target
    from ..fixup.network import physical_nics
    return physical_nics(FixupContext("/", inventory, Target(), Runner()))


class TreeReplica:
    format = TREE

    def __init__(self, replica_dir: str):
        self.replica_dir = replica_dir
        self.root = os.path.join(replica_dir, "root")

    def prepare(self, guest: str, inventory: Dict[str, Any]) -> None:
        pass

    def open_store(self) -> ReplicaStore:
        return ReplicaStore(self.replica_dir)

    def fixup(self, guest: str, inventory: Dict[str, Any]) -> Dict[str, Any]:
        return {"skipped": "a tree replica is not booted, so it is not fixed up"}

    def finish(self) -> None:
        pass


class DiskReplica(TreeReplica):
    format = DISK

    def __init__(self, replica_dir: str, package_cache: Optional[str] = None):
        super().__init__(replica_dir)
        self.package_cache = package_cache
        self.disks: Optional[ReplicaDisks] = None

    def prepare(self, guest: str, inventory: Dict[str, Any]) -> None:
        """Build the images once (idempotent) and mount them, where the VM definition says."""
        vm = self.vm_draft(guest, inventory)
        if not os.path.exists(self.vm_path):
            self.save_vm(vm)
        self.disks = ReplicaDisks(self.replica_dir, inventory.get("layout") or {},
                                  image_paths={d["name"]: d["image"] for d in vm["disks"]})
        if not self.disks.created():
            log.info("guest %s: creating its replica disks: %s", guest, ", ".join(self.disks.images()))
            self.disks.create()
        self.disks.mount()

    def open_store(self) -> ReplicaStore:
        assert self.disks is not None and self.disks.mounted(), "prepare() first"
        return ReplicaStore(self.replica_dir, mounts=self.disks.mount_points())

    @property
    def vm_path(self) -> str:
        return os.path.join(self.replica_dir, VM_FILE)

    def vm(self) -> Dict[str, Any]:
        with open(self.vm_path) as f:
            return json.load(f)

    def save_vm(self, vm: Dict[str, Any]) -> Dict[str, Any]:
        atomic_write(self.vm_path, json.dumps(vm, indent=2, sort_keys=True).encode())
        return vm

    def fixup(self, guest: str, inventory: Dict[str, Any]) -> Dict[str, Any]:
        from ..fixup.chroot import ChrootRunner
        from ..fixup.context import Nic, Target
        from ..fixup.linux import fixup_linux

        assert self.disks is not None and self.disks.mounted(), "prepare() first"
        sysname = (inventory.get("kernel") or {}).get("sysname", "Linux")
        if sysname != "Linux":
            return {"skipped": f"no fix-up for {sysname} guests yet"}
        vm = self.vm()
        devices = self.disks.device_map()
        target = Target(nics=[Nic(n["mac"], n["model"]) for n in vm["nics"]], firmware=vm["firmware"],
                        package_cache=self.package_cache)
        report = fixup_linux(self.disks.root, inventory, target, ChrootRunner(self.disks.root, devices), devices)
        atomic_write(os.path.join(self.replica_dir, FIXUP_REPORT),
                     json.dumps(report, indent=2, sort_keys=True).encode())
        return report

    def finish(self) -> None:
        if self.disks is not None:
            self.disks.unmount()

    def vm_draft(self, guest: str, inventory: Dict[str, Any]) -> Dict[str, Any]:
        """The VM this replica makes: the saved definition once there is one (its MACs and image
        places must not change once used), else a new one with the images in disks/."""
        if os.path.exists(self.vm_path):
            return self.vm()
        layout = inventory.get("layout") or {}
        return {
            "name": str(inventory.get("hostname") or guest).split(".")[0],
            "cpus": (inventory.get("cpus") or {}).get("count") or 1,
            "memory": inventory.get("memory") or 1 << 30,
            "firmware": (layout.get("boot") or {}).get("mode") or "bios",
            "storage": "pvscsi",
            "disks": [{"name": d["name"], "size": d["size"],
                       "image": default_image_path(self.replica_dir, d["name"])}
                      for d in layout.get("disks") or []],
            "nics": [{"mac": vmware_mac(guest, i), "model": "vmxnet3", "source_name": n.get("name"),
                      "source_mac": n.get("mac")} for i, n in enumerate(hardware_nics(inventory))],
        }


class BlockReplica(DiskReplica):
    format = BLOCK

    def prepare(self, guest: str, inventory: Dict[str, Any]) -> None:
        """Make (once) a sparse image per disk the guest replicates, where the VM definition says."""
        vm = self.vm_draft(guest, inventory)
        if not os.path.exists(self.vm_path):
            self.save_vm(vm)
        for disk in vm["disks"]:
            _sparse_image(disk["image"], int(disk["size"]))

    def images(self) -> Dict[str, str]:
        return {d["name"]: d["image"] for d in self.vm()["disks"]}

    def open_store(self) -> BlockStore:
        return BlockStore(self.images())

    def fixup(self, guest: str, inventory: Dict[str, Any]) -> Dict[str, Any]:
        sysname = (inventory.get("kernel") or {}).get("sysname", "")
        if sysname != "Windows":
            return {"skipped": f"block-mode replicas of {sysname or 'unknown'} guests are not fixed up "
                               "(Linux guests are fixed up in file mode)"}
        from ..fixup.context import Nic
        from ..fixup.windows.offline import WindowsTarget, fixup_windows

        vm = self.vm()
        target = WindowsTarget(nics=[Nic(n["mac"], n["model"]) for n in vm["nics"]],
                               package_cache=self.package_cache)
        report = fixup_windows(list(self.images().values()), inventory, target,
                               os.path.join(self.replica_dir, "fixup"))
        if report.get("storage") and report["storage"] != vm.get("storage"):
            vm["storage"] = report["storage"]   # no pvscsi driver to give it: the inbox LSI SAS
            self.save_vm(vm)
        atomic_write(os.path.join(self.replica_dir, FIXUP_REPORT),
                     json.dumps(report, indent=2, sort_keys=True).encode())
        return report

    def finish(self) -> None:
        pass

    def vm_draft(self, guest: str, inventory: Dict[str, Any]) -> Dict[str, Any]:
        if os.path.exists(self.vm_path):
            return self.vm()
        vm = super().vm_draft(guest, inventory)
        vm["disks"] = [{"name": d["name"], "size": d["size"], "image": default_image_path(self.replica_dir, d["name"])}
                       for d in (inventory.get("replication") or {}).get("disks") or []]
        boot = (inventory.get("layout") or {}).get("boot") or {}
        vm["firmware"] = boot.get("mode") or inventory.get("boot") or "bios"
        return vm


def _sparse_image(path: str, size: int) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        actual = os.stat(path).st_size
        if actual != size:
            raise RuntimeError(f"{path} is {actual} bytes, not the {size} of the guest's disk: "
                               "the guest's disks changed; remove the replica to start over") from None
        return
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def replica_format_for(inventory: Optional[Dict[str, Any]], configured: str) -> str:
    """Block-mode guests get block replicas; file-mode guests what the receiver is told."""
    mode = ((inventory or {}).get("replication") or {}).get("mode")
    return BLOCK if mode == "block" else configured


def make_replica(replica_format: str, replica_dir: str, package_cache: Optional[str] = None) -> TreeReplica:
    if replica_format == BLOCK:
        return BlockReplica(replica_dir, package_cache)
    if replica_format not in FORMATS:
        raise ValueError(f"replica format must be one of {', '.join(FORMATS)}, not {replica_format!r}")
    return DiskReplica(replica_dir, package_cache) if replica_format == DISK else TreeReplica(replica_dir)
