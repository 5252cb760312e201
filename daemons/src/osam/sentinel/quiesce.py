"""Best-effort quiesce before the final sync: let applications flush (pre-quiesce hooks), stop
the services that write data, and flush the page cache, so the final sync copies a resting
system. Nothing here is fatal: what could not be stopped is reported, and the final sync
goes on.

Only a guest replicating "/" under systemd has its services stopped; with another root the
machine's services have nothing to do with the replicated tree and are left alone.
"""
from __future__ import annotations

import datetime
import fnmatch
import os
import subprocess
from typing import Any, Callable, Dict, List, Optional

from osam.sentinel.config import SentinelConfig

SENTINEL_SERVICE = "vmware-hcx-osam-sentinel"

# Services that keep running through the quiesce: the sentinel itself and whatever it needs
# to reach the gateway, plus what keeps the machine reachable, logged in, and its disks and
# clock healthy. Patterns match unit names without ".service". Cron and atd are NOT spared:
# stopping them keeps scheduled jobs from starting to write during the final sync.
ESSENTIAL_SERVICES = (
    SENTINEL_SERVICE,
    "ssh", "sshd", "dropbear",
    "systemd-*", "dbus", "dbus-*", "dbus.*", "polkit", "polkitd",
    "getty@*", "serial-getty@*", "console-getty", "container-getty@*", "user@*",
    "user-runtime-dir@*",
    "networking", "network", "NetworkManager", "NetworkManager-*", "wicked*", "netplan-*",
    "wpa_supplicant", "dhclient*", "dhcpcd*", "ifup@*", "firewalld", "nftables",
    "iptables", "ip6tables", "ufw",
    "rsyslog", "syslog-ng", "syslog", "auditd",
    "chrony", "chronyd", "ntp", "ntpd", "ntpsec", "openntpd",
    "udev", "lvm2-*", "dm-event", "multipathd", "iscsid", "open-iscsi", "mdmonitor",
    "sssd", "nscd", "nslcd", "irqbalance",
    "vmtoolsd", "open-vm-tools", "vgauth", "qemu-guest-agent", "hv-*", "hyperv-*",
)

Run = Callable[..., "subprocess.CompletedProcess"]
OUTPUT_TAIL = 2000  # characters of a hook's output kept in the report


def is_essential(unit: str) -> bool:
    name = unit[:-len(".service")] if unit.endswith(".service") else unit
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in ESSENTIAL_SERVICES)


def systemd_is_pid1() -> bool:
    # What sd_booted() checks.
    return os.path.isdir("/run/systemd/system")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


_UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".target", ".mount", ".scope")


def _unit(name: str) -> str:
    return name if name.endswith(_UNIT_SUFFIXES) else name + ".service"


def running_services(run: Run, timeout: float) -> List[str]:
    done = run(["systemctl", "list-units", "--type=service", "--state=running",
                "--no-legend", "--plain"], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError("systemctl list-units exited %d: %s"
                           % (done.returncode, (done.stderr or "").strip()))
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def run_hook(command: str, run: Run, timeout: float) -> Dict[str, Any]:
    return hook_report(command, lambda: run(["/bin/sh", "-c", command], capture_output=True, text=True,
                                            timeout=timeout))


def hook_report(command: str, call: Callable[[], "subprocess.CompletedProcess"]) -> Dict[str, Any]:
    """What a pre-quiesce hook did, for the report: `call` runs it (on whatever shell)."""
    report: Dict[str, Any] = {"command": command, "exit_code": None, "timed_out": False}
    try:
        done = call()
    except subprocess.TimeoutExpired:
        report["timed_out"] = True
        return report
    except OSError as exc:
        report["error"] = str(exc)
        return report
    report["exit_code"] = done.returncode
    report["output"] = ((done.stdout or "") + (done.stderr or ""))[-OUTPUT_TAIL:]
    return report


def quiesce(config: SentinelConfig, *, root: str, run: Run = subprocess.run,
            systemd: Optional[bool] = None) -> Dict[str, Any]:
    """Run the hooks, stop application services (root "/" under systemd only), sync.

    `systemd` overrides the detection of systemd as PID 1 (tests)."""
    timeout = config.quiesce_timeout
    report: Dict[str, Any] = {
        "root": root, "started_at": _now(), "hooks": [], "services_touched": False,
        "services_note": "", "stopped": [], "failed_to_stop": [], "still_running": [],
        "configured_not_running": [], "errors": [],
    }
    report["hooks"] = [run_hook(hook, run, timeout) for hook in config.pre_quiesce_hooks]

    if os.path.realpath(root) != "/":
        report["services_note"] = "services left alone because root is not \"/\""
    elif not (systemd_is_pid1() if systemd is None else systemd):
        report["services_note"] = "services left alone because systemd is not PID 1"
    else:
        report["services_touched"] = True
        _stop_services(config, run, timeout, report)

    os.sync()
    report["synced"] = True
    report["finished_at"] = _now()
    return report


def _stop_services(config: SentinelConfig, run: Run, timeout: float,
                   report: Dict[str, Any]) -> None:
    try:
        before = running_services(run, timeout)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        report["errors"].append("cannot list running services: %s" % exc)
        return
    # Configured services are stopped even when on the spare list: the operator asked.
    wanted = {_unit(s) for s in config.quiesce_services} - {_unit(SENTINEL_SERVICE)}
    targets = sorted(u for u in before if u in wanted or not is_essential(u))
    report["configured_not_running"] = sorted(wanted - set(before))
    if targets:
        try:
            done = run(["systemctl", "stop", "--"] + targets, capture_output=True, text=True,
                       timeout=timeout)
            if done.returncode != 0:
                report["errors"].append("systemctl stop exited %d: %s"
                                        % (done.returncode, (done.stderr or "").strip()))
        except (OSError, subprocess.TimeoutExpired) as exc:
            report["errors"].append("systemctl stop: %s" % exc)
    # Ask systemd what is still running rather than trusting exit codes.
    try:
        after = running_services(run, timeout)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        report["errors"].append("cannot list running services: %s" % exc)
        after = targets  # unknown: claim nothing was stopped
    still = set(after)
    report["stopped"] = [u for u in targets if u not in still]
    report["failed_to_stop"] = [u for u in targets if u in still]
    report["still_running"] = sorted(still)


def unquiesce(report: Dict[str, Any], *, run: Run = subprocess.run,
              timeout: float = 120) -> Dict[str, Any]:
    """Start again what `quiesce` stopped (a switchover was cancelled)."""
    stopped = list(report.get("stopped", []))
    result: Dict[str, Any] = {"started": [], "failed": [], "errors": []}
    if not stopped:
        return result
    try:
        done = run(["systemctl", "start", "--"] + stopped, capture_output=True, text=True,
                   timeout=timeout)
        if done.returncode != 0:
            result["errors"].append("systemctl start exited %d: %s"
                                    % (done.returncode, (done.stderr or "").strip()))
        running = set(running_services(run, timeout))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        result["errors"].append(str(exc))
        running = set()
    result["started"] = [u for u in stopped if u in running]
    result["failed"] = [u for u in stopped if u not in running]
    return result
