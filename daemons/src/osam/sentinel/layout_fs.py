"""What is on a device (blkid's low-level probe) and what mkfs needs to make the same kind of
file system again (`options`, per type):

- ext2/3/4 (tune2fs -l): features [list], block_size, inode_size, inode_count,
  reserved_percent
- xfs (xfs_info): block_size, sector_size, inode_size, agcount, attr, projid32bit, crc,
  finobt, sparse, rmapbt, reflink, bigtime, inobtcount, nrext64, imaxpct, sunit, swidth,
  naming_version, dir_block_size, ascii_ci, ftype, log_internal, log_size, log_version,
  log_sector_size, lazy_count, realtime; each only when this xfsprogs prints it, flags as 0/1
- vfat: fat_size (12, 16 or 32), volume_id (UUID "ABCD-1234" as "ABCD1234"), sector_size
- swap: version
- any type with a sub-UUID (btrfs device UUID): uuid_sub
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional

from osam.sentinel.layout_tools import ToolFailed, Tools, parse_colon_fields, parse_export

BLKID_NOTHING_FOUND = 2
EXT_TYPES = ("ext2", "ext3", "ext4")


def probe_device(tools: Tools, path: str) -> Dict[str, str]:
    """blkid's low-level probe (-p reads the device, not blkid's cache): TYPE, UUID, LABEL,
    VERSION, PTTYPE, PTUUID, PART_ENTRY_* ...; {} when nothing is recognised."""
    returncode, stdout, stderr = tools.outputs(["blkid", "-p", "-o", "export", path])
    # blkid exits 2 both for "nothing found" and for a device it cannot open; only the
    # latter says why on stderr.
    if returncode == 0 or (returncode == BLKID_NOTHING_FOUND and not stderr.strip()):
        return parse_export(stdout)
    raise ToolFailed("blkid exited %d: %s" % (returncode, stderr.strip()))


def filesystem_options(tools: Tools, fstype: str, path: str, probe: Dict[str, str],
                       mounted_at: Optional[str]) -> Dict[str, Any]:
    """`mounted_at` is the host path of a mount of it, which older xfs_info needs."""
    options: Dict[str, Any] = {}
    if fstype in EXT_TYPES:
        options.update(parse_tune2fs(tools.text(["tune2fs", "-l", path])))
    elif fstype == "xfs":
        options.update(parse_xfs_info(tools.text(["xfs_info", mounted_at or path])))
    elif fstype == "vfat":
        options.update(vfat_options(probe))
    elif fstype == "swap":
        options.update(swap_options(probe))
    if probe.get("UUID_SUB"):
        options["uuid_sub"] = probe["UUID_SUB"]
    return options


# ---------------------------------------------------------------- ext2/3/4

def parse_tune2fs(text: str) -> Dict[str, Any]:
    fields = parse_colon_fields(text)
    features = fields.get("Filesystem features", "")
    options: Dict[str, Any] = {"features": [] if features == "(none)" else features.split()}
    for option, name in (("block_size", "Block size"), ("inode_size", "Inode size"),
                         ("inode_count", "Inode count")):
        value = _number(fields.get(name, ""))
        if value is not None:
            options[option] = value
    blocks = _number(fields.get("Block count", ""))
    reserved = _number(fields.get("Reserved block count", ""))
    if blocks and reserved is not None:
        options["reserved_percent"] = round(100.0 * reserved / blocks, 2)
    return options


# ---------------------------------------------------------------- xfs

_XFS_PAIR = re.compile(r"([a-z][a-z0-9_-]*)=([^\s,]+)")

# (section, key in xfs_info, option name)
_XFS_OPTIONS = (
    ("data", "bsize", "block_size"), ("meta-data", "sectsz", "sector_size"),
    ("meta-data", "isize", "inode_size"), ("meta-data", "agcount", "agcount"),
    ("meta-data", "attr", "attr"), ("meta-data", "projid32bit", "projid32bit"),
    ("meta-data", "crc", "crc"), ("meta-data", "finobt", "finobt"),
    ("meta-data", "sparse", "sparse"), ("meta-data", "rmapbt", "rmapbt"),
    ("meta-data", "reflink", "reflink"), ("meta-data", "bigtime", "bigtime"),
    ("meta-data", "inobtcount", "inobtcount"), ("meta-data", "nrext64", "nrext64"),
    ("data", "imaxpct", "imaxpct"), ("data", "sunit", "sunit"), ("data", "swidth", "swidth"),
    ("naming", "bsize", "dir_block_size"), ("naming", "ascii-ci", "ascii_ci"),
    ("naming", "ftype", "ftype"), ("log", "version", "log_version"),
    ("log", "sectsz", "log_sector_size"), ("log", "lazy-count", "lazy_count"),
)


def parse_xfs_info(text: str) -> Dict[str, Any]:
    sections, heads = _xfs_sections(text)
    options: Dict[str, Any] = {}
    for section, key, option in _XFS_OPTIONS:
        value = sections.get(section, {}).get(key)
        if value is not None:
            options[option] = _int_or_text(value)
    naming = heads.get("naming", "").split()
    if len(naming) == 2 and naming[0] == "version":
        options["naming_version"] = _int_or_text(naming[1])
    log = sections.get("log", {})
    if "log" in heads:
        options["log_internal"] = heads["log"].startswith("internal")
    if _number(log.get("blocks", "")) is not None and _number(log.get("bsize", "")):
        options["log_size"] = int(log["blocks"]) * int(log["bsize"])
    if "realtime" in heads:
        options["realtime"] = heads["realtime"]
    return options


def _xfs_sections(text: str):
    """xfs_info prints `section =head  key=value, key=value` and continues a section on lines
    that start with blanks and `=`. Returns ({section: {key: value}}, {section: head})."""
    sections: Dict[str, Dict[str, str]] = {}
    heads: Dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        name, sep, rest = line.partition("=")
        if not sep:
            continue
        if name.strip():
            section = name.strip()
            first = _XFS_PAIR.search(rest)
            heads[section] = (rest[:first.start()] if first else rest).strip()
        sections.setdefault(section, {}).update(_XFS_PAIR.findall(rest))
    return sections, heads


# ---------------------------------------------------------------- vfat, swap

def vfat_options(probe: Dict[str, str]) -> Dict[str, Any]:
    options: Dict[str, Any] = {}
    fat = re.match(r"FAT(12|16|32)$", probe.get("VERSION", ""))
    if fat:
        options["fat_size"] = int(fat.group(1))
    if probe.get("UUID"):
        options["volume_id"] = probe["UUID"].replace("-", "").upper()
    if _number(probe.get("BLOCK_SIZE", "")):
        options["sector_size"] = int(probe["BLOCK_SIZE"])
    return options


def swap_options(probe: Dict[str, str]) -> Dict[str, Any]:
    version = _number(probe.get("VERSION", ""))
    return {} if version is None else {"version": version}


def _number(text: str) -> Optional[int]:
    """The leading integer of `text` ("4096", "1 (dynamic)"), else None."""
    found = re.match(r"\s*(-?\d+)", text or "")
    return int(found.group(1)) if found else None


def _int_or_text(value: str) -> Any:
    return int(value) if re.fullmatch(r"-?\d+", value) else value
