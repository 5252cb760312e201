"""Powering off a source that is itself a vSphere VM, through the source site's vCenter (the
`source` section of the vsphere configuration): find it by name or BIOS/instance UUID, ask
its guest to shut down, and power it off when asked to.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Union

from pyVmomi import vim, vmodl

from .base import OFF, ON, DestinationError, VmRef
from .vsphere_config import SourceConfig, VsphereConfig
from .vsphere_inventory import retrieve
from .vsphere_session import Session, fault_text

log = logging.getLogger("osam.destinations.vsphere")

UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.IGNORECASE)
POLL = 1.0                   # seconds between power state reads while a guest shuts down
SHUTDOWN_TIMEOUT = 300.0


def bind_vm(session: Session, ref: VmRef) -> Any:
    """The VM behind `ref` on the session's current connection; DestinationError when it is gone."""
    vm = vim.VirtualMachine(ref.id, session.stub())
    try:
        vm.name
    except vmodl.fault.ManagedObjectNotFound:
        raise DestinationError(f"VM {ref.name!r} ({ref.id}) no longer exists in vCenter "
                               f"{session.connection.url}") from None
    return vm


def power_state_of(vm: Any) -> str:
    """ON, OFF, or "suspended"."""
    state = vm.runtime.powerState
    return {vim.VirtualMachinePowerState.poweredOn: ON, vim.VirtualMachinePowerState.poweredOff: OFF}.get(
        state, str(state))


class VsphereSource:
    def __init__(self, config: Union[VsphereConfig, SourceConfig]):
        if isinstance(config, VsphereConfig):
            if config.source is None:
                raise DestinationError(f"vsphere config {config.origin}: no 'source' section (the source "
                                       "site's vCenter)")
            config = config.source
        self.config = config
        self.session = Session(config.connection)

    def find_by_name_or_uuid(self, name_or_uuid: str) -> VmRef:
        """The one VM with this BIOS UUID, instance UUID or name (in the configured datacenter,
        else anywhere in the vCenter)."""
        return self.session.run(f"looking for source VM {name_or_uuid!r}", lambda: self._find(name_or_uuid))

    def _find(self, key: str) -> VmRef:
        content = self.session.content()
        root = self._root(content)
        hits = []
        if UUID.match(key):
            dc = root if isinstance(root, vim.Datacenter) else None
            for instance in (False, True):
                vm = content.searchIndex.FindByUuid(datacenter=dc, uuid=key, vmSearch=True, instanceUuid=instance)
                if vm is not None:
                    hits = [vm]
                    break
        if not hits:
            hits = [vm for vm, props in retrieve(content, root, vim.VirtualMachine, ["name"])
                    if props.get("name") == key]
        if len(hits) != 1:
            where = f"vCenter {self.config.connection.url}" + (
                f", datacenter {self.config.datacenter!r}" if self.config.datacenter else "")
            raise DestinationError(f"{len(hits) or 'no'} VMs named or with UUID {key!r} in {where}"
                                   + (": give its UUID" if hits else ""))
        return VmRef(id=hits[0]._moId, name=hits[0].name, extra={"vcenter": self.config.connection.url})

    def _root(self, content: Any) -> Any:
        if not self.config.datacenter:
            return content.rootFolder
        dc = content.searchIndex.FindByInventoryPath(self.config.datacenter)
        if not isinstance(dc, vim.Datacenter):
            raise DestinationError(f"datacenter {self.config.datacenter!r} does not exist in vCenter "
                                   f"{self.config.connection.url}")
        return dc

    def power_state(self, vm: VmRef) -> str:
        return self.session.run(f"reading the power state of source VM {vm.name!r}",
                                lambda: power_state_of(bind_vm(self.session, vm)))

    def shutdown_guest(self, vm: VmRef, timeout: float = SHUTDOWN_TIMEOUT, force: bool = False) -> str:
        """Ask the guest to shut down and wait until the VM is off; with `force`, power it off
        when the guest cannot (no VMware Tools) or does not within `timeout`. Returns what happened."""
        return self.session.run(f"shutting down source VM {vm.name!r}", lambda: self._shutdown(vm, timeout, force))

    def _shutdown(self, ref: VmRef, timeout: float, force: bool) -> str:
        vm = bind_vm(self.session, ref)
        if power_state_of(vm) == OFF:
            return f"source VM {ref.name!r} was already powered off"
        try:
            vm.ShutdownGuest()
        except (vim.fault.ToolsUnavailable, vim.fault.InvalidState) as e:
            return self._forced(vm, ref, force, f"its guest cannot be asked to shut down: {fault_text(e)}")
        deadline = time.monotonic() + timeout
        while power_state_of(vm) != OFF:
            if time.monotonic() >= deadline:
                return self._forced(vm, ref, force, f"its guest did not shut down within {timeout:g}s")
            time.sleep(POLL)
        log.info("source VM %s: guest shut down", ref.name)
        return f"source VM {ref.name!r}: guest shut down"

    def _forced(self, vm: Any, ref: VmRef, force: bool, why: str) -> str:
        if not force:
            raise DestinationError(f"source VM {ref.name!r}: {why}")
        self._power_off(vm, ref)
        return f"source VM {ref.name!r} powered off ({why})"

    def power_off(self, vm: VmRef) -> None:
        self.session.run(f"powering off source VM {vm.name!r}",
                         lambda: self._power_off(bind_vm(self.session, vm), vm))

    def _power_off(self, vm: Any, ref: VmRef) -> None:
        if power_state_of(vm) != OFF:
            self.session.wait(vm.PowerOffVM_Task(), f"powering off source VM {ref.name!r}")
            log.info("source VM %s: powered off", ref.name)

    def close(self) -> None:
        self.session.close()
