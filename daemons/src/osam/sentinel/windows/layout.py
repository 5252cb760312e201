"""A Windows guest's disks as the receiver needs them to make same-sized replica disks and to
read them block by block: every disk of Get-Disk, its partition table (Get-Partition) and the
volumes on it (Get-Volume). Parsing is pure: JSON documents in, dicts out.

    layout = {
      "root": "C:\\",                                   # the system drive
      "boot": {"mode": "bios" | "uefi", "bootloader": "windows",
               "boot_disk": "PhysicalDrive0",           # holds the system partition
               "system_partition": {"disk": "PhysicalDrive0", "number": 1} | None,
               "windows_partition": {"disk": "PhysicalDrive0", "number": 3} | None},
      "disks": [{"name": "PhysicalDrive0", "path": "\\\\.\\PhysicalDrive0", "number": 0,
                 "type": "disk", "size": bytes, "logical_sector_size": 512,
                 "physical_sector_size": 4096, "model": "", "serial": "", "bus_type": "SAS",
                 "boot": bool, "system": bool, "offline": bool, "read_only": bool,
                 "dynamic": bool,                        # LDM: see "warnings"
                 "partition_style": "gpt" | "dos" | "raw",
                 "partition_table": None (raw, or Get-Partition failed) | {
                     "label": "gpt" | "dos", "id": "GUID" | "0x1a2b3c4d",
                     "unit": "bytes", "sectorsize": 512,
                     "partitions": [{"number": 1, "start": bytes, "size": bytes,
                                     "type": "C12A7328-..." (GPT) | "7" (MBR, hex as sfdisk),
                                     "uuid": "GUID" | "", "role": "System" | "Basic" | ...,
                                     "drive_letter": "C" | "", "access_paths": [...],
                                     "bootable": MBR active flag, "boot": bool, "system": bool,
                                     "hidden": bool,
                                     "volume": None | {"path": "\\\\?\\Volume{...}\\",
                                                       "fs": "NTFS", "label": "", "size": bytes,
                                                       "free": bytes}}]}}],
      "volumes": [{"path", "drive_letter", "fs", "label", "size", "free", "drive_type",
                   "health", "partition": {"disk": "PhysicalDrive0", "number": 3} | None}],
      "filesystems": [...], "mounts": [...],    # the Linux layout's shapes, see below
      "lvm": {"pvs": [], "vgs": [], "lvs": []},
      "warnings": ["..."], "errors": [{"probe": "...", "error": "..."}],
    }

Unlike sfdisk's table on Linux, starts and sizes here are in bytes ("unit": "bytes").
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from .values import as_list, drive_letter, enum_name, flag, guid, integer, text

DISKS_SCRIPT = """Get-Disk | Select-Object Number, FriendlyName, Model, SerialNumber, Size,
  LogicalSectorSize, PhysicalSectorSize, PartitionStyle, Guid, Signature, IsBoot, IsSystem,
  IsOffline, IsReadOnly, BusType, OperationalStatus"""
PARTITIONS_SCRIPT = """Get-Partition | Select-Object DiskNumber, PartitionNumber, DriveLetter,
  Offset, Size, Type, GptType, MbrType, Guid, IsActive, IsBoot, IsSystem, IsHidden, AccessPaths"""
VOLUMES_SCRIPT = """Get-Volume | Select-Object DriveLetter, FileSystem, FileSystemLabel, Size,
  SizeRemaining, Path, DriveType, HealthStatus"""

PARTITION_STYLES = {0: "RAW", 1: "MBR", 2: "GPT"}
BUS_TYPES = {1: "SCSI", 2: "ATAPI", 3: "ATA", 7: "USB", 8: "RAID", 10: "SAS", 11: "SATA",
             12: "SD", 13: "MMC", 14: "Virtual", 15: "File Backed Virtual", 16: "Storage Spaces",
             17: "NVMe"}
DRIVE_TYPES = {0: "Unknown", 1: "Invalid Root Path", 2: "Removable", 3: "Fixed", 4: "Remote",
               5: "CD-ROM", 6: "RAM Disk"}
HEALTH = {0: "Healthy", 1: "Warning", 2: "Unhealthy"}

# Dynamic (LDM) disks: an MBR partition of type 0x42, or GPT's LDM metadata/data partitions.
LDM_MBR_TYPE = 0x42
LDM_GPT_TYPES = frozenset({"5808C8AA-7E8F-42E0-85D2-E1E90434CFB3",
                           "AF9B60A0-1431-4F62-BC68-3311714A69AD"})
ESP_GPT_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
# Get-Volume's file system names -> blkid's, as the Linux layout's "filesystems" use them.
FSTYPES = {"NTFS": "ntfs", "REFS": "refs", "FAT32": "vfat", "FAT": "vfat", "FAT16": "vfat",
           "EXFAT": "exfat", "CDFS": "iso9660", "UDF": "udf"}


def disk_name(number: int) -> str:
    return "PhysicalDrive%d" % number


def disk_path(number: int) -> str:
    return "\\\\.\\PhysicalDrive%d" % number


def parse_volumes(doc: Any) -> List[Dict[str, Any]]:
    volumes = []
    for v in as_list(doc):
        if not isinstance(v, dict):
            continue
        volumes.append({
            "path": text(v.get("Path")), "drive_letter": drive_letter(v.get("DriveLetter")),
            "fs": text(v.get("FileSystem")), "label": text(v.get("FileSystemLabel")),
            "size": integer(v.get("Size")), "free": integer(v.get("SizeRemaining")),
            "drive_type": enum_name(v.get("DriveType"), DRIVE_TYPES),
            "health": enum_name(v.get("HealthStatus"), HEALTH), "partition": None,
        })
    return volumes


def _table_id(style: str, d: Dict[str, Any]) -> str:
    if style == "GPT":
        return guid(d.get("Guid"))
    signature = d.get("Signature")
    return "0x%08x" % integer(signature) if signature is not None else ""


def _partition(p: Dict[str, Any], style: str,
               volume_by_path: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    paths = [text(a) for a in as_list(p.get("AccessPaths")) if text(a)]
    volume = next((volume_by_path[a.lower()] for a in paths if a.lower() in volume_by_path), None)
    if style == "GPT":
        ptype = guid(p.get("GptType"))
    else:
        mbr = p.get("MbrType")
        ptype = "%x" % integer(mbr) if mbr is not None else ""
    return {
        "number": integer(p.get("PartitionNumber")), "start": integer(p.get("Offset")),
        "size": integer(p.get("Size")), "type": ptype,
        "uuid": guid(p.get("Guid")) if style == "GPT" else "",
        "role": text(p.get("Type")), "drive_letter": drive_letter(p.get("DriveLetter")),
        "access_paths": paths, "bootable": flag(p.get("IsActive")), "boot": flag(p.get("IsBoot")),
        "system": flag(p.get("IsSystem")), "hidden": flag(p.get("IsHidden")),
        "volume": None if volume is None else {k: volume[k] for k in ("path", "fs", "label",
                                                                      "size", "free")},
    }


def is_dynamic(table: Optional[Dict[str, Any]]) -> bool:
    if not table:
        return False
    if table["label"] == "gpt":
        return any(p["type"] in LDM_GPT_TYPES for p in table["partitions"])
    return any(p["type"] == "%x" % LDM_MBR_TYPE for p in table["partitions"])


def parse_disks(disks_doc: Any, partitions_doc: Any = None,
                volumes: Optional[List[Dict[str, Any]]] = None) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Disks (sorted by number) with their partition tables (None for all when partitions_doc
    is None: unknown); `volumes` (parse_volumes) gain their "partition". Returns the disks and warnings about what block replication cannot
    treat like the rest (dynamic disks)."""
    volumes = volumes if volumes is not None else []
    volume_by_path = {v["path"].lower(): v for v in volumes if v["path"]}
    parts_by_disk: Dict[int, List[Dict[str, Any]]] = {}
    for p in as_list(partitions_doc):
        if isinstance(p, dict):
            parts_by_disk.setdefault(integer(p.get("DiskNumber"), -1), []).append(p)
    disks, warnings = [], []
    for d in sorted((d for d in as_list(disks_doc) if isinstance(d, dict)),
                    key=lambda d: integer(d.get("Number"))):
        number = integer(d.get("Number"))
        style = enum_name(d.get("PartitionStyle"), PARTITION_STYLES).upper()
        table = None
        label = {"GPT": "gpt", "MBR": "dos"}.get(style, "raw")
        if label != "raw" and partitions_doc is not None:
            parts = sorted(parts_by_disk.get(number, []), key=lambda p: integer(p.get("Offset")))
            table = {"label": label, "id": _table_id(style, d),
                     "unit": "bytes", "sectorsize": integer(d.get("LogicalSectorSize"), 512),
                     "partitions": [_partition(p, style, volume_by_path) for p in parts]}
            for entry in table["partitions"]:
                if entry["volume"] is not None:
                    volume_by_path[entry["volume"]["path"].lower()]["partition"] = {
                        "disk": disk_name(number), "number": entry["number"]}
        dynamic = is_dynamic(table)
        if dynamic:
            warnings.append("%s is a dynamic disk (LDM): it is replicated whole, but its volumes "
                            "may span disks, so none of them is read from a snapshot and the "
                            "replica keeps the dynamic disk as it is" % disk_name(number))
        disks.append({
            "name": disk_name(number), "path": disk_path(number), "number": number,
            "type": "disk", "size": integer(d.get("Size")),
            "logical_sector_size": integer(d.get("LogicalSectorSize"), 512),
            "physical_sector_size": integer(d.get("PhysicalSectorSize"), 512),
            "model": text(d.get("Model")) or text(d.get("FriendlyName")),
            "serial": text(d.get("SerialNumber")),
            "bus_type": enum_name(d.get("BusType"), BUS_TYPES),
            "boot": flag(d.get("IsBoot")), "system": flag(d.get("IsSystem")),
            "offline": flag(d.get("IsOffline")), "read_only": flag(d.get("IsReadOnly")),
            "dynamic": dynamic, "partition_style": label, "partition_table": table,
        })
    return disks, warnings


def filesystems(volumes: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The Linux layout's "filesystems" shape, for the volumes that sit on a partition."""
    found = []
    for v in volumes:
        if not v["fs"] or v["partition"] is None:
            continue
        found.append({"device": v["path"], "fstype": FSTYPES.get(v["fs"].upper(), v["fs"].lower()),
                      "uuid": "", "label": v["label"], "size": v["size"],
                      "mountpoint": v["drive_letter"] + ":\\" if v["drive_letter"] else None,
                      "parent": dict(v["partition"], kind="partition"), "options": {}})
    return found


def mounts(volumes: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Volumes with a drive letter, in the Linux layout's "mounts" shape."""
    return sorted(({"target": v["drive_letter"] + ":\\", "source": v["path"], "device": v["path"],
                    "fstype": v["fs"], "options": "", "super_options": "", "fs_root": "\\",
                    "uuid": ""}
                   for v in volumes if v["drive_letter"] and v["fs"]), key=lambda m: m["target"])


def _locate(disks: List[Dict[str, Any]], want: Callable[[Dict[str, Any]], bool]) -> Optional[Dict[str, Any]]:
    for disk in disks:
        for p in (disk["partition_table"] or {}).get("partitions", []):
            if want(p):
                return {"disk": disk["name"], "number": p["number"]}
    return None


def boot_info(disks: List[Dict[str, Any]], mode: str, system_drive: str = "C") -> Dict[str, Any]:
    system = _locate(disks, lambda p: p["system"]) or _locate(
        disks, lambda p: p["type"] == ESP_GPT_TYPE or (p["bootable"] and p["type"] != ""))
    windows = _locate(disks, lambda p: p["drive_letter"] == system_drive) or _locate(
        disks, lambda p: p["boot"])
    boot_disk = (system or windows or {}).get("disk") or next(
        (d["name"] for d in disks if d["system"] or d["boot"]), "")
    return {"mode": mode, "bootloader": "windows", "boot_disk": boot_disk,
            "system_partition": system, "windows_partition": windows}


def build_layout(disks_doc: Any, partitions_doc: Any, volumes_doc: Any, *, boot_mode: str,
                 system_drive: str = "C", errors: Optional[List[Dict[str, str]]] = None) -> Dict[str, Any]:
    """The layout from the three documents (partitions_doc/volumes_doc None when their probe
    failed: the disks are still described)."""
    volumes = parse_volumes(volumes_doc)
    disks, warnings = parse_disks(disks_doc, partitions_doc, volumes)
    letter = drive_letter(system_drive) or "C"
    return {
        "root": letter + ":\\",
        "boot": boot_info(disks, boot_mode, letter),
        "disks": disks,
        "volumes": volumes,
        "filesystems": filesystems(volumes),
        "mounts": mounts(volumes),
        "lvm": {"pvs": [], "vgs": [], "lvs": []},
        "warnings": warnings,
        "errors": list(errors or []),
    }
