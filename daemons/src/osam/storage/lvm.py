"""LVM in a replica: the source's volume groups recreated with the same names and UUIDs
(metadata written with vgcfgrestore), and each logical volume reached through a loop device
over its extents instead of device-mapper.

Why loop devices: the receiver must not activate guests' volume groups in its own LVM (two
RHEL guests both have a VG "rhel"; the host may have one too), and device-mapper may not
even be there. A linear LV is one contiguous run of extents on one PV, so a loop device at
the right offset is exactly that LV. LVs that are not (several scattered segments, RAID,
thin pools, snapshots) are refused before anything is made.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Tuple

from .command import StorageError, run

SECTOR = 512
LINEAR = ("linear", "striped")
# No udev, no lvmetad/polld, and nothing about guest VGs written into the host's /etc/lvm.
LVM_CONFIG = ("activation{udev_sync=0 udev_rules=0} backup{backup=0 archive=0} "
              "global{use_lvmpolld=0} devices{scan_lvs=0}")

NodeOf = Callable[[Dict[str, Any]], str]


def _lvm(tool: str, devices: List[str], *args: str) -> str:
    return run([tool, "--config", LVM_CONFIG, "--devices", ",".join(devices), *args])


class VolumeGroups:
    def __init__(self, layout: Dict[str, Any], replica_dir: str):
        self.pvs = layout.get("pvs") or []
        self.vgs = {vg["name"]: vg for vg in layout.get("vgs") or []}
        self.lvs = layout.get("lvs") or []
        self.replica_dir = replica_dir
        self._lv_devices: Dict[Tuple[str, str], str] = {}

    def check(self) -> None:
        for lv in self.lvs:
            self._extent_run(lv)

    # -- building -------------------------------------------------------------------------
    def create(self, node_of: NodeOf) -> None:
        """Write PV labels and VG metadata (no LV is activated)."""
        for vg_name, vg in self.vgs.items():
            pvs = [pv for pv in self.pvs if pv.get("vg") == vg_name]
            nodes = [node_of(pv["parent"]) for pv in pvs]
            meta = os.path.join(self.replica_dir, "disks", f"lvm-{vg_name}.vg")
            with open(meta, "w") as f:
                f.write(metadata_text(vg, pvs, [lv for lv in self.lvs if lv.get("vg") == vg_name], nodes))
            for pv, node in zip(pvs, nodes):
                _lvm("pvcreate", nodes, "-ff", "-y", "--uuid", pv["uuid"], "--restorefile", meta, node)
            _lvm("vgcfgrestore", nodes, "-f", meta, vg_name)

    # -- attaching ------------------------------------------------------------------------
    def activate(self, node_of: NodeOf, image_of: Callable[[Dict[str, Any]], Tuple[str, int]]) -> None:
        """A loop device for each LV: the image at the LV's byte offset, its size limit."""
        for lv in self.lvs:
            image, offset, size = self._span(lv, image_of)
            device = run(["losetup", "--find", "--show", "--offset", str(offset),
                          "--sizelimit", str(size), image]).strip()
            self._lv_devices[(lv["vg"], lv["name"])] = device

    def deactivate(self) -> None:
        self._lv_devices.clear()    # the loop devices go with their image (ReplicaDisks._release)

    def lv_node(self, vg: str, lv: str) -> str:
        try:
            return self._lv_devices[(vg, lv)]
        except KeyError:
            raise StorageError(f"logical volume {vg}/{lv} is not in the layout or not attached") from None

    def mapper_nodes(self) -> Dict[str, str]:
        """/dev/mapper names the guest knows ("vg-root") -> the loop device standing in."""
        return {lv.get("dm_name") or dm_name(lv["vg"], lv["name"]): self._lv_devices[(lv["vg"], lv["name"])]
                for lv in self.lvs if (lv["vg"], lv["name"]) in self._lv_devices}

    # -- geometry -------------------------------------------------------------------------
    def _extent_run(self, lv: Dict[str, Any]) -> Tuple[Dict[str, Any], int, int]:
        """(PV, first extent, extent count) of an LV that is one contiguous run on one PV."""
        name = f"{lv.get('vg')}/{lv.get('name')}"
        if lv.get("segtype", "linear") not in LINEAR:
            raise StorageError(f"logical volume {name} is {lv.get('segtype')}: only linear LVs can be replicated")
        segments = lv.get("segments") or []
        if not segments:
            raise StorageError(f"logical volume {name}: no segments in the layout")
        pv_name = segments[0]["pv"]
        first = int(segments[0]["pe_start"])
        expected = first
        for seg in segments:
            if seg["pv"] != pv_name or int(seg["pe_start"]) != expected:
                raise StorageError(f"logical volume {name} is not one contiguous run of extents on one PV "
                                   f"(it spans {len(segments)} segments); it cannot be replicated")
            expected += int(seg["extents"])
        pv = next((p for p in self.pvs if p.get("device") == pv_name), None)
        if pv is None:
            raise StorageError(f"logical volume {name}: its PV {pv_name} is not in the layout")
        if lv.get("vg") not in self.vgs:
            raise StorageError(f"logical volume {name}: its VG is not in the layout")
        return pv, first, expected - first

    def _span(self, lv: Dict[str, Any], image_of) -> Tuple[str, int, int]:
        pv, first, count = self._extent_run(lv)
        extent = int(self.vgs[lv["vg"]]["extent_size"])
        image, pv_offset = image_of(pv["parent"])
        return image, pv_offset + int(pv["pe_start"]) + first * extent, count * extent


def dm_name(vg: str, lv: str) -> str:
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def metadata_text(vg: Dict[str, Any], pvs: List[Dict[str, Any]], lvs: List[Dict[str, Any]],
                  nodes: List[str]) -> str:
    """The VG's metadata in LVM's text format (what vgcfgbackup writes), UUIDs kept."""
    extent = int(vg["extent_size"])
    if extent % SECTOR:
        raise StorageError(f"volume group {vg['name']}: extent size {extent} is not whole sectors")
    index = {pv["device"]: f"pv{i}" for i, pv in enumerate(pvs)}
    out = ['contents = "Text Format Volume Group"', "version = 1", "",
           'description = "vmware.osam replica of the source\'s volume group"', "",
           f"{vg['name']} {{", f'\tid = "{vg["uuid"]}"', "\tseqno = 1", '\tformat = "lvm2"',
           '\tstatus = ["RESIZEABLE", "READ", "WRITE"]', "\tflags = []",
           f"\textent_size = {extent // SECTOR}", "\tmax_lv = 0", "\tmax_pv = 0",
           "\tmetadata_copies = 0", "", "\tphysical_volumes {"]
    for pv, node in zip(pvs, nodes):
        dev_size = int(pv.get("dev_size") or pv["size"])
        pe_start = int(pv["pe_start"])
        out += [f"\t\t{index[pv['device']]} {{", f'\t\t\tid = "{pv["uuid"]}"', f'\t\t\tdevice = "{node}"',
                '\t\t\tstatus = ["ALLOCATABLE"]', "\t\t\tflags = []",
                f"\t\t\tdev_size = {dev_size // SECTOR}", f"\t\t\tpe_start = {pe_start // SECTOR}",
                f"\t\t\tpe_count = {(dev_size - pe_start) // extent}", "\t\t}"]
    out += ["\t}", "", "\tlogical_volumes {"]
    for lv in lvs:
        segments = lv.get("segments") or []
        out += [f"\t\t{lv['name']} {{", f'\t\t\tid = "{lv["uuid"]}"',
                '\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]', "\t\t\tflags = []",
                f"\t\t\tsegment_count = {len(segments)}"]
        start = 0
        for i, seg in enumerate(segments, 1):
            out += [f"\t\t\tsegment{i} {{", f"\t\t\t\tstart_extent = {start}",
                    f"\t\t\t\textent_count = {int(seg['extents'])}", '\t\t\t\ttype = "striped"',
                    "\t\t\t\tstripe_count = 1", "\t\t\t\tstripes = [",
                    f'\t\t\t\t\t"{index[seg["pv"]]}", {int(seg["pe_start"])}', "\t\t\t\t]", "\t\t\t}"]
            start += int(seg["extents"])
        out.append("\t\t}")
    out += ["\t}", "}", ""]
    return "\n".join(out)
