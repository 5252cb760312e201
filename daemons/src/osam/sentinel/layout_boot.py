"""How the guest boots: firmware mode, boot loader, the ESP and its EFI binaries.

With root "/" the firmware mode is the running machine's (/sys/firmware/efi). For another
root (a guest disk mounted on a helper) it is inferred from the disk: an EFI system partition
(vfat with an EFI/ directory) mounted at /boot/efi, /efi or /boot means UEFI; so does, when
no ESP is mounted (a helper whose kernel has no vfat), an ESP in the boot disk's partition
table without a BIOS boot partition beside it. The boot loader is recognised by its files
below root; paths are reported in guest terms.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

EFI_FIRMWARE_DIR = "/sys/firmware/efi"
ESP_TARGETS = ("/boot/efi", "/efi", "/boot")
MAX_EFI_FILES = 256  # a sanity cap: an ESP holds a handful of boot binaries
ESP_PARTITION_TYPES = ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EF")       # GPT, dos
BIOS_BOOT_PARTITION_TYPE = "21686148-6449-6E6F-744E-656564454649"           # GRUB's core.img

GRUB_CONFIGS = ("boot/grub/grub.cfg", "boot/grub2/grub.cfg", "boot/grub/i386-pc",
                "boot/grub2/i386-pc")
SYSTEMD_BOOT_FILES = ("loader/loader.conf", "EFI/systemd")  # below the ESP
SYSLINUX_CONFIGS = ("boot/syslinux/syslinux.cfg", "boot/extlinux/extlinux.conf",
                    "boot/extlinux.conf", "extlinux.conf", "boot/syslinux.cfg")


def guest_to_host(root: str, guest_path: str) -> str:
    return os.path.join(root, guest_path.lstrip("/"))


def find_esp(root: str, mounts: Sequence[Dict[str, Any]]) -> Optional[str]:
    """Guest mount point of the EFI system partition, if one is mounted."""
    for target in ESP_TARGETS:
        for mount in mounts:
            if (mount["target"] == target and mount["fstype"] in ("vfat", "msdos")
                    and os.path.isdir(os.path.join(guest_to_host(root, target), "EFI"))):
                return target
    return None


def efi_files(root: str, esp: Optional[str]) -> List[str]:
    """The *.efi binaries below the ESP's EFI/ directory, as sorted guest paths."""
    if esp is None:
        return []
    found: List[str] = []
    efi_dir = os.path.join(guest_to_host(root, esp), "EFI")
    for directory, subdirs, files in os.walk(efi_dir):
        subdirs.sort()
        rel = os.path.relpath(directory, guest_to_host(root, esp))
        found.extend("%s/%s/%s" % (esp.rstrip("/"), rel, name)
                     for name in sorted(files) if name.lower().endswith(".efi"))
        if len(found) >= MAX_EFI_FILES:
            break
    return sorted(found)[:MAX_EFI_FILES]


def detect_bootloader(root: str, esp: Optional[str], efi_binaries: Sequence[str]) -> str:
    """grub2, systemd-boot, syslinux or unknown. GRUB is checked first because Fedora and
    RHEL keep boot loader entries (loader/entries) for GRUB too."""
    names = [os.path.basename(path).lower() for path in efi_binaries]
    if (any(os.path.exists(guest_to_host(root, p)) for p in GRUB_CONFIGS)
            or any(n.startswith("grub") for n in names)):
        return "grub2"
    esp_files = [os.path.join(esp, p) for p in SYSTEMD_BOOT_FILES] if esp else []
    if (any(n.startswith("systemd-boot") for n in names)
            or any(os.path.exists(guest_to_host(root, p)) for p in esp_files)):
        return "systemd-boot"
    if any(os.path.exists(guest_to_host(root, p)) for p in SYSLINUX_CONFIGS):
        return "syslinux"
    return "unknown"


def firmware_mode(root: str, esp: Optional[str], partition_table: Optional[Dict[str, Any]],
                  efi_firmware_dir: str = EFI_FIRMWARE_DIR) -> str:
    if os.path.realpath(root) == "/":
        return "uefi" if os.path.isdir(efi_firmware_dir) else "bios"
    return "uefi" if esp or _has_only_an_esp(partition_table) else "bios"


def _has_only_an_esp(partition_table: Optional[Dict[str, Any]]) -> bool:
    types = {str(p.get("type", "")).upper() for p in (partition_table or {}).get("partitions", [])}
    return bool(types & set(ESP_PARTITION_TYPES)) and BIOS_BOOT_PARTITION_TYPE not in types


def collect_boot(root: str, mounts: Sequence[Dict[str, Any]], boot_disk: str,
                 partition_table: Optional[Dict[str, Any]] = None,
                 efi_firmware_dir: str = EFI_FIRMWARE_DIR) -> Dict[str, Any]:
    """`partition_table` is the boot disk's (sfdisk's partitiontable), if it has one."""
    esp = find_esp(root, mounts)
    binaries = efi_files(root, esp)
    return {"mode": firmware_mode(root, esp, partition_table, efi_firmware_dir),
            "bootloader": detect_bootloader(root, esp, binaries),
            "boot_disk": boot_disk, "esp": esp or "", "efi_files": binaries}
