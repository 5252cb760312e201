"""LVM as the receiver needs it for a vgcfgrestore-style rebuild: PVs (UUID, pe_start), VGs
(UUID, extent size) and LVs with their segments (which extents of which PV), from the JSON
reports of pvs/vgs/lvs in bytes.

Only the PVs that `describe_pv` places on the selected disks are kept, with their VGs and
those VGs' LVs. A guest without the LVM tools simply has no LVM: that is not an error.

    lvs: [{"name", "vg", "uuid", "size", "segtype" (of the first segment), "dm_name",
           "path", "active", "hidden" (raid images, thin pool parts, ...),
           "segments": [{"le_start", "extents", "segtype", "stripes", "stripe_size",
                         "pv", "pe_start",          # the first (often only) stripe
                         "devices": [{"pv", "pe_start"}]}]}]   # every stripe or sub-LV
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, List, Optional

from osam.sentinel.layout_tools import Tools

# Reading must not write: without this, a report may refresh /etc/lvm/backup and archive.
_READ_ONLY = ("--config", "backup{backup=0 archive=0}")
_REPORT = _READ_ONLY + ("--reportformat", "json", "--units", "b", "--nosuffix", "-o")
PVS_ARGV = ("pvs",) + _REPORT + ("pv_name,pv_uuid,vg_name,pv_size,pe_start,pv_pe_count",)
VGS_ARGV = ("vgs",) + _REPORT + ("vg_name,vg_uuid,vg_extent_size,vg_size,vg_extent_count",)
LVS_ARGV = ("lvs", "-a", "--segments") + _REPORT + (
    "vg_name,lv_name,lv_uuid,lv_size,lv_path,lv_dm_path,lv_attr,segtype,seg_start_pe,"
    "seg_size_pe,stripes,stripe_size,devices",)
_DEVICE = re.compile(r"^(.*)\((\d+)\)$")  # "/dev/sda2(0)": a device and its first extent

DescribePv = Callable[[str], Optional[Dict[str, Any]]]


def empty_lvm() -> Dict[str, List[Dict[str, Any]]]:
    return {"pvs": [], "vgs": [], "lvs": []}


def collect_lvm(tools: Tools, describe_pv: DescribePv) -> Dict[str, List[Dict[str, Any]]]:
    """describe_pv(pv_name) gives the PV's `parent` (where it lies), None when it is not on
    a selected disk."""
    try:
        pv_rows = _report(tools, PVS_ARGV, "pv")
    except FileNotFoundError:
        return empty_lvm()  # no LVM tools on this guest
    except Exception as exc:
        tools.note("pvs", exc)
        return empty_lvm()
    lvm = empty_lvm()
    lvm["pvs"] = [pv for pv in (_pv(row, describe_pv) for row in pv_rows) if pv]
    vg_names = {pv["vg"] for pv in lvm["pvs"] if pv["vg"]}
    if not vg_names:
        return lvm
    vg_rows = tools.attempt("vgs", lambda: _report(tools, VGS_ARGV, "vg"), [])
    lvm["vgs"] = [_vg(row) for row in vg_rows if row.get("vg_name") in vg_names]
    lv_rows = tools.attempt("lvs", lambda: _report(tools, LVS_ARGV, "seg"), [])
    lvm["lvs"] = _lvs([row for row in lv_rows if row.get("vg_name") in vg_names])
    return lvm


def _report(tools: Tools, argv, kind: str) -> List[Dict[str, str]]:
    rows: List[Dict[str, str]] = []
    for report in tools.json(argv).get("report", []):
        rows.extend(report.get(kind, []))
    return rows


def _pv(row: Dict[str, str], describe_pv: DescribePv) -> Optional[Dict[str, Any]]:
    parent = describe_pv(row.get("pv_name", ""))
    if parent is None:
        return None
    return {"device": row.get("pv_name", ""), "uuid": row.get("pv_uuid", ""),
            "vg": row.get("vg_name", ""), "size": _int(row.get("pv_size")),
            "pe_start": _int(row.get("pe_start")), "pe_count": _int(row.get("pv_pe_count")),
            "parent": parent}


def _vg(row: Dict[str, str]) -> Dict[str, Any]:
    return {"name": row.get("vg_name", ""), "uuid": row.get("vg_uuid", ""),
            "extent_size": _int(row.get("vg_extent_size")), "size": _int(row.get("vg_size")),
            "extent_count": _int(row.get("vg_extent_count"))}


def _lvs(rows: List[Dict[str, str]]) -> List[Dict[str, Any]]:
    """One row per segment (lvs --segments), grouped into one entry per LV."""
    lvs: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        key = row.get("lv_uuid") or "%s/%s" % (row.get("vg_name"), row.get("lv_name"))
        if key not in lvs:
            lvs[key] = _lv(row)
        lvs[key]["segments"].append(_segment(row))
    for lv in lvs.values():
        lv["segments"].sort(key=lambda s: s["le_start"])
        lv["segtype"] = lv["segments"][0]["segtype"] if lv["segments"] else ""
    return list(lvs.values())


def _lv(row: Dict[str, str]) -> Dict[str, Any]:
    name = row.get("lv_name", "")
    attr = row.get("lv_attr", "")
    return {"name": name.strip("[]"), "vg": row.get("vg_name", ""),
            "uuid": row.get("lv_uuid", ""), "size": _int(row.get("lv_size")), "segtype": "",
            "dm_name": os.path.basename(row.get("lv_dm_path", "")),
            "path": row.get("lv_path", ""), "active": len(attr) > 4 and attr[4] == "a",
            "hidden": name.startswith("["), "segments": []}


def _segment(row: Dict[str, str]) -> Dict[str, Any]:
    devices = []
    for item in filter(None, row.get("devices", "").split(",")):
        found = _DEVICE.match(item.strip())
        if found:
            devices.append({"pv": found.group(1).strip("[]"), "pe_start": int(found.group(2))})
    first = devices[0] if devices else {"pv": "", "pe_start": 0}
    return {"le_start": _int(row.get("seg_start_pe")), "extents": _int(row.get("seg_size_pe")),
            "segtype": row.get("segtype", ""), "stripes": _int(row.get("stripes"), 1),
            "stripe_size": _int(row.get("stripe_size")), "pv": first["pv"],
            "pe_start": first["pe_start"], "devices": devices}


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
