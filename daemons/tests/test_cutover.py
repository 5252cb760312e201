"""The cutover after the final sync, on a real controller (SQLite) with a destination that
records what it is asked. The destination is a stand-in because a VM that refuses to power
off cannot be made here; the end-to-end tests run the real local destination, and
tests/vsphere the vSphere one."""
from __future__ import annotations

import asyncio
import time

import pytest

from osam.controller import Controller, phases
from osam.destinations.base import OFF, ON, Destination, VmRef
from osam.receiver import cutover as cutover_module
from osam.receiver.cutover import BOTH_ON_INSTRUCTION, REPLICA_OFF_INSTRUCTION, Cutover

VM = {"name": "web01", "cpus": 2, "memory": 2 << 30, "firmware": "bios",
      "disks": [{"name": "sda", "size": 1 << 30, "image": "/replicas/web01/disks/sda.raw"}],
      "nics": [{"mac": "00:50:56:01:02:03", "source_name": "eth0", "source_mac": "52:54:00:00:00:01"}]}


class RecordingDestination(Destination):
    kind = "recording"

    def __init__(self, refuse_power_off=False, problems=()):
        self.calls, self.power, self.nics = [], OFF, None
        self.refuse_power_off, self.problems = refuse_power_off, list(problems)
        self.made = None

    def validate(self, spec):
        self.calls.append("validate")
        return self.problems

    def ensure_vm(self, spec):
        self.calls.append("ensure_vm")
        self.made = spec
        return VmRef("vm-42", spec.name)

    def find_vm(self, spec):
        return VmRef("vm-42", spec.name) if self.made else None

    def set_nics_connected(self, vm, connected):
        self.calls.append(f"nics {'on' if connected else 'off'}")
        self.nics = connected

    def power_state(self, vm):
        return self.power

    def power_on(self, vm):
        self.calls.append("power_on")
        self.power = ON

    def power_off(self, vm):
        self.calls.append("power_off")
        if self.refuse_power_off:
            raise RuntimeError("the host refused: VM is locked")
        self.power = OFF


class FakeReplica:
    format = "disk"

    def vm(self):
        return VM


class FakeSession:
    """The parts of a GuestSession the cutover uses: the guest's control channel."""

    def __init__(self, controller, powers_off=True):
        self.name, self.controller, self.replica = "web01", controller, FakeReplica()
        self.control, self.down_since, self.powers_off, self.commands = object(), None, powers_off, []
        self.fixed_up = False

    async def fixup(self):
        self.fixed_up = True

    async def command(self, action, **args):
        self.commands.append(action)
        if action == "power_off" and self.powers_off:
            asyncio.get_running_loop().call_later(0.05, self._link_drops)
        return {}

    def _link_drops(self):
        self.control, self.down_since = None, time.monotonic()


@pytest.fixture
def controller(tmp_path):
    ctl = Controller(str(tmp_path / "c.sqlite"))
    ctl.register_guest("web01", {"hostname": "web01", "os": {"id": "debian", "version_id": "12"}})
    ctl.start_migration("web01", phases.IMMEDIATE)
    for step in (phases.FULL_SYNC, phases.CONTINUOUS_SYNC):
        ctl.advance("web01", step)
    ctl.request_switchover("web01")
    for step in (phases.QUIESCE, phases.FINAL_SYNC, phases.FIXUP):
        ctl.advance("web01", step)
    yield ctl
    ctl.close()


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(cutover_module, "SOURCE_QUIET", 0.2)
    monkeypatch.setattr(cutover_module, "POLL", 0.02)


def history(ctl):
    return [h["to"] for h in ctl.migration("web01")["history"]][-7:]


def test_the_replica_takes_over_once_the_source_is_off(controller):
    dest, session = RecordingDestination(), FakeSession(controller)
    asyncio.run(Cutover(session, dest, source_off_timeout=5).run())
    assert history(controller) == ["fixup", "replica_vm", "tools", "replica_on", "source_off", "network", "completed"]
    assert session.fixed_up and session.commands == ["power_off"]
    # Powered on cut off from the network, connected only once the source was off.
    assert dest.calls == ["validate", "ensure_vm", "nics off", "power_on", "nics on"]
    assert dest.made.name == "web01" and dest.made.nics[0].mac == "00:50:56:01:02:03"
    assert dest.made.migration_id == str(controller.migration("web01")["id"])


def test_source_that_stays_on_leaves_the_replica_off_with_its_nics_connected(controller):
    dest, session = RecordingDestination(), FakeSession(controller, powers_off=False)
    asyncio.run(Cutover(session, dest, source_off_timeout=0.5).run())
    m = controller.migration("web01")
    assert m["phase"] == phases.NEEDS_OPERATOR
    assert m["reason"] == REPLICA_OFF_INSTRUCTION.format(timeout=0.5, vm="web01")
    assert m["reason"].endswith("power off the source, then power on the replica")
    assert dest.power == OFF and dest.nics is True


def test_replica_that_cannot_power_off_stays_on_cut_off_from_the_network(controller):
    dest, session = RecordingDestination(refuse_power_off=True), FakeSession(controller, powers_off=False)
    asyncio.run(Cutover(session, dest, source_off_timeout=0.5).run())
    m = controller.migration("web01")
    assert m["phase"] == phases.NEEDS_OPERATOR
    assert m["reason"] == BOTH_ON_INSTRUCTION.format(timeout=0.5, vm="web01", error="the host refused: VM is locked")
    assert m["reason"].endswith("connect the replica's NICs in vCenter, power off the source, power on the replica")
    assert dest.power == ON and dest.nics is False


def test_a_guest_that_never_answered_is_not_taken_for_powered_off(controller):
    session = FakeSession(controller)
    session.control, session.down_since = None, time.monotonic() - 60   # gone before the cutover
    dest = RecordingDestination()
    asyncio.run(Cutover(session, dest, source_off_timeout=0.5).run())
    assert controller.migration("web01")["phase"] == phases.NEEDS_OPERATOR


def test_a_destination_that_refuses_fails_the_migration_and_makes_nothing(controller):
    dest = RecordingDestination(problems=["datastore LocalDS_9 does not exist"])
    with pytest.raises(RuntimeError, match="LocalDS_9"):
        asyncio.run(Cutover(FakeSession(controller), dest, source_off_timeout=1).run())
    assert "ensure_vm" not in dest.calls


def test_a_restart_half_way_finds_the_vm_again_and_goes_on(controller):
    dest, session = RecordingDestination(), FakeSession(controller)
    for step in (phases.REPLICA_VM, phases.TOOLS):
        controller.advance("web01", step)
    dest.made = object()     # the VM exists from before the restart
    asyncio.run(Cutover(session, dest, source_off_timeout=5).run())
    assert controller.migration("web01")["phase"] == phases.COMPLETED
    assert "ensure_vm" not in dest.calls and dest.calls[:2] == ["nics off", "power_on"]
