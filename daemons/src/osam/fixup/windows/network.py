"""The source's static IPv4 settings, carried to the replica's new NICs.

Windows keeps TCP/IP settings per adapter, under the adapter's interface GUID. The replica's
vmxnet3 adapters are new devices with new GUIDs, so Windows would start them on DHCP and keep
the old settings on the vanished ("ghost") adapters, whose addresses then conflict when an
operator types them in again. So the settings are read from the hive, handed to the first
boot (which applies them to the adapter with the new MAC), and the old interfaces are set to
DHCP, their previous values kept in the backup.

IPv6 addresses that were configured by hand live in the NSI store as binary blobs, not in
these keys: they are not carried (a warning says so when the inventory shows a global one).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ..context import Nic
from .hive import REG_DWORD, REG_MULTI_SZ, REG_SZ, Hive

STEP = "network"
GUID_KEYS = ("guid", "interface_guid", "interface_id", "netcfg_instance_id")


@dataclass
class InterfaceSettings:
    guid: str
    dhcp: bool
    ipv4: List[Dict[str, Any]] = field(default_factory=list)    # {"address", "prefix"}
    gateways: List[str] = field(default_factory=list)
    dns: List[str] = field(default_factory=list)

    @property
    def has_static(self) -> bool:
        return bool(self.ipv4 or self.dns) and (not self.dhcp or bool(self.dns))


def interfaces_key(control_set: str) -> str:
    return f"{control_set}\\Services\\Tcpip\\Parameters\\Interfaces"


def read_interfaces(hive: Hive, control_set: str) -> List[InterfaceSettings]:
    found = []
    base = interfaces_key(control_set)
    for guid in hive.subkeys(base):
        values = {name.lower(): value for name, (_, value) in hive.values(f"{base}\\{guid}").items()}
        dhcp = values.get("enabledhcp", 1) != 0
        addresses = _strings(values.get("ipaddress"))
        masks = _strings(values.get("subnetmask"))
        ipv4 = []
        if not dhcp:
            for address, mask in zip(addresses, masks):
                prefix = _prefix(address, mask)
                if prefix is not None and address != "0.0.0.0":
                    ipv4.append({"address": address, "prefix": prefix})
        gateways = [] if dhcp else [g for g in _strings(values.get("defaultgateway")) if g]
        dns = [s for s in re.split(r"[,\s]+", str(values.get("nameserver") or "")) if s]
        found.append(InterfaceSettings(guid, dhcp, ipv4, gateways, dns))
    return found


def _strings(value: Any) -> List[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value]
    if isinstance(value, str) and value:
        return [value.strip()]
    return []


def _prefix(address: str, mask: str) -> Optional[int]:
    try:
        ipaddress.IPv4Address(address)
        return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        return None


# -- pairing with the destination's NICs -------------------------------------------------------
def source_nics(inventory: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The inventory's physical Ethernet adapters, in the inventory's order: the ones the
    destination VM gets a NIC for."""
    return [nic for nic in inventory.get("nics") or []
            if _mac(nic.get("mac")) not in ("", "00:00:00:00:00:00")
            and nic.get("physical", True) is not False
            and nic.get("link_type", "ether") == "ether"]


def plan(interfaces: Sequence[InterfaceSettings], inventory: Dict[str, Any], nics: Sequence[Nic],
         warnings: List[str]) -> List[Dict[str, Any]]:
    """One entry per source NIC that has static settings: what the first boot applies to
    the destination NIC with `mac`."""
    by_guid = {i.guid.strip("{}").lower(): i for i in interfaces}
    entries = []
    for index, nic in enumerate(source_nics(inventory)):
        settings = _match(nic, by_guid, interfaces)
        _warn_ipv6(nic, warnings)
        if settings is None or not settings.has_static:
            continue
        if index >= len(nics):
            warnings.append(f"{STEP}: source NIC {nic.get('name') or index} ({_mac(nic.get('mac'))}) "
                            f"has static settings but the destination VM has only {len(nics)} NIC(s): "
                            f"they are not applied")
            continue
        entry = {"mac": _mac(nics[index].mac), "source_mac": _mac(nic.get("mac")),
                 "source_name": str(nic.get("name") or ""), "source_interface": settings.guid}
        entry.update({k: v for k, v in asdict(settings).items() if k != "guid"})
        entries.append(entry)
    return entries


def _match(nic: Dict[str, Any], by_guid: Dict[str, InterfaceSettings],
           interfaces: Sequence[InterfaceSettings]) -> Optional[InterfaceSettings]:
    for key in GUID_KEYS:
        guid = str(nic.get(key) or "").strip("{}").lower()
        if guid and guid in by_guid:
            return by_guid[guid]
    # No interface id in the inventory: the interface holding one of the NIC's addresses.
    addresses = {str(a.get("address")) for a in nic.get("addresses") or [] if isinstance(a, dict)}
    for settings in interfaces:
        if addresses & {a["address"] for a in settings.ipv4}:
            return settings
    return None


def _warn_ipv6(nic: Dict[str, Any], warnings: List[str]) -> None:
    for a in nic.get("addresses") or []:
        if not isinstance(a, dict) or a.get("family") not in ("inet6", "ipv6"):
            continue
        try:
            address = ipaddress.IPv6Address(str(a.get("address")).split("%")[0])
        except ValueError:
            continue
        if address.is_global:
            warnings.append(f"{STEP}: {nic.get('name') or nic.get('mac')} has the IPv6 address "
                            f"{address}; static IPv6 settings are not carried: if it was set by "
                            f"hand, set it again after the switchover")
            return


def _mac(value: Any) -> str:
    return str(value or "").strip().lower().replace("-", ":")


# -- releasing the old interfaces --------------------------------------------------------------
def release(hive: Hive, control_set: str, guids: Sequence[str]) -> None:
    """Put the old interfaces on DHCP with no address, so their ghost adapters conflict
    with nothing."""
    for guid in guids:
        key = f"{interfaces_key(control_set)}\\{guid}"
        detail = f"old interface {guid}: settings moved to the first boot"
        hive.set(key, "EnableDHCP", REG_DWORD, 1, STEP, detail)
        hive.set(key, "IPAddress", REG_MULTI_SZ, ["0.0.0.0"], STEP, detail)
        hive.set(key, "SubnetMask", REG_MULTI_SZ, ["0.0.0.0"], STEP, detail)
        hive.set(key, "NameServer", REG_SZ, "", STEP, detail)
        for name in ("DefaultGateway", "DefaultGatewayMetric"):
            hive.delete_value(key, name, STEP, detail)
