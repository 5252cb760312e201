"""The edits of the replica's SYSTEM hive, all in the control set Windows boots with
(Select\\Current): boot storage driver, old hypervisor off, SAN policy, old interfaces
released, the first-boot service. Each edit is idempotent: a second run changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from . import network, old_hypervisors, storage
from .errors import WindowsFixupError
from .hive import REG_DWORD, REG_EXPAND_SZ, REG_SZ, Hive

FIRSTBOOT_SERVICE = "vmware-osam-firstboot"
FIRSTBOOT_DISPLAY_NAME = "VMware OSAM first boot"
SAN_POLICY_ONLINE_ALL = 1
OWN_PROCESS = 0x10
AUTO_START = 2


@dataclass
class SystemEdits:
    storage: str                          # pvscsi | lsilogicsas
    firstboot_command: Optional[str]      # the service's ImagePath, None: no first boot
    release_interfaces: Sequence[str] = ()


def current_control_set(hive: Hive) -> str:
    current = hive.get("Select", "Current")
    if not isinstance(current, int):
        raise WindowsFixupError(
            f"the {hive.name} hive has no Select\\Current value: it is not a Windows SYSTEM hive "
            f"or it is damaged; check Windows\\System32\\config\\SYSTEM on the source")
    name = f"ControlSet{current:03d}"
    if hive.node(name) is None:
        raise WindowsFixupError(f"Select\\Current names {name}, which the {hive.name} hive does not have")
    return name


def apply(hive: Hive, control_set: str, edits: SystemEdits) -> List[str]:
    """Make the edits; returns the old-hypervisor services found (and disabled)."""
    storage.register_boot_driver(hive, control_set, storage.DRIVERS[edits.storage])
    disabled = old_hypervisors.disable_services(hive, control_set)
    old_hypervisors.remove_filters(hive, control_set, old_hypervisors.all_names())
    hive.set(f"{control_set}\\Services\\partmgr\\Parameters", "SanPolicy", REG_DWORD,
             SAN_POLICY_ONLINE_ALL, "san_policy", "every disk online at boot (SAN policy OnlineAll)")
    network.release(hive, control_set, edits.release_interfaces)
    if edits.firstboot_command:
        register_firstboot(hive, control_set, edits.firstboot_command)
    return disabled


def register_firstboot(hive: Hive, control_set: str, command: str) -> None:
    key = f"{control_set}\\Services\\{FIRSTBOOT_SERVICE}"
    step = "firstboot"
    hive.set(key, "Type", REG_DWORD, OWN_PROCESS, step, "a service in its own process")
    hive.set(key, "Start", REG_DWORD, AUTO_START, step, "starts at every boot until it deletes itself")
    hive.set(key, "ErrorControl", REG_DWORD, 1, step, "normal error control")
    hive.set(key, "ObjectName", REG_SZ, "LocalSystem", step, "runs as LocalSystem")
    hive.set(key, "DisplayName", REG_SZ, FIRSTBOOT_DISPLAY_NAME, step, "display name")
    hive.set(key, "ImagePath", REG_EXPAND_SZ, command, step, "the sentinel's Python runs the first boot")


def firstboot_command(python: str, config: str) -> str:
    return f'"{python}" -m osam.sentinel.windows.firstboot --service --config "{config}"'
