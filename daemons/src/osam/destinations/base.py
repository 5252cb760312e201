"""What the controller asks of a destination, whatever it is.

A destination turns the replica's disks into a VM that stays powered off with its NICs
disconnected until the cutover; every call is idempotent (a second call after a receiver
restart finds what the first one made, by the migration id recorded on the VM) and raises
DestinationError with a message a person can act on.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

ON, OFF = "on", "off"


class DestinationError(Exception):
    """The destination refused or failed; the message says what and where."""


@dataclass
class DiskSpec:
    name: str          # the source's disk name (sda), for messages
    size: int          # bytes
    image: str         # receiver path of the raw image (a -flat.vmdk extent is the same bytes)


@dataclass
class NicSpec:
    mac: str                   # the replica's MAC (VMware's 00:50:56 range)
    source_name: str = ""      # the source's interface name, for the network map and messages
    source_mac: str = ""
    network: str = ""          # the port group, once the destination has mapped it


@dataclass
class VmSpec:
    name: str                  # the source's short host name
    migration_id: str
    cpus: int
    memory: int                # bytes
    firmware: str              # bios | uefi
    os: Dict[str, Any] = field(default_factory=dict)    # the inventory's os (id, version_id, ...)
    disks: List[DiskSpec] = field(default_factory=list)
    nics: List[NicSpec] = field(default_factory=list)


@dataclass
class VmRef:
    """A handle the destination understands (a folder path, a managed object id)."""
    id: str
    name: str
    extra: Dict[str, Any] = field(default_factory=dict)


class Destination(abc.ABC):
    kind = ""

    def image_dir(self, spec: VmSpec) -> Optional[str]:
        """Where the receiver should write the replica's images for this VM, or None for the
        receiver's own replica directory (the destination then takes them from there)."""
        return None

    def image_path(self, spec: VmSpec, index: int) -> Optional[str]:
        """The receiver path of disk `index`'s image, or None for the receiver's default."""
        return None

    @abc.abstractmethod
    def validate(self, spec: VmSpec) -> List[str]:
        """Problems that would stop the VM from being made; nothing is created."""

    @abc.abstractmethod
    def ensure_vm(self, spec: VmSpec) -> VmRef:
        """The replica VM, made powered off with its NICs disconnected, or found again."""

    @abc.abstractmethod
    def find_vm(self, spec: VmSpec) -> Optional[VmRef]:
        """The VM this migration made, if any."""

    @abc.abstractmethod
    def set_nics_connected(self, vm: VmRef, connected: bool) -> None: ...

    @abc.abstractmethod
    def power_state(self, vm: VmRef) -> str: ...

    @abc.abstractmethod
    def power_on(self, vm: VmRef) -> None: ...

    @abc.abstractmethod
    def power_off(self, vm: VmRef) -> None: ...

    def install_tools(self, vm: VmRef) -> str:
        """Start the VMware Tools installation where the platform offers one; returns what
        was done (a Linux replica already has open-vm-tools from the fix-up)."""
        return "nothing to do: the fix-up installed the guest tools"

    def source_control(self):
        """For sources that are themselves VMs of a vCenter this destination knows: an object
        with find_by_name_or_uuid, shutdown_guest(vm, timeout, force), power_state and close;
        None to power sources off through their sentinels."""
        return None

    def close(self) -> None:
        pass


class NoDestination(Destination):
    """For replicas that are not VMs (tree replicas: tests, demonstrations): every cutover step
    is a no-op, and the source is not powered off, since nothing takes over from it."""
    kind = "none"

    def validate(self, spec: VmSpec) -> List[str]:
        return []

    def ensure_vm(self, spec: VmSpec) -> VmRef:
        return VmRef(id="", name=spec.name)

    def find_vm(self, spec: VmSpec) -> Optional[VmRef]:
        return VmRef(id="", name=spec.name)

    def set_nics_connected(self, vm: VmRef, connected: bool) -> None:
        pass

    def power_state(self, vm: VmRef) -> str:
        return OFF

    def power_on(self, vm: VmRef) -> None:
        pass

    def power_off(self, vm: VmRef) -> None:
        pass

    def install_tools(self, vm: VmRef) -> str:
        return "nothing to do: a tree replica is not a VM"
