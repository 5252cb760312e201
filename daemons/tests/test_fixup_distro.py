"""distro: family, version, kernels, initramfs tool, bootloader and SELinux from the replica."""
from __future__ import annotations

import os

import pytest

import test_fixup_fakes as F
from osam.fixup import distro
from osam.fixup.context import FixupContext, FixupError, Target


def _facts(tree):
    ctx = tree.context()
    distro.apply(ctx)
    return ctx.facts


def test_debian_12_through_the_merged_usr_os_release_link(tmp_path):
    facts = _facts(F.debian12(tmp_path))
    assert facts["distro"] == {"family": "debian", "id": "debian", "version_id": "12", "version": [12],
                               "pretty_name": "Debian GNU/Linux 12 (bookworm)", "id_like": "",
                               "source": "/etc/os-release"}
    assert facts["kernels"] == list(F.DEBIAN_KERNELS)
    assert facts["initramfs_tool"] == "update-initramfs"
    assert facts["bootloader"] == {"kind": "grub2", "mkconfig": "/usr/sbin/grub-mkconfig",
                                   "install": "/usr/sbin/grub-install", "update_grub": "/usr/sbin/update-grub",
                                   "grub_dir": "/boot/grub", "bls": False}
    assert facts["selinux"] is None


def test_rhel_9_with_bls_and_selinux(tmp_path):
    facts = _facts(F.rhel9(tmp_path))
    assert facts["distro"]["family"] == "rhel" and facts["distro"]["version"] == [9, 3]
    assert facts["kernels"] == list(F.RHEL9_KERNELS)
    assert facts["initramfs_tool"] == "dracut"
    assert facts["bootloader"]["grub_dir"] == "/boot/grub2" and facts["bootloader"]["bls"] is True
    assert facts["bootloader"]["install"] == "/usr/sbin/grub2-install"
    assert facts["selinux"] == "enforcing"


def test_rocky_8_is_rhel_family(tmp_path):
    facts = _facts(F.rocky8_uefi(tmp_path))
    assert (facts["distro"]["id"], facts["distro"]["family"], facts["distro"]["version"]) == ("rocky", "rhel", [8, 9])
    assert facts["selinux"] == "permissive"


def test_sles_15_sp5(tmp_path):
    facts = _facts(F.sles15(tmp_path))
    assert (facts["distro"]["id"], facts["distro"]["family"], facts["distro"]["version"]) == ("sles", "suse", [15, 5])
    assert facts["kernels"] == [F.SLES15_KERNEL]
    assert facts["initramfs_tool"] == "dracut"       # dracut before the mkinitrd wrapper
    assert facts["bootloader"]["bls"] is False


def test_sles_11_from_suse_release(tmp_path):
    facts = _facts(F.sles11(tmp_path))
    assert facts["distro"]["source"] == "/etc/SuSE-release"
    assert (facts["distro"]["id"], facts["distro"]["version_id"], facts["distro"]["family"]) == ("sles", "11.4", "suse")
    assert facts["initramfs_tool"] == "mkinitrd"
    assert facts["bootloader"]["kind"] is None


@pytest.mark.parametrize("release, expected", [
    ("CentOS Linux release 7.9.2009 (Core)\n", ("centos", "7.9.2009", [7, 9, 2009])),
    ("Red Hat Enterprise Linux Server release 7.9 (Maipo)\n", ("rhel", "7.9", [7, 9])),
    ("Oracle Linux Server release 7.9\n", ("ol", "7.9", [7, 9])),
])
def test_redhat_release_without_os_release(tmp_path, release, expected):
    F.write(str(tmp_path), "/etc/redhat-release", release)
    found = distro.detect_release(_ctx(tmp_path))
    assert (found["id"], found["version_id"], found["version"]) == expected
    assert found["family"] == "rhel"


def test_debian_version_fallback_and_derivatives(tmp_path):
    F.write(str(tmp_path), "/etc/debian_version", "11.9\n")
    assert distro.detect_release(_ctx(tmp_path))["version"] == [11, 9]
    F.write(str(tmp_path), "/usr/lib/os-release", 'ID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_ID="21.3"\n')
    found = distro.detect_release(_ctx(tmp_path))
    assert (found["id"], found["family"], found["source"]) == ("linuxmint", "debian", "/usr/lib/os-release")
    F.write(str(tmp_path), "/etc/os-release", 'ID="almalinux"\nVERSION_ID="9.3"\nID_LIKE="rhel centos fedora"\n')
    assert distro.detect_release(_ctx(tmp_path))["family"] == "rhel"


def test_unknown_distribution_is_an_error(tmp_path):
    with pytest.raises(FixupError, match="unknown Linux distribution"):
        distro.detect_release(_ctx(tmp_path))
    F.write(str(tmp_path), "/etc/os-release", 'NAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\nID=arch\n')
    with pytest.raises(FixupError, match="unsupported Linux distribution 'Arch Linux'"):
        distro.detect_release(_ctx(tmp_path))


def test_kernels_need_modules_and_an_image_and_sort_naturally(tmp_path):
    root = str(tmp_path)
    for version in ("6.1.0-9-amd64", "6.1.0-18-amd64", "6.1.0-10-amd64"):
        F.kernel(root, version, ["kernel/drivers/scsi/vmw_pvscsi"])
    os.makedirs(os.path.join(root, "lib/modules/6.1.0-5-amd64"))      # left behind by a removed kernel
    assert distro.installed_kernels(_ctx(tmp_path)) == ["6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-18-amd64"]


def test_no_kernel_is_an_error(tmp_path):
    tree = F.debian12(tmp_path)
    for version in F.DEBIAN_KERNELS:
        os.unlink(os.path.join(tree.root, f"boot/vmlinuz-{version}"))
    with pytest.raises(FixupError, match="no installed kernel"):
        distro.apply(tree.context())


def test_selinux_modes(tmp_path):
    ctx = _ctx(tmp_path)
    assert distro.selinux_mode(ctx) is None
    F.write(str(tmp_path), "/etc/selinux/config", F.RHEL_SELINUX_CONFIG.format(mode="disabled"))
    assert distro.selinux_mode(ctx) == "disabled"
    F.write(str(tmp_path), "/etc/selinux/config", 'SELINUX="Enforcing"  # set by the installer\n')
    assert distro.selinux_mode(ctx) == "enforcing"


def test_a_mismatch_with_the_inventory_is_reported(tmp_path):
    tree = F.debian12(tmp_path)
    tree.inventory["os"]["id"] = "ubuntu"
    ctx = tree.context()
    distro.apply(ctx)
    assert any("'ubuntu'" in w and "'debian'" in w for w in ctx.warnings)


def _ctx(tmp_path) -> FixupContext:
    return FixupContext(str(tmp_path), {}, Target(), F.FakeGuest(str(tmp_path)))
