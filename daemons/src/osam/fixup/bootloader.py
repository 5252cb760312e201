"""The replica boots on the destination's firmware: GRUB configuration regenerated in the
chroot, the BIOS boot code installed on the boot disk, or the UEFI removable-media path
filled (VMware's firmware has no boot entry for the VM yet, and NVRAM is never written).

Kernel command lines lose device names that depended on the old hardware: resume=/dev/sda5
becomes resume=UUID=... (the replica keeps UUIDs) or is dropped when the inventory does not
know it; GRUB_DISABLE_LINUX_UUID=true is turned off, since grub-mkconfig would otherwise
write the receiver's loop device as root=.

grub-mkconfig runs on every fix-up (it is cheap), into a scratch file; grub.cfg is replaced,
backed up and reported only when the content differs. Writing boot code to the disk cannot
be checked afterwards, so a marker in the replica (STATE_DIR/bootloader.json, naming the boot
disk and its partition table id) makes a second run skip it.
"""
from __future__ import annotations

import json
import os
import re
import stat
from typing import Any, Dict, List, Optional

from .context import STATE_DIR, FixupContext, FixupError
from .devices import DeviceMap, is_unstable_device_path
from .distro import RHEL
from .guest import errors, family, is_dry_run, query

STEP = "bootloader"

MARKER = STATE_DIR + "/bootloader.json"
STAGED_CFG = STATE_DIR + "/grub.cfg.new"
DEFAULT_GRUB = "/etc/default/grub"
BLS_DIR = "/boot/loader/entries"
FALLBACK_LOADER = "BOOTX64.EFI"
# os-release ID → the directory its shim and grub live in on the ESP.
EFI_VENDOR_DIR = {"rhel": "redhat", "ol": "redhat", "centos": "centos", "rocky": "rocky",
                  "almalinux": "almalinux", "fedora": "fedora", "debian": "debian", "ubuntu": "ubuntu",
                  "sles": "sles", "sled": "sled", "opensuse-leap": "opensuse",
                  "opensuse-tumbleweed": "opensuse", "opensuse": "opensuse"}
GRUB_FS_MODULE = {"ext2": "ext2", "ext3": "ext2", "ext4": "ext2", "xfs": "xfs", "btrfs": "btrfs"}
GRUB_PART_MODULE = {"dos": "part_msdos", "gpt": "part_gpt"}


def apply(ctx: FixupContext) -> None:
    mode = boot_mode(ctx)
    fix_default_grub(ctx)
    fix_bls_entries(ctx)
    loader = ctx.facts.get("bootloader") or {}
    if loader.get("kind") == "grub2":
        regenerate_grub_config(ctx, mode)
    elif mode == "bios":
        raise FixupError(f"the replica boots with {loader.get('kind') or 'an unknown bootloader'}: only "
                         f"GRUB 2 can be installed for BIOS boot")
    else:
        ctx.warn(STEP, "no GRUB 2 in the replica; its EFI boot loader is kept as it is")
    if mode == "bios":
        install_bios_boot_code(ctx)
    else:
        ensure_uefi_fallback(ctx)


def boot_mode(ctx: FixupContext) -> str:
    """The firmware the replica will boot with; the source's mode must match the VM's."""
    boot = ctx.layout.get("boot")
    source = (boot or {}).get("mode") if isinstance(boot, dict) else None
    if not source and isinstance(ctx.inventory.get("boot"), str):
        source = ctx.inventory["boot"]
    destination = ctx.target.firmware
    if source and destination and source != destination:
        raise FixupError(f"the source boots with {source} but the destination VM's firmware is "
                         f"{destination}: converting between them is not supported; create the VM "
                         f"with {source} firmware")
    return source or destination or "bios"


# -- kernel command lines ------------------------------------------------------------------------
_CMDLINE_VAR = re.compile(r"^(\s*(?:export\s+)?GRUB_CMDLINE_LINUX(?:_DEFAULT)?=)(.*)$")
_DEVICE_ARG = re.compile(r"(?P<lead>[ \t]*)(?<![^\s\"'=])(?P<key>resume|root)=(?P<device>/dev/[^\s\"']+)"
                         r"(?P<trail>[ \t]*)")


def fix_default_grub(ctx: FixupContext) -> None:
    text = ctx.read_text(DEFAULT_GRUB)
    if text is None:
        return
    devices = DeviceMap(ctx.inventory)
    lines = []
    for line in text.splitlines(keepends=True):
        match = _CMDLINE_VAR.match(line)
        if match:
            line = rewrite_device_args(ctx, line, devices, DEFAULT_GRUB)
        elif re.match(r"^\s*GRUB_DISABLE_LINUX_UUID=[\"']?true[\"']?\s*$", line):
            line = ("# vmware.osam: grub-mkconfig must name the root file system by UUID, the "
                    "device names change\n#" + line)
        lines.append(line)
    ctx.write_text(DEFAULT_GRUB, "".join(lines), STEP, "kernel command line names devices by UUID")


def fix_bls_entries(ctx: FixupContext) -> None:
    devices = DeviceMap(ctx.inventory)
    for entry in ctx.glob(BLS_DIR, lambda n: n.endswith(".conf")):
        text = ctx.read_text(entry) or ""
        lines = []
        for line in text.splitlines(keepends=True):
            if re.match(r"^\s*options\s", line):
                line = rewrite_device_args(ctx, line, devices, entry)
            lines.append(line)
        ctx.write_text(entry, "".join(lines), STEP, "kernel command line names devices by UUID")


def rewrite_device_args(ctx: FixupContext, line: str, devices: DeviceMap, where: str) -> str:
    """resume=/root= naming an old kernel device name → UUID=; an unknown resume= goes."""
    body = line.rstrip("\r\n")
    newline = line[len(body):]
    dropped = []

    def replace(match: "re.Match[str]") -> str:
        key, device = match.group("key"), match.group("device")
        lead, trail = match.group("lead"), match.group("trail")
        if not is_unstable_device_path(device):
            return match.group(0)
        uuid = devices.uuid_for(device, "/" if key == "root" else None)
        if uuid:
            return f"{lead}{key}=UUID={uuid}{trail}"
        if key == "resume":
            ctx.warn(STEP, f"{where}: resume={device} is not in the inventory; dropped")
            dropped.append(device)
            return lead if lead and trail else ""
        ctx.warn(STEP, f"{where}: root={device} is not in the inventory; left as it is")
        return match.group(0)

    body = _DEVICE_ARG.sub(replace, body)
    if dropped:     # no blank left before a closing quote or the end of the line
        body = re.sub(r"[ \t]+(?=[\"']?$)", "", body)
    return body + newline


# -- grub.cfg --------------------------------------------------------------------------------------
def regenerate_grub_config(ctx: FixupContext, mode: str) -> None:
    loader = ctx.facts["bootloader"]
    cfg = grub_cfg_path(ctx, mode)
    mkconfig = os.path.basename(loader["mkconfig"])
    if is_dry_run(ctx):
        ctx.note(STEP, f"would regenerate {cfg} with {mkconfig} (written only if it differs)")
        return
    staged_host = ctx.host_path(STAGED_CFG)
    os.makedirs(os.path.dirname(staged_host), exist_ok=True)
    # os-prober would look at the receiver's disks; the replica has no other OS to find.
    done = query(ctx, [mkconfig, "-o", STAGED_CFG], env={"GRUB_DISABLE_OS_PROBER": "true"})
    if done.returncode != 0:
        raise FixupError(f"{mkconfig} -o {STAGED_CFG} exited {done.returncode}: {errors(done)}")
    try:
        with open(staged_host, "rb") as f:
            new = f.read()
        staged_mode = stat.S_IMODE(os.stat(staged_host).st_mode)
    except FileNotFoundError:
        raise FixupError(f"{mkconfig} wrote no {STAGED_CFG}") from None
    finally:
        _unlink_quietly(staged_host)
    check_no_receiver_devices(ctx, new.decode("utf-8", "replace"))
    ctx.write_bytes(cfg, new, STEP, f"regenerated by {mkconfig}",
                    mode=None if ctx.exists(cfg) else staged_mode)


def grub_cfg_path(ctx: FixupContext, mode: str) -> str:
    """Where this distribution keeps its real grub.cfg: the ESP for UEFI RHEL before 9
    (Fedora before 34), /boot/grub2 or /boot/grub otherwise."""
    distro = ctx.facts["distro"]
    if mode == "uefi" and family(ctx) == RHEL and _efi_grub_cfg_release(distro):
        esp = esp_mountpoint(ctx)
        vendor = efi_vendor_dir(ctx, esp)
        if vendor:
            return f"{vendor}/grub.cfg"
    return ctx.facts["bootloader"]["grub_dir"] + "/grub.cfg"


def _efi_grub_cfg_release(distro: Dict[str, Any]) -> bool:
    major = (distro.get("version") or [0])[0]
    return major < 34 if distro["id"] == "fedora" else major < 9


def check_no_receiver_devices(ctx: FixupContext, cfg_text: str) -> None:
    for device in receiver_devices(ctx):
        if re.search(re.escape(device) + r"(?![\w/])", cfg_text):
            raise FixupError(f"the generated grub.cfg names the receiver's device {device}: it would "
                             f"not boot on the destination")


def receiver_devices(ctx: FixupContext) -> List[str]:
    devices = ctx.facts.get("devices") or {}
    names = [devices.get("boot_disk") or ""]
    names += list((devices.get("by_uuid") or {}).values())
    names += list(devices.get("nodes") or [])
    names += list((devices.get("mapper") or {}).values())
    return sorted({n for n in names if isinstance(n, str) and n.startswith("/dev/")}, key=len, reverse=True)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- BIOS ------------------------------------------------------------------------------------------
def install_bios_boot_code(ctx: FixupContext) -> None:
    device = (ctx.facts.get("devices") or {}).get("boot_disk")
    if not device:
        raise FixupError("BIOS boot: the receiver did not say which device is the boot disk "
                         "(ctx.facts['devices']['boot_disk'])")
    disk = boot_disk(ctx)
    marker = {"mode": "bios", "target": "i386-pc", "boot_disk": disk.get("name"),
              "ptuuid": _partition_table(disk).get("id")}
    if _read_marker(ctx) == marker:
        return
    install = os.path.basename(ctx.facts["bootloader"].get("install") or "grub-install")
    argv = [install, "--target=i386-pc"]
    modules = grub_modules(ctx, disk)
    if modules:
        argv.append("--modules=" + " ".join(modules))
    ctx.run(argv + [device], STEP, "GRUB boot code written to the boot disk")
    ctx.write_text(MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n", STEP,
                   "records the boot code install, so a later run does not repeat it")


def boot_disk(ctx: FixupContext) -> Dict[str, Any]:
    name = (ctx.layout.get("boot") or {}).get("boot_disk")
    disks = [d for d in ctx.layout.get("disks") or [] if isinstance(d, dict)]
    for disk in disks:
        if name and disk.get("name") == name:
            return disk
    return disks[0] if disks and not name else {"name": name}


def _partition_table(disk: Dict[str, Any]) -> Dict[str, Any]:
    table = disk.get("partition_table") or {}
    return table.get("partitiontable", table) if isinstance(table, dict) else {}


def grub_modules(ctx: FixupContext, disk: Dict[str, Any]) -> List[str]:
    """The partition map and /boot file system modules GRUB's core image needs (grub-install
    probes them too; naming them keeps it working where probing a loop device falls short)."""
    modules = []
    label = _partition_table(disk).get("label")
    if label in GRUB_PART_MODULE:
        modules.append(GRUB_PART_MODULE[label])
    filesystems = [fs for fs in ctx.layout.get("filesystems") or [] if isinstance(fs, dict)]
    boot_fs = next((fs for fs in filesystems if fs.get("mountpoint") == "/boot"), None) or \
        next((fs for fs in filesystems if fs.get("mountpoint") == "/"), None)
    if boot_fs:
        if (boot_fs.get("parent") or {}).get("kind") == "lv" or \
                str(boot_fs.get("device", "")).startswith("/dev/mapper/"):
            modules.append("lvm")
        if boot_fs.get("fstype") in GRUB_FS_MODULE:
            modules.append(GRUB_FS_MODULE[boot_fs["fstype"]])
    return modules


def _read_marker(ctx: FixupContext) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(ctx.read_text(MARKER) or "null")
    except ValueError:
        return None


# -- UEFI ------------------------------------------------------------------------------------------
def esp_mountpoint(ctx: FixupContext) -> str:
    for fs in ctx.layout.get("filesystems") or []:
        if isinstance(fs, dict) and fs.get("fstype") == "vfat" and fs.get("mountpoint") in ("/boot/efi", "/efi"):
            return fs["mountpoint"]
    for candidate in ("/boot/efi", "/efi"):
        if _child_ci(ctx, candidate, "EFI"):
            return candidate
    return "/boot/efi"


def efi_vendor_dir(ctx: FixupContext, esp: str) -> Optional[str]:
    """Guest path of the distribution's directory on the ESP (EFI/redhat, EFI/debian, ...)."""
    efi = _child_ci(ctx, esp, "EFI")
    if not efi:
        return None
    candidates = [name for name in ctx.listdir(efi) if name.lower() != "boot" and
                  (_child_ci(ctx, f"{efi}/{name}", "shimx64.efi") or _child_ci(ctx, f"{efi}/{name}", "grubx64.efi"))]
    hints = [p.split("/")[-2] for p in (ctx.layout.get("boot") or {}).get("efi_files") or []
             if isinstance(p, str) and p.count("/") >= 2]
    preferred = EFI_VENDOR_DIR.get(ctx.facts["distro"]["id"], ctx.facts["distro"]["id"])
    for wanted in hints + [preferred]:
        for name in candidates:
            if name.lower() == wanted.lower():
                return f"{efi}/{name}"
    return f"{efi}/{candidates[0]}" if candidates else None


def ensure_uefi_fallback(ctx: FixupContext) -> None:
    """EFI/BOOT/BOOTX64.EFI (the path firmware boots without an NVRAM entry) exists: the
    distribution's shim (or grub when unsigned) copied there, with what it loads next to it."""
    esp = esp_mountpoint(ctx)
    efi = _child_ci(ctx, esp, "EFI")
    boot_dir = (_child_ci(ctx, efi, "BOOT") if efi else None) or f"{esp}/EFI/BOOT"
    if _child_ci(ctx, boot_dir, FALLBACK_LOADER):
        return
    vendor = efi_vendor_dir(ctx, esp)
    if not vendor:
        raise FixupError(f"UEFI boot: neither {boot_dir}/{FALLBACK_LOADER} nor a distribution boot "
                         f"loader (shimx64.efi, grubx64.efi) is on the ESP at {esp}")
    shim = _child_ci(ctx, vendor, "shimx64.efi")
    grub = _child_ci(ctx, vendor, "grubx64.efi")
    first = shim or grub
    _copy_in_guest(ctx, first, f"{boot_dir}/{FALLBACK_LOADER}",
                   f"firmware without a boot entry starts {os.path.basename(first)} from here")
    if shim:
        for name in ("grubx64.efi", "mmx64.efi"):
            source = _child_ci(ctx, vendor, name)
            if source and not _child_ci(ctx, boot_dir, name):
                _copy_in_guest(ctx, source, f"{boot_dir}/{name}", "shim loads it from its own directory")
    if not _child_ci(ctx, boot_dir, "grub.cfg"):
        write_fallback_grub_cfg(ctx, vendor, boot_dir)


def write_fallback_grub_cfg(ctx: FixupContext, vendor: str, boot_dir: str) -> None:
    """The vendor's grub.cfg when it is the short stub distributions put on the ESP, else a
    stub handing over to the vendor's full configuration."""
    vendor_cfg = _child_ci(ctx, vendor, "grub.cfg")
    text = ctx.read_text(vendor_cfg) if vendor_cfg else None
    if text is None or not _is_stub(text):
        esp_relative = "/" + "/".join(vendor.split("/")[-2:])
        text = ("# vmware.osam: the removable-media boot path hands over to the distribution's configuration\n"
                f"configfile {esp_relative}/grub.cfg\n")
    mode = _mode_of(ctx, vendor_cfg) if vendor_cfg else _mode_of(ctx, vendor, file_in_dir=True)
    ctx.write_text(f"{boot_dir}/grub.cfg", text, STEP, "GRUB finds its configuration from the fallback path",
                   mode=mode)


def _is_stub(text: str) -> bool:
    return "configfile" in text and "menuentry" not in text and "blscfg" not in text


def _copy_in_guest(ctx: FixupContext, source: str, destination: str, detail: str) -> None:
    data = ctx.read_bytes(source)
    if data is None:
        raise FixupError(f"cannot read {source}")
    # The copy gets the original's mode (FAT shows the mount's mode for every file anyway).
    ctx.write_bytes(destination, data, STEP, detail, mode=_mode_of(ctx, source))


def _mode_of(ctx: FixupContext, guest_path: str, file_in_dir: bool = False) -> Optional[int]:
    host = ctx.host_path(guest_path)
    try:
        if file_in_dir:
            names = [n for n in os.listdir(host) if os.path.isfile(os.path.join(host, n))]
            if not names:
                return None
            host = os.path.join(host, names[0])
        return stat.S_IMODE(os.stat(host).st_mode)
    except OSError:
        return None


def _child_ci(ctx: FixupContext, guest_dir: Optional[str], name: str) -> Optional[str]:
    """Guest path of guest_dir's entry called `name` in any case (FAT ignores case, a copy of
    it on another file system does not)."""
    if not guest_dir:
        return None
    for entry in ctx.listdir(guest_dir):
        if entry.lower() == name.lower():
            return f"{guest_dir.rstrip('/')}/{entry}"
    return None
