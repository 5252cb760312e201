"""The replica VM's configuration as a vSphere ConfigSpec: vCPUs, memory, firmware, guest
OS id, pvscsi controllers with the replica's existing disks (no new disk is made: the
receiver's images are the disks), vmxnet3 NICs with the replica's MACs that are connected
neither now nor at power-on, and the annotation recording the migration id.
"""
from __future__ import annotations

import re
from typing import Any, List, Optional, Sequence

from pyVmomi import vim

from .base import VmSpec
from .vsphere_guest import is_windows

MIB = 1 << 20
# Units 0-15 of a pvscsi bus minus unit 7 (the controller's own): 15 disks each, and up to
# four controllers, what every virtual hardware version with pvscsi takes.
UNITS = [u for u in range(16) if u != 7]
MAX_CONTROLLERS = 4
MAX_DISKS = len(UNITS) * MAX_CONTROLLERS
# vCenter takes a manually set MAC only in VMware's static range 00:50:56:00:00:00-3F:FF:FF.
STATIC_MAC = re.compile(r"^00:50:56:[0-3][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}$")
FIRMWARE = {"bios": "bios", "uefi": "efi", "efi": "efi"}
# Keys of devices that do not exist yet are negative: vCenter gives the real ones.
CONTROLLER_KEY, DISK_KEY, NIC_KEY, SATA_KEY, CDROM_KEY = -100, -200, -300, -400, -401


def memory_mb(size: int) -> int:
    """Bytes as vSphere's memoryMB: whole MiB, rounded up to a multiple of 4 as it requires."""
    mb = -(-size // MIB)
    return max(4, -(-mb // 4) * 4)


def disk_slot(index: int) -> tuple:
    """(controller number, unit number) of disk `index`: the guest sees the disks in this order."""
    return index // len(UNITS), UNITS[index % len(UNITS)]


def spec_problems(spec: VmSpec) -> List[str]:
    """What in the VM's own description vSphere would refuse."""
    problems = []
    if spec.cpus < 1:
        problems.append(f"VM {spec.name!r}: {spec.cpus} vCPUs")
    if spec.memory <= 0:
        problems.append(f"VM {spec.name!r}: no memory size")
    if spec.firmware not in FIRMWARE:
        problems.append(f"VM {spec.name!r}: firmware {spec.firmware!r} is neither bios nor uefi")
    if not spec.disks:
        problems.append(f"VM {spec.name!r} has no disks")
    if len(spec.disks) > MAX_DISKS:
        problems.append(f"VM {spec.name!r} has {len(spec.disks)} disks; at most {MAX_DISKS} are supported")
    for nic in spec.nics:
        if not STATIC_MAC.match(nic.mac.lower()):
            problems.append(f"NIC {nic.source_name or nic.source_mac or '?'}: MAC {nic.mac!r} is not in "
                            "VMware's static range 00:50:56:00:00:00-00:50:56:3f:ff:ff")
    return problems


def config_spec(spec: VmSpec, guest_id: str, vmx_path: str, disk_paths: Sequence[str],
                networks: Sequence[Any], annotation: str) -> Any:
    """CreateVM_Task's ConfigSpec; `disk_paths` are the descriptors' datastore paths and
    `networks` the port group of each NIC, both in the spec's order."""
    devices = pvscsi_controllers(len(disk_paths)) + [
        existing_disk(path, disk.size, i) for i, (path, disk) in enumerate(zip(disk_paths, spec.disks))]
    devices += [vmxnet3(nic.mac, net, i) for i, (nic, net) in enumerate(zip(spec.nics, networks))]
    if is_windows(guest_id):   # where MountToolsInstaller puts the VMware Tools installer
        devices += cdrom()
    return vim.vm.ConfigSpec(
        name=spec.name, guestId=guest_id, numCPUs=spec.cpus, memoryMB=memory_mb(spec.memory),
        firmware=FIRMWARE[spec.firmware], annotation=annotation,
        files=vim.vm.FileInfo(vmPathName=vmx_path),
        deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="add", device=d) for d in devices])


def pvscsi_controllers(disk_count: int) -> List[Any]:
    buses = max(1, -(-disk_count // len(UNITS)))
    return [vim.vm.device.ParaVirtualSCSIController(key=CONTROLLER_KEY - bus, busNumber=bus, sharedBus="noSharing")
            for bus in range(buses)]


def existing_disk(datastore_path: str, size: int, index: int) -> Any:
    """A disk that refers to the descriptor already on the datastore: no fileOperation, so
    vCenter makes no file and the disk is exactly the replica's image."""
    bus, unit = disk_slot(index)
    return vim.vm.device.VirtualDisk(
        key=DISK_KEY - index, controllerKey=CONTROLLER_KEY - bus, unitNumber=unit,
        capacityInBytes=size, capacityInKB=-(-size // 1024),
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=datastore_path, diskMode="persistent"))


def vmxnet3(mac: str, network: Any, index: int) -> Any:
    return vim.vm.device.VirtualVmxnet3(
        key=NIC_KEY - index, addressType="manual", macAddress=mac.lower(), backing=nic_backing(network),
        connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=False, connected=False,
                                                            allowGuestControl=True))


def nic_backing(network: Any) -> Any:
    card = vim.vm.device.VirtualEthernetCard
    if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
        return card.DistributedVirtualPortBackingInfo(port=vim.dvs.PortConnection(
            portgroupKey=network.key, switchUuid=network.config.distributedVirtualSwitch.uuid))
    if isinstance(network, vim.OpaqueNetwork):
        return card.OpaqueNetworkBackingInfo(opaqueNetworkId=network.summary.opaqueNetworkId,
                                             opaqueNetworkType=network.summary.opaqueNetworkType)
    return card.NetworkBackingInfo(deviceName=network.name, network=network)


def cdrom() -> List[Any]:
    """An empty CD-ROM drive on a SATA controller (pvscsi takes no CD-ROM), not connected."""
    sata = vim.vm.device.VirtualAHCIController(key=SATA_KEY, busNumber=0)
    drive = vim.vm.device.VirtualCdrom(
        key=CDROM_KEY, controllerKey=SATA_KEY, unitNumber=0,
        backing=vim.vm.device.VirtualCdrom.RemotePassthroughBackingInfo(deviceName="", exclusive=False),
        connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=False, connected=False,
                                                            allowGuestControl=True))
    return [sata, drive]


def ethernet_cards(vm: Any) -> List[Any]:
    return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]


def connect_changes(vm: Any, connected: bool) -> Optional[Any]:
    """The ReconfigVM spec that (dis)connects every NIC now and at power-on; None when all
    already are as asked. A powered-off VM's NICs read as not connected whatever was set
    (vCenter connects them at power-on as startConnected says), so only that one counts there."""
    running = vm.runtime.powerState == vim.VirtualMachinePowerState.poweredOn
    edits = []
    for card in ethernet_cards(vm):
        c = card.connectable
        if c.startConnected == connected and (c.connected == connected or not running):
            continue
        c.connected = c.startConnected = connected
        edits.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=card))
    return vim.vm.ConfigSpec(deviceChange=edits) if edits else None
