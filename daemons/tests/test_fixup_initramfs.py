"""initramfs: every kernel's image carries the VMware drivers it has; the distribution's
configuration keeps them for later kernels; a second run rebuilds nothing.

The guests' update-initramfs, dracut, mkinitrd, lsinitramfs and lsinitrd are FakeGuest's
(see test_fixup_fakes): they cannot run on the receiver."""
from __future__ import annotations

import os

import pytest

import test_fixup_fakes as F
from osam.fixup import initramfs
from osam.fixup.context import FixupError


def _run(tree, guest=None):
    guest = guest or F.FakeGuest(tree)
    ctx = tree.prepared(guest)
    initramfs.apply(ctx)
    return ctx, guest


def _modules_in(guest, image):
    listing = guest.cmd_lsinitrd([image], {})
    text = listing if isinstance(listing, str) else ""
    return {os.path.basename(line.split()[-1]).split(".ko")[0].replace("-", "_")
            for line in text.splitlines() if ".ko" in line}


def test_debian_lists_the_drivers_and_rebuilds_each_kernel(tmp_path):
    tree = F.debian12(tmp_path)
    ctx, guest = _run(tree)
    modules = tree.read("/etc/initramfs-tools/modules")
    assert modules.startswith(F.DEBIAN_MODULES)          # the shipped comments stay
    assert modules[len(F.DEBIAN_MODULES):] == ("\n" + initramfs.CONFIG_HEADER + "\n"
                                               "sd_mod\nvmw_pvscsi\nvmxnet3\nahci\nata_piix\nmptspi\n")
    assert tree.read("/etc/initramfs-tools/conf.d/resume") == f"RESUME=UUID={F.SWAP_UUID}\n"
    assert F.changing_calls(guest.calls) == [["update-initramfs", "-u", "-k", v] for v in F.DEBIAN_KERNELS]
    for version in F.DEBIAN_KERNELS:
        assert {"vmw_pvscsi", "vmxnet3", "mptspi"} <= _modules_in(guest, f"/boot/initrd.img-{version}")
    assert [c.target for c in ctx.changes if c.action == "edit"] == [
        "/etc/initramfs-tools/modules", "/etc/initramfs-tools/conf.d/resume"]


def test_rhel_9_writes_a_dracut_conf_and_rebuilds_with_dracut(tmp_path):
    tree = F.rhel9(tmp_path)
    ctx, guest = _run(tree)
    conf = tree.read("/etc/dracut.conf.d/vmware-osam.conf").splitlines()
    assert 'add_drivers+=" sd_mod vmw_pvscsi vmxnet3 ahci ata_piix "' in conf    # RHEL 9 has no mptspi
    assert conf[-1] == 'add_dracutmodules+=" lvm "'     # the root LV is a loop device on the receiver
    assert tree.read("/etc/dracut.conf") == F.RHEL_DRACUT_CONF
    assert F.changing_calls(guest.calls) == [["dracut", "-f", f"/boot/initramfs-{v}.img", v] for v in F.RHEL9_KERNELS]
    for version in F.RHEL9_KERNELS:
        assert {"vmw_pvscsi", "vmxnet3", "sd_mod", "xfs"} <= _modules_in(guest, f"/boot/initramfs-{version}.img")


def test_sles_15_uses_dracut_with_suse_image_names(tmp_path):
    tree = F.sles15(tmp_path)
    ctx, guest = _run(tree)
    assert F.changing_calls(guest.calls) == [["dracut", "-f", f"/boot/initrd-{F.SLES15_KERNEL}", F.SLES15_KERNEL]]
    assert "mptspi" in tree.read("/etc/dracut.conf.d/vmware-osam.conf")
    assert tree.read("/etc/sysconfig/kernel") == F.SLES_SYSCONFIG_KERNEL
    assert {"vmw_pvscsi", "mptspi", "btrfs"} <= _modules_in(guest, f"/boot/initrd-{F.SLES15_KERNEL}")


def test_sles_11_extends_initrd_modules_for_mkinitrd(tmp_path):
    tree = F.sles11(tmp_path)
    ctx, guest = _run(tree)
    assert 'INITRD_MODULES="processor thermal ata_piix ata_generic fan jbd ext3 sd_mod vmw_pvscsi vmxnet3 ' \
           'ahci mptspi"' in tree.read("/etc/sysconfig/kernel")
    assert F.changing_calls(guest.calls) == [["mkinitrd", "-k", f"/boot/vmlinuz-{F.SLES11_KERNEL}",
                                              "-i", f"/boot/initrd-{F.SLES11_KERNEL}"]]
    assert {"vmw_pvscsi", "vmxnet3"} <= _modules_in(guest, f"/boot/initrd-{F.SLES11_KERNEL}")


@pytest.mark.parametrize("build", [F.debian12, F.rhel9, F.sles15, F.sles11])
def test_a_second_run_only_lists_the_images(tmp_path, build):
    tree = build(tmp_path)
    _run(tree)
    ctx, guest = _run(tree)
    assert ctx.changes == []
    assert F.changing_calls(guest.calls) == []
    assert {c[0] for c in guest.calls} <= {"lsinitramfs", "lsinitrd"}


def test_a_kernel_with_more_drivers_gets_them_on_dracuts_command_line(tmp_path):
    tree = F.rhel9(tmp_path)
    older = F.RHEL9_KERNELS[0]
    os.unlink(os.path.join(tree.root, f"lib/modules/{older}/kernel/drivers/ata/ata_piix.ko.xz"))
    dep = os.path.join(tree.root, f"lib/modules/{older}/modules.dep")
    with open(dep) as f:
        lines = [line for line in f if "ata_piix" not in line]
    with open(dep, "w") as f:
        f.writelines(lines)
    ctx, guest = _run(tree)
    assert 'add_drivers+=" sd_mod vmw_pvscsi vmxnet3 ahci "' in tree.read("/etc/dracut.conf.d/vmware-osam.conf")
    newer = F.RHEL9_KERNELS[1]
    assert F.changing_calls(guest.calls) == [
        ["dracut", "-f", f"/boot/initramfs-{older}.img", older],
        ["dracut", "-f", f"/boot/initramfs-{newer}.img", newer, "--add-drivers", "ata_piix"]]


def test_a_kernel_without_pvscsi_is_an_error_naming_it(tmp_path):
    tree = F.debian12(tmp_path)
    F.kernel(tree.root, "5.10.0-28-amd64", ["kernel/drivers/ata/ahci"])
    with pytest.raises(FixupError, match="kernel 5.10.0-28-amd64 has no vmw_pvscsi driver"):
        _run(tree)


def test_a_built_in_pvscsi_is_not_an_error(tmp_path):
    tree = F.debian12(tmp_path)
    F.kernel(tree.root, "6.6.13-custom", ["kernel/drivers/ata/ahci"], builtin=["kernel/drivers/scsi/vmw_pvscsi"])
    guest = F.FakeGuest(tree)
    guest.build_initramfs_tools_image("6.6.13-custom")
    ctx, guest = _run(tree, guest)
    assert ["update-initramfs", "-u", "-k", "6.6.13-custom"] in guest.calls


def test_only_an_image_that_lacks_a_driver_is_rebuilt(tmp_path):
    tree = F.debian12(tmp_path)
    _run(tree)
    guest = F.FakeGuest(tree)
    guest._write_image(f"/boot/initrd.img-{F.DEBIAN_KERNELS[0]}", F.DEBIAN_KERNELS[0], ["ext4", "vmw_pvscsi"])
    ctx, guest = _run(tree, guest)
    assert F.changing_calls(guest.calls) == [["update-initramfs", "-u", "-k", F.DEBIAN_KERNELS[0]]]
    assert ctx.changes[0].action == "run"


def test_a_missing_image_is_created(tmp_path):
    tree = F.debian12(tmp_path)
    _run(tree)
    os.unlink(os.path.join(tree.root, f"boot/initrd.img-{F.DEBIAN_KERNELS[1]}"))
    ctx, guest = _run(tree)
    assert F.changing_calls(guest.calls) == [["update-initramfs", "-c", "-k", F.DEBIAN_KERNELS[1]]]


def test_a_failing_rebuild_is_an_error(tmp_path):
    tree = F.rhel9(tmp_path)
    guest = F.FakeGuest(tree)
    guest.failing["dracut"] = "dracut: FAILED: /usr/lib/dracut/dracut-install -D /var/tmp/dracut.x"
    with pytest.raises(FixupError, match="dracut-install"):
        _run(tree, guest)


def test_an_image_still_lacking_a_driver_after_the_rebuild_is_an_error(tmp_path):
    tree = F.debian12(tmp_path)
    guest = F.FakeGuest(tree)
    guest.cmd_update_initramfs = lambda args, env: ""        # "succeeds" without changing the image
    with pytest.raises(FixupError, match=r"initrd.img-6.1.0-17-amd64 still lacks vmxnet3"):
        _run(tree, guest)


def test_without_a_lister_the_images_are_rebuilt_once_and_then_left(tmp_path):
    tree = F.debian12(tmp_path)
    os.unlink(os.path.join(tree.root, "usr/bin/lsinitramfs"))
    ctx, guest = _run(tree)
    assert len(F.changing_calls(guest.calls)) == 2            # the configuration changed
    ctx, guest = _run(tree)
    assert guest.calls == [] and ctx.changes == []
    assert any("no lsinitramfs" in w for w in ctx.warnings)


def test_no_initramfs_tool_is_an_error(tmp_path):
    tree = F.rhel9(tmp_path)
    os.unlink(os.path.join(tree.root, "usr/bin/dracut"))
    with pytest.raises(FixupError, match="no supported initramfs tool"):
        _run(tree)


def test_lvm_raid_and_encryption_of_the_source_are_named_for_dracut(tmp_path):
    tree = F.rhel9(tmp_path)
    tree.inventory["layout"]["filesystems"] += [
        {"device": "/dev/md127", "fstype": "xfs", "uuid": "d1", "mountpoint": "/srv"},
        {"device": "/dev/sdc1", "fstype": "crypto_LUKS", "uuid": "d2", "mountpoint": None}]
    _run(tree)
    assert 'add_dracutmodules+=" lvm crypt mdraid "' in tree.read("/etc/dracut.conf.d/vmware-osam.conf")
    rocky = F.rocky8_uefi(tmp_path / "rocky")           # plain partitions; its dracut has no lvm module either
    _run(rocky)
    assert "add_dracutmodules" not in rocky.read("/etc/dracut.conf.d/vmware-osam.conf")


def test_the_nic_model_of_the_target_decides_the_nic_driver(tmp_path):
    tree = F.rhel9(tmp_path)
    tree.target.nics[0].model = "e1000"
    _run(tree)
    assert 'add_drivers+=" sd_mod vmw_pvscsi vmxnet3 ahci ata_piix e1000 "' in \
        tree.read("/etc/dracut.conf.d/vmware-osam.conf")


def test_an_unknown_resume_device_is_disabled(tmp_path):
    tree = F.debian12(tmp_path)
    F.write(tree.root, "/etc/initramfs-tools/conf.d/resume", "RESUME=/dev/sdb2\n")
    ctx, _ = _run(tree)
    assert tree.read("/etc/initramfs-tools/conf.d/resume") == "RESUME=none\n"
    assert any("/dev/sdb2 is not in the inventory" in w for w in ctx.warnings)
