"""The previous hypervisor's drivers and agents, turned off on the replica.

Their services are disabled (Start=4), not deleted, so the change can be undone from the
backup; a disabled driver that stays listed as a class filter would stop every device of
that class from starting (a disk filter: the boot disk), so each disabled name is also taken
out of every class's UpperFilters/LowerFilters, the other filters keeping their order.
The migration agent is disabled too: the replica must never register as the source.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

from .hive import REG_DWORD, REG_MULTI_SZ, Hive

STEP = "old_hypervisor"
DISABLED = 4
SENTINEL_SERVICE = "vmware-hcx-osam-sentinel"

SERVICES: Dict[str, Tuple[str, ...]] = {
    "Hyper-V": ("vmickvpexchange", "vmicheartbeat", "vmicshutdown", "vmictimesync", "vmicvss",
                "vmicguestinterface", "vmicrdv", "vmicvmsession"),
    "KVM/virtio": ("viostor", "vioscsi", "netkvm", "balloon", "vioser", "viorng", "QEMU-GA",
                   "QEMU Guest Agent"),
    "Xen": ("xenbus", "xenvbd", "xennet", "xeniface", "xenfilt", "xendisk", "XenSvc"),
    "VirtualBox": ("VBoxGuest", "VBoxSF", "VBoxMouse", "VBoxVideo", "VBoxService", "VBoxWddm"),
}
FILTER_VALUES = ("UpperFilters", "LowerFilters")


def disable_services(hive: Hive, control_set: str) -> List[str]:
    """Disable every known old-hypervisor service present; returns the names disabled
    (as the hive spells them), whether by this run or an earlier one."""
    services = f"{control_set}\\Services"
    present = {name.lower(): name for name in hive.subkeys(services)}
    disabled = []
    for platform, names in SERVICES.items():
        for wanted in names:
            name = present.get(wanted.lower())
            if name is None:
                continue
            hive.set(f"{services}\\{name}", "Start", REG_DWORD, DISABLED, STEP,
                     f"{platform} service {name} disabled")
            disabled.append(name)
    sentinel = present.get(SENTINEL_SERVICE)
    if sentinel is not None:
        hive.set(f"{services}\\{sentinel}", "Start", REG_DWORD, DISABLED, STEP,
                 "the migration agent must not run on the replica")
    return disabled


def all_names() -> List[str]:
    return [name for names in SERVICES.values() for name in names]


def remove_filters(hive: Hive, control_set: str, names: Iterable[str]) -> None:
    """Take `names` out of every device class's filter lists (case-insensitively)."""
    unwanted = {n.lower() for n in names}
    classes = f"{control_set}\\Control\\Class"
    for guid in hive.subkeys(classes):
        key = f"{classes}\\{guid}"
        for value in FILTER_VALUES:
            current = hive.get(key, value)
            if not isinstance(current, list):
                continue
            kept = [f for f in current if f.lower() not in unwanted]
            if kept == current:
                continue
            removed = ", ".join(f for f in current if f.lower() in unwanted)
            detail = f"{removed} removed from the {value} of class {guid}"
            if kept:
                hive.set(key, value, REG_MULTI_SZ, kept, STEP, detail)
            else:
                hive.delete_value(key, value, STEP, detail)
