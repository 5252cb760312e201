"""Best-effort quiesce of a Windows guest before the final sync: pre-quiesce hooks (cmd.exe),
stop the services the operator named, flush every volume's cache, then snapshot the volumes
(windows.vss) so the final sync reads them frozen. Nothing is fatal: what failed is reported,
and the final sync goes on; a volume without a snapshot is read live from the quiesced disk.

Unlike Linux, only the configured services (quiesce_services in etc\\sync.params) are stopped:
a Windows machine runs hundreds of system services, and no rule tells applications from the
system. Services the machine and this migration need are never stopped, even when configured
(VSS and WMI make the snapshots; the sentinel sends the data).

The report has the Linux quiesce report's keys (osam.sentinel.quiesce) and, for the final sync,
"snapshots" (ids), "overlays" (see windows.vss), "snapshot_failures" and "read_live".
"""
from __future__ import annotations

import datetime
import fnmatch
from typing import Any, Dict, List, Optional, Sequence, Union

from ..config import SentinelConfig
from ..quiesce import SENTINEL_SERVICE, hook_report
from .commands import WindowsHost, ps_quote
from .vss import create_snapshots, delete_snapshots, overlays, snapshot_record, snapshot_targets

# Never stopped (fnmatch patterns, case-insensitive, on service names): the sentinel, what it
# needs to reach the gateway and snapshot, and what keeps the machine reachable and healthy.
ESSENTIAL_SERVICES = (
    SENTINEL_SERVICE,
    "RpcSs", "RpcEptMapper", "DcomLaunch", "LSM", "SamSs", "lsass", "EventLog", "PlugPlay",
    "Power", "ProfSvc", "Schedule", "SENS", "SystemEventsBroker", "BrokerInfrastructure",
    "CryptSvc", "KeyIso", "gpsvc", "Winmgmt", "VSS", "swprv", "vds", "StorSvc",
    "Dhcp", "Dnscache", "NlaSvc", "nsi", "netprofm", "LanmanWorkstation", "LanmanServer",
    "BFE", "MpsSvc", "IKEEXT", "PolicyAgent", "iphlpsvc", "WinHttpAutoProxySvc",
    "Netlogon", "W32Time", "WinRM", "TermService", "SessionEnv", "UmRdpService", "sshd",
    "Eventlog*", "VMTools", "VGAuthService", "vm3dservice", "vmvss", "QEMU-GA", "vmic*",
)
HOOK_SHELL = "cmd.exe /d /s /c"   # /s: the command's own quotes are kept as written
Report = Dict[str, Any]


def is_essential(name: str) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in ESSENTIAL_SERVICES)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _ps_list(names: Sequence[str]) -> str:
    return "@(" + ", ".join(ps_quote(n) for n in names) + ")"


def stop_script(names: Sequence[str], timeout: int) -> str:
    """Stop each service and wait for it; a service with an essential service among its running
    dependents is left alone (ServiceController.Stop stops the dependents too)."""
    return """$timeout = [TimeSpan]::FromSeconds(%d)
$essential = %s
foreach ($name in %s) {
  $r = [ordered]@{name = $name; found = $false; was_running = $false; stopped = $false;
                  dependents = @(); error = $null}
  try {
    $s = Get-Service -Name $name -ErrorAction Stop
    $r.found = $true; $r.name = $s.Name
    $r.was_running = $s.Status -ne 'Stopped'
    if ($r.was_running) {
      $deps = @($s.DependentServices | Where-Object { $_.Status -ne 'Stopped' } | ForEach-Object { $_.Name })
      $blocking = @($deps | Where-Object { $d = $_; @($essential | Where-Object { $d -like $_ }).Count -gt 0 })
      if ($blocking.Count -gt 0) { throw ('essential dependent services would stop: ' + ($blocking -join ', ')) }
      $r.dependents = $deps
      if ($s.Status -ne 'StopPending') { $s.Stop() }
      $s.WaitForStatus('Stopped', $timeout)
    }
    $s.Refresh(); $r.stopped = $s.Status -eq 'Stopped'
  } catch { $r.error = $_.Exception.Message }
  [pscustomobject]$r
}""" % (timeout, _ps_list(ESSENTIAL_SERVICES), _ps_list(names))


def start_script(names: Sequence[str], timeout: int) -> str:
    return """$timeout = [TimeSpan]::FromSeconds(%d)
foreach ($name in %s) {
  $r = [ordered]@{name = $name; running = $false; error = $null}
  try {
    $s = Get-Service -Name $name -ErrorAction Stop
    if ($s.Status -ne 'Running') { if ($s.Status -ne 'StartPending') { $s.Start() }; $s.WaitForStatus('Running', $timeout) }
    $s.Refresh(); $r.running = $s.Status -eq 'Running'
  } catch { $r.error = $_.Exception.Message }
  [pscustomobject]$r
}""" % (timeout, _ps_list(names))


def flush_script(volumes: Sequence[str]) -> str:
    return """foreach ($v in %s) {
  $r = [ordered]@{volume = $v; flushed = $false; error = $null}
  try {
    if ($v.Length -eq 3 -and $v.EndsWith(':\\')) { Write-VolumeCache -DriveLetter $v[0] }
    else { Write-VolumeCache -Path $v }
    $r.flushed = $true
  } catch { $r.error = $_.Exception.Message }
  [pscustomobject]$r
}""" % _ps_list(volumes)


def run_hook(host: WindowsHost, command: str, timeout: float) -> Dict[str, Any]:
    return hook_report(command, lambda: host.run('%s "%s"' % (HOOK_SHELL, command), timeout=timeout))


def _answers(doc: Any) -> List[Dict[str, Any]]:
    items = doc if isinstance(doc, list) else [] if doc is None else [doc]
    return [i for i in items if isinstance(i, dict)]


def _disks(disks_layout: Union[Dict[str, Any], Sequence[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    if isinstance(disks_layout, dict):
        return list(disks_layout.get("disks") or [])
    return list(disks_layout or [])


def flush_targets(disks: Sequence[Dict[str, Any]]) -> List[str]:
    names = []
    for disk in disks:
        for p in (disk.get("partition_table") or {}).get("partitions") or []:
            if p.get("volume") and p["volume"].get("fs"):
                names.append(p["drive_letter"] + ":\\" if p.get("drive_letter") else p["volume"]["path"])
    return names


def quiesce_windows(host: WindowsHost, config: SentinelConfig,
                    disks_layout: Union[Dict[str, Any], Sequence[Dict[str, Any]]], *,
                    snapshots: bool = True) -> Report:
    """`disks_layout`: the inventory's layout (or its "disks"). `snapshots=False` skips VSS
    (the final sync then reads every volume live)."""
    timeout = config.quiesce_timeout
    disks = _disks(disks_layout)
    report: Report = {
        "root": disks_layout.get("root", "") if isinstance(disks_layout, dict) else "",
        "started_at": _now(), "hooks": [], "services_touched": False,
        "services_note": "", "stopped": [], "failed_to_stop": [], "still_running": [],
        "configured_not_running": [], "refused": [], "errors": [], "flushed": [],
        "snapshots": [], "snapshot_records": [], "overlays": [], "snapshot_failures": [],
        "read_live": [],
    }
    report["hooks"] = [run_hook(host, hook, timeout) for hook in config.pre_quiesce_hooks]
    _stop_services(host, config, timeout, report)
    _flush(host, disks, report)
    report["synced"] = bool(report["flushed"])
    if snapshots:
        _snapshot(host, disks, report)
    else:
        report["services_note"] = (report["services_note"] + " " if report["services_note"] else "") + \
            "snapshots not taken: every volume is read live"
    report["finished_at"] = _now()
    return report


def _stop_services(host: WindowsHost, config: SentinelConfig, timeout: int, report: Report) -> None:
    wanted: List[str] = []
    for name in config.quiesce_services:
        if is_essential(name):
            report["refused"].append({"service": name, "reason": "essential to the machine or the migration"})
        elif name.lower() not in (w.lower() for w in wanted):
            wanted.append(name)
    if not wanted:
        report["services_note"] = "no services configured to stop (quiesce_services)"
        return
    report["services_touched"] = True
    try:
        answers = _answers(host.powershell_json(stop_script(wanted, timeout),
                                                timeout=timeout * len(wanted) + 60))
    except Exception as exc:
        report["errors"].append("stopping services: %s: %s" % (type(exc).__name__, exc))
        answers = []
    for a in answers:
        name = str(a.get("name") or "")
        if a.get("error"):
            report["errors"].append("%s: %s" % (name, a["error"]))
        if not a.get("found") or not a.get("was_running"):
            report["configured_not_running"].append(name)
        elif a.get("stopped"):
            # Dependents went down with it: they come back after it.
            report["stopped"].extend([name] + [d for d in a.get("dependents") or []
                                               if d not in report["stopped"]])
        else:
            report["failed_to_stop"].append(name)
            report["still_running"].append(name)


def _flush(host: WindowsHost, disks: Sequence[Dict[str, Any]], report: Report) -> None:
    volumes = flush_targets(disks)
    if not volumes:
        return
    try:
        answers = _answers(host.powershell_json(flush_script(volumes)))
    except Exception as exc:
        report["errors"].append("flushing volumes: %s: %s" % (type(exc).__name__, exc))
        return
    for a in answers:
        if a.get("flushed"):
            report["flushed"].append(a.get("volume"))
        else:
            report["errors"].append("flushing %s: %s" % (a.get("volume"), a.get("error")))


def _snapshot(host: WindowsHost, disks: Sequence[Dict[str, Any]], report: Report) -> None:
    targets, live = snapshot_targets(disks)
    made, failures = create_snapshots(host, targets)
    report["snapshots"] = [s.id for s in made]
    report["snapshot_records"] = [snapshot_record(s) for s in made]
    report["overlays"] = overlays(made)
    report["snapshot_failures"] = failures
    report["read_live"] = live + [dict(volume=f["volume"], disk=f["disk"], partition=f["partition"],
                                       reason="snapshot failed") for f in failures]
    for f in failures:
        report["errors"].append("VSS snapshot of %s failed, so the final sync reads it live from "
                                "the quiesced disk: %s" % (f["volume"], f["error"]))


def release_snapshots(host: WindowsHost, report: Report) -> Dict[str, Any]:
    """Delete the quiesce's snapshots (after the final sync, or when it is cancelled)."""
    return delete_snapshots(host, list(report.get("snapshots") or []))


def unquiesce_windows(host: WindowsHost, report: Report, *, timeout: Optional[int] = None) -> Dict[str, Any]:
    """Delete the snapshots, then start again what the quiesce stopped (in the order they were
    stopped: a service before the dependents that went down with it). The snapshots are
    deleted whatever happens to the services."""
    result: Dict[str, Any] = {"snapshots_deleted": [], "snapshots_failed": [], "started": [],
                              "failed": [], "errors": []}
    deleted = release_snapshots(host, report)
    result["snapshots_deleted"], result["snapshots_failed"] = deleted["deleted"], deleted["failed"]
    stopped = list(report.get("stopped") or [])
    if not stopped:
        return result
    wait = int(timeout or 120)
    try:
        answers = _answers(host.powershell_json(start_script(stopped, wait),
                                                timeout=wait * len(stopped) + 60))
    except Exception as exc:
        result["errors"].append("starting services: %s: %s" % (type(exc).__name__, exc))
        answers = []
    running = {str(a.get("name")) for a in answers if a.get("running")}
    for a in answers:
        if a.get("error"):
            result["errors"].append("%s: %s" % (a.get("name"), a["error"]))
    result["started"] = [s for s in stopped if s in running]
    result["failed"] = [s for s in stopped if s not in running]
    return result
