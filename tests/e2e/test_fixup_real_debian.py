"""The Linux fix-up on a real Debian 12 replica with the guest's real tools, through the real
ChrootRunner: update-initramfs and lsinitramfs, grub-mkconfig, grub-install onto the replica's
loop device, dpkg-query. A copy of the project's source guest disk is used (a KVM guest
whose initramfs knows only virtio: the debian_guest_image fixture builds it or takes it from
the cache).
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from osam.fixup.chroot import ChrootRunner
from osam.fixup.context import Nic, Target
from osam.fixup.linux import fixup_linux
from tests.e2e.conftest import IMAGE_TEST_TIMEOUT

NEW_MAC = "00:50:56:aa:bb:01"

pytestmark = [pytest.mark.need_root, pytest.mark.slow, pytest.mark.timeout(IMAGE_TEST_TIMEOUT)]


def _blkid(device: str, tag: str) -> str:
    return subprocess.run(["blkid", "-s", tag, "-o", "value", device], capture_output=True, text=True).stdout.strip()


@pytest.fixture
def replica(debian_guest_image, disk_tmp_path):
    if not all(shutil.which(t) for t in ("losetup", "partx", "unshare", "blkid")):
        pytest.skip("needs losetup, partx, blkid and unshare (util-linux): run scripts/setup.sh")
    tmp_path = disk_tmp_path
    disk = tmp_path / "disk.raw"
    subprocess.run(["cp", "--sparse=always", str(debian_guest_image), str(disk)], check=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(disk)], check=True, capture_output=True,
                          text=True).stdout.strip()
    root = tmp_path / "root"
    root.mkdir()
    try:
        subprocess.run(["partx", "-a", loop], capture_output=True)     # no udev here: add the partitions
        subprocess.run(["mount", f"{loop}p1", str(root)], check=True)
        try:
            yield str(root), loop
        finally:
            subprocess.run(["umount", str(root)], check=True)
    finally:
        subprocess.run(["partx", "-d", loop], capture_output=True)
        subprocess.run(["losetup", "-d", loop], check=True)


def _inventory(root: str, loop: str) -> dict:
    root_uuid, swap_uuid = _blkid(f"{loop}p1", "UUID"), _blkid(f"{loop}p2", "UUID")
    ptuuid = _blkid(loop, "PTUUID")
    with open(os.path.join(root, "etc/hostname")) as f:
        hostname = f.read().strip()
    return {
        "hostname": hostname, "os": {"id": "debian", "version_id": "12"},
        "nics": [{"name": "eth0", "mac": "52:54:00:12:34:56", "link_type": "ether",
                  "addresses": [{"family": "inet", "address": "10.0.2.15", "prefix": 24}]}],
        "layout": {
            "boot": {"mode": "bios", "bootloader": "grub2", "boot_disk": "sda"},
            "disks": [{"name": "sda", "path": "/dev/sda", "size": 3 << 30,
                       "partition_table": {"partitiontable": {"label": "dos", "id": f"0x{ptuuid}"}}}],
            "filesystems": [
                {"device": "/dev/sda1", "fstype": "ext4", "uuid": root_uuid, "mountpoint": "/",
                 "parent": {"kind": "partition", "disk": "sda", "number": 1}},
                {"device": "/dev/sda2", "fstype": "swap", "uuid": swap_uuid, "mountpoint": None,
                 "parent": {"kind": "partition", "disk": "sda", "number": 2}}],
            "mounts": []},
    }


def _mounts_under(root: str) -> list:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(root + "/")]


def test_real_debian_replica_gets_the_vmware_drivers_and_its_boot_code(replica):
    root, loop = replica
    inventory = _inventory(root, loop)
    uuids = {fs["uuid"]: f"{loop}p{fs['parent']['number']}" for fs in inventory["layout"]["filesystems"]}
    devices = {"boot_disk": loop, "by_uuid": uuids, "nodes": [loop, f"{loop}p1", f"{loop}p2"]}
    target = Target(nics=[Nic(NEW_MAC)], firmware="bios")

    report = fixup_linux(root, inventory, target, ChrootRunner(root, devices), devices)

    runs = [c["target"] for c in report["changes"] if c["action"] == "run"]
    kernel = report["facts"]["kernels"][-1]
    assert f"update-initramfs -u -k {kernel}" in runs
    assert f"grub-install --target=i386-pc --modules=part_msdos ext2 {loop}" in runs
    listing = ChrootRunner(root, devices)(["lsinitramfs", f"/boot/initrd.img-{kernel}"]).stdout.decode()
    assert "/vmw_pvscsi.ko" in listing and "/vmxnet3.ko" in listing
    with open(os.path.join(root, "boot/grub/grub.cfg")) as f:
        cfg = f.read()
    assert f"root=UUID={inventory['layout']['filesystems'][0]['uuid']}" in cfg and loop not in cfg
    assert _mounts_under(root) == []

    again = fixup_linux(root, inventory, target, ChrootRunner(root, devices), devices)
    assert again["changes"] == []
