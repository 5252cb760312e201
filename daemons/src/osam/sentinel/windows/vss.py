"""Volume shadow copies for the final sync: a frozen image of each NTFS/ReFS volume, so the
block reader takes that partition's byte range of the physical disk from the snapshot device
instead of the live disk. Everything else of the disk (partition tables, the ESP, gaps) is read
live from the disk, which the quiesce has left at rest.

Snapshots are made through CIM (Win32_ShadowCopy.Create, context ClientAccessible), present on
every server and client edition, unlike diskshadow or vshadow. That context involves no VSS
writers, and each call snapshots one volume: the images are crash-consistent per volume and
taken moments apart, which is why the quiesce stops the services and flushes the volumes first.

An overlay says where a snapshot's bytes go on the disk:

    {"disk": "PhysicalDrive0", "offset": partition start (bytes), "length": partition size,
     "path": "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy3", "snapshot": "{ID}"}

Byte 0 of `path` is byte `offset` of the disk. Volumes on dynamic disks, non-NTFS/ReFS volumes
(the FAT ESP) and partitions without a volume get no snapshot: they are read live.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .commands import WindowsHost, ps_quote
from .values import integer, text

SNAPSHOT_FILE_SYSTEMS = ("NTFS", "REFS")
CREATE_TIMEOUT = 300.0

# Win32_ShadowCopy.Create's return values.
CREATE_ERRORS = {
    1: "access denied", 2: "invalid argument", 3: "volume not found",
    4: "volume not supported by VSS", 5: "unsupported shadow copy context",
    6: "insufficient storage for the shadow copy", 7: "volume is in use",
    8: "maximum number of shadow copies reached",
    9: "another shadow copy operation is in progress", 10: "shadow copy provider vetoed",
    11: "shadow copy provider not registered", 12: "shadow copy provider failure",
    13: "unknown error",
}


@dataclass(frozen=True)
class VolumeTarget:
    """A volume to snapshot and the disk bytes its partition covers."""
    volume: str        # what Win32_ShadowCopy.Create is given: "C:\\" or "\\\\?\\Volume{...}\\"
    disk: str          # PhysicalDrive0
    offset: int        # partition start, bytes
    length: int        # partition size, bytes
    partition: int = 0


@dataclass(frozen=True)
class Snapshot:
    id: str            # ShadowID, "{...}"
    device: str        # \\?\GLOBALROOT\Device\HarddiskVolumeShadowCopyN
    target: VolumeTarget

    def overlay(self) -> Dict[str, Any]:
        return {"disk": self.target.disk, "offset": self.target.offset,
                "length": self.target.length, "path": self.device, "snapshot": self.id}


def snapshot_targets(disks: Sequence[Dict[str, Any]]) -> Tuple[List[VolumeTarget], List[Dict[str, Any]]]:
    """From the layout's disks: the volumes to snapshot, and those read live with the reason."""
    targets: List[VolumeTarget] = []
    live: List[Dict[str, Any]] = []
    for disk in disks:
        for p in (disk.get("partition_table") or {}).get("partitions") or []:
            volume = p.get("volume")
            where = {"disk": disk["name"], "partition": p["number"]}
            if volume is None:
                continue           # no file system Windows mounts (MSR, LDM): nothing writes it
            name = p["drive_letter"] + ":\\" if p.get("drive_letter") else volume["path"]
            reason = ""
            if disk.get("dynamic"):
                reason = "on a dynamic disk"
            elif volume["fs"].upper() not in SNAPSHOT_FILE_SYSTEMS:
                reason = "%s: VSS snapshots NTFS and ReFS only" % (volume["fs"] or "no file system")
            if reason:
                live.append(dict(where, volume=name, reason=reason))
            else:
                targets.append(VolumeTarget(name, disk["name"], p["start"], p["size"], p["number"]))
    return targets, live


def create_script(volume: str) -> str:
    return ("$r = Invoke-CimMethod -ClassName Win32_ShadowCopy -MethodName Create -Arguments "
            "@{Volume = %s; Context = 'ClientAccessible'}\n"
            "$s = $null\n"
            "if ($r.ReturnValue -eq 0) { $s = Get-CimInstance Win32_ShadowCopy -Filter "
            "(\"ID = '{0}'\" -f $r.ShadowID) }\n"
            "[pscustomobject]@{ReturnValue = $r.ReturnValue; ShadowID = $r.ShadowID; "
            "DeviceObject = $s.DeviceObject}" % ps_quote(volume))


def delete_script(snapshot_id: str) -> str:
    return ("$s = @(Get-CimInstance Win32_ShadowCopy -Filter %s)\n"
            "$s | Remove-CimInstance\n"
            "[pscustomobject]@{Removed = $s.Count}" % ps_quote("ID = '%s'" % snapshot_id))


def create_snapshot(host: WindowsHost, target: VolumeTarget) -> Snapshot:
    answer = host.powershell_json(create_script(target.volume), timeout=CREATE_TIMEOUT)
    answer = answer if isinstance(answer, dict) else {}
    code = integer(answer.get("ReturnValue"), -1)
    if code != 0:
        raise VssError("Win32_ShadowCopy.Create(%s) returned %d (%s)"
                       % (target.volume, code, CREATE_ERRORS.get(code, "no answer")))
    device = text(answer.get("DeviceObject"))
    if not device:
        raise VssError("shadow copy %s of %s has no device" % (text(answer.get("ShadowID")), target.volume))
    return Snapshot(text(answer.get("ShadowID")), device, target)


def create_snapshots(host: WindowsHost, volumes: Sequence[VolumeTarget]
                     ) -> Tuple[List[Snapshot], List[Dict[str, Any]]]:
    """One snapshot per volume; a volume that fails is reported (and read live), the others
    still get theirs. Returns the snapshots and the failures."""
    snapshots: List[Snapshot] = []
    failures: List[Dict[str, Any]] = []
    for target in volumes:
        try:
            snapshots.append(create_snapshot(host, target))
        except Exception as exc:
            failures.append({"volume": target.volume, "disk": target.disk,
                             "partition": target.partition,
                             "error": "%s: %s" % (type(exc).__name__, exc)})
    return snapshots, failures


def delete_snapshots(host: WindowsHost, ids: Sequence[str]) -> Dict[str, List[Any]]:
    """Delete each snapshot; one already gone counts as deleted."""
    result: Dict[str, List[Any]] = {"deleted": [], "failed": []}
    for snapshot_id in ids:
        try:
            host.powershell_json(delete_script(snapshot_id))
            result["deleted"].append(snapshot_id)
        except Exception as exc:
            result["failed"].append({"id": snapshot_id, "error": "%s: %s" % (type(exc).__name__, exc)})
    return result


def overlays(snapshots: Sequence[Snapshot]) -> List[Dict[str, Any]]:
    return sorted((s.overlay() for s in snapshots), key=lambda o: (o["disk"], o["offset"]))


def snapshot_record(snapshot: Snapshot) -> Dict[str, Any]:
    return {"id": snapshot.id, "device": snapshot.device, **asdict(snapshot.target)}


class VssError(RuntimeError):
    """A shadow copy could not be made."""


def find_overlay(overlay_list: Sequence[Dict[str, Any]], disk: str,
                 offset: int) -> Optional[Dict[str, Any]]:
    """The overlay covering byte `offset` of `disk`, if any (for the block reader)."""
    for o in overlay_list:
        if o["disk"] == disk and o["offset"] <= offset < o["offset"] + o["length"]:
            return o
    return None
