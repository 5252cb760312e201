"""VSS snapshots for a Windows guest's final sync: which volumes get one, and the overlays that
tell the block reader which byte range of which disk to read from which snapshot device."""
from __future__ import annotations

import json

from windows_fakes import FakeWindowsHost, host_for_machine, load

from osam.sentinel.windows.commands import WindowsCommandError
from osam.sentinel.windows.inventory import collect_windows_inventory
from osam.sentinel.windows.vss import (create_snapshots, delete_snapshots, find_overlay, overlays,
                                        snapshot_targets)


def layout(machine: str):
    return collect_windows_inventory(host_for_machine(load(machine)))["layout"]


class ShadowCopies:
    """Win32_ShadowCopy as a fake host sees it: Create numbers the devices, Remove forgets."""

    def __init__(self, refuse=None):
        self.refuse = refuse or {}         # volume -> Create's return value
        self.existing = {}

    def create(self, script):
        volume = script.split("Volume = '", 1)[1].split("'", 1)[0]
        if volume in self.refuse:
            return {"ReturnValue": self.refuse[volume], "ShadowID": None, "DeviceObject": None}
        n = len(self.existing) + 1
        shadow_id = "{0000000%d-AAAA-BBBB-CCCC-DDDDDDDDDDDD}" % n
        self.existing[shadow_id] = volume
        return {"ReturnValue": 0, "ShadowID": shadow_id,
                "DeviceObject": "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy%d" % n}

    def remove(self, script):
        shadow_id = script.split("ID = ''", 1)[1].split("''", 1)[0]
        return {"Removed": 1 if self.existing.pop(shadow_id, None) else 0}

    def host(self):
        return FakeWindowsHost({"Win32_ShadowCopy -MethodName Create": self.create,
                                "Remove-CimInstance": self.remove})


def test_ntfs_volumes_are_snapshotted_and_the_esp_is_read_live():
    targets, live = snapshot_targets(layout("server2019_uefi.json")["disks"])
    assert [(t.volume, t.disk, t.partition) for t in targets] == [
        ("C:\\", "PhysicalDrive0", 3),
        ("\\\\?\\Volume{44444444-0000-0000-0000-400000000000}\\", "PhysicalDrive0", 4),
        ("D:\\", "PhysicalDrive1", 2)]
    assert live == [{"disk": "PhysicalDrive0", "partition": 1,
                     "volume": "\\\\?\\Volume{11111111-0000-0000-0000-100000000000}\\",
                     "reason": "FAT32: VSS snapshots NTFS and ReFS only"}]


def test_overlay_offsets_are_the_partition_starts():
    disks = layout("server2019_uefi.json")["disks"]
    shadows = ShadowCopies()
    made, failures = create_snapshots(shadows.host(), snapshot_targets(disks)[0])
    assert failures == []
    result = overlays(made)
    starts = {(d["name"], p["number"]): (p["start"], p["size"])
              for d in disks for p in (d["partition_table"] or {}).get("partitions", [])}
    assert result[0] == {"disk": "PhysicalDrive0", "offset": 122683392, "length": 63767855104,
                         "path": "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy1",
                         "snapshot": "{00000001-AAAA-BBBB-CCCC-DDDDDDDDDDDD}"}
    for snap, overlay in zip(sorted(made, key=lambda s: (s.target.disk, s.target.offset)), result):
        assert (overlay["offset"], overlay["length"]) == starts[(snap.target.disk, snap.target.partition)]
        assert overlay["path"] == snap.device
    assert find_overlay(result, "PhysicalDrive1", 135266304 + 4096)["path"].endswith("ShadowCopy3")
    assert find_overlay(result, "PhysicalDrive0", 1048576) is None        # the ESP: live
    json.dumps(result)


def test_a_refused_volume_is_reported_and_the_others_still_get_snapshots():
    disks = layout("server2019_uefi.json")["disks"]
    shadows = ShadowCopies(refuse={"D:\\": 6})
    made, failures = create_snapshots(shadows.host(), snapshot_targets(disks)[0])
    assert [s.target.volume for s in made][0] == "C:\\" and len(made) == 2
    assert failures == [{"volume": "D:\\", "disk": "PhysicalDrive1", "partition": 2,
                         "error": "VssError: Win32_ShadowCopy.Create(D:\\) returned 6 "
                                  "(insufficient storage for the shadow copy)"}]


def test_a_powershell_failure_is_a_snapshot_failure():
    host = FakeWindowsHost({"Win32_ShadowCopy": WindowsCommandError("PowerShell", 1, "Invalid class")})
    made, failures = create_snapshots(host, snapshot_targets(layout("server2019_uefi.json")["disks"])[0])
    assert made == [] and len(failures) == 3 and "Invalid class" in failures[0]["error"]


def test_dynamic_disk_volumes_get_no_snapshot():
    targets, live = snapshot_targets(layout("server2012r2_bios_dynamic.json")["disks"])
    assert [t.volume for t in targets] == ["\\\\?\\Volume{aaaaaaaa-0000-0000-0000-100000000000}\\", "C:\\"]
    assert all(t.disk == "PhysicalDrive0" for t in targets)
    assert live == []   # the LDM partition has no volume of its own: the disk is read live


def test_delete_snapshots_removes_them_and_reports_failures():
    disks = layout("server2019_uefi.json")["disks"]
    shadows = ShadowCopies()
    host = shadows.host()
    made, _ = create_snapshots(host, snapshot_targets(disks)[0])
    ids = [s.id for s in made]
    assert delete_snapshots(host, ids) == {"deleted": ids, "failed": []}
    assert shadows.existing == {}
    assert delete_snapshots(host, ids[:1])["deleted"] == ids[:1]          # already gone: fine
    broken = FakeWindowsHost({"Remove-CimInstance": WindowsCommandError("PowerShell", 1, "busy")})
    result = delete_snapshots(broken, ["{X}"])
    assert result["deleted"] == [] and result["failed"][0]["id"] == "{X}"
