"""A Windows guest's configuration as sent on registration, with the Linux inventory's top-level
keys (osam.sentinel.inventory) so the receiver reads both alike: `os.id` is "windows" and
`kernel.sysname` "Windows"; `layout` is described in windows.layout; `agent` says where the
sentinel's Python is (the Windows fix-up runs it in the replica).

Every probe is one PowerShell script; one that fails adds an entry to `errors` and leaves its
key empty, and collecting never raises. The parse_* functions are pure (the scripts' JSON in,
the inventory's parts out).
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional

from .commands import WindowsHost
from .layout import DISKS_SCRIPT, PARTITIONS_SCRIPT, VOLUMES_SCRIPT, build_layout
from .values import as_list, flag, integer, text

COMPUTER_SYSTEM_SCRIPT = """$cs = Get-CimInstance Win32_ComputerSystem
[pscustomobject]@{DNSHostName = $cs.DNSHostName; Name = $cs.Name; Domain = $cs.Domain;
  PartOfDomain = $cs.PartOfDomain; NumberOfLogicalProcessors = $cs.NumberOfLogicalProcessors;
  NumberOfProcessors = $cs.NumberOfProcessors; TotalPhysicalMemory = $cs.TotalPhysicalMemory;
  Manufacturer = $cs.Manufacturer; Model = $cs.Model;
  ProcessorName = (Get-CimInstance Win32_Processor | Select-Object -First 1 -ExpandProperty Name)}"""
OPERATING_SYSTEM_SCRIPT = """Get-CimInstance Win32_OperatingSystem | Select-Object Caption, Version,
  BuildNumber, OSArchitecture, ProductType, SystemDrive, WindowsDirectory"""
SYSTEM_UUID_SCRIPT = "Get-CimInstance Win32_ComputerSystemProduct | Select-Object UUID"
NIC_CONFIGS_SCRIPT = """Get-CimInstance Win32_NetworkAdapterConfiguration -Filter 'IPEnabled = TRUE' |
  Select-Object Index, InterfaceIndex, Description, MACAddress, IPAddress, IPSubnet,
  DefaultIPGateway, DNSServerSearchOrder, DNSDomain, DHCPEnabled, SettingID, MTU"""
NIC_ADAPTERS_SCRIPT = """Get-CimInstance Win32_NetworkAdapter | Select-Object Index, NetConnectionID,
  Name, MACAddress, AdapterTypeId, PhysicalAdapter, NetEnabled, GUID"""
# $env:firmware_type is set by Windows 8 / Server 2012 and later; Confirm-SecureBootUEFI answers
# (True or False) on UEFI firmware only, and is not supported on BIOS.
FIRMWARE_SCRIPT = """$type = $env:firmware_type
if (-not $type) {
  try { Confirm-SecureBootUEFI | Out-Null; $type = 'UEFI' }
  catch [System.PlatformNotSupportedException] { $type = 'Legacy' }
  catch { $type = 'UEFI' }
}
[pscustomobject]@{FirmwareType = $type}"""

PROBES: Dict[str, str] = {
    "computer_system": COMPUTER_SYSTEM_SCRIPT, "operating_system": OPERATING_SYSTEM_SCRIPT,
    "system_uuid": SYSTEM_UUID_SCRIPT, "nic_configs": NIC_CONFIGS_SCRIPT,
    "nic_adapters": NIC_ADAPTERS_SCRIPT, "firmware": FIRMWARE_SCRIPT, "disks": DISKS_SCRIPT,
    "partitions": PARTITIONS_SCRIPT, "volumes": VOLUMES_SCRIPT,
}

ARCHITECTURES = {"64-bit": "x86_64", "32-bit": "i686", "arm 64-bit": "aarch64",
                 "arm64-based processor": "aarch64"}
PRODUCT_TYPES = {1: "workstation", 2: "domain_controller", 3: "server"}
ETHERNET_ADAPTER_TYPE = 0       # Win32_NetworkAdapter.AdapterTypeId: Ethernet 802.3
_SERVER = re.compile(r"Windows Server (\d{4})(\s+R2)?", re.I)
_CLIENT = re.compile(r"Windows (\d+(?:\.\d+)?)\b", re.I)
_NO_UUIDS = {"", "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"}


def _one(doc: Any) -> Dict[str, Any]:
    items = as_list(doc)
    if not items or not isinstance(items[0], dict):
        raise ValueError("no answer")
    return items[0]


def windows_version_id(caption: str) -> str:
    """The marketing version vSphere's guest ids go by: "2019", "2012r2", "10", "11"."""
    server = _SERVER.search(caption)
    if server:
        return server.group(1) + ("r2" if server.group(2) else "")
    client = _CLIENT.search(caption)
    return client.group(1) if client else ""


def parse_operating_system(doc: Any) -> Dict[str, Any]:
    o = _one(doc)
    caption = text(o.get("Caption"))
    product = o.get("ProductType")
    return {"id": "windows", "name": caption, "pretty_name": caption, "id_like": [],
            "version_id": windows_version_id(caption), "version": text(o.get("Version")),
            "build": text(o.get("BuildNumber")), "architecture": text(o.get("OSArchitecture")),
            "product_type": PRODUCT_TYPES.get(integer(product), text(product)),
            "system_drive": text(o.get("SystemDrive")),
            "windows_directory": text(o.get("WindowsDirectory"))}


def parse_kernel(doc: Any) -> Dict[str, str]:
    o = _one(doc)
    arch = text(o.get("OSArchitecture"))
    return {"sysname": "Windows", "release": text(o.get("Version")),
            "version": text(o.get("BuildNumber")),
            "machine": ARCHITECTURES.get(arch.lower(), arch)}


def parse_hostname(doc: Any) -> str:
    c = _one(doc)
    return text(c.get("DNSHostName")) or text(c.get("Name"))


def parse_domain(doc: Any) -> Dict[str, Any]:
    c = _one(doc)
    return {"domain": text(c.get("Domain")), "part_of_domain": flag(c.get("PartOfDomain"))}


def parse_cpus(doc: Any) -> Dict[str, Any]:
    c = _one(doc)
    return {"count": integer(c.get("NumberOfLogicalProcessors")),
            "sockets": integer(c.get("NumberOfProcessors")),
            "model": text(c.get("ProcessorName"))}


def parse_memory(doc: Any) -> int:
    return integer(_one(doc).get("TotalPhysicalMemory"))


def parse_system_uuid(doc: Any) -> str:
    uuid = text(_one(doc).get("UUID")).lower()
    return "" if uuid in _NO_UUIDS else uuid


def parse_boot_mode(doc: Any) -> str:
    firmware = text(_one(doc).get("FirmwareType")).lower()
    if firmware == "uefi":
        return "uefi"
    if firmware in ("legacy", "bios"):
        return "bios"
    raise ValueError("unknown firmware type %r" % firmware)


def _mac(value: Any) -> str:
    return text(value).lower().replace("-", ":")


def _prefix(address: str, subnet: str) -> int:
    if subnet.isdigit():                 # IPv6 entries carry a prefix length
        return int(subnet)
    try:
        return ipaddress.ip_network("0.0.0.0/" + subnet).prefixlen
    except ValueError:
        return 0


def parse_nics(configs_doc: Any, adapters_doc: Any = None) -> List[Dict[str, Any]]:
    """IP-enabled adapters, named as the user knows them (NetConnectionID, "Ethernet0") when
    Win32_NetworkAdapter answered, else by description."""
    adapters = {integer(a.get("Index"), -1): a for a in as_list(adapters_doc) if isinstance(a, dict)}
    nics = []
    for c in sorted((c for c in as_list(configs_doc) if isinstance(c, dict)),
                    key=lambda c: integer(c.get("Index"))):
        adapter = adapters.get(integer(c.get("Index"), -2), {})
        ips = [text(a) for a in as_list(c.get("IPAddress"))]
        subnets = [text(s) for s in as_list(c.get("IPSubnet"))]
        addresses = []
        for i, ip in enumerate(ips):
            if not ip:
                continue
            family = "inet6" if ":" in ip else "inet"
            subnet = subnets[i] if i < len(subnets) else ""
            addresses.append({"family": family, "address": ip, "prefix": _prefix(ip, subnet)})
        ethernet = adapter.get("AdapterTypeId", ETHERNET_ADAPTER_TYPE) == ETHERNET_ADAPTER_TYPE
        nics.append({
            "name": text(adapter.get("NetConnectionID")) or text(c.get("Description")),
            "description": text(c.get("Description")),
            "mac": _mac(c.get("MACAddress") or adapter.get("MACAddress")),
            "link_type": "ether" if ethernet else "other",
            "mtu": integer(c.get("MTU")),
            "state": "up" if flag(adapter.get("NetEnabled", True)) else "down",
            "physical": flag(adapter.get("PhysicalAdapter", True)),
            "guid": text(c.get("SettingID")).upper(),
            "interface_index": integer(c.get("InterfaceIndex")),
            "dhcp": flag(c.get("DHCPEnabled")),
            "addresses": addresses,
            "gateways": [text(g) for g in as_list(c.get("DefaultIPGateway")) if text(g)],
            "dns": [text(d) for d in as_list(c.get("DNSServerSearchOrder")) if text(d)],
            "dns_domain": text(c.get("DNSDomain")),
        })
    return nics


def _default_install_dir() -> str:
    # The venv lives in INSTALL_DIR\venv: sys.prefix is the venv.
    return os.path.dirname(sys.prefix.rstrip("\\/"))


def collect_windows_inventory(host: WindowsHost, *, install_dir: Optional[str] = None,
                              python: Optional[str] = None) -> Dict[str, Any]:
    errors: List[Dict[str, str]] = []
    answers: Dict[str, Any] = {}

    def ask(name: str) -> Any:
        """Each script runs once, however many parts read its answer; a failure is recorded
        once and raised to every part that needs it."""
        if name not in answers:
            try:
                answers[name] = host.powershell_json(PROBES[name])
            except Exception as exc:
                answers[name] = exc
                errors.append({"probe": name, "error": "%s: %s" % (type(exc).__name__, exc)})
        if isinstance(answers[name], Exception):
            raise _Recorded() from answers[name]
        return answers[name]

    def probe(name: str, fn: Callable[[], Any], empty: Any) -> Any:
        try:
            return fn()
        except _Recorded:
            return empty
        except Exception as exc:  # a probe must never stop the inventory
            errors.append({"probe": name, "error": "%s: %s" % (type(exc).__name__, exc)})
            return empty

    def optional(name: str) -> Any:
        try:
            return ask(name)
        except _Recorded:
            return None

    os_info = probe("os", lambda: parse_operating_system(ask("operating_system")), {})
    boot_mode = probe("boot", lambda: parse_boot_mode(ask("firmware")), "")

    def layout() -> Dict[str, Any]:
        before = len(errors)
        parts, volumes = optional("partitions"), optional("volumes")
        return build_layout(ask("disks"), parts, volumes, boot_mode=boot_mode,
                            system_drive=os_info.get("system_drive") or "C:",
                            errors=errors[before:])

    layout_doc = probe("layout", layout, {})
    inventory = {
        "hostname": probe("hostname", lambda: parse_hostname(ask("computer_system")), ""),
        "domain": probe("domain", lambda: parse_domain(ask("computer_system")), {}),
        "os": os_info,
        "kernel": probe("kernel", lambda: parse_kernel(ask("operating_system")), {}),
        "cpus": probe("cpus", lambda: parse_cpus(ask("computer_system")), {}),
        "memory": probe("memory", lambda: parse_memory(ask("computer_system")), 0),
        "disks": [{k: d[k] for k in ("name", "path", "size", "model", "serial", "bus_type")}
                  for d in layout_doc.get("disks", [])],
        "mounts": list(layout_doc.get("mounts", [])),
        "nics": probe("nics", lambda: parse_nics(ask("nic_configs"), optional("nic_adapters")), []),
        "boot": boot_mode,
        "system_uuid": probe("system_uuid", lambda: parse_system_uuid(ask("system_uuid")), ""),
        "layout": layout_doc,
        "agent": {"python": python or sys.executable,
                  "install_dir": install_dir if install_dir is not None else _default_install_dir()},
        "collected_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    inventory["errors"] = errors
    return inventory


class _Recorded(Exception):
    """A probe's script failed and its error is already in `errors`."""
