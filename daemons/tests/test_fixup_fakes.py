"""Prepared replica trees (Debian 12, RHEL 9, Rocky 8 on UEFI, SLES 15 SP5, SLES 11 SP4) with
the files those distributions ship, their inventories, and FakeGuest: a recording Runner.

Why a fake runner: the receiver has none of the guests' tools (no grub, dracut, rpm), and a
debootstrap or a RHEL image per unit test would take minutes and a network. FakeGuest stands
in for the guest's commands and simulates only the effects the steps look at afterwards:
  dpkg-query/dpkg     read and change /var/lib/dpkg/status (the real file format)
  rpm                 a JSON stand-in for the rpm database (/var/lib/rpm/fake-rpmdb.json)
  update-initramfs, dracut, mkinitrd   write an "image" that is the list of files an
                      initramfs would hold (the modules those tools would pick, including
                      dracut's fatal error for an add_drivers module a kernel lacks)
  lsinitramfs, lsinitrd                print that list as the real tools do
  grub-mkconfig       a config built from /etc/default/grub and the installed kernels
  grub-install        recorded only
Everything else in the trees (configuration files, kernels' module directories, units,
ESP content, merged-/usr symlinks) is real files, read and edited by the real steps.
(No tests in this module: test_fixup_*.py modules import it.)
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any, Dict, List, Optional

from osam.fixup.context import STATE_DIR, FixupContext, Nic, Target

MAC_SRC = "52:54:00:12:34:56"
MAC_DST = "00:50:56:aa:bb:01"

ROOT_UUID = "6f1c2c7e-3d2a-4b0e-9a57-0d4f3c2b1a10"
BOOT_UUID = "1b7e6c0a-5f44-4c1f-8b1e-2a0c9d8e7f61"
SWAP_UUID = "9e3d1f20-7c4b-4e8a-b6d5-3f2a1c0e9d82"
DATA_UUID = "c4a2e1f0-8b7d-4c6e-9f5a-1d2c3b4a5e63"
ESP_UUID = "7A1B-2C3D"


# -- writing trees ------------------------------------------------------------------------------
def write(root: str, path: str, text: Any = "", mode: int = 0o644) -> str:
    host = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(host), exist_ok=True)
    data = text if isinstance(text, bytes) else text.encode()
    with open(host, "wb") as f:
        f.write(data)
    os.chmod(host, mode)
    return host


def link(root: str, path: str, target: str) -> None:
    host = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(host), exist_ok=True)
    os.symlink(target, host)


def executables(root: str, *paths: str) -> None:
    for path in paths:
        write(root, path, "#!/bin/sh\n# stand-in: FakeGuest runs this command\nexit 0\n", 0o755)


def merged_usr(root: str, lib64: bool = True) -> None:
    """Debian 12 and RHEL 9 keep /bin, /sbin, /lib in /usr, reached through symlinks."""
    for name in ("bin", "sbin", "lib") + (("lib64",) if lib64 else ()):
        os.makedirs(os.path.join(root, "usr", name), exist_ok=True)
        link(root, "/" + name, "usr/" + name)


def kernel(root: str, version: str, modules: List[str], ext: str = ".ko", builtin: List[str] = ()) -> None:
    """/lib/modules/<version> with the .ko files, modules.dep and modules.builtin, and
    /boot/vmlinuz-<version>."""
    base = f"/lib/modules/{version}"
    dep = []
    for module in modules:
        write(root, f"{base}/{module}{ext}", b"\x7fELF fake module\n")
        dep.append(f"{module}{ext}:")
    write(root, f"{base}/modules.dep", "\n".join(dep) + "\n")
    write(root, f"{base}/modules.builtin", "".join(f"{m}.ko\n" for m in builtin))
    write(root, f"/boot/vmlinuz-{version}", b"MZ fake kernel\n")
    write(root, f"/boot/config-{version}", "CONFIG_SCSI_VMW_PVSCSI=m\n")


COMMON_MODULES = [
    "kernel/drivers/scsi/vmw_pvscsi", "kernel/drivers/scsi/sd_mod", "kernel/drivers/scsi/sr_mod",
    "kernel/drivers/scsi/virtio_scsi", "kernel/drivers/block/virtio_blk", "kernel/drivers/ata/ahci",
    "kernel/drivers/ata/ata_piix", "kernel/drivers/ata/libata", "kernel/drivers/net/vmxnet3/vmxnet3",
    "kernel/drivers/net/virtio_net", "kernel/drivers/net/ethernet/intel/e1000/e1000",
    "kernel/drivers/hv/hv_vmbus", "kernel/drivers/scsi/hv_storvsc", "kernel/drivers/net/hyperv/hv_netvsc",
    "kernel/drivers/md/dm-mod", "kernel/fs/ext4/ext4", "kernel/fs/xfs/xfs", "kernel/fs/btrfs/btrfs",
]
MPTSPI = "kernel/drivers/message/fusion/mptspi"


def dpkg_status(packages: List[str]) -> str:
    return "".join(f"Package: {p}\nStatus: install ok installed\nPriority: optional\nSection: admin\n"
                   f"Architecture: amd64\nVersion: 1.0-1\nDescription: {p}\n\n" for p in packages)


def rpmdb(root: str, packages: Dict[str, List[str]]) -> None:
    write(root, RPMDB, json.dumps({name: {"files": files} for name, files in packages.items()}))


def fake_package(name: str, files: Dict[str, str]) -> bytes:
    """A package file FakeGuest's dpkg -i / rpm -Uvh understands: what it installs."""
    return json.dumps({"name": name, "files": files}).encode()


RPMDB = "/var/lib/rpm/fake-rpmdb.json"


class Tree:
    def __init__(self, root: str, inventory: Dict[str, Any], target: Target, **facts: Any):
        self.root = root
        self.inventory = inventory
        self.target = target
        self.facts = facts

    def read(self, path: str) -> Optional[str]:
        try:
            with open(os.path.join(self.root, path.lstrip("/"))) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        return os.path.lexists(os.path.join(self.root, path.lstrip("/")))

    def context(self, runner=None, devices=None) -> FixupContext:
        ctx = FixupContext(self.root, self.inventory, self.target, runner or FakeGuest(self))
        ctx.facts["devices"] = devices if devices is not None else DEVICES
        return ctx

    def prepared(self, guest=None, devices=None) -> FixupContext:
        """A context whose facts the distro step has filled, as later steps expect."""
        from osam.fixup import distro
        ctx = self.context(guest if guest is not None else FakeGuest(self), devices)
        distro.apply(ctx)
        return ctx

    def files(self) -> Dict[str, Any]:
        """Every path below the root → its content (or link target), to compare trees."""
        found: Dict[str, Any] = {}
        for directory, dirs, names in os.walk(self.root):
            for name in dirs + names:
                path = os.path.join(directory, name)
                rel = "/" + os.path.relpath(path, self.root)
                if os.path.islink(path):
                    found[rel] = "-> " + os.readlink(path)
                elif os.path.isfile(path):
                    with open(path, "rb") as f:
                        found[rel] = (f.read(), oct(os.stat(path).st_mode))
                else:
                    found[rel] = "dir"
        return found


DEVICES = {"boot_disk": "/dev/loop7", "by_uuid": {ROOT_UUID: "/dev/loop7p2", BOOT_UUID: "/dev/loop7p1"},
           "nodes": ["/dev/loop7", "/dev/loop7p1", "/dev/loop7p2"]}


def nic_inventory() -> List[Dict[str, Any]]:
    return [{"name": "eth0", "mac": MAC_SRC, "link_type": "ether",
             "addresses": [{"family": "inet", "address": "192.0.2.10", "prefix": 24}]}]


def dos_table(disk: str, ident: str, partitions: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"partitiontable": {"label": "dos", "id": ident, "device": f"/dev/{disk}", "unit": "sectors",
                               "sectorsize": 512, "partitions": partitions}}


# -- Debian 12 --------------------------------------------------------------------------------------
DEBIAN_KERNELS = ("6.1.0-17-amd64", "6.1.0-18-amd64")

DEBIAN_OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""

DEBIAN_INITRAMFS_CONF = """#
# initramfs.conf
# Configuration file for mkinitramfs(8). See initramfs.conf(5).
#
# Note that configuration options from this file can be overridden
# by config files in the /etc/initramfs-tools/conf.d directory.

#
# MODULES: [ most | netboot | dep | list ]
#
# most - Add most filesystem and all harddrive drivers.
#
# dep - Try and guess which modules to load.
#
# netboot - Add the base modules, network modules, but skip block devices.
#
# list - Only include modules from the 'additional modules' list
#

MODULES=most

#
# BUSYBOX: [ y | n | auto ]
#
# Use busybox shell and utilities.  If set to n, busybox utilities will
# not be included in the initramfs.  If set to auto (or unset), busybox
# utilities will be included if busybox is installed.
#

BUSYBOX=auto

#
# COMPRESS: [ gzip | bzip2 | lz4 | lzma | lzop | xz | zstd ]
#

COMPRESS=zstd

#
# DEVICE: ...
#
# Specify a specific network interface, like eth0
# Overridden by optional ip= or BOOTIF= bootarg
#

DEVICE=

#
# NFSROOT: [ auto | HOST:MOUNT ]
#

NFSROOT=auto

#
# RUNSIZE: ...
#
# The size of the /run tmpfs mount point, like 256M or 10%
# Overridden by optional initramfs.runsize= bootarg
#

RUNSIZE=10%

#
# FSTYPE: ...
#
# The filesystem type(s) to support, or "auto" to use the current root
# filesystem type
#

FSTYPE=auto
"""

DEBIAN_MODULES = """# List of modules that you want to include in your initramfs.
# They will be loaded at boot time in the order below.
#
# Syntax:  module_name [args ...]
#
# You must run update-initramfs(8) to effect this change.
#
# Examples:
#
# raid1
# sd_mod
"""

DEBIAN_DEFAULT_GRUB = """# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8 resume=/dev/sda5"

# If your computer has multiple operating systems installed, then you
# probably want to run os-prober. However, if your computer is a host
# for guest OSes installed via LVM or raw disk devices, running
# os-prober can cause damage to those guest OSes as it mounts
# filesystems to look for things.
#GRUB_DISABLE_OS_PROBER=false

# Uncomment to enable BadRAM filtering, modify to suit your needs
# This works with Linux (no patch required) and with any kernel that obtains
# the memory map information from GRUB (GNU Mach, kernel of FreeBSD ...)
#GRUB_BADRAM="0x01234567,0xfefefefe,0x89abcdef,0xefefefef"

# Uncomment to disable graphical terminal
#GRUB_TERMINAL=console

# Uncomment if you don't want GRUB to pass "root=UUID=xxx" parameter to Linux
#GRUB_DISABLE_LINUX_UUID=true

# Uncomment to disable generation of recovery mode menu entries
#GRUB_DISABLE_RECOVERY="true"
"""

DEBIAN_FSTAB = f"""# /etc/fstab: static file system information.
#
# Use 'blkid' to print the universally unique identifier for a
# device; this may be used with UUID= as a more robust way to name devices
# that works even if disks are added and removed. See fstab(5).
#
# systemd generates mount units based on this file, see systemd.mount(5).
# Please run 'systemctl daemon-reload' after you make changes here.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
# / was on /dev/sda2 during installation
UUID={ROOT_UUID} /               ext4    errors=remount-ro 0       1
# /boot was on /dev/sda1 during installation
/dev/sda1       /boot           ext4    defaults        0       2
# swap was on /dev/sda5 during installation
/dev/sda5       none            swap    sw              0       0
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0
nfs.example.com:/export/home /home nfs4 defaults 0 0
"""

DEBIAN_HOSTS = """127.0.0.1\tlocalhost
127.0.1.1\tweb01.example.com\tweb01

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
"""

QEMU_GA_UNIT = """[Unit]
Description=QEMU Guest Agent
BindsTo=dev-virtio\\x2dports-org.qemu.guest_agent.0.device
After=dev-virtio\\x2dports-org.qemu.guest_agent.0.device

[Service]
ExecStart=/usr/sbin/qemu-ga
Restart=always
RestartSec=0

# no [Install] section: started by udev when the virtio port appears
"""

SPICE_UNIT = """[Unit]
Description=Agent daemon for Spice guests
After=dbus.service
Requires=spice-vdagentd.socket

[Service]
Type=forking
EnvironmentFile=-/etc/default/spice-vdagentd
ExecStart=/usr/sbin/spice-vdagentd $SPICE_VDAGENTD_EXTRA_ARGS

[Install]
Also=spice-vdagentd.socket
"""

DEBIAN_VMTOOLS_UNIT = """[Unit]
Description=Service for virtual machines hosted on VMware
Documentation=http://github.com/vmware/open-vm-tools
ConditionVirtualization=vmware
DefaultDependencies=no
Before=cloud-init-local.service
After=vgauth.service
Wants=vgauth.service

[Service]
ExecStart=/usr/bin/vmtoolsd
TimeoutStopSec=5

[Install]
WantedBy=multi-user.target
Alias=vmtoolsd.service
"""


def debian12(tmp_path, *, firmware: str = "bios", cache: bool = True) -> Tree:
    root = str(tmp_path / "debian12")
    merged_usr(root)
    write(root, "/usr/lib/os-release", DEBIAN_OS_RELEASE)
    link(root, "/etc/os-release", "../usr/lib/os-release")
    write(root, "/etc/debian_version", "12.5\n")
    write(root, "/etc/hostname", "web01\n")
    write(root, "/etc/hosts", DEBIAN_HOSTS)
    write(root, "/etc/fstab", DEBIAN_FSTAB)
    write(root, "/etc/initramfs-tools/initramfs.conf", DEBIAN_INITRAMFS_CONF)
    write(root, "/etc/initramfs-tools/modules", DEBIAN_MODULES)
    write(root, "/etc/initramfs-tools/conf.d/resume", "RESUME=/dev/sda5\n")
    write(root, "/etc/default/grub", DEBIAN_DEFAULT_GRUB)
    executables(root, "/usr/sbin/update-initramfs", "/usr/bin/lsinitramfs", "/usr/sbin/grub-mkconfig",
                "/usr/sbin/update-grub", "/usr/sbin/grub-install", "/usr/bin/dpkg", "/usr/bin/dpkg-query",
                "/usr/lib/systemd/systemd")
    for version in DEBIAN_KERNELS:
        kernel(root, version, COMMON_MODULES + [MPTSPI])
    write(root, "/var/lib/dpkg/status", dpkg_status(["base-files", "qemu-guest-agent", "spice-vdagent",
                                                     "linux-image-amd64"]))
    write(root, "/var/lib/dpkg/info/qemu-guest-agent.list",
          "/lib/systemd/system/qemu-guest-agent.service\n/usr/sbin/qemu-ga\n")
    write(root, "/var/lib/dpkg/info/spice-vdagent.list",
          "/lib/systemd/system/spice-vdagentd.service\n/lib/systemd/system/spice-vdagentd.socket\n")
    write(root, "/lib/systemd/system/qemu-guest-agent.service", QEMU_GA_UNIT)
    write(root, "/lib/systemd/system/spice-vdagentd.service", SPICE_UNIT)
    write(root, "/lib/systemd/system/spice-vdagentd.socket",
          "[Socket]\nListenStream=/run/spice-vdagentd/spice-vdagent-sock\n\n[Install]\nWantedBy=sockets.target\n")
    link(root, "/etc/systemd/system/sockets.target.wants/spice-vdagentd.socket",
         "/lib/systemd/system/spice-vdagentd.socket")
    write(root, "/boot/grub/grub.cfg", "# old grub.cfg of the source\n", 0o444)
    guest = FakeGuest.for_root(root, family="debian")
    for version in DEBIAN_KERNELS:   # images as the source built them (MODULES=most, no NIC driver)
        guest.build_initramfs_tools_image(version)
    package_cache = None
    if cache:
        package_cache = str(tmp_path / "cache")
        files = {"/lib/systemd/system/open-vm-tools.service": DEBIAN_VMTOOLS_UNIT,
                 "/usr/bin/vmtoolsd": "#!/bin/sh\n"}
        write(package_cache, "/debian-12/open-vm-tools_12.2.0-1+deb12u2_amd64.deb",
              fake_package("open-vm-tools", files))
        write(package_cache, "/debian-12/libmspack0_0.11-1_amd64.deb", fake_package("libmspack0", {}))
        write(package_cache, "/debian-12/base-files_12.4+deb12u5_amd64.deb", fake_package("base-files", {}))
        write(package_cache, "/debian-12/open-vm-tools_12.2.0-1+deb12u2_arm64.deb",
              fake_package("open-vm-tools", {}))
        write(package_cache, "/rhel-9/open-vm-tools-12.2.5-3.el9.x86_64.rpm", fake_package("open-vm-tools", {}))
    inventory = {
        "hostname": "web01.example.com",
        "os": {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)", "id_like": ""},
        "nics": nic_inventory(),
        "layout": {
            "boot": {"mode": firmware, "bootloader": "grub2", "boot_disk": "sda", "efi_files": []},
            "disks": [{"name": "sda", "path": "/dev/sda", "size": 20 << 30,
                       "partition_table": dos_table("sda", "0x5e3f1a2b", [
                           {"node": "/dev/sda1", "start": 2048, "size": 1048576, "type": "83", "bootable": True},
                           {"node": "/dev/sda2", "start": 1050624, "size": 37943296, "type": "83"},
                           {"node": "/dev/sda5", "start": 38995968, "size": 2097152, "type": "82"}])}],
            "filesystems": [
                {"device": "/dev/sda1", "fstype": "ext4", "uuid": BOOT_UUID, "label": "", "mountpoint": "/boot",
                 "parent": {"kind": "partition", "disk": "sda", "number": 1}},
                {"device": "/dev/sda2", "fstype": "ext4", "uuid": ROOT_UUID, "label": "", "mountpoint": "/",
                 "parent": {"kind": "partition", "disk": "sda", "number": 2}},
                {"device": "/dev/sda5", "fstype": "swap", "uuid": SWAP_UUID, "label": "", "mountpoint": None,
                 "parent": {"kind": "partition", "disk": "sda", "number": 5}},
            ],
            "lvm": {},
            "mounts": [{"target": "/", "source": "/dev/sda2", "fstype": "ext4", "options": "rw,relatime",
                        "uuid": ROOT_UUID},
                       {"target": "/boot", "source": "/dev/sda1", "fstype": "ext4", "options": "rw,relatime",
                        "uuid": BOOT_UUID}],
        },
    }
    target = Target(nics=[Nic(MAC_DST)], firmware=firmware, package_cache=package_cache)
    return Tree(root, inventory, target, family="debian")


# -- RHEL 9 (BIOS, LVM root, SELinux enforcing, moved from Hyper-V) -----------------------------------
RHEL9_KERNELS = ("5.14.0-284.11.1.el9_2.x86_64", "5.14.0-362.8.1.el9_3.x86_64")
MACHINE_ID = "3f2b8c6d1e0a4f5b9c7d8e6f5a4b3c2d"

RHEL9_OS_RELEASE = """NAME="Red Hat Enterprise Linux"
VERSION="9.3 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.3"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Red Hat Enterprise Linux 9.3 (Plow)"
ANSI_COLOR="0;31"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:redhat:enterprise_linux:9::baseos"
HOME_URL="https://www.redhat.com/"
DOCUMENTATION_URL="https://access.redhat.com/documentation/en-us/red_hat_enterprise_linux/9"
BUG_REPORT_URL="https://bugzilla.redhat.com/"

REDHAT_BUGZILLA_PRODUCT="Red Hat Enterprise Linux 9"
REDHAT_BUGZILLA_PRODUCT_VERSION=9.3
REDHAT_SUPPORT_PRODUCT="Red Hat Enterprise Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.3"
"""

RHEL_DRACUT_CONF = """# PUT YOUR CONFIG IN separate files
# in /etc/dracut.conf.d named "<name>.conf"
# SEE man dracut.conf(5) for options
"""

RHEL_DIST_DRACUT_CONF = """# dracut config file customized for RedHat/Fedora.

# i18n
i18n_vars="/etc/sysconfig/keyboard:KEYTABLE-KEYMAP /etc/sysconfig/i18n:SYSFONT-FONT,FONTACM-FONT_MAP,FONT_UNIMAP"
i18n_default_font="eurlatgr"
i18n_install_all="yes"

stdloglvl=3
sysloglvl=5
install_optional_items+=" vi /etc/virc ps grep cat rm "
prefix="/"
systemdutildir=/usr/lib/systemd
systemdsystemunitdir=/usr/lib/systemd/system
systemdsystemconfdir=/etc/systemd/system
udevdir=/usr/lib/udev
hostonly="yes"
hostonly_cmdline="no"
early_microcode="yes"
reproducible="yes"
"""

RHEL9_DEFAULT_GRUB = """GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR="$(sed 's, release .*$,,g' /etc/system-release)"
GRUB_DEFAULT=saved
GRUB_DISABLE_SUBMENU=true
GRUB_TERMINAL_OUTPUT="console"
GRUB_CMDLINE_LINUX="crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap"
GRUB_DISABLE_RECOVERY="true"
GRUB_ENABLE_BLSCFG=true
"""


def bls_entry(title: str, version: str, options: str, initrd: str) -> str:
    return (f"title {title}\nversion {version}\nlinux /vmlinuz-{version}\n"
            f"initrd /{initrd} $tuned_initrd\noptions {options} $tuned_params\n"
            "grub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rhel\n")


RHEL9_FSTAB = f"""
#
# /etc/fstab
# Created by anaconda on Tue Nov 14 10:12:31 2023
#
# Accessible filesystems, by reference, are maintained under '/dev/disk/'.
# See man pages fstab(5), findfs(8), mount(8) and/or blkid(8) for more info.
#
# After editing this file, run 'systemctl daemon-reload' to update systemd
# units generated from this file.
#
/dev/mapper/rhel-root   /                       xfs     defaults        0 0
UUID={BOOT_UUID} /boot                   xfs     defaults        0 0
/dev/mapper/rhel-swap   none                    swap    defaults        0 0
/dev/sdb1               /data                   xfs     defaults        0 0
//files.example.com/share /mnt/share cifs credentials=/root/.smb,vers=3.0 0 0
"""

RHEL_SELINUX_CONFIG = """
# This file controls the state of SELinux on the system.
# SELINUX= can take one of these three values:
#     enforcing - SELinux security policy is enforced.
#     permissive - SELinux prints warnings instead of enforcing.
#     disabled - No SELinux policy is loaded.
# See also:
# https://docs.fedoraproject.org/en-US/quick-docs/getting-started-with-selinux/#getting-started-with-selinux-selinux-states-and-modes
#
# NOTE: In earlier Fedora kernel builds, SELINUX=disabled would also
# fully disable SELinux during boot. If you need a system with SELinux
# fully disabled instead of SELinux running with no policy loaded, you
# need to pass selinux=0 to the kernel command line. You can use grubby
# to persistently set the bootloader to boot with selinux=0:
#
#    grubby --update-kernel ALL --args selinux=0
#
# To revert back to SELinux enabled:
#
#    grubby --update-kernel ALL --remove-args selinux
#
SELINUX={mode}
# SELINUXTYPE= can take one of these three values:
#     targeted - Targeted processes are protected,
#     minimum - Modification of targeted policy. Only selected processes are protected.
#     mls - Multi Level Security protection.
SELINUXTYPE=targeted
"""

RHEL_NSSWITCH = """# Generated by authselect
# Do not modify this file manually, use authselect instead. Any user changes will be overwritten.
# You can stop authselect from managing your configuration by calling 'authselect opt-out'.
# See authselect(8) for more details.

passwd:     files systemd
group:      files systemd
netgroup:   files
automount:  files
services:   files
shadow:     files
hosts:      files dns myhostname
"""

RHEL_HOSTS = """127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4
::1         localhost localhost.localdomain localhost6 localhost6.localdomain6
"""

HYPERV_UNIT = """[Unit]
Description=Hyper-V KVP daemon
ConditionVirtualization=microsoft
ConditionPathExists=/dev/vmbus/hv_kvp
BindsTo=sys-devices-virtual-misc-vmbus\\x21hv_kvp.device

[Service]
ExecStart=/usr/sbin/hypervkvpd -n

[Install]
WantedBy=multi-user.target
"""

RHEL_VMTOOLS_UNIT = """[Unit]
Description=Service for virtual machines hosted on VMware
Documentation=http://github.com/vmware/open-vm-tools
ConditionVirtualization=vmware
Requires=vgauthd.service
After=vgauthd.service

[Service]
ExecStart=/usr/bin/vmtoolsd
TimeoutStopSec=5

[Install]
WantedBy=multi-user.target
"""


def rhel9(tmp_path, *, cache: bool = True) -> Tree:
    root = str(tmp_path / "rhel9")
    merged_usr(root)
    write(root, "/etc/os-release", RHEL9_OS_RELEASE)
    write(root, "/etc/redhat-release", "Red Hat Enterprise Linux release 9.3 (Plow)\n")
    write(root, "/etc/hostname", "db01.example.com\n")
    write(root, "/etc/hosts", RHEL_HOSTS)
    write(root, "/etc/nsswitch.conf", RHEL_NSSWITCH)
    write(root, "/etc/fstab", RHEL9_FSTAB)
    write(root, "/etc/dracut.conf", RHEL_DRACUT_CONF)
    os.makedirs(os.path.join(root, "etc/dracut.conf.d"))
    write(root, "/usr/lib/dracut/dracut.conf.d/01-dist.conf", RHEL_DIST_DRACUT_CONF)
    for module in ("90lvm", "90crypt", "90mdraid", "90kernel-modules", "95rootfs-block"):
        write(root, f"/usr/lib/dracut/modules.d/{module}/module-setup.sh", "#!/bin/bash\n", 0o755)
    write(root, "/etc/default/grub", RHEL9_DEFAULT_GRUB)
    write(root, "/etc/selinux/config", RHEL_SELINUX_CONFIG.format(mode="enforcing"))
    executables(root, "/usr/bin/dracut", "/usr/bin/lsinitrd", "/usr/sbin/grub2-mkconfig", "/usr/sbin/grub2-install",
                "/usr/bin/rpm", "/usr/bin/dnf", "/usr/lib/systemd/systemd")
    options = "root=/dev/mapper/rhel-root ro crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M " \
              "resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap"
    for version in RHEL9_KERNELS:
        kernel(root, version, COMMON_MODULES, ".ko.xz")
        write(root, f"/lib/modules/{version}/vmlinuz", b"MZ fake kernel\n")
        write(root, f"/boot/loader/entries/{MACHINE_ID}-{version}.conf",
              bls_entry(f"Red Hat Enterprise Linux ({version}) 9.3 (Plow)", version, options,
                        f"initramfs-{version}.img"))
    write(root, "/boot/grub2/grub.cfg", "# old grub.cfg of the source\n", 0o600)
    write(root, "/boot/grub2/grubenv", "# GRUB Environment Block\nsaved_entry=x\n" + "#" * 900)
    hyperv_units = {f"/usr/lib/systemd/system/{d}.service": HYPERV_UNIT
                    for d in ("hypervkvpd", "hypervvssd", "hypervfcopyd")}
    for path, text in hyperv_units.items():
        write(root, path, text)
        link(root, f"/etc/systemd/system/multi-user.target.wants/{os.path.basename(path)}", path)
    rpmdb(root, {"kernel-core": [], "rpm": [], "dracut": [],
                 "hyperv-daemons": [], "hyperv-daemons-license": [],
                 **{d: [f"/usr/lib/systemd/system/{d}.service"] for d in ("hypervkvpd", "hypervvssd", "hypervfcopyd")}})
    guest = FakeGuest.for_root(root, family="rhel")
    guest.set_hostonly(["xfs", "dm_mod", "hv_vmbus", "hv_storvsc", "hv_netvsc"])   # built on Hyper-V
    for version in RHEL9_KERNELS:
        guest.build_dracut_image(version, f"/boot/initramfs-{version}.img", use_config=False)
    package_cache = None
    if cache:
        package_cache = str(tmp_path / "cache")
        write(package_cache, "/rhel-9/open-vm-tools-12.2.5-3.el9.x86_64.rpm", fake_package("open-vm-tools", {
            "/usr/lib/systemd/system/vmtoolsd.service": RHEL_VMTOOLS_UNIT,
            "/usr/lib/systemd/system/vgauthd.service":
                "[Unit]\nDescription=VGAuth Service for open-vm-tools\n\n[Service]\nExecStart=/usr/bin/VGAuthService -s\n",
            "/usr/bin/vmtoolsd": "#!/bin/sh\n"}))
        write(package_cache, "/rhel-9/libmspack-0.10.1-0.8.alpha.el9.x86_64.rpm", fake_package("libmspack", {}))
        write(package_cache, "/rhel-9/libmspack-0.10.1-0.8.alpha.el9.aarch64.rpm", fake_package("libmspack", {}))
        write(package_cache, "/rhel-9/open-vm-tools-12.2.5-3.el9.src.rpm", fake_package("open-vm-tools", {}))
    inventory = {
        "hostname": "db01.example.com",
        "os": {"id": "rhel", "version_id": "9.3", "pretty_name": "Red Hat Enterprise Linux 9.3 (Plow)",
               "id_like": "fedora"},
        "nics": nic_inventory(),
        "layout": {
            "boot": {"mode": "bios", "bootloader": "grub2", "boot_disk": "sda", "efi_files": []},
            "disks": [{"name": "sda", "path": "/dev/sda", "size": 40 << 30,
                       "partition_table": dos_table("sda", "0x7d2c1b0a", [
                           {"node": "/dev/sda1", "start": 2048, "size": 2097152, "type": "83", "bootable": True},
                           {"node": "/dev/sda2", "start": 2099200, "size": 81786880, "type": "8e"}])},
                      {"name": "sdb", "path": "/dev/sdb", "size": 10 << 30,
                       "partition_table": dos_table("sdb", "0x11223344", [
                           {"node": "/dev/sdb1", "start": 2048, "size": 20969472, "type": "83"}])}],
            "filesystems": [
                {"device": "/dev/sda1", "fstype": "xfs", "uuid": BOOT_UUID, "label": "", "mountpoint": "/boot",
                 "parent": {"kind": "partition", "disk": "sda", "number": 1}},
                {"device": "/dev/mapper/rhel-root", "fstype": "xfs", "uuid": ROOT_UUID, "label": "",
                 "mountpoint": "/", "parent": {"kind": "lv", "vg": "rhel", "lv": "root"}},
                {"device": "/dev/mapper/rhel-swap", "fstype": "swap", "uuid": SWAP_UUID, "label": "",
                 "mountpoint": None, "parent": {"kind": "lv", "vg": "rhel", "lv": "swap"}},
                {"device": "/dev/sdb1", "fstype": "xfs", "uuid": DATA_UUID, "label": "data", "mountpoint": "/data",
                 "parent": {"kind": "partition", "disk": "sdb", "number": 1}},
            ],
            "lvm": {"vgs": [{"name": "rhel"}]},
            "mounts": [{"target": "/", "source": "/dev/mapper/rhel-root", "fstype": "xfs", "options": "rw",
                        "uuid": ROOT_UUID}],
        },
    }
    target = Target(nics=[Nic(MAC_DST)], firmware="bios", package_cache=package_cache)
    return Tree(root, inventory, target, family="rhel")


# -- Rocky Linux 8 (UEFI, grub.cfg on the ESP, SELinux permissive, no package cache) ------------------
ROCKY8_KERNEL = "4.18.0-513.5.1.el8_9.x86_64"

ROCKY8_OS_RELEASE = """NAME="Rocky Linux"
VERSION="8.9 (Green Obsidian)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="8.9"
PLATFORM_ID="platform:el8"
PRETTY_NAME="Rocky Linux 8.9 (Green Obsidian)"
ANSI_COLOR="0;32"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:rocky:rocky:8:GA"
HOME_URL="https://rockylinux.org/"
BUG_REPORT_URL="https://bugs.rockylinux.org/"
SUPPORT_END="2029-05-31"
ROCKY_SUPPORT_PRODUCT="Rocky-Linux-8"
ROCKY_SUPPORT_PRODUCT_VERSION="8.9"
REDHAT_SUPPORT_PRODUCT="Rocky Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="8.9"
"""

ROCKY8_FSTAB = f"""
#
# /etc/fstab
# Created by anaconda on Mon Dec  4 09:01:12 2023
#
# Accessible filesystems, by reference, are maintained under '/dev/disk/'.
# See man pages fstab(5), findfs(8), mount(8) and/or blkid(8) for more info.
#
# After editing this file, run 'systemctl daemon-reload' to update systemd
# units generated from this file.
#
UUID={ROOT_UUID} /                       xfs     defaults        0 0
UUID={BOOT_UUID} /boot                   xfs     defaults        0 0
UUID={ESP_UUID}          /boot/efi               vfat    umask=0077,shortname=winnt 0 2
"""


def rocky8_uefi(tmp_path) -> Tree:
    root = str(tmp_path / "rocky8")
    merged_usr(root)
    write(root, "/etc/os-release", ROCKY8_OS_RELEASE)
    write(root, "/etc/redhat-release", "Rocky Linux release 8.9 (Green Obsidian)\n")
    write(root, "/etc/hostname", "app01\n")
    write(root, "/etc/hosts", RHEL_HOSTS)
    write(root, "/etc/nsswitch.conf", RHEL_NSSWITCH.replace("files dns myhostname", "files dns"))
    write(root, "/etc/fstab", ROCKY8_FSTAB)
    write(root, "/etc/dracut.conf", RHEL_DRACUT_CONF)
    write(root, "/etc/default/grub", RHEL9_DEFAULT_GRUB.replace(
        "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap",
        "crashkernel=auto rhgb quiet"))
    write(root, "/etc/selinux/config", RHEL_SELINUX_CONFIG.format(mode="permissive"))
    executables(root, "/usr/bin/dracut", "/usr/bin/lsinitrd", "/usr/sbin/grub2-mkconfig", "/usr/sbin/grub2-install",
                "/usr/bin/rpm", "/usr/bin/dnf", "/usr/lib/systemd/systemd")
    kernel(root, ROCKY8_KERNEL, COMMON_MODULES, ".ko.xz")
    write(root, f"/boot/loader/entries/{MACHINE_ID}-{ROCKY8_KERNEL}.conf",
          bls_entry(f"Rocky Linux ({ROCKY8_KERNEL}) 8.9 (Green Obsidian)", ROCKY8_KERNEL, "$kernelopts",
                    f"initramfs-{ROCKY8_KERNEL}.img"))
    esp = "/boot/efi/EFI/rocky"
    write(root, f"{esp}/shimx64.efi", b"MZ shim signed by Rocky\n", 0o700)
    write(root, f"{esp}/grubx64.efi", b"MZ grub signed by Rocky\n", 0o700)
    write(root, f"{esp}/mmx64.efi", b"MZ MokManager\n", 0o700)
    write(root, f"{esp}/BOOTX64.CSV", "shimx64.efi,Rocky Linux,,This is the boot entry for Rocky Linux\n", 0o700)
    write(root, f"{esp}/grub.cfg", "# full grub.cfg of the source, on the ESP as RHEL 8 keeps it\nblscfg\n", 0o700)
    rpmdb(root, {"kernel-core": [], "rpm": [], "dracut": [], "qemu-guest-agent":
                 ["/usr/lib/systemd/system/qemu-guest-agent.service"]})
    write(root, "/usr/lib/systemd/system/qemu-guest-agent.service", QEMU_GA_UNIT)
    guest = FakeGuest.for_root(root, family="rhel")
    guest.set_hostonly(["xfs", "virtio_blk", "virtio_net"])
    guest.build_dracut_image(ROCKY8_KERNEL, f"/boot/initramfs-{ROCKY8_KERNEL}.img", use_config=False)
    inventory = {
        "hostname": "app01",
        "os": {"id": "rocky", "version_id": "8.9", "pretty_name": "Rocky Linux 8.9 (Green Obsidian)",
               "id_like": "rhel centos fedora"},
        "nics": nic_inventory(),
        "layout": {
            "boot": {"mode": "uefi", "bootloader": "grub2", "boot_disk": "vda",
                     "efi_files": ["/boot/efi/EFI/rocky/shimx64.efi", "/boot/efi/EFI/rocky/grubx64.efi"]},
            "disks": [{"name": "vda", "path": "/dev/vda", "size": 20 << 30, "partition_table": {"partitiontable": {
                "label": "gpt", "id": "5B0F3E4A-2C1D-4E8F-9A7B-6C5D4E3F2A1B", "device": "/dev/vda",
                "partitions": []}}}],
            "filesystems": [
                {"device": "/dev/vda1", "fstype": "vfat", "uuid": ESP_UUID, "label": "", "mountpoint": "/boot/efi",
                 "parent": {"kind": "partition", "disk": "vda", "number": 1}},
                {"device": "/dev/vda2", "fstype": "xfs", "uuid": BOOT_UUID, "label": "", "mountpoint": "/boot",
                 "parent": {"kind": "partition", "disk": "vda", "number": 2}},
                {"device": "/dev/vda3", "fstype": "xfs", "uuid": ROOT_UUID, "label": "", "mountpoint": "/",
                 "parent": {"kind": "partition", "disk": "vda", "number": 3}},
            ],
            "mounts": [],
        },
    }
    return Tree(root, inventory, Target(nics=[Nic(MAC_DST)], firmware="uefi"), family="rhel")


# -- SLES 15 SP5 (BIOS, btrfs, moved from VirtualBox, no package cache) ---------------------------------
SLES15_KERNEL = "5.14.21-150500.55.39-default"
VBOX_BY_ID = "/dev/disk/by-id/ata-VBOX_HARDDISK_VB3c2e5a1f-7d9b6e04"

SLES15_OS_RELEASE = """NAME="SLES"
VERSION="15-SP5"
VERSION_ID="15.5"
PRETTY_NAME="SUSE Linux Enterprise Server 15 SP5"
ID="sles"
ID_LIKE="suse"
ANSI_COLOR="0;32"
CPE_NAME="cpe:/o:suse:sles:15:sp5"
DOCUMENTATION_URL="https://documentation.suse.com/"
"""

SLES_SYSCONFIG_KERNEL = """## Path:	System/Kernel
## Description:	Kernel settings

## Type:        string
## ServiceRestart: systemd-modules-load
#
# This variable contains the list of modules to be loaded
# once the main filesystem is active
# You will find a few default modules for hardware which
# can not be detected automatically.
#
MODULES_LOADED_ON_BOOT=""

## Type:        string
## Default:     ""
#
# The file name of a binary ACPI Differentiated System Description Table
# (DSDT). This table is appended to the initial ram disk (initrd) that the
# mkinitrd script creates.
#
ACPI_DSDT=""

## Type:        string(yes,no)
## Default:     "no"
#
# Skip doing a minimal preparation of the /usr/src/linux source tree so
# that most header files can be directly included.
#
SKIP_RUNNING_KERNEL=no

## Type:        string
## Default:     "1"
#
# Which kernel packages to keep installed when updating (see multiversion
# in /etc/zypp/zypp.conf).
#
MULTIVERSION_KERNELS="latest,running"
"""

SLES15_DEFAULT_GRUB = f"""# If you change this file, run 'grub2-mkconfig -o /boot/grub2/grub.cfg' afterwards to update
# /boot/grub2/grub.cfg.

# Uncomment to set your own custom distributor. If you leave it unset or empty, the default
# policy is to determine the value from /etc/os-release
GRUB_DISTRIBUTOR=
GRUB_DEFAULT=saved
GRUB_HIDDEN_TIMEOUT=0
GRUB_HIDDEN_TIMEOUT_QUIET=true
GRUB_TIMEOUT=8
GRUB_CMDLINE_LINUX_DEFAULT="splash=silent resume={VBOX_BY_ID}-part2 mitigations=auto quiet security=apparmor"
GRUB_CMDLINE_LINUX=""

# Uncomment to automatically save last booted menu entry in GRUB2 environment
# variable `saved_entry'
# GRUB_SAVEDEFAULT="true"
#GRUB_TERMINAL=console
GRUB_TERMINAL="gfxterm"
GRUB_GFXMODE="auto"
GRUB_BACKGROUND=
GRUB_THEME=/boot/grub2/themes/SLE/theme.txt
SUSE_BTRFS_SNAPSHOT_BOOTING="true"
GRUB_USE_LINUXEFI="true"
GRUB_DISABLE_OS_PROBER="false"
GRUB_ENABLE_CRYPTODISK="n"
GRUB_CMDLINE_XEN_DEFAULT="vga=gfx-1024x768x16"
"""

SLES15_FSTAB = f"""UUID={ROOT_UUID}  /                       btrfs  defaults                      0  0
UUID={ROOT_UUID}  /var                    btrfs  subvol=/@/var                 0  0
UUID={ROOT_UUID}  /usr/local              btrfs  subvol=/@/usr/local           0  0
UUID={ROOT_UUID}  /tmp                    btrfs  subvol=/@/tmp                 0  0
UUID={ROOT_UUID}  /srv                    btrfs  subvol=/@/srv                 0  0
UUID={ROOT_UUID}  /root                   btrfs  subvol=/@/root                0  0
UUID={ROOT_UUID}  /opt                    btrfs  subvol=/@/opt                 0  0
UUID={ROOT_UUID}  /boot/grub2/x86_64-efi  btrfs  subvol=/@/boot/grub2/x86_64-efi  0  0
UUID={ROOT_UUID}  /boot/grub2/i386-pc     btrfs  subvol=/@/boot/grub2/i386-pc  0  0
UUID={ROOT_UUID}  /.snapshots             btrfs  subvol=/@/.snapshots          0  0
{VBOX_BY_ID}-part3  /home  xfs  defaults  0  0
{VBOX_BY_ID}-part2  swap  swap  defaults  0  0
"""

SLES_HOSTS = """#
# hosts         This file describes a number of hostname-to-address
#               mappings for the TCP/IP subsystem.  It is mostly
#               used at boot time, when no name servers are running.
#               On small systems, this file can be used instead of a
#               "named" name server.
# Syntax:
#
# IP-Address  Full-Qualified-Hostname  Short-Hostname
#

127.0.0.1       localhost

# special IPv6 addresses
::1             localhost ipv6-localhost ipv6-loopback

fe00::0         ipv6-localnet

ff00::0         ipv6-mcastprefix
ff02::1         ipv6-allnodes
ff02::2         ipv6-allrouters
ff02::3         ipv6-allhosts
"""

VBOX_UNIT = """[Unit]
SourcePath=/opt/VBoxGuestAdditions-7.0.12/init/vboxadd
Description=
Before=runlevel2.target runlevel3.target runlevel4.target runlevel5.target shutdown.target
After=
Conflicts=shutdown.target

[Service]
Type=forking
Restart=no
TimeoutSec=5min
IgnoreSIGPIPE=no
KillMode=process
GuessMainPID=no
RemainAfterExit=yes
ExecStart=/opt/VBoxGuestAdditions-7.0.12/init/vboxadd start
ExecStop=/opt/VBoxGuestAdditions-7.0.12/init/vboxadd stop

[Install]
WantedBy=multi-user.target
"""


def sles15(tmp_path) -> Tree:
    root = str(tmp_path / "sles15")
    write(root, "/usr/lib/os-release", SLES15_OS_RELEASE)
    link(root, "/etc/os-release", "../usr/lib/os-release")
    write(root, "/etc/hostname", "sap01.example.com\n")
    write(root, "/etc/hosts", SLES_HOSTS)
    write(root, "/etc/nsswitch.conf", "passwd: compat\ngroup: compat\nhosts:  files dns\nnetworks: files dns\n")
    write(root, "/etc/fstab", SLES15_FSTAB)
    write(root, "/etc/sysconfig/kernel", SLES_SYSCONFIG_KERNEL)
    write(root, "/etc/default/grub", SLES15_DEFAULT_GRUB)
    os.makedirs(os.path.join(root, "etc/dracut.conf.d"))
    write(root, "/etc/dracut.conf", "# PUT YOUR CONFIG IN separate files\n# in /etc/dracut.conf.d named \"<name>.conf\"\n")
    executables(root, "/usr/bin/dracut", "/usr/bin/lsinitrd", "/usr/bin/mkinitrd", "/usr/sbin/grub2-mkconfig",
                "/usr/sbin/grub2-install", "/usr/bin/rpm", "/usr/bin/zypper", "/usr/lib/systemd/systemd")
    kernel(root, SLES15_KERNEL, COMMON_MODULES + [MPTSPI], ".ko.zst")
    write(root, "/boot/grub2/grub.cfg", "# old grub.cfg of the source\n", 0o600)
    rpmdb(root, {"kernel-default": [], "rpm": [], "virtualbox-guest-tools":
                 ["/usr/lib/systemd/system/vboxservice.service"]})
    write(root, "/usr/lib/systemd/system/vboxservice.service",
          "[Unit]\nDescription=VirtualBox guest services\nConditionVirtualization=oracle\n\n"
          "[Service]\nExecStart=/usr/sbin/VBoxService -f\n\n[Install]\nWantedBy=multi-user.target\n")
    write(root, "/opt/VBoxGuestAdditions-7.0.12/init/vboxadd", "#!/bin/sh\n", 0o755)
    write(root, "/usr/lib/systemd/system/vboxadd.service", VBOX_UNIT)
    link(root, "/etc/systemd/system/multi-user.target.wants/vboxadd.service",
         "/usr/lib/systemd/system/vboxadd.service")
    guest = FakeGuest.for_root(root, family="suse")
    guest.set_hostonly(["btrfs", "ahci", "sd_mod"])
    guest.build_dracut_image(SLES15_KERNEL, f"/boot/initrd-{SLES15_KERNEL}", use_config=False)
    inventory = {
        "hostname": "sap01.example.com",
        "os": {"id": "sles", "version_id": "15.5", "pretty_name": "SUSE Linux Enterprise Server 15 SP5",
               "id_like": "suse"},
        "nics": nic_inventory(),
        "layout": {
            "boot": {"mode": "bios", "bootloader": "grub2", "boot_disk": "sda"},
            "disks": [{"name": "sda", "path": "/dev/sda", "size": 60 << 30,
                       "partition_table": {"partitiontable": {"label": "gpt",
                                                              "id": "0E8C6A4B-2D1F-4A3C-8E7B-5F4A3B2C1D0E",
                                                              "device": "/dev/sda", "partitions": []}}}],
            "filesystems": [
                {"device": "/dev/sda2", "fstype": "swap", "uuid": SWAP_UUID, "mountpoint": None,
                 "links": [f"{VBOX_BY_ID}-part2"], "parent": {"kind": "partition", "disk": "sda", "number": 2}},
                {"device": "/dev/sda3", "fstype": "xfs", "uuid": DATA_UUID, "mountpoint": "/home",
                 "parent": {"kind": "partition", "disk": "sda", "number": 3}},
                {"device": "/dev/sda4", "fstype": "btrfs", "uuid": ROOT_UUID, "mountpoint": "/",
                 "parent": {"kind": "partition", "disk": "sda", "number": 4}},
            ],
            "mounts": [{"target": "/home", "source": "/dev/sda3", "fstype": "xfs", "options": "rw",
                        "uuid": DATA_UUID}],
        },
    }
    return Tree(root, inventory, Target(nics=[Nic(MAC_DST)], firmware="bios"), family="suse")


# -- SLES 11 SP4 (mkinitrd, no os-release) -----------------------------------------------------------
SLES11_KERNEL = "3.0.101-63-default"


def sles11(tmp_path) -> Tree:
    root = str(tmp_path / "sles11")
    write(root, "/etc/SuSE-release", "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n")
    write(root, "/etc/sysconfig/kernel", '## Path:\tSystem/Kernel\n#\n# This variable contains the list of '
                                         'modules to be added to the initial\n# ramdisk\n#\n'
                                         'INITRD_MODULES="processor thermal ata_piix ata_generic fan jbd ext3"\n'
                                         '\nMODULES_LOADED_ON_BOOT=""\n')
    executables(root, "/sbin/mkinitrd", "/bin/lsinitrd")
    kernel(root, SLES11_KERNEL, COMMON_MODULES + [MPTSPI], ".ko")
    guest = FakeGuest.for_root(root, family="suse")
    guest.build_mkinitrd_image(SLES11_KERNEL)
    inventory = {"hostname": "legacy01", "os": {"id": "sles", "version_id": "11.4"}, "layout": {}}
    return Tree(root, inventory, Target(nics=[Nic(MAC_DST)]), family="suse")


# -- the fake guest -------------------------------------------------------------------------------------
READ_ONLY_COMMANDS = {"dpkg-query", "lsinitramfs", "lsinitrd"}
STAGED_GRUB_CFG = STATE_DIR + "/grub.cfg.new"
HOSTONLY = "/var/lib/fake-guest/hostonly.json"


def changing_calls(calls: List[List[str]]) -> List[List[str]]:
    """The commands of a run that may change the replica (queries and grub-mkconfig into its
    scratch file left out)."""
    def read_only(argv: List[str]) -> bool:
        name = os.path.basename(argv[0])
        return (name in READ_ONLY_COMMANDS or (name == "rpm" and argv[1:2] == ["-qa"])
                or (name.endswith("-mkconfig") and argv[1:] == ["-o", STAGED_GRUB_CFG]))
    return [argv for argv in calls if not read_only(argv)]


class FakeGuest:
    """A recording Runner standing in for the guest's tools (see the module docstring)."""

    def __init__(self, tree_or_root: Any, family: Optional[str] = None, hostonly: Optional[List[str]] = None):
        if isinstance(tree_or_root, Tree):
            self.root = tree_or_root.root
            family = family or tree_or_root.facts.get("family")
        else:
            self.root = tree_or_root
        self.family = family
        self._ctx = FixupContext(self.root, {}, Target(), self)
        self.hostonly = hostonly if hostonly is not None else json.loads(self.read(HOSTONLY) or "[]")
        self.calls: List[List[str]] = []
        self.envs: List[Dict[str, str]] = []
        self.failing: Dict[str, str] = {}       # command name → stderr of a simulated failure

    @classmethod
    def for_root(cls, root: str, family: str) -> "FakeGuest":
        return cls(root, family)

    def set_hostonly(self, drivers: List[str]) -> None:
        """The drivers a host-only dracut finds in use where the image is built (kept in the
        tree, so every FakeGuest of it builds alike)."""
        self.hostonly = drivers
        self.put(HOSTONLY, json.dumps(drivers))

    def host(self, guest_path: str) -> str:
        return self._ctx.host_path(guest_path)

    def read(self, guest_path: str) -> Optional[str]:
        try:
            with open(self.host(guest_path)) as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def put(self, guest_path: str, text: str, mode: int = 0o644) -> None:
        host = self.host(guest_path)
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, "w") as f:
            f.write(text)
        os.chmod(host, mode)

    # -- the Runner interface ------------------------------------------------------------------------
    def __call__(self, argv, *, env=None, timeout=1800) -> subprocess.CompletedProcess:
        argv = list(argv)
        self.calls.append(argv)
        self.envs.append(dict(env or {}))
        name = os.path.basename(argv[0])
        handler = getattr(self, "cmd_" + name.replace("-", "_"), None)
        assert handler is not None, f"FakeGuest does not simulate {name}"
        if not self._in_guest_path(name):
            return subprocess.CompletedProcess(argv, 127, b"", f"chroot: failed to run '{name}'".encode())
        if name in self.failing:
            return subprocess.CompletedProcess(argv, 1, b"", self.failing[name].encode())
        result = handler(argv[1:], env or {})
        code, out, err = result if isinstance(result, tuple) else (0, result or "", "")
        return subprocess.CompletedProcess(argv, code, out.encode(), err.encode())

    def _in_guest_path(self, name: str) -> bool:
        return any(os.path.isfile(self.host(f"{d}/{name}")) for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"))

    # -- packages ------------------------------------------------------------------------------------
    def _dpkg_packages(self) -> List[str]:
        text = self.read("/var/lib/dpkg/status") or ""
        return re.findall(r"^Package: (\S+)$", text, re.M)

    def cmd_dpkg_query(self, args, env):
        assert args[:2] == ["-W", "-f"], args
        return "".join(f"{p}\tinstall ok installed\n" for p in self._dpkg_packages())

    def cmd_dpkg(self, args, env):
        if args[0] == "--purge":
            status = self.read("/var/lib/dpkg/status") or ""
            for name in args[1:]:
                status = re.sub(rf"^Package: {re.escape(name)}\n(?:.+\n)*\n?", "", status, flags=re.M)
                for path in (self.read(f"/var/lib/dpkg/info/{name}.list") or "").split():
                    self._unlink(path)
                self._unlink(f"/var/lib/dpkg/info/{name}.list")
            self.put("/var/lib/dpkg/status", status)
            return ""
        assert args[0] == "-i", args
        status = self.read("/var/lib/dpkg/status") or ""
        for guest_file in args[1:]:
            package = self._install_package_file(guest_file)
            if package not in self._dpkg_packages():
                status += dpkg_status([package])
        self.put("/var/lib/dpkg/status", status)
        return "Selecting previously unselected package open-vm-tools.\n"

    def _rpmdb(self) -> Dict[str, Any]:
        return json.loads(self.read(RPMDB) or "{}")

    def cmd_rpm(self, args, env):
        db = self._rpmdb()
        if args[0] == "-qa":
            return "".join(f"{name}\n" for name in sorted(db))
        if args[0] == "-e":
            assert args[1] == "--nodeps", args
            for name in args[2:]:
                if name not in db:
                    return 1, "", f"error: package {name} is not installed\n"
                for path in db.pop(name)["files"]:
                    self._unlink(path)
        else:
            assert args[0] == "-Uvh", args
            for guest_file in args[1:]:
                name = self._install_package_file(guest_file)
                db[name] = {"files": []}
        self.put(RPMDB, json.dumps(db))
        return ""

    def _install_package_file(self, guest_file: str) -> str:
        package = json.loads(self.read(guest_file))
        for path, text in package["files"].items():
            self.put(path, text, 0o755 if "/bin/" in path else 0o644)
        return package["name"]

    def _unlink(self, guest_path: str) -> None:
        try:
            os.unlink(self._ctx.host_path_nofollow(guest_path))
        except FileNotFoundError:
            pass

    # -- kernels and initramfs images ----------------------------------------------------------------
    def modules(self, version: str) -> Dict[str, str]:
        """module name → path below /lib/modules/<version>."""
        found = {}
        for line in (self.read(f"/lib/modules/{version}/modules.dep") or "").splitlines():
            path = line.split(":")[0]
            found[re.sub(r"\.ko(\.\w+)?$", "", os.path.basename(path)).replace("-", "_")] = path
        return found

    def _write_image(self, image: str, version: str, names: List[str]) -> None:
        modules = self.modules(version)
        paths = ["usr/bin/udevadm", "usr/lib/systemd/systemd", "etc/fstab"]
        paths += [f"usr/lib/modules/{version}/{modules[n]}" for n in sorted(set(names)) if n in modules]
        self.put(image, "FAKE-INITRAMFS\n" + "\n".join(paths) + "\n")

    def _image_paths(self, image: str) -> Optional[List[str]]:
        text = self.read(image)
        if text is None or not text.startswith("FAKE-INITRAMFS\n"):
            return None
        return text.split("\n")[1:-1]

    def build_initramfs_tools_image(self, version: str) -> None:
        """What mkinitramfs picks with MODULES=most: all disk drivers and the root file system,
        plus /etc/initramfs-tools/modules (no NIC driver unless listed there)."""
        conf = self.read("/etc/initramfs-tools/initramfs.conf") or ""
        names = []
        if re.search(r"^MODULES=most$", conf, re.M):
            names += [n for n, p in self.modules(version).items()
                      if re.match(r"kernel/drivers/(scsi|ata|message|block|md)/", p)] + ["ext4"]
        for line in (self.read("/etc/initramfs-tools/modules") or "").splitlines():
            if line.strip() and not line.startswith("#"):
                names.append(line.split()[0])
        self._write_image(f"/boot/initrd.img-{version}", version, names)

    def cmd_update_initramfs(self, args, env):
        mode, version = args[0], args[args.index("-k") + 1]
        image = f"/boot/initrd.img-{version}"
        if mode == "-u" and self.read(image) is None:
            return 1, "", f"update-initramfs: {image} does not exist. Cannot update.\n"
        self.build_initramfs_tools_image(version)
        return f"update-initramfs: Generating {image}\n"

    def cmd_lsinitramfs(self, args, env):
        paths = self._image_paths(args[-1])
        if paths is None:
            return 1, "", f"lsinitramfs: {args[-1]}: not an initramfs image\n"
        return ".\n" + "".join(p + "\n" for p in paths)

    def _dracut_config_drivers(self) -> List[str]:
        names = []
        confs = ["/etc/dracut.conf"] + sorted(
            f"/etc/dracut.conf.d/{n}" for n in os.listdir(self.host("/etc/dracut.conf.d"))
            if n.endswith(".conf")) if os.path.isdir(self.host("/etc/dracut.conf.d")) else ["/etc/dracut.conf"]
        for conf in confs:
            for value in re.findall(r'^add_drivers\+="([^"]*)"', self.read(conf) or "", re.M):
                names += value.split()
        return names

    def build_dracut_image(self, version: str, image: str, use_config: bool = True,
                           extra: List[str] = ()) -> Optional[str]:
        """Host-only dracut: the drivers in use on the machine building it, plus add_drivers.
        A driver named there that the kernel lacks is fatal, as in dracut."""
        wanted = list(extra) + (self._dracut_config_drivers() if use_config else [])
        modules = self.modules(version)
        for name in wanted:
            if name.replace("-", "_") not in modules:
                return f"dracut-install: Failed to find module '{name}'\ndracut: FAILED: dracut-install\n"
        self._write_image(image, version, list(self.hostonly) + [n.replace("-", "_") for n in wanted])
        return None

    def cmd_dracut(self, args, env):
        extra = []
        if "--add-drivers" in args:
            at = args.index("--add-drivers")
            extra = args[at + 1].split()
            args = args[:at] + args[at + 2:]
        assert args[0] == "-f", args
        image, version = args[1], args[2]
        error = self.build_dracut_image(version, image, extra=extra)
        return (1, "", error) if error else ""

    def cmd_lsinitrd(self, args, env):
        paths = self._image_paths(args[-1])
        if paths is None:
            return 1, "", f"lsinitrd: {args[-1]}: not a dracut image\n"
        header = (f"Image: {args[-1]}: 31M\n" + "=" * 72 + "\nVersion: dracut-057-44.git20230822.el9\n\n"
                  "Arguments: -f\n\ndracut modules:\nbash\nsystemd\nkernel-modules\nlvm\nrootfs-block\n" + "=" * 72 + "\n")
        return header + "".join(f"-rw-r--r--   1 root     root        41234 Nov 14 10:12 {p}\n" for p in paths)

    def build_mkinitrd_image(self, version: str) -> None:
        listed = re.search(r'^INITRD_MODULES="([^"]*)"', self.read("/etc/sysconfig/kernel") or "", re.M)
        self._write_image(f"/boot/initrd-{version}", version, (listed.group(1).split() if listed else []) + ["ext3"])

    def cmd_mkinitrd(self, args, env):
        kernel_image = args[args.index("-k") + 1]
        self.build_mkinitrd_image(kernel_image.split("vmlinuz-", 1)[1])
        return ""

    # -- GRUB ----------------------------------------------------------------------------------------
    def _grub_mkconfig(self, args, env):
        from osam.fixup.guest import parse_assignments
        assert args[0] == "-o", args
        defaults = parse_assignments(self.read("/etc/default/grub"))
        cmdline = " ".join(v for v in (defaults.get("GRUB_CMDLINE_LINUX"), defaults.get("GRUB_CMDLINE_LINUX_DEFAULT")) if v)
        by_uuid = defaults.get("GRUB_DISABLE_LINUX_UUID") != "true"
        root = f"UUID={ROOT_UUID}" if by_uuid else DEVICES["by_uuid"][ROOT_UUID]
        text = ("#\n# DO NOT EDIT THIS FILE\n#\n# It is automatically generated by grub-mkconfig using templates\n"
                "# from /etc/grub.d and settings from /etc/default/grub\n#\n"
                f"set timeout={defaults.get('GRUB_TIMEOUT', '5')}\n")
        if defaults.get("GRUB_ENABLE_BLSCFG") == "true":
            text += "insmod blscfg\nblscfg\n"
        else:
            versions = sorted(os.listdir(self.host("/lib/modules")), reverse=True)
            for version in versions:
                text += (f"menuentry 'Linux {version}' {{\n\tlinux /vmlinuz-{version} root={root} ro {cmdline}\n"
                         f"\tinitrd /initrd.img-{version}\n}}\n")
        self.put(args[1], text, 0o600 if self.family != "debian" else 0o444)
        return 0, "", "Generating grub configuration file ...\ndone\n"

    cmd_grub_mkconfig = _grub_mkconfig
    cmd_grub2_mkconfig = _grub_mkconfig

    def cmd_grub_install(self, args, env):
        return 0, "", "Installing for i386-pc platform.\nInstallation finished. No error reported.\n"

    cmd_grub2_install = cmd_grub_install
