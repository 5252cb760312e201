"""The source guest of the Linux boot proof, before any migration: a working KVM/virtio machine
(the control experiment) that cannot boot on vSphere's pvscsi as it is, because its
initramfs has no driver for that disk. A migrated copy that boots there therefore owes it to
the fix-up."""
import subprocess

import pytest

# The image fixture sets a timeout long enough for a cold build (tests/e2e/conftest.py).
pytestmark = [pytest.mark.need_root, pytest.mark.qemu, pytest.mark.slow]

# Fails within the initramfs' root wait (30 s) plus a TCG kernel boot (~15 s): allow plenty.
NO_ROOT_TIMEOUT = 300


def root_uuid(image) -> str:
    """The UUID of the ext4 file system in the image's first partition (at 1 MiB)."""
    out = subprocess.run(["blkid", "--probe", "--offset", str(2048 * 512), "-s", "UUID", "-o", "value", str(image)],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def unchanged_stamp(path):
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def test_source_image_boots_on_kvm_virtio_hardware(debian_guest_image, boot_guest):
    before = unchanged_stamp(debian_guest_image)
    result = boot_guest([debian_guest_image], hardware="kvm", timeout=600)
    assert result.booted, result.tail()
    proof = result.proof
    assert proof.state == "running", f"failed units: {proof.failed_units}\n{result.tail()}"
    assert proof.hostname == "src-guest"
    assert "10.0.2.15/24" in proof.addresses.get("eth0", []), proof.addresses
    assert (proof.root_source, proof.root_fstype) == ("/dev/vda1", "ext4")
    assert result.root_by_uuid and result.root_mounted_on == "vda1"
    assert result.root_uuid == root_uuid(debian_guest_image)
    assert proof.drivers == {"eth0": "virtio_net", "vda": "virtio_blk"}
    assert proof.swap == ["/dev/vda2"]
    assert unchanged_stamp(debian_guest_image) == before, "-snapshot must leave the image alone"


def test_unmodified_source_image_cannot_find_its_root_on_pvscsi(debian_guest_image, boot_guest):
    result = boot_guest([debian_guest_image], hardware="vsphere", timeout=NO_ROOT_TIMEOUT)
    assert result.outcome == "initramfs_shell", result.tail()
    assert result.seen(r"Gave up waiting for root")
    assert result.seen(rf"ALERT!\s+UUID={root_uuid(debian_guest_image)} does not exist")
    assert "root_mounted" not in result.timings and not result.booted
