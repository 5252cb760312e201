"""After the final sync: the fix-up and the cutover, one durable phase at a time, driven by
the receiver whether or not the guest is still connected (it is powered off half-way).

  fixup       the replica fixed up for VMware's virtual hardware, then unmounted
  replica_vm  the destination's VM made from it (or found again), powered off, NICs disconnected
  tools       VMware Tools where the destination offers an installer
  replica_on  the replica powered on, still cut off from the network
  source_off  the sentinel asked to power its machine off; off once its links went quiet
  network     the replica's NICs connected: it has taken over; then completed

When the source does not power off in time, the replica must not stay on beside it: it is
powered off with its NICs connected, and the operator is told to power the source off and the
replica on. If the replica cannot be powered off either, it stays on with its NICs
disconnected, and the operator is told so. Both end in needs_operator.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Optional

from ..controller import phases
from ..destinations.base import Destination, DiskSpec, NicSpec, VmRef, VmSpec

log = logging.getLogger("osam.receiver")

POLL = 0.2
SOURCE_QUIET = 5.0          # seconds the guest's links must stay down after it was told to power off
COMMAND_TIMEOUT = 30.0

REPLICA_OFF_INSTRUCTION = ("the source did not power off within {timeout:.0f}s; the replica {vm} is powered "
                           "off with its NICs connected: power off the source, then power on the replica")
BOTH_ON_INSTRUCTION = ("the source did not power off within {timeout:.0f}s and the replica {vm} could not be "
                       "powered off ({error}); both are on, the replica's NICs disconnected: connect the "
                       "replica's NICs in vCenter, power off the source, power on the replica")


def vm_spec(migration: dict, vm: dict, inventory: dict) -> VmSpec:
    """What the destination makes, from the replica's VM definition (vm.json)."""
    return VmSpec(name=vm["name"], migration_id=str(migration["id"]), cpus=int(vm["cpus"]),
                  memory=int(vm["memory"]), firmware=vm["firmware"], os=dict(inventory.get("os") or {}),
                  disks=[DiskSpec(d["name"], int(d["size"]), d["image"]) for d in vm["disks"]],
                  nics=[NicSpec(n["mac"], n.get("source_name") or "", n.get("source_mac") or "")
                        for n in vm["nics"]])


class Cutover:
    def __init__(self, session, destination: Destination, source_off_timeout: float,
                 clock: Callable[[], float] = time.monotonic):
        self.session = session
        self.controller = session.controller
        self.name = session.name
        self.destination = destination
        self.source_off_timeout = source_off_timeout
        self.clock = clock
        self._vm: Optional[VmRef] = None

    async def run(self) -> None:
        """Step through the cutover phases until the migration is no longer in one."""
        while True:
            m = self.controller.migration(self.name)
            if m is None or m["phase"] not in phases.CUTOVER:
                return
            await self.step(m)

    async def step(self, m: dict) -> None:
        phase, name = m["phase"], self.name
        call = asyncio.get_running_loop().run_in_executor
        if phase == phases.FIXUP:
            await self.session.fixup()
            self.controller.advance(name, phases.REPLICA_VM)
        elif phase == phases.REPLICA_VM:
            spec = self._spec(m)
            problems = await call(None, self.destination.validate, spec)
            if problems:
                raise RuntimeError("the destination refuses the replica VM: " + "; ".join(problems))
            self._vm = await call(None, self.destination.ensure_vm, spec)
            log.info("guest %s: replica VM %s (%s) ready, powered off", name, self._vm.name, self._vm.id)
            self.controller.advance(name, phases.TOOLS)
        elif phase == phases.TOOLS:
            done = await call(None, self.destination.install_tools, await self._the_vm(m))
            log.info("guest %s: VMware Tools: %s", name, done)
            self.controller.advance(name, phases.REPLICA_ON)
        elif phase == phases.REPLICA_ON:
            vm = await self._the_vm(m)
            await call(None, self.destination.set_nics_connected, vm, False)
            await call(None, self.destination.power_on, vm)
            self.controller.advance(name, phases.SOURCE_OFF)
        elif phase == phases.SOURCE_OFF:
            if self.destination.kind == "none":
                log.info("guest %s: the source keeps running: a %s replica does not take over from it",
                         name, self.session.replica.format)
                self.controller.advance(name, phases.NETWORK)
            elif await self.power_off_source():
                self.controller.advance(name, phases.NETWORK)
            else:
                self.controller.advance(name, phases.NEEDS_OPERATOR, await self._replica_off_or_isolated(m))
        elif phase == phases.NETWORK:
            await call(None, self.destination.set_nics_connected, await self._the_vm(m), True)
            self.controller.advance(name, phases.COMPLETED)
            log.info("guest %s: migration completed; the replica has taken over", name)
            await call(None, self.destination.close)

    def _spec(self, m: dict) -> VmSpec:
        guest = self.controller.guest(self.name) or {}
        inventory = guest.get("inventory") or {}
        if self.destination.kind == "none":
            return VmSpec(name=str(inventory.get("hostname") or self.name), migration_id=str(m["id"]),
                          cpus=1, memory=0, firmware="bios")
        return vm_spec(m, self.session.replica.vm(), inventory)

    async def _the_vm(self, m: dict) -> VmRef:
        if self._vm is None:   # after a restart: the destination finds it by the migration id
            self._vm = await asyncio.get_running_loop().run_in_executor(None, self.destination.find_vm, self._spec(m))
            if self._vm is None:
                raise RuntimeError("the replica VM made for this migration is gone from the destination")
        return self._vm

    # -- the source -------------------------------------------------------------------------
    async def power_off_source(self) -> bool:
        """Power the source off: through the source site's vCenter when it is a VM there,
        else through its sentinel."""
        source = self.destination.source_control()
        if source is not None:
            try:
                return await asyncio.get_running_loop().run_in_executor(None, self._power_off_vm, source)
            except LookupError as exc:
                log.warning("guest %s: %s; asking its sentinel instead", self.name, exc)
            finally:
                source.close()
        return await self._power_off_through_sentinel()

    def _power_off_vm(self, source) -> bool:
        inventory = (self.controller.guest(self.name) or {}).get("inventory") or {}
        keys = [k for k in (inventory.get("system_uuid"), str(inventory.get("hostname") or "").split(".")[0]) if k]
        vm = None
        for key in keys:
            try:
                vm = source.find_by_name_or_uuid(key)
                break
            except Exception as exc:  # noqa: BLE001 - the next key, then the sentinel
                log.info("guest %s: source VM %r: %s", self.name, key, exc)
        if vm is None:
            raise LookupError(f"no VM of the source vCenter is this guest (looked for {', '.join(keys)})")
        try:
            # The guest is quiesced and final-synced: a guest that does not shut down in time is powered off.
            log.info("guest %s: %s", self.name, source.shutdown_guest(vm, self.source_off_timeout, force=True))
        except Exception as exc:  # noqa: BLE001 - judged by the power state below
            log.error("guest %s: the source vCenter could not power the source off: %s", self.name, exc)
        return source.power_state(vm) == "off"

    async def _power_off_through_sentinel(self) -> bool:
        """Ask the sentinel to power its machine off; True once its links have stayed down
        SOURCE_QUIET seconds after it said yes. A guest that never answers is not off."""
        deadline = self.clock() + self.source_off_timeout
        acknowledged = False
        while self.clock() < deadline:
            s = self.session
            if not acknowledged and s.control is not None:
                try:
                    await asyncio.wait_for(s.command("power_off"), COMMAND_TIMEOUT)
                    acknowledged = True
                    log.info("guest %s: powering off", self.name)
                except Exception as exc:  # noqa: BLE001 - retried until the deadline
                    log.warning("guest %s: power-off request not answered: %s", self.name, exc)
            if acknowledged and s.control is None and s.down_since is not None \
                    and time.monotonic() - s.down_since >= SOURCE_QUIET:
                return True
            await asyncio.sleep(POLL)
        return False

    async def _replica_off_or_isolated(self, m: dict) -> str:
        """The failure rules: the replica must not run on the network beside the source."""
        call = asyncio.get_running_loop().run_in_executor
        vm = await self._the_vm(m)
        try:
            await call(None, self.destination.power_off, vm)
            await call(None, self.destination.set_nics_connected, vm, True)
            reason = REPLICA_OFF_INSTRUCTION.format(timeout=self.source_off_timeout, vm=vm.name)
        except Exception as exc:  # noqa: BLE001 - the instruction says what it left
            await call(None, self._disconnect_quietly, vm)
            reason = BOTH_ON_INSTRUCTION.format(timeout=self.source_off_timeout, vm=vm.name, error=exc)
        log.error("guest %s: %s", self.name, reason)
        return reason

    def _disconnect_quietly(self, vm: VmRef) -> None:
        try:
            self.destination.set_nics_connected(vm, False)
        except Exception:  # noqa: BLE001 - they were never connected: that is what it ensures
            log.exception("guest %s: could not make sure the replica's NICs are disconnected", self.name)
