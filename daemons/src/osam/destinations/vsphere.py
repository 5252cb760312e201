"""The `vsphere` destination: the replica's disks become a VM in a vCenter, made with pyvmomi.

The receiver writes the replica's raw images straight into the VM's folder on the datastore
(a directory it mounts, e.g. over NFS), named as VMware names flat extents; a text descriptor
beside each image makes it a VMDK, and the VM is created on those files: nothing is copied.

    <datastore_path>/<name>/<name>_<i>-flat.vmdk    the receiver's raw image of disk i
    <datastore_path>/<name>/<name>_<i>.vmdk         its descriptor (write_descriptor)
    [<datastore>] <name>/<name>.vmx                 the VM, made by vCenter (ensure_vm)

`<name>` is the VM's name (the source's short host name) with only letters, digits, '.',
'_' and '-'. The VM is found again by the migration id it carries: the custom field
`osam.migration` (defined when missing) and an `osam.migration=<id>` line in its annotation
(kept too, for users without the right to define custom fields).

Configuration (VsphereConfig.load): a JSON file. Unknown keys are errors.

    {
      "url": "https://vcenter.example.com",        # https://host[:port]; /sdk may follow
      "user": "osam@vsphere.local",
      "password_file": "/etc/osam/vcenter.password", # or "password": "..." (the file is better)
      "ca_file": "/etc/osam/vcenter-ca.pem",       # optional: else the system's CAs
      "insecure": false,                           # true: no certificate check (labs and tests only)
      "datacenter": "DC0",                         # inventory path of the datacenter
      "cluster": "DC0_C0",                         # or "host": "esx01.example.com" (exactly one)
      "resource_pool": "Migrations",               # optional path below the root pool
      "folder": "Migrated/Wave 1",                 # optional path below the VM folder; must exist
      "datastore": "LocalDS_0",
      "datastore_path": "/mnt/localds0",           # where this receiver sees that datastore's files
      "networks": {"eth0": "VM Network",           # source NIC name, source MAC or "*" -> port group
                   "52:54:00:12:34:56": "DC0_DVPG0", "*": "VM Network"},
      "task_timeout": 600,                         # optional: seconds a vCenter task may take
      "source": {"url": "...", "user": "...",      # optional: the source site's vCenter, for sources
                 "password_file": "...",           # that are vSphere VMs (VsphereSource); the same
                 "datacenter": "SRC-DC"}           # connection keys, datacenter optional
    }

Relative file names are taken from the configuration file's directory. The password is
never logged, shown in a repr or put in an error message.

pyvmomi is imported here: the receiver imports this module only when the vsphere destination
is configured (pip extra `vsphere`).
"""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, List, Optional, Sequence, Tuple

try:
    from pyVmomi import vim, vmodl
except ImportError as e:   # pragma: no cover - depends on the installation
    raise ImportError("the vsphere destination needs pyvmomi: install osam with the 'vsphere' extra") from e

from .base import OFF, ON, Destination, DestinationError, NicSpec, VmRef, VmSpec
from .vsphere_config import VsphereConfig, VsphereConfigError
from .vsphere_guest import guest_id, is_windows
from .vsphere_inventory import (Placement, VmRow, annotation_for, locate, migration_field, port_group,
                                port_groups, vm_rows)
from .vsphere_session import Session
from .vsphere_source import VsphereSource, bind_vm, power_state_of
from .vsphere_vmdk import (allocated_bytes, descriptor_name, descriptor_text, flat_name, sectors_of,
                           vm_file_base, write_descriptor_file)
from .vsphere_vmspec import MIB, config_spec, connect_changes, memory_mb, spec_problems

__all__ = ["VsphereConfig", "VsphereConfigError", "VsphereDestination", "VsphereSource"]

log = logging.getLogger("osam.destinations.vsphere")

GIB = 1 << 30
LINUX_TOOLS = "nothing to do: VM {name!r} is a Linux guest and has open-vm-tools from the fix-up"
# Tools that run but are older than the host's: upgrade them rather than mount the installer.
TOOLS_TO_UPGRADE = {"guestToolsNeedUpgrade", "guestToolsSupportedOld", "guestToolsTooOld"}


class VsphereDestination(Destination):
    kind = "vsphere"

    def __init__(self, config: VsphereConfig):
        self.config = config
        self.session = Session(config.connection)

    # ---------------------------------------------------------------- files on the receiver
    def file_base(self, spec: VmSpec) -> str:
        """The VM's folder on the datastore and the stem of its file names."""
        return vm_file_base(spec.name, spec.migration_id)

    def image_dir(self, spec: VmSpec) -> str:
        return os.path.join(self.config.datastore_path, self.file_base(spec))

    def image_path(self, spec: VmSpec, index: int) -> str:
        """The replica's images are the VM's flat extents, written in place on the datastore."""
        return self.flat_path(spec, index)

    def flat_path(self, spec: VmSpec, index: int) -> str:
        """Where the receiver writes disk `index`'s raw image."""
        return os.path.join(self.image_dir(spec), flat_name(self.file_base(spec), index))

    def descriptor_path(self, spec: VmSpec, index: int) -> str:
        return os.path.join(self.image_dir(spec), descriptor_name(self.file_base(spec), index))

    def datastore_file(self, spec: VmSpec, file_name: str) -> str:
        """A file of the VM's folder as vSphere names it: "[datastore] folder/file"."""
        return f"[{self.config.datastore}] {self.file_base(spec)}/{file_name}"

    def write_descriptor(self, spec: VmSpec, index: int) -> str:
        """Write disk `index`'s descriptor beside its image (unchanged when it says the same);
        returns its datastore path. The image must be there, at least as large as the disk."""
        disk = spec.disks[index]
        flat = self.flat_path(spec, index)
        try:
            have = os.path.getsize(flat)
        except FileNotFoundError:
            raise DestinationError(f"disk {disk.name} of VM {spec.name!r}: no image at {flat} (the receiver "
                                   f"writes the replica's images into {self.image_dir(spec)})") from None
        need = sectors_of(disk.size, f"disk {disk.name} of VM {spec.name!r}") * 512
        if have < need:
            raise DestinationError(f"disk {disk.name} of VM {spec.name!r}: image {flat} holds {have} bytes, "
                                   f"the disk has {need}")
        text = descriptor_text(flat_name(self.file_base(spec), index), disk.size, f"{spec.migration_id}/{index}")
        if write_descriptor_file(self.descriptor_path(spec, index), text):
            log.info("VM %s: wrote descriptor %s", spec.name, self.descriptor_path(spec, index))
        return self.datastore_file(spec, descriptor_name(self.file_base(spec), index))

    # ---------------------------------------------------------------- validate
    def validate(self, spec: VmSpec) -> List[str]:
        problems = spec_problems(spec) + self._datastore_path_problems()
        try:
            problems += self.session.run(f"checking vCenter {self.config.connection.url} for VM {spec.name!r}",
                                         lambda: self._check(spec)[2])
        except DestinationError as e:
            problems.append(str(e))
        return problems

    def _check(self, spec: VmSpec) -> Tuple[Placement, Optional[VmRow], List[str]]:
        """Where the VM goes, the VM of this migration if one exists, and what is wrong."""
        content = self.session.content()
        at = locate(content, self.config)
        problems = list(at.problems)
        ours = None
        if at.datacenter is not None:
            rows = vm_rows(content, at.datacenter, migration_field(content, create=False))
            ours = self._ours(rows, spec)
            taken = self._name_problems(spec, rows, at)
            problems += taken
            problems += [p for _, p in self._networks(spec, content, at) if p]
            if ours is None and not taken:
                problems += self._leftover_problems(spec)
        if at.datastore is not None and ours is None:
            problems += self._space_problems(spec, at.datastore)
        return at, ours, problems

    def _datastore_path_problems(self) -> List[str]:
        path = self.config.datastore_path
        if not os.path.isdir(path):
            return [f"datastore_path {path} is not a directory on this receiver (it must be where datastore "
                    f"{self.config.datastore!r} is mounted)"]
        try:   # os.access is not enough: NFS may map root to nobody
            fd, probe = tempfile.mkstemp(prefix=".osam-probe-", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            return [f"datastore_path {path} is not writable by the receiver: {e.strerror}"]
        return []

    def _name_problems(self, spec: VmSpec, rows: Sequence[VmRow], at: Placement) -> List[str]:
        return [f"a VM named {spec.name!r} already exists in datacenter {at.datacenter.name!r} ({row.vm._moId}"
                f"{', migration ' + row.migration_id if row.migration_id else ''}): rename or remove it"
                for row in rows if row.name == spec.name and row.migration_id != spec.migration_id]

    def _leftover_problems(self, spec: VmSpec) -> List[str]:
        vmx = os.path.join(self.image_dir(spec), self.file_base(spec) + ".vmx")
        if os.path.exists(vmx):
            return [f"{vmx} exists but no VM of this migration does: the folder holds the files of another VM "
                    "(renamed since, or unregistered); move them away"]
        return []

    def _space_problems(self, spec: VmSpec, datastore: Any) -> List[str]:
        disks = sum(d.size for d in spec.disks)
        written = sum(allocated_bytes(self.flat_path(spec, i)) for i in range(len(spec.disks)))
        swap = memory_mb(spec.memory) * MIB if spec.memory > 0 else 0
        need = max(0, disks - written) + swap
        free = datastore.summary.freeSpace
        if need <= free:
            return []
        already = f", less {_gib(written)} already written" if written else ""
        return [f"datastore {datastore.name!r} has {_gib(free)} free; VM {spec.name!r} needs {_gib(need)}: "
                f"{len(spec.disks)} disk(s) at their full size of {_gib(disks)}{already} (the flat extents may "
                f"start thin on the datastore, but the replica fills them) and {_gib(swap)} for its swap file "
                "at power-on"]

    def _networks(self, spec: VmSpec, content: Any, at: Placement) -> List[Tuple[Any, Optional[str]]]:
        """(port group, problem) of each NIC, in order."""
        if not spec.nics:
            return []
        networks = port_groups(content, at.datacenter)
        out = []
        for nic in spec.nics:
            name = self.port_group_name(nic)
            if name is None:
                out.append((None, f"NIC {_nic_label(nic)}: no port group for it in 'networks' (by its name, its "
                                  "MAC or \"*\")"))
                continue
            net, problem = port_group(networks, name, at.compute, at.host)
            out.append((net, f"NIC {_nic_label(nic)}: {problem}" if problem else None))
        return out

    def port_group_name(self, nic: NicSpec) -> Optional[str]:
        """The port group a NIC joins: the one set on it, else the configured map's."""
        return nic.network or self.config.port_group_for(nic.source_name, nic.source_mac)

    # ---------------------------------------------------------------- the VM
    def ensure_vm(self, spec: VmSpec) -> VmRef:
        return self.session.run(f"making VM {spec.name!r} in {self.config.connection.url}",
                                lambda: self._ensure_vm(spec))

    def _ensure_vm(self, spec: VmSpec) -> VmRef:
        at, ours, problems = self._check(spec)
        content = self.session.content()
        if ours is not None:
            self._record_field(content, ours.vm, spec)
            log.info("VM %s: found %s of migration %s", spec.name, ours.vm._moId, spec.migration_id)
            return self._ref(ours.vm, spec)
        problems = spec_problems(spec) + self._datastore_path_problems() + problems
        if problems:
            raise DestinationError(f"cannot make VM {spec.name!r}: " + "; ".join(problems))
        disk_paths = [self.write_descriptor(spec, i) for i in range(len(spec.disks))]
        networks = [net for net, _ in self._networks(spec, content, at)]
        config = config_spec(spec, guest_id(spec.os), self.datastore_file(spec, self.file_base(spec) + ".vmx"),
                             disk_paths, networks, annotation_for(spec.name, spec.migration_id))
        task = at.folder.CreateVM_Task(config=config, pool=at.pool, host=at.host)
        vm = self.session.wait(task, f"creating VM {spec.name!r} in folder {at.folder.name!r}")
        self._record_field(content, vm, spec)
        log.info("VM %s: created %s (%s, %d disk(s), %d NIC(s)) for migration %s", spec.name, vm._moId,
                 config.guestId, len(spec.disks), len(spec.nics), spec.migration_id)
        return self._ref(vm, spec)

    def _record_field(self, content: Any, vm: Any, spec: VmSpec) -> None:
        """The migration id in the custom field too (the annotation has it already)."""
        key = migration_field(content, create=True)
        if key is None or any(v.key == key and getattr(v, "value", "") == spec.migration_id
                              for v in vm.customValue or ()):
            return
        try:
            content.customFieldsManager.SetField(entity=vm, key=key, value=spec.migration_id)
        except vim.fault.NoPermission as e:
            log.warning("VM %s: no right to set custom field osam.migration (%s); its annotation keeps the "
                        "migration id", spec.name, e.privilegeId)

    def find_vm(self, spec: VmSpec) -> Optional[VmRef]:
        def find() -> Optional[VmRef]:
            at, ours, _ = self._check(spec)
            if at.datacenter is None:
                raise DestinationError("; ".join(at.problems))
            return None if ours is None else self._ref(ours.vm, spec)
        return self.session.run(f"looking for VM {spec.name!r} in {self.config.connection.url}", find)

    def _ours(self, rows: Sequence[VmRow], spec: VmSpec) -> Optional[VmRow]:
        ours = [row for row in rows if row.migration_id == spec.migration_id and not row.template]
        if len(ours) > 1:
            raise DestinationError(f"{len(ours)} VMs carry migration id {spec.migration_id} "
                                   f"({', '.join(f'{r.name} {r.vm._moId}' for r in ours)}): keep one")
        return ours[0] if ours else None

    def _ref(self, vm: Any, spec: VmSpec) -> VmRef:
        return VmRef(id=vm._moId, name=vm.name, extra={
            "migration_id": spec.migration_id, "vcenter": self.config.connection.url,
            "datacenter": self.config.datacenter, "vmx": self.datastore_file(spec, self.file_base(spec) + ".vmx")})

    # ---------------------------------------------------------------- NICs, power, tools
    def set_nics_connected(self, vm: VmRef, connected: bool) -> None:
        def change() -> None:
            obj = bind_vm(self.session, vm)
            spec = connect_changes(obj, connected)
            if spec is not None:
                self.session.wait(obj.ReconfigVM_Task(spec), f"{'connecting' if connected else 'disconnecting'} "
                                  f"the NICs of VM {vm.name!r}")
        self.session.run(f"{'connecting' if connected else 'disconnecting'} the NICs of VM {vm.name!r}", change)

    def power_state(self, vm: VmRef) -> str:
        return self.session.run(f"reading the power state of VM {vm.name!r}",
                                lambda: power_state_of(bind_vm(self.session, vm)))

    def power_on(self, vm: VmRef) -> None:
        def on() -> None:
            obj = bind_vm(self.session, vm)
            if power_state_of(obj) != ON:
                self.session.wait(obj.PowerOnVM_Task(), f"powering on VM {vm.name!r}")
        self.session.run(f"powering on VM {vm.name!r}", on)

    def power_off(self, vm: VmRef) -> None:
        def off() -> None:
            obj = bind_vm(self.session, vm)
            if power_state_of(obj) != OFF:
                self.session.wait(obj.PowerOffVM_Task(), f"powering off VM {vm.name!r}")
        self.session.run(f"powering off VM {vm.name!r}", off)

    def install_tools(self, vm: VmRef) -> str:
        return self.session.run(f"installing VMware Tools in VM {vm.name!r}", lambda: self._install_tools(vm))

    def _install_tools(self, vm: VmRef) -> str:
        obj = bind_vm(self.session, vm)
        if not is_windows(obj.config.guestId or ""):
            return LINUX_TOOLS.format(name=vm.name)
        upgrade = obj.guest.toolsVersionStatus2 in TOOLS_TO_UPGRADE
        try:
            if upgrade:
                self.session.wait(obj.UpgradeTools_Task(), f"upgrading VMware Tools in VM {vm.name!r}")
                return f"VMware Tools upgraded in VM {vm.name!r}"
            obj.MountToolsInstaller()
        except vmodl.fault.MethodNotFound as e:
            method = e.method or ("UpgradeTools_Task" if upgrade else "MountToolsInstaller")
            return (f"{method} is not offered by this vCenter ({self.config.connection.url}): install VMware "
                    f"Tools in VM {vm.name!r} by hand")
        return (f"VMware Tools installer mounted in the CD-ROM drive of VM {vm.name!r}: run its setup in the "
                "guest (Windows starts it by autorun when allowed)")

    def source_control(self):
        return VsphereSource(self.config) if self.config.source is not None else None

    def close(self) -> None:
        self.session.close()

    def __repr__(self) -> str:
        c = self.config
        return (f"VsphereDestination({c.connection.url} as {c.connection.user}, datacenter {c.datacenter!r}, "
                f"datastore {c.datastore!r} at {c.datastore_path})")


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def _nic_label(nic: NicSpec) -> str:
    parts = [p for p in (nic.source_name, nic.source_mac) if p]
    return f"{parts[0]} ({parts[1]})" if len(parts) == 2 else (parts[0] if parts else nic.mac)
