"""The source's interface names on the destination's NICs, and the end of the udev rules
that named the source's NICs by their MACs.

Every file that names an interface (ifupdown stanzas, ifcfg DEVICE=, keyfile
interface-name=, netplan ids, firewall zones, services bound to eth0) keeps working when the
new NIC gets the old name, so the name is pinned to the new MAC: with a systemd .link file
where udev reads them (systemd 209 and later), else with a udev rule. Both are read in the
initramfs too, which a later step regenerates.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Sequence

from .context import FixupContext
from .network_configs import STEP, read_config
from .network_mac import MacMap

LINK_DIR = "/etc/systemd/network"
LINK_PREFIX = "10-vmware-osam-"
UDEV_RULES_DIR = "/etc/udev/rules.d"
OUR_UDEV_RULE = UDEV_RULES_DIR + "/70-vmware-osam-net.rules"
# The udev rule that makes udevd apply .link files; older udev has no such thing.
LINK_SUPPORT_RULES = ("/usr/lib/udev/rules.d/80-net-setup-link.rules",
                      "/lib/udev/rules.d/80-net-setup-link.rules")
# An admin who wants no predictable names may mask that rule here (a link to /dev/null):
# udevd then applies no .link file at all.
LINK_SUPPORT_OVERRIDE = UDEV_RULES_DIR + "/80-net-setup-link.rules"
UDEV_PRESENCE = ("/etc/udev", "/lib/udev", "/usr/lib/udev")
# What the kernel accepts as an interface name (dev_valid_name).
_IFNAME_RE = re.compile(r"^(?!\.{1,2}$)[^/:\s]{1,15}$")

_ADDRESS_MATCH_RE = re.compile(r'\bATTRS?\{address\}\s*==\s*"([^"]*)"')
_NAME_ASSIGN_RE = re.compile(r'(?<![\w{])NAME\s*:?=\s*"([^"]*)"')


@dataclass(frozen=True)
class NicPair:
    old_name: str
    old_mac: str
    new_mac: str


def is_ours_link(name: str) -> bool:
    return name.startswith(LINK_PREFIX) and name.endswith(".link")


def link_file(old_name: str) -> str:
    return f"{LINK_DIR}/{LINK_PREFIX}{old_name}.link"


def naming_method(ctx: FixupContext) -> str:
    """"systemd-link", "udev-rule", or "none" when the replica has no udev at all."""
    if any(ctx.exists(path) for path in LINK_SUPPORT_RULES) and not _link_support_masked(ctx):
        return "systemd-link"
    if any(ctx.isdir(path) for path in UDEV_PRESENCE):
        return "udev-rule"
    return "none"


def _link_support_masked(ctx: FixupContext) -> bool:
    if not os.path.lexists(ctx.host_path_nofollow(LINK_SUPPORT_OVERRIDE)):
        return False
    return "net_setup_link" not in (read_config(ctx, LINK_SUPPORT_OVERRIDE) or "")


def pin_names(ctx: FixupContext, pairs: Sequence[NicPair]) -> str:
    """Pin each old name to its new MAC; returns the method used."""
    pairs = [p for p in pairs if _valid_name(ctx, p.old_name)]
    method = naming_method(ctx)
    if method == "systemd-link":
        _write_link_files(ctx, pairs)
        _remove_stale_udev_rule(ctx)
    elif method == "udev-rule":
        _write_udev_rule(ctx, pairs)
        _remove_stale_link_files(ctx, keep=())
    elif pairs:
        ctx.warn(STEP, "the replica has no udev: interface names are not pinned to the new "
                       "NICs; check the names the new NICs get")
    return method


def _valid_name(ctx: FixupContext, name: str) -> bool:
    if _IFNAME_RE.match(name):
        return True
    ctx.warn(STEP, f"source interface name {name!r} is not a valid name; not pinned")
    return False


def link_text(pair: NicPair) -> str:
    return (f"# vmware.osam fix-up: the source's interface name {pair.old_name} (source MAC\n"
            f"# {pair.old_mac}) on the destination's NIC, so configuration naming it keeps\n"
            f"# working.\n"
            f"[Match]\nMACAddress={pair.new_mac}\n\n[Link]\nName={pair.old_name}\n")


def _write_link_files(ctx: FixupContext, pairs: Sequence[NicPair]) -> None:
    for pair in pairs:
        ctx.write_text(link_file(pair.old_name), link_text(pair), STEP,
                       f"name {pair.old_name} pinned to the new NIC {pair.new_mac}")
    _remove_stale_link_files(ctx, keep={link_file(p.old_name) for p in pairs})


def _remove_stale_link_files(ctx: FixupContext, keep) -> None:
    """Our .link files of an earlier run for names no longer mapped."""
    for path in ctx.glob(LINK_DIR, is_ours_link):
        if path not in keep:
            ctx.remove(path, STEP, "name pin of an earlier run, no longer mapped")


def udev_rule_text(pairs: Sequence[NicPair]) -> str:
    # DRIVERS=="?*" keeps bonds, bridges and VLANs that inherit the MAC from matching.
    rules = "".join(f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", '
                    f'ATTR{{address}}=="{p.new_mac}", NAME="{p.old_name}"\n' for p in pairs)
    return ("# vmware.osam fix-up: the source's interface names on the destination's NICs,\n"
            "# so configuration naming them keeps working.\n" + rules)


def _write_udev_rule(ctx: FixupContext, pairs: Sequence[NicPair]) -> None:
    if pairs:
        names = ", ".join(f"{p.old_name}={p.new_mac}" for p in pairs)
        ctx.write_text(OUR_UDEV_RULE, udev_rule_text(pairs), STEP, f"names pinned: {names}")
    else:
        _remove_stale_udev_rule(ctx)


def _remove_stale_udev_rule(ctx: FixupContext) -> None:
    if ctx.exists(OUR_UDEV_RULE):
        ctx.remove(OUR_UDEV_RULE, STEP, "name pins of an earlier run")


# -- the source's persistent-net rules ---------------------------------------------------------
def drop_persistent_net_rules(ctx: FixupContext, macs: MacMap, pinned_names: Sequence[str]) -> None:
    """Rules in /etc/udev/rules.d that name an interface by a source MAC (as
    70-persistent-net.rules does) are dropped: the pins above name the new NICs. Other rules
    matching a source MAC get the new MAC. A file left with no rule at all is removed."""
    for path in ctx.glob(UDEV_RULES_DIR, lambda n: n.endswith(".rules")):
        if path == OUR_UDEV_RULE:
            continue
        text = read_config(ctx, path)
        if text is None:
            continue
        new_text, dropped = rewrite_rules_text(text, macs)
        if new_text != text:
            detail = (f"naming rules for the source's MACs dropped: {', '.join(dropped)}"
                      if dropped else "source MACs replaced by the destination's")
            if not has_rules(new_text):
                ctx.remove(path, STEP, detail + "; no rule left")
                continue
            ctx.write_text(path, new_text, STEP, detail)
        warn_other_namers(ctx, path, new_text, pinned_names)


def rewrite_rules_text(text: str, macs: MacMap):
    """(new text, names dropped)."""
    lines = text.splitlines(keepends=True)
    kept: List[str] = []
    dropped: List[str] = []
    for line in lines:
        address = _ADDRESS_MATCH_RE.search(line)
        name = _NAME_ASSIGN_RE.search(line)
        if _is_rule(line) and address and address.group(1) in macs:
            if name:
                dropped.append(f"{name.group(1)} ({address.group(1).lower()})")
                _drop_description(kept)
                continue
            line = macs.sub(line)
        kept.append(line)
    return "".join(kept), dropped


def _drop_description(kept: List[str]) -> None:
    """Remove the comment block right above a dropped rule ("# PCI device 0x8086:0x100e
    (e1000)") when a blank line separates it from what precedes it (the file's header
    stays), and that blank line too."""
    i = len(kept)
    while i and kept[i - 1].lstrip().startswith("#"):
        i -= 1
    if i < len(kept) and i and not kept[i - 1].strip():
        del kept[i - 1:]


def _is_rule(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def has_rules(text: str) -> bool:
    return any(_is_rule(line) for line in text.splitlines())


def warn_other_namers(ctx: FixupContext, path: str, text: str, pinned: Sequence[str]) -> None:
    """A rule that gives a pinned name by something other than a MAC (a PCI path, a driver)
    may hand that name to another NIC on the new hardware."""
    for number, line in enumerate(text.splitlines(), 1):
        name = _NAME_ASSIGN_RE.search(line)
        by_mac = _ADDRESS_MATCH_RE.search(line)
        if _is_rule(line) and name and name.group(1) in pinned and not by_mac:
            ctx.warn(STEP, f"{path}:{number} names {name.group(1)} by something other than its "
                           f"MAC; check that it does not conflict with the pinned name")
