"""The disk controller the replica boots from on VMware: pvscsi when its driver is in the
package cache (Windows has no inbox pvscsi driver), else the LSI Logic SAS driver every
Windows since 2008 ships.

A boot-start driver needs its service (Start=0) and, for the PnP manager to bind it to the
new controller before any user-mode installer runs, a Critical Device Database entry for the
controller's PCI ids.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

from .hive import REG_DWORD, REG_EXPAND_SZ, REG_SZ, Hive

STEP = "storage"
PVSCSI, LSILOGICSAS = "pvscsi", "lsilogicsas"
SCSI_ADAPTER_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
BOOT_START, SYSTEM_START = 0, 1
KERNEL_DRIVER = 1
ERROR_NORMAL = 1


@dataclass
class Driver:
    service: str                     # registry service name
    image: str                       # file under System32\drivers
    group: str
    pci_ids: List[str] = field(default_factory=list)


DRIVERS = {
    PVSCSI: Driver("pvscsi", "pvscsi.sys", "SCSI miniport",
                   ["pci#ven_15ad&dev_07c0", "pci#ven_15ad&dev_07c0&subsys_07c015ad&rev_02"]),
    LSILOGICSAS: Driver("LSI_SAS", "lsi_sas.sys", "SCSI miniport", ["pci#ven_1000&dev_0054"]),
}


@dataclass
class StorageChoice:
    kind: str                        # pvscsi | lsilogicsas
    driver_dir: Optional[str]        # package cache directory of the pvscsi package
    reason: str = ""                 # why not pvscsi


def choose(package_cache: Optional[str], preferred: str) -> StorageChoice:
    if preferred != PVSCSI:
        return StorageChoice(LSILOGICSAS, None, f"preferred_storage is {preferred!r}")
    if not package_cache:
        return StorageChoice(LSILOGICSAS, None, "no package cache is configured")
    driver_dir = os.path.join(package_cache, "windows", "drivers", "pvscsi")
    if not os.path.isfile(os.path.join(driver_dir, DRIVERS[PVSCSI].image)):
        return StorageChoice(LSILOGICSAS, None,
                             f"{driver_dir}/{DRIVERS[PVSCSI].image} is not in the package cache")
    return StorageChoice(PVSCSI, driver_dir)


def register_boot_driver(hive: Hive, control_set: str, driver: Driver) -> None:
    """Make the driver boot-start and bind it to its controller's PCI ids."""
    key = f"{control_set}\\Services\\{driver.service}"
    hive.set(key, "Type", REG_DWORD, KERNEL_DRIVER, STEP, "kernel driver")
    hive.set(key, "Start", REG_DWORD, BOOT_START, STEP, f"{driver.service} starts at boot")
    hive.set(key, "ErrorControl", REG_DWORD, ERROR_NORMAL, STEP, "normal error control")
    hive.set(key, "Group", REG_SZ, driver.group, STEP, f"load order group {driver.group}")
    hive.set(key, "ImagePath", REG_EXPAND_SZ, f"System32\\drivers\\{driver.image}", STEP, "driver file")
    if hive.get(key, "Tag") is None:
        hive.set(key, "Tag", REG_DWORD, free_tag(hive, control_set, driver.group), STEP,
                 f"load order tag within {driver.group}")
    for pci_id in driver.pci_ids:
        cddb = f"{control_set}\\Control\\CriticalDeviceDatabase\\{pci_id}"
        hive.set(cddb, "Service", REG_SZ, driver.service, STEP, f"{pci_id} → {driver.service} at boot")
        hive.set(cddb, "ClassGUID", REG_SZ, SCSI_ADAPTER_CLASS, STEP, "SCSI adapter class")


def free_tag(hive: Hive, control_set: str, group: str) -> int:
    """One more than the highest tag in the group: a tag that no other driver there has."""
    highest = 0
    services = f"{control_set}\\Services"
    for name in hive.subkeys(services):
        values = hive.values(f"{services}\\{name}")
        if str(values.get("Group", (0, ""))[1]).lower() == group.lower():
            tag = values.get("Tag", (0, 0))[1]
            if isinstance(tag, int):
                highest = max(highest, tag)
    return highest + 1
