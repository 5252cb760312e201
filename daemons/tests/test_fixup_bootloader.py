"""bootloader: grub.cfg regenerated (reported only when it differs), BIOS boot code installed
once per boot disk, the UEFI fallback path filled, kernel command lines free of old device
names. grub-mkconfig and grub-install are FakeGuest's (see test_fixup_fakes); the ESP test
at the end mounts a real FAT file system."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

import test_fixup_fakes as F
from osam.fixup import bootloader
from osam.fixup.context import FixupError
from osam.fixup.dryrun import DryRunContext


def _run(tree, guest=None, devices=None):
    guest = guest or F.FakeGuest(tree)
    ctx = tree.prepared(guest, devices)
    bootloader.apply(ctx)
    return ctx, guest


def _actions(ctx):
    return [(c.action, c.target) for c in ctx.changes]


def test_debian_bios(tmp_path):
    tree = F.debian12(tmp_path)
    ctx, guest = _run(tree)
    assert _actions(ctx) == [
        ("edit", "/etc/default/grub"),
        ("edit", "/boot/grub/grub.cfg"),
        ("run", "grub-install --target=i386-pc --modules=part_msdos ext2 /dev/loop7"),
        ("create", bootloader.MARKER)]
    assert 'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8 resume=UUID=%s"\n' % F.SWAP_UUID \
        in tree.read("/etc/default/grub")
    cfg = tree.read("/boot/grub/grub.cfg")
    assert f"root=UUID={F.ROOT_UUID} ro console=tty0 console=ttyS0,115200n8 resume=UUID={F.SWAP_UUID} quiet" in cfg
    assert oct(os.stat(os.path.join(tree.root, "boot/grub/grub.cfg")).st_mode & 0o777) == "0o444"   # kept
    assert guest.calls[0] == ["grub-mkconfig", "-o", F.STAGED_GRUB_CFG]
    assert guest.envs[0] == {"GRUB_DISABLE_OS_PROBER": "true"}
    assert not tree.exists(F.STAGED_GRUB_CFG)
    assert json.loads(tree.read(bootloader.MARKER)) == {"boot_disk": "sda", "mode": "bios",
                                                         "ptuuid": "0x5e3f1a2b", "target": "i386-pc"}


@pytest.mark.parametrize("build", [F.debian12, F.rhel9, F.rocky8_uefi, F.sles15])
def test_a_second_run_only_regenerates_into_the_scratch_file(tmp_path, build):
    tree = build(tmp_path)
    _run(tree)
    ctx, guest = _run(tree)
    assert ctx.changes == []
    assert F.changing_calls(guest.calls) == []


def test_rhel_9_bios_installs_grub2_and_keeps_lvm_names(tmp_path):
    tree = F.rhel9(tmp_path)
    ctx, guest = _run(tree)
    assert _actions(ctx) == [
        ("edit", "/boot/grub2/grub.cfg"),
        ("run", "grub2-install --target=i386-pc --modules=part_msdos xfs /dev/loop7"),
        ("create", bootloader.MARKER)]
    assert tree.read("/etc/default/grub") == F.RHEL9_DEFAULT_GRUB        # /dev/mapper names stay valid
    assert "blscfg" in tree.read("/boot/grub2/grub.cfg")


def test_bls_entries_and_default_grub_lose_old_device_names(tmp_path):
    tree = F.rhel9(tmp_path)
    entry = f"/boot/loader/entries/{F.MACHINE_ID}-{F.RHEL9_KERNELS[1]}.conf"
    F.write(tree.root, entry, F.bls_entry("RHEL", F.RHEL9_KERNELS[1],
                                           "root=/dev/mapper/rhel-root ro resume=/dev/sdb9 quiet", "initramfs.img"))
    F.write(tree.root, "/etc/default/grub", F.RHEL9_DEFAULT_GRUB.replace("resume=/dev/mapper/rhel-swap", "resume=/dev/sdb1"))
    ctx, _ = _run(tree)
    assert "options root=/dev/mapper/rhel-root ro quiet $tuned_params\n" in tree.read(entry)
    assert f"resume=UUID={F.DATA_UUID} rd.lvm.lv" in tree.read("/etc/default/grub")
    assert any("resume=/dev/sdb9 is not in the inventory; dropped" in w for w in ctx.warnings)


def test_sles_resume_by_id_becomes_uuid(tmp_path):
    tree = F.sles15(tmp_path)
    ctx, guest = _run(tree)
    assert f'GRUB_CMDLINE_LINUX_DEFAULT="splash=silent resume=UUID={F.SWAP_UUID} mitigations=auto quiet ' \
           'security=apparmor"' in tree.read("/etc/default/grub")
    assert ["grub2-install", "--target=i386-pc", "--modules=part_gpt btrfs", "/dev/loop7"] in guest.calls


def test_grub_disable_linux_uuid_is_turned_off(tmp_path):
    tree = F.debian12(tmp_path)
    F.write(tree.root, "/etc/default/grub", F.DEBIAN_DEFAULT_GRUB + "GRUB_DISABLE_LINUX_UUID=true\n")
    _run(tree)
    assert "\n#GRUB_DISABLE_LINUX_UUID=true\n" in tree.read("/etc/default/grub")
    assert f"root=UUID={F.ROOT_UUID}" in tree.read("/boot/grub/grub.cfg")


def test_a_grub_cfg_naming_the_receivers_device_is_refused(tmp_path):
    tree = F.debian12(tmp_path)
    guest = F.FakeGuest(tree)
    original = guest.cmd_grub_mkconfig

    def mkconfig_ignoring_uuids(args, env):     # as with a GRUB_DEVICE override
        result = original(args, env)
        guest.put(args[1], guest.read(args[1]).replace(f"UUID={F.ROOT_UUID}", "/dev/loop7p2"))
        return result
    guest.cmd_grub_mkconfig = mkconfig_ignoring_uuids
    with pytest.raises(FixupError, match="names the receiver's device /dev/loop7p2"):
        _run(tree, guest)
    assert tree.read("/boot/grub/grub.cfg") == "# old grub.cfg of the source\n"


def test_a_failing_mkconfig_is_an_error(tmp_path):
    tree = F.rhel9(tmp_path)
    guest = F.FakeGuest(tree)
    guest.failing["grub2-mkconfig"] = "/usr/sbin/grub2-probe: error: failed to get canonical path of `/dev/loop7p2'."
    with pytest.raises(FixupError, match="canonical path"):
        _run(tree, guest)


def test_bios_needs_the_boot_disk_device(tmp_path):
    tree = F.debian12(tmp_path)
    with pytest.raises(FixupError, match="which device is the boot disk"):
        _run(tree, devices={"by_uuid": {}})


def test_another_boot_disk_installs_again(tmp_path):
    tree = F.debian12(tmp_path)
    _run(tree)
    tree.inventory["layout"]["disks"][0]["partition_table"]["partitiontable"]["id"] = "0x0badf00d"
    ctx, guest = _run(tree)
    assert F.changing_calls(guest.calls) == [["grub-install", "--target=i386-pc", "--modules=part_msdos ext2",
                                              "/dev/loop7"]]
    assert json.loads(tree.read(bootloader.MARKER))["ptuuid"] == "0x0badf00d"


def test_firmware_must_match_the_source(tmp_path):
    tree = F.debian12(tmp_path)
    tree.target.firmware = "uefi"
    with pytest.raises(FixupError, match="source boots with bios but the destination VM's firmware is uefi"):
        _run(tree)


def test_bios_without_grub2_is_an_error(tmp_path):
    tree = F.debian12(tmp_path)
    os.unlink(os.path.join(tree.root, "usr/sbin/grub-mkconfig"))
    with pytest.raises(FixupError, match="only GRUB 2 can be installed"):
        _run(tree)


# -- UEFI -----------------------------------------------------------------------------------------------
def test_rocky_8_uefi_regenerates_the_esp_config_and_fills_the_fallback_path(tmp_path):
    tree = F.rocky8_uefi(tmp_path)
    ctx, guest = _run(tree)
    esp = "/boot/efi/EFI"
    assert guest.calls == [["grub2-mkconfig", "-o", F.STAGED_GRUB_CFG]]       # no grub2-install, no NVRAM
    assert _actions(ctx) == [
        ("edit", f"{esp}/rocky/grub.cfg"),
        ("create", f"{esp}/BOOT/BOOTX64.EFI"),
        ("create", f"{esp}/BOOT/grubx64.efi"),
        ("create", f"{esp}/BOOT/mmx64.efi"),
        ("create", f"{esp}/BOOT/grub.cfg")]
    assert tree.read(f"{esp}/BOOT/BOOTX64.EFI") == "MZ shim signed by Rocky\n"
    assert tree.read(f"{esp}/BOOT/grubx64.efi") == "MZ grub signed by Rocky\n"
    assert tree.read(f"{esp}/BOOT/grub.cfg").endswith("configfile /EFI/rocky/grub.cfg\n")
    assert oct(os.stat(os.path.join(tree.root, "boot/efi/EFI/BOOT/BOOTX64.EFI")).st_mode & 0o777) == "0o700"
    assert not tree.exists("/boot/grub2/grub.cfg")
    assert not tree.exists(bootloader.MARKER)


def test_rhel_9_uefi_keeps_grub_cfg_in_boot_and_copies_the_stub(tmp_path):
    tree = F.rhel9(tmp_path)
    tree.inventory["layout"]["boot"]["mode"] = tree.target.firmware = "uefi"
    stub = (f"search --no-floppy --fs-uuid --set=dev {F.BOOT_UUID}\nset prefix=($dev)/grub2\n"
            "export $prefix\nconfigfile $prefix/grub.cfg\n")
    F.write(tree.root, "/boot/efi/EFI/redhat/shimx64.efi", b"MZ shim\n", 0o700)
    F.write(tree.root, "/boot/efi/EFI/redhat/grubx64.efi", b"MZ grub\n", 0o700)
    F.write(tree.root, "/boot/efi/EFI/redhat/grub.cfg", stub, 0o700)
    ctx, _ = _run(tree)
    assert ("edit", "/boot/grub2/grub.cfg") in _actions(ctx)
    assert tree.read("/boot/efi/EFI/BOOT/grub.cfg") == stub
    assert tree.read("/boot/efi/EFI/redhat/grub.cfg") == stub


def test_an_existing_fallback_loader_is_kept_whatever_its_case(tmp_path):
    tree = F.rocky8_uefi(tmp_path)
    F.write(tree.root, "/boot/efi/EFI/boot/bootx64.efi", b"MZ fallback of the source\n", 0o700)
    ctx, _ = _run(tree)
    assert [a for a in _actions(ctx) if "EFI/BOOT/" in a[1].upper()] == []
    assert tree.read("/boot/efi/EFI/boot/bootx64.efi") == "MZ fallback of the source\n"


def test_uefi_without_any_boot_loader_on_the_esp_is_an_error(tmp_path):
    tree = F.rocky8_uefi(tmp_path)
    shutil.rmtree(os.path.join(tree.root, "boot/efi/EFI/rocky"))
    with pytest.raises(FixupError, match="neither /boot/efi/EFI/BOOT/BOOTX64.EFI nor a distribution boot loader"):
        _run(tree)


def test_dry_run_reports_and_writes_nothing(tmp_path):
    tree = F.debian12(tmp_path)
    before = tree.files()
    guest = F.FakeGuest(tree)
    ctx = DryRunContext(tree.root, tree.inventory, tree.target, guest)
    ctx.facts["devices"] = F.DEVICES
    from osam.fixup import distro
    distro.apply(ctx)
    bootloader.apply(ctx)
    assert tree.files() == before
    assert guest.calls == []
    assert [c.action for c in ctx.changes] == ["edit", "note", "run", "create"]
    assert all(c.detail.startswith("would") for c in ctx.changes)


def _kernel_has_vfat() -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == "vfat" for line in f if line.strip())


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mkfs.vfat") or not _kernel_has_vfat(),
                    reason="needs root, mkfs.vfat and a kernel with vfat to mount a FAT ESP")
def test_fallback_copies_onto_a_real_fat_esp(tmp_path):
    """The ESP is FAT: no per-file modes, owners fixed by the mount, case-insensitive names."""
    tree = F.rocky8_uefi(tmp_path)
    esp = os.path.join(tree.root, "boot/efi")
    saved = str(tmp_path / "esp-content")
    shutil.move(esp, saved)
    os.makedirs(esp)
    image = tmp_path / "esp.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mkfs.vfat", "-n", "ESP", str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop,umask=0077,shortname=winnt", str(image), esp], check=True)
    try:
        shutil.copytree(os.path.join(saved, "EFI"), os.path.join(esp, "EFI"), copy_function=shutil.copyfile)
        ctx, _ = _run(tree)
        assert tree.read("/boot/efi/EFI/BOOT/BOOTX64.EFI") == "MZ shim signed by Rocky\n"
        assert tree.read("/boot/efi/EFI/BOOT/grub.cfg").endswith("configfile /EFI/rocky/grub.cfg\n")
        assert _run(tree)[0].changes == []
    finally:
        subprocess.run(["umount", esp], check=True)


def test_debian_uefi_keeps_grub_cfg_in_boot_grub_and_copies_the_stub(tmp_path):
    tree = F.debian12(tmp_path, firmware="uefi")
    stub = f"search.fs_uuid {F.ROOT_UUID} root hd0,msdos2 \nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n"
    for name in ("shimx64.efi", "grubx64.efi", "mmx64.efi", "fbx64.efi", "BOOTX64.CSV"):
        F.write(tree.root, f"/boot/efi/EFI/debian/{name}", f"MZ {name}\n".encode(), 0o755)
    F.write(tree.root, "/boot/efi/EFI/debian/grub.cfg", stub, 0o755)
    ctx, guest = _run(tree)
    assert guest.calls == [["grub-mkconfig", "-o", F.STAGED_GRUB_CFG]]
    assert ("edit", "/boot/grub/grub.cfg") in _actions(ctx)
    assert tree.read("/boot/efi/EFI/BOOT/BOOTX64.EFI") == "MZ shimx64.efi\n"
    assert tree.read("/boot/efi/EFI/BOOT/grub.cfg") == stub
    assert not tree.exists("/boot/efi/EFI/BOOT/fbx64.efi")     # no fallback.efi: shim boots grub directly
