"""Every installed kernel's initramfs carries the drivers of VMware's virtual hardware.

The replica's root disk sits on a pvscsi controller on the destination (the source had
virtio, Hyper-V, SATA, ...), so the storage driver must be in the initramfs or the first boot
ends in the dracut/initramfs shell. The NIC driver and the other controllers VMware may
present (ahci, ata_piix, mptspi) come along; sd_mod because a host-only dracut image built
in a chroot on a loop device would not otherwise carry the SCSI disk driver.

Only modules the kernel has as loadable files are asked for (built-in ones need nothing);
the storage driver missing from a kernel is an error naming that kernel.

The distribution's own configuration is extended so later kernel updates keep the drivers:
  initramfs-tools  /etc/initramfs-tools/modules, then update-initramfs -u|-c -k <version>
  dracut           /etc/dracut.conf.d/vmware-osam.conf, then dracut -f <image> <version>
  mkinitrd (SLES 11) INITRD_MODULES in /etc/sysconfig/kernel, then mkinitrd -k ... -i ...
An image is rebuilt only when that configuration changed or its listing (lsinitramfs,
lsinitrd) lacks a driver, and is listed again afterwards to prove the drivers are in.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Set, Tuple

from .context import FixupContext, FixupError
from .devices import DeviceMap, is_unstable_device_path
from .distro import DEBIAN, RHEL, SUSE
from .guest import errors, family, find_executable, is_dry_run, output, parse_assignments, query

STEP = "initramfs"

# In the order they are listed in configuration files.
VMWARE_DRIVERS = ("sd_mod", "vmw_pvscsi", "vmxnet3", "ahci", "ata_piix", "mptspi")
NIC_DRIVERS = {"vmxnet3": "vmxnet3", "e1000": "e1000", "e1000e": "e1000e"}

_MODULE_FILE = re.compile(r"([A-Za-z0-9_-]+)\.ko(?:\.(?:xz|gz|zst|bz2))?$")
_MODULE_IN_LISTING = re.compile(r"([A-Za-z0-9_-]+)\.ko(?:\.(?:xz|gz|zst|bz2))?\b")
CONFIG_HEADER = "# vmware.osam: drivers of VMware's virtual hardware (disk controller, NIC)"


def apply(ctx: FixupContext) -> None:
    kernels = ctx.facts.get("kernels") or []
    wanted = {version: drivers_for_kernel(ctx, version) for version in kernels}
    backend = backend_for(ctx)
    config_changed = backend.configure(ctx, wanted)
    can_list = find_executable(ctx, backend.lister) is not None
    for version in kernels:
        image = backend.image(version)
        if not config_changed and not _image_lacks_drivers(ctx, backend, can_list, image, wanted[version]):
            continue
        backend.regenerate(ctx, version, wanted)
        if can_list and not is_dry_run(ctx):
            still = wanted[version] - image_modules(ctx, backend, image)
            if still:
                raise FixupError(f"{image} still lacks {', '.join(_ordered(still))} after "
                                 f"{backend.name} rebuilt it")


def _image_lacks_drivers(ctx: FixupContext, backend: "Backend", can_list: bool, image: str,
                         drivers: Set[str]) -> bool:
    if not ctx.exists(image):
        return True
    if not can_list:
        ctx.warn(STEP, f"the replica has no {backend.lister}, so the drivers in {image} cannot be "
                       f"checked; the image is left as it is")
        return False
    return bool(drivers - image_modules(ctx, backend, image))


# -- what each kernel needs -----------------------------------------------------------------
def drivers_for_kernel(ctx: FixupContext, version: str) -> Set[str]:
    """The VMware drivers this kernel has as loadable modules; FixupError when it has no
    storage driver for the destination at all."""
    loadable, builtin = kernel_modules(ctx, version)
    storage = _module_name(ctx.target.storage_driver or "vmw_pvscsi")
    if storage not in loadable and storage not in builtin:
        raise FixupError(f"kernel {version} has no {storage} driver (not in /lib/modules/{version}): "
                         f"it cannot find its disks on the destination; install a kernel that has it "
                         f"or remove this kernel from the source before migrating")
    names = list(VMWARE_DRIVERS) + [storage]
    names += [NIC_DRIVERS[n.model] for n in ctx.target.nics if n.model in NIC_DRIVERS]
    return {name for name in names if name in loadable}


def kernel_modules(ctx: FixupContext, version: str) -> Tuple[Set[str], Set[str]]:
    """(loadable, built-in) module names of a kernel, '-' written as '_'."""
    base = f"/lib/modules/{version}"
    dep = ctx.read_text(base + "/modules.dep")
    if dep is not None:
        loadable = {_module_name(line.split(":", 1)[0]) for line in dep.splitlines() if ":" in line}
    else:
        loadable = _walk_modules(ctx.host_path(base))
    builtin = {_module_name(line) for line in (ctx.read_text(base + "/modules.builtin") or "").split()}
    loadable.discard("")
    builtin.discard("")
    return loadable, builtin


def _walk_modules(host_dir: str) -> Set[str]:
    names = set()
    for _, _, files in os.walk(host_dir):
        names.update(_module_name(f) for f in files if _MODULE_FILE.search(f))
    return names


def _module_name(path_or_name: str) -> str:
    base = os.path.basename(path_or_name.strip())
    match = _MODULE_FILE.search(base)
    return (match.group(1) if match else base).replace("-", "_")


def image_modules(ctx: FixupContext, backend: "Backend", image: str) -> Set[str]:
    done = query(ctx, [backend.lister, image])
    if done.returncode != 0:
        ctx.warn(STEP, f"{backend.lister} {image} exited {done.returncode}: {errors(done)}")
        return set()
    return {m.replace("-", "_") for m in _MODULE_IN_LISTING.findall(output(done))}


def _ordered(names: Set[str]) -> List[str]:
    order = {name: i for i, name in enumerate(VMWARE_DRIVERS)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


# -- backends ---------------------------------------------------------------------------------
class Backend:
    name = ""
    lister = "lsinitrd"

    def image(self, version: str) -> str:
        raise NotImplementedError

    def configure(self, ctx: FixupContext, wanted: Dict[str, Set[str]]) -> bool:
        raise NotImplementedError

    def regenerate(self, ctx: FixupContext, version: str, wanted: Dict[str, Set[str]]) -> None:
        raise NotImplementedError


class InitramfsTools(Backend):
    """Debian, Ubuntu. /etc/initramfs-tools/modules lists modules to add (and load)."""
    name = "update-initramfs"
    lister = "lsinitramfs"
    config = "/etc/initramfs-tools/modules"

    def image(self, version: str) -> str:
        return f"/boot/initrd.img-{version}"

    def configure(self, ctx: FixupContext, wanted: Dict[str, Set[str]]) -> bool:
        modules_changed = self._list_modules(ctx, set().union(*wanted.values()) if wanted else set())
        resume_changed = fix_resume_file(ctx)
        return modules_changed or resume_changed

    def _list_modules(self, ctx: FixupContext, names: Set[str]) -> bool:
        text = ctx.read_text(self.config) or ""
        listed = {_module_name(line.split()[0]) for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith("#")}
        missing = _ordered(names - listed)
        if not missing:
            return False
        if text and not text.endswith("\n"):
            text += "\n"
        if CONFIG_HEADER not in text:
            text += ("\n" if text else "") + CONFIG_HEADER + "\n"
        text += "".join(name + "\n" for name in missing)
        return ctx.write_text(self.config, text, STEP, f"added {' '.join(missing)}")

    def regenerate(self, ctx: FixupContext, version: str, wanted: Dict[str, Set[str]]) -> None:
        mode = "-u" if ctx.exists(self.image(version)) else "-c"
        ctx.run(["update-initramfs", mode, "-k", version], STEP,
                f"initramfs of {version} rebuilt with {' '.join(_ordered(wanted[version]))}")


class Dracut(Backend):
    """RHEL family, SLES 12 and later. A driver named in add_drivers that a kernel lacks
    stops dracut, so the configuration file names the drivers every kernel has and the
    command line adds a kernel's own extras."""
    name = "dracut"
    config = "/etc/dracut.conf.d/vmware-osam.conf"

    def __init__(self, image_pattern: str):
        self.image_pattern = image_pattern

    def image(self, version: str) -> str:
        return self.image_pattern.format(version=version)

    def configure(self, ctx: FixupContext, wanted: Dict[str, Set[str]]) -> bool:
        common = _ordered(set.intersection(*wanted.values())) if wanted else []
        text = (CONFIG_HEADER + "\n"
                "# (the drivers every installed kernel has; dracut's command line adds a kernel's others)\n"
                f'add_drivers+=" {" ".join(common)} "\n')
        modules = storage_dracut_modules(ctx)
        if modules:
            text += ("# The replica is built on the receiver's loop devices, where a host-only dracut\n"
                     "# cannot see the source's LVM, RAID or encryption: name them.\n"
                     f'add_dracutmodules+=" {" ".join(modules)} "\n')
        detail = f"dracut adds {' '.join(common)}" + (f" and its {', '.join(modules)} modules" if modules else "")
        return ctx.write_text(self.config, text, STEP, detail)

    def regenerate(self, ctx: FixupContext, version: str, wanted: Dict[str, Set[str]]) -> None:
        common = set.intersection(*wanted.values())
        extra = _ordered(wanted[version] - common)
        argv = ["dracut", "-f", self.image(version), version]
        if extra:
            argv += ["--add-drivers", " ".join(extra)]
        ctx.run(argv, STEP, f"initramfs of {version} rebuilt with {' '.join(_ordered(wanted[version]))}")


class SuseMkinitrd(Backend):
    """SLES 11: mkinitrd reads INITRD_MODULES from /etc/sysconfig/kernel."""
    name = "mkinitrd"
    config = "/etc/sysconfig/kernel"

    def image(self, version: str) -> str:
        return f"/boot/initrd-{version}"

    def configure(self, ctx: FixupContext, wanted: Dict[str, Set[str]]) -> bool:
        names = set().union(*wanted.values()) if wanted else set()
        text = ctx.read_text(self.config) or ""
        listed = parse_assignments(text).get("INITRD_MODULES", "").split()
        missing = _ordered(names - {_module_name(n) for n in listed})
        if not missing:
            return False
        value = " ".join(listed + missing)
        line = f'INITRD_MODULES="{value}"'
        pattern = re.compile(r"^\s*INITRD_MODULES=.*$", re.M)
        text = pattern.sub(lambda _: line, text, count=1) if pattern.search(text) else \
            text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
        return ctx.write_text(self.config, text, STEP, f"INITRD_MODULES gains {' '.join(missing)}")

    def regenerate(self, ctx: FixupContext, version: str, wanted: Dict[str, Set[str]]) -> None:
        ctx.run(["mkinitrd", "-k", f"/boot/vmlinuz-{version}", "-i", self.image(version)], STEP,
                f"initramfs of {version} rebuilt with {' '.join(_ordered(wanted[version]))}")


def storage_dracut_modules(ctx: FixupContext) -> List[str]:
    """dracut modules the source's storage stack needs at boot (lvm, crypt, mdraid), as the
    inventory describes it, among those the guest's dracut has."""
    filesystems = [fs for fs in ctx.layout.get("filesystems") or [] if isinstance(fs, dict)]
    devices = [str(fs.get("device") or "") for fs in filesystems]
    needed = []
    on_mapper = bool(ctx.layout.get("lvm")) and any(d.startswith("/dev/mapper/") for d in devices)
    if on_mapper or any((fs.get("parent") or {}).get("kind") == "lv" for fs in filesystems):
        needed.append("lvm")
    if any(fs.get("fstype") == "crypto_LUKS" for fs in filesystems):
        needed.append("crypt")
    if any(d.startswith("/dev/md") for d in devices):
        needed.append("mdraid")
    available = {re.sub(r"^\d+", "", name) for name in ctx.listdir("/usr/lib/dracut/modules.d")}
    return [name for name in needed if name in available]


def backend_for(ctx: FixupContext) -> Backend:
    tool = ctx.facts.get("initramfs_tool")
    fam = family(ctx)
    major = (ctx.facts["distro"].get("version") or [0])[0]
    if tool == "update-initramfs":
        return InitramfsTools()
    if tool == "dracut" and not (fam == SUSE and major and major < 12):
        pattern = {RHEL: "/boot/initramfs-{version}.img", SUSE: "/boot/initrd-{version}",
                   DEBIAN: "/boot/initrd.img-{version}"}[fam]
        return Dracut(pattern)
    if tool == "mkinitrd" and fam == SUSE:
        return SuseMkinitrd()
    raise FixupError(f"no supported initramfs tool in the replica ({tool or 'none found'} on "
                     f"{ctx.facts['distro'].get('pretty_name')})")


# -- resume device baked into initramfs-tools images -----------------------------------------
RESUME_FILE = "/etc/initramfs-tools/conf.d/resume"


def fix_resume_file(ctx: FixupContext) -> bool:
    """RESUME=/dev/sda5 names a device by its old kernel name: use its UUID, or none."""
    text = ctx.read_text(RESUME_FILE)
    if text is None:
        return False
    devices = DeviceMap(ctx.inventory)
    lines = []
    for line in text.splitlines(keepends=True):
        match = re.match(r"^(\s*RESUME=)([\"']?)(\S+?)\2(\s*)$", line)
        if match and is_unstable_device_path(match.group(3)):
            uuid = devices.uuid_for(match.group(3))
            if not uuid:
                ctx.warn(STEP, f"{RESUME_FILE}: {match.group(3)} is not in the inventory; resume disabled")
            line = f"{match.group(1)}{'UUID=' + uuid if uuid else 'none'}{match.group(4)}"
        lines.append(line)
    return ctx.write_text(RESUME_FILE, "".join(lines), STEP,
                          "the resume device named by UUID (kernel device names change)")
