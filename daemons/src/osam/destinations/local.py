"""The embedded destination: the VM is the replica's own directory, its images and a VM
definition (vm.json, plus the qemu command line that boots it on VMware's virtual hardware:
pvscsi and vmxnet3). Power and NIC state are kept in local-vm.json; "power on" boots it with
qemu only when the receiver is asked to (`boot=True`), otherwise it is recorded."""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import time
from typing import Dict, List, Optional

from ..common.atomic import atomic_write
from .base import OFF, ON, Destination, DestinationError, DiskSpec, NicSpec, VmRef, VmSpec

STATE_FILE = "local-vm.json"
BOOT_SCRIPT = "boot.sh"
QEMU = "qemu-system-x86_64"


def qemu_argv(spec: VmSpec, nics_connected: bool) -> List[str]:
    """qemu on vSphere's virtual hardware; a disconnected NIC is one with no network behind it."""
    argv = [QEMU, "-accel", "${OSAM_QEMU_ACCEL:-kvm:tcg}", "-machine", "pc", "-smp", str(max(1, spec.cpus)),
            "-m", str(max(256, spec.memory >> 20)), "-display", "none", "-serial", "mon:stdio",
            "-device", "pvscsi,id=scsi0"]
    if spec.firmware == "uefi":
        argv += ["-bios", "/usr/share/ovmf/OVMF.fd"]
    for i, disk in enumerate(spec.disks):
        argv += ["-drive", f"file={disk.image},format=raw,if=none,id=d{i}",
                 "-device", f"scsi-hd,drive=d{i},bus=scsi0.0" + (",bootindex=0" if i == 0 else "")]
    for i, nic in enumerate(spec.nics):
        if nics_connected:
            argv += ["-netdev", f"user,id=n{i}", "-device", f"vmxnet3,netdev=n{i},mac={nic.mac}"]
        else:
            argv += ["-device", f"vmxnet3,mac={nic.mac}"]
    return argv


class LocalDestination(Destination):
    kind = "local"

    def __init__(self, replica_dir: str, *, boot: bool = False):
        self.replica_dir = replica_dir
        self.boot = boot

    # -- state ------------------------------------------------------------------------------
    def _state_path(self) -> str:
        return os.path.join(self.replica_dir, STATE_FILE)

    def _state(self) -> Dict:
        try:
            with open(self._state_path()) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _save(self, state: Dict) -> None:
        atomic_write(self._state_path(), json.dumps(state, indent=2, sort_keys=True).encode())

    # -- Destination ------------------------------------------------------------------------
    def validate(self, spec: VmSpec) -> List[str]:
        problems = []
        state = self._state()
        if state and state.get("migration_id") != spec.migration_id:
            problems.append(f"{self.replica_dir} already holds the VM of migration {state.get('migration_id')}")
        if not spec.disks:
            problems.append("the VM would have no disk")
        return problems

    def ensure_vm(self, spec: VmSpec) -> VmRef:
        state = self._state()
        if state.get("migration_id") == spec.migration_id:
            return self._ref(state)
        missing = [d.image for d in spec.disks if not os.path.exists(d.image)]
        if missing:
            raise DestinationError(f"the replica's images are missing: {', '.join(missing)}")
        state = {"migration_id": spec.migration_id, "name": spec.name, "power": OFF,
                 "nics_connected": False, "pid": None, "spec": dataclasses.asdict(spec)}
        self._write_boot_script(spec, nics_connected=False)
        self._save(state)
        return self._ref(state)

    def find_vm(self, spec: VmSpec) -> Optional[VmRef]:
        state = self._state()
        return self._ref(state) if state.get("migration_id") == spec.migration_id else None

    def set_nics_connected(self, vm: VmRef, connected: bool) -> None:
        state = self._state()
        state["nics_connected"] = connected
        if state.get("spec"):
            self._write_boot_script(_spec_from(state["spec"]), connected)
        self._save(state)

    def power_state(self, vm: VmRef) -> str:
        state = self._state()
        pid = state.get("pid")
        if pid and not _alive(pid):
            state.update(power=OFF, pid=None)
            self._save(state)
        return state.get("power", OFF)

    def power_on(self, vm: VmRef) -> None:
        state = self._state()
        if state.get("power") == ON:
            return
        if self.boot:
            log = open(os.path.join(self.replica_dir, "console.log"), "ab")
            proc = subprocess.Popen(["sh", os.path.join(self.replica_dir, BOOT_SCRIPT)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            state["pid"] = proc.pid
        state["power"] = ON
        self._save(state)

    def power_off(self, vm: VmRef) -> None:
        state = self._state()
        pid = state.get("pid")
        if pid and _alive(pid):
            _stop(pid)
        state.update(power=OFF, pid=None)
        self._save(state)

    # -- internals --------------------------------------------------------------------------
    def _ref(self, state: Dict) -> VmRef:
        return VmRef(id=self.replica_dir, name=state.get("name", ""))

    def _write_boot_script(self, spec: VmSpec, nics_connected: bool) -> None:
        # OSAM_QEMU_ACCEL=tcg where KVM is missing or nested KVM is unreliable.
        words = [a if a.startswith("${") else shlex.quote(a) for a in qemu_argv(spec, nics_connected)]
        text = "#!/bin/sh\n# The replica on VMware's virtual hardware (pvscsi, vmxnet3).\nexec " + " ".join(words) + "\n"
        atomic_write(os.path.join(self.replica_dir, BOOT_SCRIPT), text.encode(), 0o755)


def _spec_from(data: Dict) -> VmSpec:
    return VmSpec(**dict(data, disks=[DiskSpec(**d) for d in data.get("disks", [])],
                         nics=[NicSpec(**n) for n in data.get("nics", [])]))


def _stop(pid: int, grace: float = 30.0) -> None:
    """Stop qemu like a power button held down: SIGTERM, then SIGKILL; return once it is gone."""
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid):
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:   # our own child: reap it once it has exited
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
