"""fstab: old kernel device names become UUID=, network mounts become optional, the rest of
the file (comments, order, spacing) is kept, and only files inside the replica are touched."""
from __future__ import annotations

import os

import test_fixup_fakes as F
from osam.fixup import fstab
from osam.fixup.devices import DeviceMap, is_unstable_device_path


def _run(tree):
    ctx = tree.context()
    fstab.apply(ctx)
    return ctx


def test_debian_fstab(tmp_path):
    tree = F.debian12(tmp_path)
    ctx = _run(tree)
    expected = F.DEBIAN_FSTAB.replace(
        "/dev/sda1       /boot           ext4", f"UUID={F.BOOT_UUID} /boot           ext4").replace(
        "/dev/sda5       none            swap", f"UUID={F.SWAP_UUID} none            swap").replace(
        "/home nfs4 defaults 0 0", "/home nfs4 defaults,nofail,_netdev 0 0")
    assert tree.read("/etc/fstab") == expected
    assert "/dev/sr0        /media/cdrom0" in expected                # a CD drive keeps its name
    assert [(c.action, c.target, c.backup) for c in ctx.changes] == [
        ("edit", "/etc/fstab", "/var/lib/vmware-hcx-osam-fixup/backup/etc/fstab")]
    assert tree.read("/var/lib/vmware-hcx-osam-fixup/backup/etc/fstab") == F.DEBIAN_FSTAB


def test_rhel_fstab_keeps_lvm_names_and_makes_cifs_optional(tmp_path):
    tree = F.rhel9(tmp_path)
    _run(tree)
    lines = tree.read("/etc/fstab").splitlines()
    assert "/dev/mapper/rhel-root   /                       xfs     defaults        0 0" in lines
    assert "/dev/mapper/rhel-swap   none                    swap    defaults        0 0" in lines
    assert f"UUID={F.DATA_UUID} /data                   xfs     defaults        0 0" in lines
    assert "//files.example.com/share /mnt/share cifs credentials=/root/.smb,vers=3.0,nofail,_netdev 0 0" in lines
    assert lines[:12] == F.RHEL9_FSTAB.splitlines()[:12]


def test_sles_by_id_names_map_through_links_and_mount_points(tmp_path):
    tree = F.sles15(tmp_path)
    _run(tree)
    lines = tree.read("/etc/fstab").splitlines()
    assert lines[-2] == f"UUID={F.DATA_UUID}  /home  xfs  defaults  0  0"     # two-space style kept
    assert lines[-1] == f"UUID={F.SWAP_UUID}  swap  swap  defaults  0  0"
    assert lines[:10] == F.SLES15_FSTAB.splitlines()[:10]


def test_unknown_devices_are_left_and_reported(tmp_path):
    tree = F.debian12(tmp_path)
    F.write(tree.root, "/etc/fstab", "/dev/sdc1 /srv ext4 defaults 0 2\n/dev/vg0/data /data xfs defaults 0 0\n")
    ctx = _run(tree)
    assert tree.read("/etc/fstab") == "/dev/sdc1 /srv ext4 defaults 0 2\n/dev/vg0/data /data xfs defaults 0 0\n"
    assert ctx.changes == []
    assert ctx.warnings == ["fstab: /etc/fstab:1: /dev/sdc1 (/srv) is not in the source's inventory; left as it is"]


def test_network_mounts_of_every_kind(tmp_path):
    tree = F.debian12(tmp_path)
    F.write(tree.root, "/etc/fstab", (
        "srv:/a /a nfs\n"                                           # no options field at all
        "srv:/b\t/b\tnfs4\t_netdev\t0\t0\n"
        "user@host:/c /c fuse.sshfs noauto,nofail,_netdev 0 0\n"    # complete already
        "sshfs#user@host:/d /d fuse defaults 0 0\n"
        "gluster:/vol /e glusterfs defaults 0 0\n"
        "tmpfs /tmp tmpfs defaults 0 0\n"))
    _run(tree)
    assert tree.read("/etc/fstab") == (
        "srv:/a /a nfs defaults,nofail,_netdev\n"
        "srv:/b\t/b\tnfs4\t_netdev,nofail\t0\t0\n"
        "user@host:/c /c fuse.sshfs noauto,nofail,_netdev 0 0\n"
        "sshfs#user@host:/d /d fuse defaults,nofail,_netdev 0 0\n"
        "gluster:/vol /e glusterfs defaults,nofail,_netdev 0 0\n"
        "tmpfs /tmp tmpfs defaults 0 0\n")


def test_crypttab_names_luks_devices_by_uuid(tmp_path):
    tree = F.debian12(tmp_path)
    luks = "2d4f6a8c-1e3b-4d5f-8a7c-9e0b1c2d3e4f"
    tree.inventory["layout"]["filesystems"].append({"device": "/dev/sda3", "fstype": "crypto_LUKS", "uuid": luks})
    F.write(tree.root, "/etc/crypttab", "# <target name>\t<source device>\t<key file>\t<options>\n"
                                        "sda3_crypt /dev/sda3 none luks,discard\n"
                                        "swap_crypt /dev/mapper/vg-swap /dev/urandom swap\n")
    _run(tree)
    assert tree.read("/etc/crypttab") == ("# <target name>\t<source device>\t<key file>\t<options>\n"
                                          f"sda3_crypt UUID={luks} none luks,discard\n"
                                          "swap_crypt /dev/mapper/vg-swap /dev/urandom swap\n")


def test_a_second_run_changes_nothing(tmp_path):
    for build in (F.debian12, F.rhel9, F.sles15):
        tree = build(tmp_path / build.__name__)
        _run(tree)
        before = tree.read("/etc/fstab")
        ctx = _run(tree)
        assert ctx.changes == [] and tree.read("/etc/fstab") == before


def test_no_fstab_is_nothing_to_do(tmp_path):
    tree = F.debian12(tmp_path)
    os.unlink(os.path.join(tree.root, "etc/fstab"))
    assert _run(tree).changes == []


def test_a_symlinked_fstab_never_leads_outside_the_replica(tmp_path):
    tree = F.debian12(tmp_path / "replica")
    outside = tmp_path / "receiver-etc" / "fstab"
    outside.parent.mkdir()
    outside.write_text("/dev/sda1 / ext4 defaults 0 1\n")
    os.unlink(os.path.join(tree.root, "etc/fstab"))
    os.symlink("/../../../../../.." + str(outside), os.path.join(tree.root, "etc/fstab"))
    F.write(tree.root, str(outside), "/dev/sda1 /boot ext4 defaults 0 2\n")   # the same path inside the replica
    _run(tree)
    assert outside.read_text() == "/dev/sda1 / ext4 defaults 0 1\n"
    assert tree.read(str(outside)) == f"UUID={F.BOOT_UUID} /boot ext4 defaults 0 2\n"


def test_fields_keep_alignment_where_they_can():
    line = fstab.Fields("/dev/sda1       /boot           ext4    defaults 0 2\n")
    line[0] = "UUID=x"
    assert line.text() == "UUID=x          /boot           ext4    defaults 0 2\n"
    line[0] = "UUID=" + "a" * 40
    assert line.text() == "UUID=" + "a" * 40 + " /boot           ext4    defaults 0 2\n"
    indented = fstab.Fields("  /dev/sda1 /boot ext4\r\n")
    indented[3] = "defaults"
    assert indented.text() == "  /dev/sda1 /boot ext4 defaults\r\n"


def test_which_device_names_change_on_the_destination():
    changing = ["/dev/sda1", "/dev/vdb", "/dev/xvda2", "/dev/hda1", "/dev/nvme0n1p3", "/dev/md0", "/dev/md/root",
                "/dev/dm-3", "/dev/disk/by-id/ata-VBOX_HARDDISK_VB1-part1", "/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0",
                "/dev/cciss/c0d0p1", "/dev/mmcblk0p2"]
    staying = ["UUID=x", "LABEL=root", "PARTUUID=1-2", "/dev/mapper/rhel-root", "/dev/rhel/root",
               "/dev/disk/by-uuid/x", "/dev/disk/by-label/root", "/dev/sr0", "/swapfile", "tmpfs"]
    assert all(is_unstable_device_path(d) for d in changing)
    assert not any(is_unstable_device_path(d) for d in staying)


def test_device_map_from_the_inventory():
    devices = DeviceMap({"layout": {"filesystems": [
        {"device": "/dev/sda1", "uuid": "A", "mountpoint": "/boot", "fstype": "ext4", "links": ["/dev/disk/by-id/x-part1"]},
        {"device": "/dev/sda2", "uuid": None, "mountpoint": "/"},
        "garbage"]},
        "mounts": [{"target": "/srv", "source": "/dev/sdb1", "uuid": "B"}]})
    assert devices.uuid_for("/dev/sda1") == "A" and devices.uuid_for("/dev/disk/by-id/x-part1") == "A"
    assert devices.uuid_for("/dev/sdb1") == "B" and devices.uuid_for("/dev/sdz9", "/srv") == "B"
    assert devices.uuid_for("/dev/sda2", "/") is None
    assert DeviceMap({}).uuid_for("/dev/sda1") is None
