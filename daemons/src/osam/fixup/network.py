"""Fix-up step "network": the migrated OS finds its network on the destination's NICs.

The destination's NICs are new hardware (vmxnet3) with new MACs, and the kernel names them
differently than the source's. This step
  1. pairs the source's physical NICs, in the kernel's order, with the destination's NICs;
  2. pins each source interface name to its new NIC (network_naming), so all configuration
     that names an interface keeps working;
  3. drops the source's udev rules that named NICs by their old MACs;
  4. rewrites configuration that binds to an old MAC (network_configs): ifupdown, NetworkManager
     keyfiles, ifcfg (RHEL, SUSE/wicked), netplan, systemd-networkd. Addresses, routes and DNS
     are never touched;
  5. records in ctx.facts["network"] what it found, /etc/resolv.conf included.
It runs no command and is idempotent: a second run writes and reports nothing.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Sequence, Tuple

from .context import FixupContext
from .network_configs import STEP, read_config, rewrite_all
from .network_mac import MacMap, normalise
from .network_naming import NicPair, drop_persistent_net_rules, is_ours_link, pin_names

# Name prefixes of software interfaces: bridges, bonds, teams, VLANs, tunnels, containers,
# hypervisors' taps and overlay networks. Their MACs belong to (or are made up from)
# physical NICs, so they never get a NIC of their own.
VIRTUAL_PREFIXES = (
    "lo", "br", "virbr", "lxcbr", "lxdbr", "docker", "veth", "vnet", "vif", "tun", "tap",
    "bond", "team", "vlan", "vxlan", "macvlan", "macvtap", "mvl", "ipvl", "dummy", "ifb",
    "wg", "gre", "gretap", "erspan", "ip6", "sit", "ipip", "genev", "nlmon", "ovs",
    "cni", "flannel", "cali", "cilium", "weave", "kube", "podman", "vboxnet", "vmnet",
    "zt", "tailscale",
)
# Names the kernel or udev give physical NICs; another NIC with the same MAC but a name
# outside these (a bridge or bond named "lan0") is taken for the software device it is.
_PHYSICAL_NAME_RE = re.compile(r"^(eth\d+|en[a-z]\w*|em\d+|p\d+p\d+\w*|wl\w+)$")

# os-release ID or ID_LIKE words → family (derivatives name their parent in ID_LIKE).
_DISTRO_FAMILIES = (("debian", {"debian", "ubuntu"}),
                    ("rhel", {"rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn"}),
                    ("suse", {"suse", "sles", "sled", "opensuse", "opensuse-leap",
                              "opensuse-tumbleweed"}))


def apply(ctx: FixupContext) -> None:
    pairs = map_nics(ctx)
    macs = mac_map(ctx, pairs)
    facts = ctx.facts.setdefault("network", {})
    facts["family"] = distro_family(ctx)
    facts["map"] = [{"old_name": p.old_name, "old_mac": p.old_mac, "new_mac": p.new_mac}
                    for p in pairs]
    facts["naming"] = pin_names(ctx, pairs)
    drop_persistent_net_rules(ctx, macs, [p.old_name for p in pairs])
    rewrite_all(ctx, macs, is_ours_link)
    facts["resolv_conf"] = describe_resolv_conf(ctx)


# -- NIC mapping ---------------------------------------------------------------------------
def physical_nics(ctx: FixupContext) -> List[Dict[str, Any]]:
    """The source's physical Ethernet NICs in the inventory's (the kernel's) order; the
    others are recorded in facts["network"]["skipped"] with the reason."""
    chosen: List[Dict[str, Any]] = []
    skipped = ctx.facts.setdefault("network", {}).setdefault("skipped", [])
    skipped.clear()
    seen_macs: Dict[str, str] = {}
    for nic in ctx.inventory.get("nics") or []:
        name, mac = str(nic.get("name", "")), normalise(str(nic.get("mac", "")))
        reason = _not_physical(nic, name, mac, seen_macs)
        if reason:
            skipped.append({"name": name, "mac": mac, "reason": reason})
            continue
        if mac in seen_macs:
            ctx.warn(STEP, f"source NICs {seen_macs[mac]} and {name} report the same MAC {mac} "
                           f"(bond members take the bond's); configuration naming that MAC is "
                           f"rewritten for {seen_macs[mac]}'s new NIC only, check {name}'s")
        seen_macs.setdefault(mac, name)
        chosen.append({"name": name, "mac": mac})
    return chosen


def _not_physical(nic: Dict[str, Any], name: str, mac: str, seen_macs: Dict[str, str]) -> str:
    """Why a NIC is not a physical Ethernet NIC, or "" when it is one."""
    if nic.get("link_type") != "ether":
        return f"link type {nic.get('link_type') or 'unknown'}"
    if not name or "." in name or ":" in name or "@" in name:
        return "a VLAN or alias"
    if name.startswith(VIRTUAL_PREFIXES):
        return "a software interface"
    if not mac or mac == "00:00:00:00:00:00":
        return "no MAC"
    if mac in seen_macs and not _PHYSICAL_NAME_RE.match(name):
        return f"shares {seen_macs[mac]}'s MAC: a bridge or bond"
    return ""


def map_nics(ctx: FixupContext) -> List[NicPair]:
    """Source physical NIC i gets destination NIC i; extra source NICs are warned about."""
    sources = physical_nics(ctx)
    targets = list(ctx.target.nics)
    pairs: List[NicPair] = []
    for source, target in zip(sources, targets):
        new_mac = normalise(target.mac)
        if not new_mac:
            ctx.warn(STEP, f"destination NIC for {source['name']} has no valid MAC "
                           f"({target.mac!r}); {source['name']} is left as it was")
            continue
        pairs.append(NicPair(source["name"], source["mac"], new_mac))
    for source in sources[len(targets):]:
        ctx.warn(STEP, f"source NIC {source['name']} ({source['mac']}) has no NIC on the "
                       f"destination; its configuration is left as it was")
    ctx.facts.setdefault("network", {})["unused_target_macs"] = [
        normalise(t.mac) for t in targets[len(sources):]]
    return pairs


def mac_map(ctx: FixupContext, pairs: Sequence[NicPair]) -> MacMap:
    """Old MAC → new MAC for the rewrites. A destination MAC that is another NIC's source
    MAC would make the rewrite chain (and a second run rewrite again): such pairs are left
    out and warned about."""
    old_macs = {p.old_mac for p in pairs}
    usable: List[Tuple[str, str]] = []
    for p in pairs:
        if p.new_mac in old_macs and p.new_mac != p.old_mac:
            ctx.warn(STEP, f"the destination MAC {p.new_mac} of {p.old_name}'s NIC is another "
                           f"source NIC's MAC; configuration binding {p.old_mac} is not rewritten")
            continue
        usable.append((p.old_mac, p.new_mac))
    return MacMap(usable)


# -- facts ---------------------------------------------------------------------------------
def distro_family(ctx: FixupContext) -> str:
    """The distro step's answer, else the replica's /etc/os-release, else the inventory."""
    family = (ctx.facts.get("distro") or {}).get("family")
    if family:
        return family
    release = parse_os_release(read_config(ctx, "/etc/os-release")
                               or read_config(ctx, "/usr/lib/os-release") or "")
    if not release:
        release = {k.upper(): str(v) for k, v in (ctx.inventory.get("os") or {}).items()}
    ids = [release.get("ID", "")] + release.get("ID_LIKE", "").split()
    for family, members in _DISTRO_FAMILIES:
        if any(i.lower() in members for i in ids):
            return family
    return "unknown"


def parse_os_release(text: str) -> Dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip("\"'")
    return values


def describe_resolv_conf(ctx: FixupContext) -> Dict[str, Any]:
    """/etc/resolv.conf is left as it is. A symlink into /run (systemd-resolved,
    NetworkManager, resolvconf) dangles while the replica is offline; the service recreates
    its target at boot, which is worth knowing but needs nothing done."""
    link = ctx.host_path_nofollow("/etc/resolv.conf")
    if not os.path.islink(link):
        return {"symlink": False, "exists": os.path.exists(link)}
    target = os.readlink(link)
    resolved = "/" + os.path.relpath(ctx.host_path("/etc/resolv.conf"), ctx.root)
    return {"symlink": True, "target": target, "resolves_to": resolved,
            "runtime": resolved.startswith("/run/"),
            "exists": os.path.exists(ctx.host_path("/etc/resolv.conf")),
            "managed_by": _resolver_of(resolved)}


def _resolver_of(path: str) -> str:
    for marker, manager in (("/systemd/resolve/", "systemd-resolved"),
                            ("/NetworkManager/", "NetworkManager"),
                            ("/resolvconf/", "resolvconf"), ("/netconfig", "netconfig")):
        if marker in path:
            return manager
    return "unknown"
