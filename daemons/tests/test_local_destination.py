"""The local destination: the VM is the replica's directory, its definition and boot script.
Powering on with boot=True really starts qemu (on an empty disk it just sits in the BIOS),
and powering off really stops it."""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from osam.destinations.base import OFF, ON, DestinationError, DiskSpec, NicSpec, VmSpec
from osam.destinations.local import BOOT_SCRIPT, STATE_FILE, LocalDestination


def spec(tmp_path, migration_id="7"):
    image = tmp_path / "disks" / "sda.raw"
    image.parent.mkdir(exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(1 << 20)
    return VmSpec(name="web01", migration_id=migration_id, cpus=2, memory=512 << 20, firmware="bios",
                  disks=[DiskSpec("sda", 1 << 20, str(image))], nics=[NicSpec("00:50:56:0a:0b:0c", "eth0")])


def test_the_vm_is_made_once_and_its_boot_script_follows_the_nics(tmp_path):
    dest = LocalDestination(str(tmp_path))
    s = spec(tmp_path)
    assert dest.validate(s) == []
    vm = dest.ensure_vm(s)
    assert dest.ensure_vm(s) == vm and dest.find_vm(s) == vm
    script = (tmp_path / BOOT_SCRIPT).read_text()
    assert "-device pvscsi,id=scsi0" in script and f"file={s.disks[0].image},format=raw" in script
    assert "-device vmxnet3,mac=00:50:56:0a:0b:0c\n" in script and "-netdev" not in script
    assert os.access(tmp_path / BOOT_SCRIPT, os.X_OK)
    dest.set_nics_connected(vm, True)
    # A new receiver process (no memory of the spec) rewrites it too.
    LocalDestination(str(tmp_path)).set_nics_connected(vm, True)
    assert (tmp_path / BOOT_SCRIPT).read_text().endswith("vmxnet3,netdev=n0,mac=00:50:56:0a:0b:0c\n")
    assert LocalDestination(str(tmp_path)).validate(spec(tmp_path, "8")) == [
        f"{tmp_path} already holds the VM of migration 7"]


def test_power_is_recorded_without_booting(tmp_path):
    dest = LocalDestination(str(tmp_path))
    vm = dest.ensure_vm(spec(tmp_path))
    dest.power_on(vm)
    assert dest.power_state(vm) == ON and json.loads((tmp_path / STATE_FILE).read_text())["pid"] is None
    dest.power_off(vm)
    assert dest.power_state(vm) == OFF


def test_missing_images_are_refused(tmp_path):
    s = spec(tmp_path)
    os.unlink(s.disks[0].image)
    with pytest.raises(DestinationError, match="images are missing"):
        LocalDestination(str(tmp_path)).ensure_vm(s)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed")
def test_booting_starts_qemu_and_power_off_stops_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OSAM_QEMU_ACCEL", "tcg")
    dest = LocalDestination(str(tmp_path), boot=True)
    vm = dest.ensure_vm(spec(tmp_path))
    dest.power_on(vm)
    pid = json.loads((tmp_path / STATE_FILE).read_text())["pid"]
    try:
        time.sleep(1.0)
        assert dest.power_state(vm) == ON
        assert "qemu-system-x86_64" in open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    finally:
        dest.power_off(vm)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}"):      # power_state reaps it once it has exited
        dest.power_state(vm)
        assert time.monotonic() < deadline, "qemu still running after power off"
        time.sleep(0.1)
    assert dest.power_state(vm) == OFF
