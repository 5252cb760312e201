"""Quiesce of a Windows guest: hooks, the configured services stopped and started again (never
the sentinel or what the machine needs), volumes flushed and snapshotted for the final sync."""
from __future__ import annotations

import json
import re
import subprocess

from windows_fakes import FakeWindowsHost, host_for_machine, load

from osam.sentinel.config import SentinelConfig
from osam.sentinel.windows.commands import WindowsCommandError
from osam.sentinel.windows.inventory import collect_windows_inventory
from osam.sentinel.windows.quiesce import is_essential, quiesce_windows, unquiesce_windows

LAYOUT = collect_windows_inventory(host_for_machine(load("server2019_uefi.json")))["layout"]
LINUX_REPORT_KEYS = {"root", "started_at", "hooks", "services_touched", "services_note", "stopped",
                     "failed_to_stop", "still_running", "configured_not_running", "errors",
                     "synced", "finished_at"}


def names_in(script):
    found = re.search(r"foreach \(\$\w+ in @\((.*?)\)\)", script, re.S).group(1)
    return [n.replace("''", "'") for n in re.findall(r"'((?:[^']|'')*)'", found)]


class Machine:
    """Services, volume caches and shadow copies as the fake host's scripts see them."""

    def __init__(self, running, dependents=None, stuck=(), wont_start=()):
        self.running = set(running)
        self.dependents = dependents or {}
        self.stuck, self.wont_start = set(stuck), set(wont_start)
        self.flushed, self.shadows, self.order = [], {}, []

    def stop(self, script):
        out = []
        for name in names_in(script):
            if name not in self.running and name not in self.stuck:
                out.append({"name": name, "found": name != "nosuch", "was_running": False,
                            "stopped": name != "nosuch", "dependents": [], "error": None})
                continue
            if name in self.stuck:
                out.append({"name": name, "found": True, "was_running": True, "stopped": False,
                            "dependents": [], "error": "Time out has expired"})
                continue
            deps = [d for d in self.dependents.get(name, []) if d in self.running]
            self.running -= {name, *deps}
            self.order.append(("stop", name))
            out.append({"name": name, "found": True, "was_running": True, "stopped": True,
                        "dependents": deps, "error": None})
        return out[0] if len(out) == 1 else out        # one object: ConvertTo-Json's habit

    def start(self, script):
        out = []
        for name in names_in(script):
            ok = name not in self.wont_start
            if ok:
                self.running.add(name)
                self.order.append(("start", name))
            out.append({"name": name, "running": ok, "error": None if ok else "Cannot start service"})
        return out

    def flush(self, script):
        volumes = names_in(script)
        self.flushed.extend(volumes)
        return [{"volume": v, "flushed": True, "error": None} for v in volumes]

    def create(self, script):
        volume = script.split("Volume = '", 1)[1].split("'", 1)[0]
        n = len(self.shadows) + 1
        shadow_id = "{SNAP-%d}" % n
        self.shadows[shadow_id] = volume
        return {"ReturnValue": 0, "ShadowID": shadow_id,
                "DeviceObject": "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy%d" % n}

    def remove(self, script):
        shadow_id = script.split("ID = ''", 1)[1].split("''", 1)[0]
        return {"Removed": 1 if self.shadows.pop(shadow_id, None) else 0}

    def host(self, **overrides):
        answers = {"$s.Stop()": self.stop, "$s.Start()": self.start, "Write-VolumeCache": self.flush,
                   "Win32_ShadowCopy -MethodName Create": self.create, "Remove-CimInstance": self.remove}
        answers.update(overrides)
        return FakeWindowsHost(answers)


def config(**kw):
    return SentinelConfig(etc_dir="C:\\osam", **kw)


def test_configured_services_stop_and_start_again_and_the_sentinel_never_stops():
    machine = Machine(running={"MSSQLSERVER", "SQLSERVERAGENT", "W3SVC", "vmware-hcx-osam-sentinel", "Winmgmt"},
                      dependents={"MSSQLSERVER": ["SQLSERVERAGENT"]})
    host = machine.host()
    cfg = config(quiesce_services=("MSSQLSERVER", "W3SVC", "vmware-hcx-osam-sentinel", "winmgmt", "Spooler"))
    report = quiesce_windows(host, cfg, LAYOUT)
    assert LINUX_REPORT_KEYS <= set(report)
    assert report["stopped"] == ["MSSQLSERVER", "SQLSERVERAGENT", "W3SVC"]
    assert report["configured_not_running"] == ["Spooler"]
    assert [r["service"] for r in report["refused"]] == ["vmware-hcx-osam-sentinel", "winmgmt"]
    assert machine.running == {"vmware-hcx-osam-sentinel", "Winmgmt"}
    stop_scripts = [s for s in host.scripts() if "$s.Stop()" in s]
    assert all("vmware-hcx-osam-sentinel" not in names_in(s) for s in stop_scripts)
    json.dumps(report)

    result = unquiesce_windows(host, report)
    assert result["started"] == ["MSSQLSERVER", "SQLSERVERAGENT", "W3SVC"] and result["failed"] == []
    assert machine.running == {"MSSQLSERVER", "SQLSERVERAGENT", "W3SVC", "vmware-hcx-osam-sentinel", "Winmgmt"}
    # A service starts before the dependents that went down with it.
    starts = [n for op, n in machine.order if op == "start"]
    assert starts.index("MSSQLSERVER") < starts.index("SQLSERVERAGENT")


def test_volumes_are_flushed_then_snapshotted_with_overlays():
    machine = Machine(running=set())
    report = quiesce_windows(machine.host(), config(), LAYOUT)
    assert machine.flushed == ["\\\\?\\Volume{11111111-0000-0000-0000-100000000000}\\", "C:\\",
                               "\\\\?\\Volume{44444444-0000-0000-0000-400000000000}\\", "D:\\"]
    assert report["flushed"] == machine.flushed and report["synced"]
    assert report["snapshots"] == ["{SNAP-1}", "{SNAP-2}", "{SNAP-3}"]
    assert [(o["disk"], o["offset"]) for o in report["overlays"]] == [
        ("PhysicalDrive0", 122683392), ("PhysicalDrive0", 63890538496), ("PhysicalDrive1", 135266304)]
    assert [v["reason"] for v in report["read_live"]] == ["FAT32: VSS snapshots NTFS and ReFS only"]
    assert report["errors"] == [] and report["services_touched"] is False
    assert report["root"] == "C:\\"


def test_hooks_run_through_cmd_and_their_results_are_reported():
    def hook(argv):
        return subprocess.CompletedProcess(argv, 3 if "fail" in argv else 0, "out\r\n", "")

    def slow(argv):
        raise subprocess.TimeoutExpired(argv, 1)

    machine = Machine(running=set())
    host = machine.host()
    host.runs["cmd.exe"] = lambda argv: slow(argv) if "slow" in argv else hook(argv)
    cfg = config(pre_quiesce_hooks=('sqlcmd -Q "CHECKPOINT"', "fail now", "slow"))
    report = quiesce_windows(host, cfg, LAYOUT)
    assert [h["exit_code"] for h in report["hooks"]] == [0, 3, None]
    assert report["hooks"][2]["timed_out"] is True
    assert report["hooks"][0]["output"] == "out\r\n"
    assert host.calls[0] == ("run", 'cmd.exe /d /s /c "sqlcmd -Q "CHECKPOINT""')


def test_a_service_that_does_not_stop_is_reported_and_nothing_is_fatal():
    machine = Machine(running={"W3SVC"}, stuck={"Stubborn"})
    report = quiesce_windows(machine.host(), config(quiesce_services=("Stubborn", "W3SVC")), LAYOUT)
    assert report["stopped"] == ["W3SVC"]
    assert report["failed_to_stop"] == ["Stubborn"] and report["still_running"] == ["Stubborn"]
    assert any("Time out has expired" in e for e in report["errors"])
    assert report["snapshots"]


def test_a_snapshot_failure_is_reported_clearly_and_the_volume_read_live():
    machine = Machine(running=set())
    host = machine.host(**{"Win32_ShadowCopy -MethodName Create":
                           WindowsCommandError("PowerShell (Invoke-CimMethod)", 1, "VSS service is disabled")})
    report = quiesce_windows(host, config(), LAYOUT)
    assert report["snapshots"] == [] and report["overlays"] == []
    assert len(report["snapshot_failures"]) == 3
    assert "VSS snapshot of C:\\ failed, so the final sync reads it live from the quiesced disk" in "\n".join(report["errors"])
    assert "VSS service is disabled" in report["errors"][0]
    assert {v["volume"] for v in report["read_live"]} >= {"C:\\", "D:\\"}


def test_unquiesce_deletes_snapshots_even_when_a_service_fails_to_start():
    machine = Machine(running={"AppPool", "Reports"}, wont_start={"Reports"})
    host = machine.host()
    report = quiesce_windows(host, config(quiesce_services=("AppPool", "Reports")), LAYOUT)
    assert len(machine.shadows) == 3
    result = unquiesce_windows(host, report)
    assert machine.shadows == {}
    assert result["snapshots_deleted"] == report["snapshots"]
    assert result["started"] == ["AppPool"] and result["failed"] == ["Reports"]
    assert "Cannot start service" in result["errors"][0]


def test_unquiesce_deletes_snapshots_when_powershell_cannot_start_anything():
    machine = Machine(running={"AppPool"})
    host = machine.host()
    report = quiesce_windows(host, config(quiesce_services=("AppPool",)), LAYOUT)
    host.answers["$s.Start()"] = WindowsCommandError("PowerShell", 1, "access denied")
    result = unquiesce_windows(host, report)
    assert machine.shadows == {} and result["failed"] == ["AppPool"]


def test_essential_services_match_case_insensitively_and_by_pattern():
    assert is_essential("VMware-HCX-OSAM-Sentinel") and is_essential("vss") and is_essential("vmicheartbeat")
    assert not is_essential("MSSQLSERVER") and not is_essential("W3SVC")
