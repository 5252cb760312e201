"""The offline Windows fix-up: what the receiver does to a block-replicated Windows replica,
after the final sync and before the replica VM is created, so that it boots on VMware's
virtual hardware.

  1. find the NTFS volumes in the disk images and the system volume among them (the one with
     Windows/System32/config/SYSTEM), and mount it read-write with ntfs-3g;
  2. back the SYSTEM and SOFTWARE hives up (once: the backup is the source's version), then
     edit a copy of SYSTEM with hivex (system_hive) and put it in place;
  3. stage what the first boot does as the guest (static IP settings on the new NICs, driver
     packages, VMware Tools), run by the first-boot service the hive now registers.

Everything is idempotent: a second run changes nothing and reports no changes. In a dry run
the volume is mounted read-only and the report says what would change.

Command line, for operators (prints the report as JSON):
  python -m osam.fixup.windows.offline --work-dir DIR --inventory FILE.json IMAGE...
      [--package-cache DIR] [--nic-mac MAC ...] [--storage pvscsi|lsilogicsas] [--dry-run]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ...common.atomic import atomic_write
from ..context import Nic
from . import firstboot_files, network, ntfs, storage, system_hive
from .errors import WindowsFixupError
from .hive import Hive
from .hivex_loader import load_hivex
from .volume_files import VolumeWriter, copy_durably

SYSTEM_HIVE = "Windows/System32/config/SYSTEM"
SOFTWARE_HIVE = "Windows/System32/config/SOFTWARE"
VALUES_BACKUP = "values.json"
REPORT_NAME = "report.json"


@dataclass
class WindowsTarget:
    """The destination VM's hardware, as the fix-up needs it."""
    nics: List[Nic] = field(default_factory=list)   # in the order of the source's NICs
    package_cache: Optional[str] = None             # Windows parts under <package_cache>/windows/
    preferred_storage: str = storage.PVSCSI


@dataclass
class Layout:
    """Where the fix-up keeps its things on the receiver."""
    work_dir: str

    @property
    def mounts(self) -> str:
        return os.path.join(self.work_dir, "mnt")

    @property
    def backup(self) -> str:
        return os.path.join(self.work_dir, "backup")

    @property
    def scratch(self) -> str:
        return os.path.join(self.work_dir, "work")


def fixup_windows(images: List[str], inventory: Dict[str, Any], target: WindowsTarget, work_dir: str,
                  *, dry_run: bool = False) -> Dict[str, Any]:
    """Fix the Windows replica in `images` up; returns the report (also saved as
    work_dir/report.json unless dry_run). Raises WindowsFixupError saying what to do."""
    load_hivex()   # before anything is mounted: a missing binding is the operator's first fix
    images = [os.path.abspath(i) for i in images]
    for image in images:
        if not os.path.isfile(image):
            raise WindowsFixupError(f"replica disk image {image} does not exist")
    layout = Layout(os.path.abspath(work_dir))
    os.makedirs(layout.mounts, exist_ok=True)
    report: Dict[str, Any] = {"dry_run": dry_run, "changes": [], "warnings": [], "backups": [],
                              "storage": None, "system_volume": {}}
    released = ntfs.release_stale(images, layout.mounts)
    if released:
        report["warnings"].append(f"released what an interrupted run left behind: {', '.join(released)}")
    system = find_system_volume(images, layout)
    report["system_volume"] = system.as_dict()
    with ntfs.mounted(system, os.path.join(layout.mounts, "system"), read_only=dry_run) as root:
        return fixup_volume(root, inventory, target, work_dir, dry_run=dry_run, report=report)


def fixup_volume(root: str, inventory: Dict[str, Any], target: WindowsTarget, work_dir: str, *,
                 dry_run: bool = False, report: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The fix-up of a system volume already mounted (or copied) at `root`."""
    layout = Layout(os.path.abspath(work_dir))
    if report is None:
        report = {"dry_run": dry_run, "changes": [], "warnings": [], "backups": [],
                  "storage": None, "system_volume": {"root": root}}
    Fixup(root, load_hivex(), inventory, target, layout, report, dry_run).run()
    report["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    if not dry_run:
        os.makedirs(layout.work_dir, exist_ok=True)
        atomic_write(os.path.join(layout.work_dir, REPORT_NAME),
                     json.dumps(report, indent=2, sort_keys=True).encode(), 0o600)
    return report


def find_system_volume(images: List[str], layout: Layout) -> ntfs.Partition:
    candidates = ntfs.ntfs_partitions(images)
    if not candidates:
        raise WindowsFixupError(f"no NTFS partition in {', '.join(images)}: these are not a "
                                f"Windows machine's disks, or the replica is incomplete")
    found = []
    for index, part in enumerate(candidates):
        with ntfs.mounted(part, os.path.join(layout.mounts, f"probe{index}"), read_only=True) as root:
            if ntfs.find(root, SYSTEM_HIVE):
                found.append(part)
    if not found:
        raise WindowsFixupError(f"no NTFS volume in the replica holds {SYSTEM_HIVE} "
                                f"(looked at {', '.join(p.describe() for p in candidates)})")
    if len(found) > 1:
        raise WindowsFixupError(f"more than one Windows installation in the replica "
                                f"({', '.join(p.describe() for p in found)}); only one can be fixed up")
    return found[0]


class Fixup:
    """The steps on the mounted system volume."""

    def __init__(self, root: str, hivex: Any, inventory: Dict[str, Any], target: WindowsTarget,
                 layout: Layout, report: Dict[str, Any], dry_run: bool):
        self.root, self.hivex, self.inventory, self.target = root, hivex, inventory, target
        self.layout, self.report, self.dry_run = layout, report, dry_run
        self.writer = VolumeWriter(root, layout.backup, dry_run=dry_run)

    def warn(self, text: str) -> None:
        self.report["warnings"].append(text)

    def run(self) -> None:
        system_path = ntfs.find(self.root, SYSTEM_HIVE)
        software_path = ntfs.find(self.root, SOFTWARE_HIVE)
        self.check_flushed(system_path)
        originals = self.back_up_hives(system_path, software_path)
        hive = self.open_system_hive(system_path)
        control_set = system_hive.current_control_set(hive)
        self.report["system_volume"]["control_set"] = control_set

        choice = self.storage(hive, control_set)
        firstboot, release = self.first_boot(choice.kind, originals.get("SYSTEM") or system_path)
        disabled = system_hive.apply(hive, control_set, system_hive.SystemEdits(
            choice.kind, firstboot and system_hive.firstboot_command(firstboot.python, firstboot.config_path),
            release))
        self.report["old_hypervisor_services"] = disabled
        if firstboot:
            self.report["firstboot"] = firstboot_files.write(self.writer, firstboot, system_hive.FIRSTBOOT_SERVICE)
        self.save_hive(hive, system_path)
        self.report["changes"] = [c.as_dict() for c in hive.changes] + self.writer.changes
        self.report["backups"] = sorted(set(self.report["backups"] + self.writer.backups))

    # -- hives --------------------------------------------------------------------------------
    def check_flushed(self, path: str) -> None:
        with open(path, "rb") as f:
            head = f.read(12)
        if head[:4] != b"regf":
            raise WindowsFixupError(f"{SYSTEM_HIVE} on the replica is not a registry hive")
        primary, secondary = struct.unpack_from("<II", head, 4)
        self.report["system_volume"]["hive_sequence"] = [primary, secondary]
        if primary != secondary:
            self.warn(f"{SYSTEM_HIVE} was not flushed when it was copied (sequence numbers {primary} "
                      f"and {secondary}): changes still in its transaction logs are not applied; a "
                      f"final sync of a cleanly quiesced source avoids this")

    def back_up_hives(self, system_path: str, software_path: Optional[str]) -> Dict[str, str]:
        """Copies of the source's hives in work_dir/backup, taken once."""
        found = {}
        for name, path in (("SYSTEM", system_path), ("SOFTWARE", software_path)):
            backup = os.path.join(self.layout.backup, name)
            if os.path.exists(backup):
                found[name] = backup
            elif path and not self.dry_run:
                os.makedirs(self.layout.backup, exist_ok=True)
                copy_durably(path, backup)
                found[name] = backup
            if name in found:
                self.report["backups"].append(backup)
        return found

    def open_system_hive(self, system_path: str) -> Hive:
        """A dry run reads the replica's hive; a real run edits a scratch copy, put in place
        when everything has been decided (a failure leaves the replica's hive untouched)."""
        if self.dry_run:
            return Hive(self.hivex, system_path, "SYSTEM", write=False)
        os.makedirs(self.layout.scratch, exist_ok=True)
        scratch = os.path.join(self.layout.scratch, "SYSTEM")
        copy_durably(system_path, scratch)
        return Hive(self.hivex, scratch, "SYSTEM", write=True)

    def save_hive(self, hive: Hive, system_path: str) -> None:
        if self.dry_run or not hive.changes:
            return
        self.save_replaced_values(hive.replaced)
        hive.commit()
        copy_durably(hive.path, system_path)

    def save_replaced_values(self, replaced: List[Dict[str, Any]]) -> None:
        """work_dir/backup/values.json: every value the fix-up replaced, as the source had it
        (the first run's old value wins: later runs only replace their own)."""
        path = os.path.join(self.layout.backup, VALUES_BACKUP)
        try:
            with open(path) as f:
                kept = json.load(f)
        except FileNotFoundError:
            kept = []
        seen = {(e["hive"], e["key"].lower(), e["value"].lower()) for e in kept}
        for entry in replaced:
            ident = (entry["hive"], entry["key"].lower(), entry["value"].lower())
            if ident not in seen:
                seen.add(ident)
                kept.append(entry)
        os.makedirs(self.layout.backup, exist_ok=True)
        atomic_write(path, json.dumps(kept, indent=2).encode(), 0o600)
        self.report["backups"].append(path)

    # -- decisions ----------------------------------------------------------------------------
    def storage(self, hive: Hive, control_set: str) -> storage.StorageChoice:
        choice = storage.choose(self.target.package_cache, self.target.preferred_storage)
        self.report["storage"] = choice.kind
        if choice.kind == storage.PVSCSI:
            driver = storage.DRIVERS[storage.PVSCSI].image
            self.writer.copy(os.path.join(choice.driver_dir, driver), f"Windows/System32/drivers/{driver}",
                             storage.STEP, "pvscsi boot driver")
            return choice
        lsi = storage.DRIVERS[storage.LSILOGICSAS]
        if hive.node(f"{control_set}\\Services\\{lsi.service}") is None and \
                ntfs.find(self.root, f"Windows/System32/drivers/{lsi.image}") is None:
            raise WindowsFixupError(
                f"no boot disk driver for VMware: {choice.reason}, and this Windows has no inbox "
                f"LSI Logic SAS driver ({lsi.image}); put the pvscsi driver package "
                f"(pvscsi.sys, .inf, .cat) under <package_cache>/windows/drivers/pvscsi/")
        self.warn(f"{storage.STEP}: {choice.reason}: the replica boots from the inbox LSI Logic SAS "
                  f"driver; create its VM with an LSI Logic SAS controller")
        return choice

    def first_boot(self, storage_kind: str, original_system: str
                   ) -> Tuple[Optional[firstboot_files.FirstBootPlan], List[str]]:
        """What the first boot does, and the old interfaces it takes over (released in the
        hive only when the first boot will apply their settings)."""
        agent = self.inventory.get("agent") or {}
        python = agent.get("python") if isinstance(agent, dict) else None
        cache = self.target.package_cache
        tools = firstboot_files.tools_installer(cache)
        if not tools:
            self.warn(firstboot_files.TOOLS_MISSING)
        if not python:
            self.warn("firstboot: the inventory has no agent.python (the sentinel's python.exe on the "
                      "source): no first-boot service; the static IP settings stay on the old "
                      "adapters, and drivers and VMware Tools must be installed after the switchover")
            return None, []
        plan = firstboot_files.FirstBootPlan(
            python=python, drive=system_drive(self.inventory),
            driver_dirs=firstboot_files.driver_packages(cache, storage_kind), tools=tools)
        plan.network = network.plan(self.source_interfaces(original_system), self.inventory,
                                    self.target.nics, self.report["warnings"])
        if not plan.steps():
            return None, []
        return plan, [entry["source_interface"] for entry in plan.network]

    def source_interfaces(self, path: str) -> List[network.InterfaceSettings]:
        """The interfaces as the source had them: read from the backup when there is one, as
        an earlier run has already released them in the replica's hive."""
        hive = Hive(self.hivex, path, "SYSTEM", write=False)
        try:
            return network.read_interfaces(hive, system_hive.current_control_set(hive))
        finally:
            hive.close()


def system_drive(inventory: Dict[str, Any]) -> str:
    """The source's system drive ("C:"), where the first-boot files are found again."""
    os_info = inventory.get("os") if isinstance(inventory.get("os"), dict) else {}
    drive = str(os_info.get("system_drive") or inventory.get("system_drive") or "C:")
    return drive.rstrip("\\/")[:2].upper()


# -- command line ----------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m osam.fixup.windows.offline",
                                description="Fix a block-replicated Windows replica up for VMware.")
    p.add_argument("images", nargs="+", help="the replica's raw disk images")
    p.add_argument("--work-dir", required=True, help="mount points, backups and the report")
    p.add_argument("--inventory", required=True, help="the source's inventory (JSON)")
    p.add_argument("--package-cache", help="directory with windows/drivers/... and VMware-tools-*.exe")
    p.add_argument("--nic-mac", action="append", default=[], metavar="MAC",
                   help="MAC of the destination VM's NICs (vmxnet3), in the source's NIC order")
    p.add_argument("--storage", default=storage.PVSCSI, choices=(storage.PVSCSI, storage.LSILOGICSAS))
    p.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    args = p.parse_args(argv)
    with open(args.inventory) as f:
        inventory = json.load(f)
    target = WindowsTarget([Nic(m.lower()) for m in args.nic_mac], args.package_cache, args.storage)
    try:
        report = fixup_windows(args.images, inventory, target, args.work_dir, dry_run=args.dry_run)
    except WindowsFixupError as exc:
        print(f"Windows fix-up failed: {exc}", file=sys.stderr)
        return 1
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
