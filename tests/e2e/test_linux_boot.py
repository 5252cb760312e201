"""The Linux boot proof: a Debian 12 KVM guest (virtio disk and NIC, an initramfs without
VMware drivers) is migrated by the real daemons into a disk replica, fixed up, and the
replica boots under qemu on vSphere's virtual hardware: pvscsi for the disk, vmxnet3 for the
NIC. The guest reports from its serial console what a person would check after a migration.

The source is the cached guest image (a copy, so the cache stays clean), loop-mounted on
this machine; the sentinel replicates that mounted root as it would a running guest's "/".
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e.conftest import IMAGE_TEST_TIMEOUT
from tests.e2e.site import wait_for

pytestmark = [pytest.mark.need_root, pytest.mark.qemu, pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.timeout(IMAGE_TEST_TIMEOUT + 900)]


def sh(*argv) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def mounted_source(debian_guest_image, disk_tmp_path):
    """A writable copy of the source guest's disk, its root mounted as the sentinel's --root."""
    image, root = disk_tmp_path / "source.raw", disk_tmp_path / "source-root"
    sh("cp", "--sparse=always", debian_guest_image, image)
    loop = sh("losetup", "--find", "--show", "--partscan", image).strip()
    try:
        subprocess.run(["partx", "-a", loop], capture_output=True)
        root.mkdir()
        sh("mount", f"{loop}p1", root)
        try:
            yield root, loop
        finally:
            subprocess.run(["umount", str(root)])
    finally:
        subprocess.run(["losetup", "-d", loop])


def download_vm_tools(guest_root, cache_dir) -> bool:
    """The receiver's package cache for this guest: open-vm-tools and what it lacks for it,
    resolved by this machine's apt against the guest's own package database (both Debian 12)."""
    cache_dir.mkdir(parents=True)
    (cache_dir / "partial").mkdir()
    done = subprocess.run(["apt-get", "-q", "-o", f"Dir::State::status={guest_root}/var/lib/dpkg/status",
                           "-o", f"Dir::Cache::archives={cache_dir}", "-o", "Debug::NoLocking=1",
                           "install", "--download-only", "--no-install-recommends", "-y", "open-vm-tools"],
                          capture_output=True, text=True, timeout=300)
    (cache_dir / "partial").rmdir()
    print(done.stdout[-500:], done.stderr[-500:])
    return done.returncode == 0 and any(cache_dir.glob("open-vm-tools_*.deb"))


def test_migrated_debian_guest_boots_on_pvscsi_and_vmxnet3(site, mounted_source, boot_guest, disk_tmp_path):
    root, loop = mounted_source
    etc = disk_tmp_path / "sentinel-etc"
    (etc / "etc").mkdir(parents=True)
    (etc / "excluded_paths").write_text("/var/cache/apt\n")
    have_cache = download_vm_tools(root, site.data / "packages" / "debian-12")
    t0 = time.monotonic()
    site.start_receiver(replica_format="disk")
    site.start_gateway()
    site.start_sentinel("src-guest", root, etc)
    wait_for(lambda: site.guest("src-guest"), 30, "the guest to register")
    layout = site.guest("src-guest")["inventory"]["layout"]
    assert layout["boot"]["mode"] == "bios" and layout["boot"]["bootloader"] == "grub2", layout["boot"]

    assert site.osamctl("migrate", "src-guest", "--switchover", "immediate").returncode == 0
    done = site.wait_phase("src-guest", "completed", 900)
    migrated = time.monotonic() - t0
    assert [h["to"] for h in done["history"]] == [
        "registered", "full_sync", "continuous_sync", "quiesce", "final_sync",
        "fixup", "replica_vm", "tools", "replica_on", "source_off", "network", "completed"]

    replica_dir = site.data / "replicas" / "src-guest"
    report = json.loads((replica_dir / "fixup-report.json").read_text())
    steps = {c["step"] for c in report["changes"]}
    assert {"initramfs", "bootloader", "network", "guest_tools"} <= steps, report
    tools = " ".join(c["detail"] for c in report["changes"] if c["step"] == "guest_tools")
    if have_cache:
        assert "open-vm-tools installed from the receiver's package cache" in tools, tools
    else:   # no Debian mirror reachable from here: the report must say it is deferred
        assert "first boot" in tools, tools
    vm = json.loads((replica_dir / "vm.json").read_text())
    assert [n["source_name"] for n in vm["nics"]][:1] == ["eth0"], vm["nics"]
    images = [d["image"] for d in vm["disks"]]
    assert len(images) == 1
    # The local destination's own definition of this VM boots it the same way (--boot-replicas).
    boot_script = (replica_dir / "boot.sh").read_text()
    assert "-device pvscsi" in boot_script and f"file={images[0]},format=raw" in boot_script
    assert f"vmxnet3,netdev=n0,mac={vm['nics'][0]['mac']}" in boot_script, "NICs connected at the end"

    # The source is untouched: its initramfs still lacks the VMware drivers.
    assert "vmw_pvscsi" not in sh("sh", "-c", f"lsinitramfs {root}/boot/initrd.img-* 2>/dev/null || true")

    site.stop_all()
    t1 = time.monotonic()
    result = boot_guest(images, hardware="vsphere", timeout=600, mac=vm["nics"][0]["mac"])
    print(f"boot proof: migration {migrated:.1f}s, boot {time.monotonic() - t1:.1f}s")
    assert result.booted, result.tail()
    proof = result.proof
    source_uuid = sh("blkid", "-s", "UUID", "-o", "value", f"{loop}p1").strip()
    assert result.root_uuid == source_uuid and result.root_mounted_on == "sda1", result.tail()
    assert (proof.root_source, proof.root_fstype) == ("/dev/sda1", "ext4")
    assert proof.drivers.get("sda") == "vmw_pvscsi" and proof.drivers.get("eth0") == "vmxnet3", proof.drivers
    assert result.seen(r"Reached target.*Multi-User"), result.tail()
    assert proof.state in ("running", "degraded"), proof.state
    assert proof.hostname == "src-guest"
    assert "10.0.2.15/24" in proof.addresses.get("eth0", []), proof.addresses
    if have_cache:
        assert proof.failed_units == [] or proof.state == "running", proof.failed_units
