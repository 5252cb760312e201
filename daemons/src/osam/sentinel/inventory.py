"""The guest's configuration as sent on registration: enough for the receiver to rebuild the
disks (partition tables, file systems, UUIDs, labels: `layout`, see osam.sentinel.layout) and
the VM (CPUs, memory, NICs, boot mode). Every probe is independent: one that fails (tool
missing, no permission) adds an entry to `errors` and leaves its key empty; collecting never
raises. The layout keeps the failures of its own parts in `layout["errors"]`.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
from typing import Any, Callable, Dict, List, Optional

from osam.sentinel.layout import collect_layout
from osam.sentinel.walk import read_mountinfo

LSBLK_COLUMNS = ("NAME,KNAME,PATH,SIZE,TYPE,FSTYPE,UUID,LABEL,PARTUUID,PTUUID,PTTYPE,"
                 "MOUNTPOINTS,MODEL,SERIAL")
TOOL_TIMEOUT = 30


def collect_inventory(root: str = "/") -> Dict[str, Any]:
    """Files describing the installed OS (os-release) are read below `root`, and the layout
    covers the disks of the file systems mounted there; everything else describes the running
    machine."""
    errors: List[Dict[str, str]] = []

    def probe(name: str, fn: Callable[[], Any], empty: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # a probe must never stop the inventory
            errors.append({"probe": name, "error": "%s: %s" % (type(exc).__name__, exc)})
            return empty

    inventory = {
        "hostname": probe("hostname", lambda: read_hostname(root), ""),
        "os": probe("os", lambda: read_os_release(root), {}),
        "kernel": probe("kernel", read_kernel, {}),
        "cpus": probe("cpus", read_cpus, {}),
        "memory": probe("memory", read_memory_bytes, 0),
        "disks": probe("disks", read_disks, []),
        "mounts": probe("mounts", read_mounts, []),
        "nics": probe("nics", read_nics, []),
        "boot": probe("boot", read_boot_mode, ""),
        "system_uuid": probe("system_uuid", read_system_uuid, ""),
        "layout": probe("layout", lambda: collect_layout(root), {}),
        "collected_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    inventory["errors"] = errors
    return inventory


def _run_json(argv: List[str]) -> Any:
    done = subprocess.run(argv, capture_output=True, timeout=TOOL_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (
            argv[0], done.returncode, done.stderr.decode(errors="replace").strip()))
    return json.loads(done.stdout)


def parse_os_release(text: str) -> Dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            values[key] = value
    return {
        "id": values.get("ID", "linux"),
        "version_id": values.get("VERSION_ID", ""),
        "pretty_name": values.get("PRETTY_NAME", ""),
        "id_like": values.get("ID_LIKE", "").split(),
    }


def read_os_release(root: str = "/") -> Dict[str, Any]:
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        path = os.path.join(root, candidate)
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                return parse_os_release(f.read())
    raise FileNotFoundError("no os-release below %s" % root)


def read_hostname(root: str = "/") -> str:
    """The running machine's name; for another root, the name that system is configured with
    (its /etc/hostname), which is the name it boots with."""
    if os.path.realpath(root) != "/":
        try:
            with open(os.path.join(root, "etc/hostname"), encoding="utf-8", errors="replace") as f:
                configured = f.read().split("#", 1)[0].strip()
            if configured:
                return configured
        except OSError:
            pass
    return socket.gethostname()


def read_system_uuid() -> str:
    """The machine's SMBIOS UUID (a vSphere VM's BIOS UUID): how a source vCenter finds it.
    Readable by root only; empty where the firmware has none."""
    try:
        with open("/sys/class/dmi/id/product_uuid", encoding="ascii") as f:
            return f.read().strip().lower()
    except FileNotFoundError:
        return ""


def read_kernel() -> Dict[str, str]:
    u = os.uname()
    return {"sysname": u.sysname, "release": u.release, "version": u.version,
            "machine": u.machine}


def read_cpus() -> Dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "cpu model", "Processor") and value.strip():
                model = value.strip()
                break
    return {"count": os.cpu_count() or 0, "model": model}


def read_memory_bytes() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def read_disks() -> List[Dict[str, Any]]:
    """lsblk's tree (partitions nested under their disk as `children`), sizes in bytes."""
    argv = ["lsblk", "-J", "-b", "-o", LSBLK_COLUMNS]
    try:
        devices = _run_json(argv)["blockdevices"]
    except RuntimeError:
        # util-linux < 2.37 knows only MOUNTPOINT (one per device).
        argv[-1] = LSBLK_COLUMNS.replace("MOUNTPOINTS", "MOUNTPOINT")
        devices = _run_json(argv)["blockdevices"]
    _normalise_mountpoints(devices)
    return devices


def _normalise_mountpoints(devices: List[Dict[str, Any]]) -> None:
    """Always a `mountpoints` list, without the null lsblk reports for unmounted devices."""
    for dev in devices:
        points = dev.pop("mountpoints", None) or [dev.pop("mountpoint", None)]
        dev["mountpoints"] = [p for p in points if p]
        _normalise_mountpoints(dev.get("children", []))


def read_mounts() -> List[Dict[str, str]]:
    def text(path: bytes) -> str:  # JSON-safe even for names that are not UTF-8
        return path.decode("utf-8", "backslashreplace")

    return [{"source": text(m.source), "target": text(m.mount_point),
             "fstype": m.fstype, "options": m.options, "super_options": m.super_options,
             "dev": m.dev}
            for m in read_mountinfo()]


def read_nics() -> List[Dict[str, Any]]:
    nics = []
    for link in _run_json(["ip", "-j", "addr"]):
        nics.append({
            "name": link.get("ifname", ""),
            "mac": link.get("address", ""),
            "link_type": link.get("link_type", ""),
            "mtu": link.get("mtu", 0),
            "state": link.get("operstate", ""),
            "addresses": [
                {"family": a.get("family", ""), "address": a.get("local", ""),
                 "prefix": a.get("prefixlen", 0)}
                for a in link.get("addr_info", []) if a.get("local")
            ],
        })
    return nics


def read_boot_mode(sys_root: Optional[str] = None) -> str:
    return "uefi" if os.path.isdir(os.path.join(sys_root or "/", "sys/firmware/efi")) else "bios"
