"""Network configuration that binds to the source's MACs, rewritten for the destination's.

One principle for every stack: a MAC-valued key (one that matches an interface, or one that
sets its address) holding a source MAC gets the destination MAC of the same NIC, in the
file's case; nothing else in the file changes, so addresses, routes and DNS stay byte for
byte. A MAC that sets an address is rewritten too rather than dropped: the new NIC keeps the
pinning the file asked for without cloning the source's MAC, which would clash with the
source while it still runs. Files are edited as text, comments and layout kept.

After each file, any source MAC still in its non-comment lines is warned about: it sits in
a form this step does not rewrite and a person has to look at it.
"""
from __future__ import annotations

import fnmatch
import os
import re
import stat
from typing import Callable, List, Optional, Tuple

from .context import FixupContext
from .network_mac import MacMap

STEP = "network"
MAX_CONFIG_BYTES = 1 << 20

# Names the stacks' own readers skip: editor, package manager and hand-made backups.
IGNORED_SUFFIXES = ("~", ".bak", ".orig", ".rej", ".old", ".swp", ".rpmnew", ".rpmsave",
                    ".rpmorig", ".dpkg-old", ".dpkg-new", ".dpkg-dist", ".dpkg-bak",
                    ".ucf-old", ".ucf-new", ".ucf-dist", ".nmmeta")

Transform = Callable[[str, MacMap], str]


# -- reading and writing -------------------------------------------------------------------
def read_config(ctx: FixupContext, guest_path: str) -> Optional[str]:
    """A regular file's text, else None: a device node or FIFO planted in the replica
    (say /etc/network/interfaces -> /dev/zero) must not block or fill the receiver."""
    try:
        st = os.stat(ctx.host_path(guest_path))
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CONFIG_BYTES:
        return None
    return ctx.read_text(guest_path)


def without_line_comments(comment_chars: str = "#") -> Callable[[str], str]:
    """A line's code for formats whose comments take whole lines: "" for a comment line."""
    return lambda line: "" if line.lstrip().startswith(tuple(comment_chars)) else line


def rewrite_file(ctx: FixupContext, guest_path: str, transform: Transform, macs: MacMap,
                 what: str, code_of: Callable[[str], str] = without_line_comments()) -> bool:
    text = read_config(ctx, guest_path)
    if text is None:
        return False
    new_text = transform(text, macs)
    changed = False
    if new_text != text:
        left = macs.found_in(new_text)
        swapped = ", ".join(f"{old} -> {macs.get(old)}" for old in macs.found_in(text)
                            if old not in left)
        changed = ctx.write_text(guest_path, new_text, STEP, f"{what}: {swapped}")
    warn_leftover_macs(ctx, guest_path, new_text, macs, code_of)
    return changed


def warn_leftover_macs(ctx: FixupContext, guest_path: str, text: str, macs: MacMap,
                       code_of: Callable[[str], str]) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        for old in macs.found_in(code_of(line)):
            ctx.warn(STEP, f"{guest_path}:{number} still names the source's MAC {old} in a "
                           f"form this step does not rewrite; check it for the new NIC "
                           f"({macs.get(old)})")


def config_files(ctx: FixupContext, guest_dir: str, pattern: str = "*") -> List[str]:
    return ctx.glob(guest_dir, lambda name: fnmatch.fnmatchcase(name, pattern)
                    and not name.endswith(IGNORED_SUFFIXES) and not name.startswith("."))


def _sub_values(line_re: "re.Pattern[str]") -> Transform:
    """A transform that swaps MACs only in the value part of the lines line_re matches
    (group "value"); every other line is left exactly as it is."""
    def transform(text: str, macs: MacMap) -> str:
        lines = text.splitlines(keepends=True)
        for i, line in enumerate(lines):
            m = line_re.match(line)
            if m:
                start, end = m.span("value")
                lines[i] = line[:start] + macs.sub(line[start:end]) + line[end:]
        return "".join(lines)
    return transform


# -- ifupdown ------------------------------------------------------------------------------
IFUPDOWN_MAIN = "/etc/network/interfaces"
_HWADDRESS_RE = re.compile(r"^\s*hwaddress\s+(?P<value>[^#\n]*)")
_SOURCE_RE = re.compile(r"^\s*(source|source-directory)\s+(\S+)\s*$")
_RUN_PARTS_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
rewrite_ifupdown_text = _sub_values(_HWADDRESS_RE)


def ifupdown_files(ctx: FixupContext) -> List[str]:
    """/etc/network/interfaces, interfaces.d/* and whatever they `source`, each once."""
    found: List[str] = []
    pending = [IFUPDOWN_MAIN] + config_files(ctx, "/etc/network/interfaces.d")
    while pending:
        path = pending.pop(0)
        if path in found:
            continue
        text = read_config(ctx, path)
        if text is None:
            continue
        found.append(path)
        for line in text.splitlines():
            m = _SOURCE_RE.match(line)
            if m:
                pending.extend(_sourced(ctx, path, m.group(1), m.group(2)))
    return found


def _sourced(ctx: FixupContext, including: str, keyword: str, where: str) -> List[str]:
    if not where.startswith("/"):
        where = os.path.join(os.path.dirname(including), where)
    where = os.path.normpath(where)
    if keyword == "source-directory":
        return ctx.glob(where, lambda name: bool(_RUN_PARTS_NAME.match(name)))
    directory, pattern = os.path.split(where)
    if any(c in directory for c in "*?["):
        ctx.warn(STEP, f"{including}: 'source {where}' has wildcards in a directory; "
                       f"files it includes are not checked")
        return []
    if any(c in pattern for c in "*?["):
        return config_files(ctx, directory, pattern)
    return [where]


def rewrite_ifupdown(ctx: FixupContext, macs: MacMap) -> None:
    for path in ifupdown_files(ctx):
        rewrite_file(ctx, path, rewrite_ifupdown_text, macs, "ifupdown hwaddress")


# -- NetworkManager keyfiles -----------------------------------------------------------------
NM_CONNECTIONS = "/etc/NetworkManager/system-connections"
NM_ETHERNET_SECTIONS = {"ethernet", "802-3-ethernet"}
NM_MAC_KEYS = {"mac-address", "cloned-mac-address"}
_SECTION_RE = re.compile(r"^\s*\[([^\]]+)\]")
_KEY_RE = re.compile(r"^\s*(?P<key>[^=\s#;][^=]*?)\s*=\s*(?P<value>.*?)\s*$")
# Keyfiles of NetworkManager before 1.0 may hold a MAC as bytes: "82;84;0;18;52;86;".
_BYTE_LIST_RE = re.compile(r"^(\d{1,3});(\d{1,3});(\d{1,3});(\d{1,3});(\d{1,3});(\d{1,3})(;?)$")


def rewrite_nm_keyfile_text(text: str, macs: MacMap) -> str:
    lines = text.splitlines(keepends=True)
    section = ""
    for i, line in enumerate(lines):
        header = _SECTION_RE.match(line)
        if header:
            section = header.group(1).strip()
            continue
        m = _KEY_RE.match(line)
        if section in NM_ETHERNET_SECTIONS and m and m.group("key") in NM_MAC_KEYS:
            start, end = m.span("value")
            lines[i] = line[:start] + _nm_mac_value(m.group("value"), macs) + line[end:]
    return "".join(lines)


def _nm_mac_value(value: str, macs: MacMap) -> str:
    as_bytes = _BYTE_LIST_RE.match(value)
    if not as_bytes:
        return macs.sub(value)
    octets = [int(b) for b in as_bytes.groups()[:6]]
    if max(octets) > 255:
        return value
    new = macs.get(":".join(f"{b:02x}" for b in octets))
    if not new:
        return value
    return ";".join(str(int(b, 16)) for b in new.split(":")) + as_bytes.group(7)


def rewrite_nm_keyfiles(ctx: FixupContext, macs: MacMap) -> None:
    for path in config_files(ctx, NM_CONNECTIONS):
        rewrite_file(ctx, path, rewrite_nm_keyfile_text, macs, "NetworkManager keyfile [ethernet]")


# -- ifcfg (RHEL network-scripts, SUSE wicked) -----------------------------------------------
IFCFG_DIRS = ("/etc/sysconfig/network-scripts", "/etc/sysconfig/network")
# HWADDR matches the NIC; MACADDR (RHEL) and LLADDR (SUSE) set its address.
_IFCFG_MAC_RE = re.compile(r"^\s*(?:export\s+)?(?:HWADDR|MACADDR|LLADDR)\s*=(?P<value>[^#\n]*)")
rewrite_ifcfg_text = _sub_values(_IFCFG_MAC_RE)


def rewrite_ifcfg(ctx: FixupContext, macs: MacMap) -> None:
    for directory in IFCFG_DIRS:
        for path in config_files(ctx, directory, "ifcfg-*"):
            if path.endswith("/ifcfg-lo"):
                continue
            rewrite_file(ctx, path, rewrite_ifcfg_text, macs, "ifcfg HWADDR/MACADDR")


# -- netplan -------------------------------------------------------------------------------
NETPLAN_DIR = "/etc/netplan"
# `macaddress: <mac>` in block or flow style, plain or quoted, under `match:` or not.
_NETPLAN_MAC_RE = re.compile(r"(?P<key>\bmacaddress\s*:[ \t]*)(?P<value>([\"']?)"
                             r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}\3)(?=[\s,}]|$)")
# The key with a value this step cannot follow: on the next line, an alias, a tag, a block.
_NETPLAN_UNSAFE_RE = re.compile(r"\bmacaddress\s*:[ \t]*(?:$|[*&!|>])")


def rewrite_netplan_text(text: str, macs: MacMap) -> str:
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        code, comment = split_yaml_comment(line)
        new_code = _NETPLAN_MAC_RE.sub(
            lambda m: m.group("key") + macs.sub(m.group("value")), code)
        lines[i] = new_code + comment
    return "".join(lines)


def netplan_unsafe_lines(text: str) -> List[int]:
    """Numbers of the lines with a `macaddress:` this step cannot rewrite safely."""
    return [number for number, line in enumerate(text.splitlines(), 1)
            if _NETPLAN_UNSAFE_RE.search(split_yaml_comment(line)[0])]


def split_yaml_comment(line: str) -> Tuple[str, str]:
    """(code, comment and line end): a YAML comment starts at a '#' at the line's start or
    after a blank, outside quotes."""
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i], line[i:]
    return line, ""


def rewrite_netplan(ctx: FixupContext, macs: MacMap) -> None:
    for path in config_files(ctx, NETPLAN_DIR, "*.yaml"):
        rewrite_file(ctx, path, rewrite_netplan_text, macs, "netplan macaddress",
                     code_of=lambda line: split_yaml_comment(line)[0])
        for number in netplan_unsafe_lines(read_config(ctx, path) or "") if macs else ():
            ctx.warn(STEP, f"{path}:{number} has a macaddress whose value is not a plain MAC "
                           f"on the same line; it was not rewritten, check it")


# -- systemd-networkd ----------------------------------------------------------------------
NETWORKD_DIR = "/etc/systemd/network"
NETWORKD_SUFFIXES = (".network", ".netdev", ".link")
_NETWORKD_MAC_RE = re.compile(r"^\s*(?:MACAddress|PermanentMACAddress)\s*=(?P<value>[^#;\n]*)")
rewrite_networkd_text = _sub_values(_NETWORKD_MAC_RE)


def networkd_files(ctx: FixupContext, ours: Callable[[str], bool]) -> List[str]:
    """The unit files and their drop-ins (x.network.d/*.conf), less our own .link files."""
    files = []
    for name in ctx.listdir(NETWORKD_DIR):
        path = f"{NETWORKD_DIR}/{name}"
        if name.endswith(NETWORKD_SUFFIXES) and not ours(name):
            files.append(path)
        elif name.endswith(tuple(s + ".d" for s in NETWORKD_SUFFIXES)):
            files.extend(config_files(ctx, path, "*.conf"))
    return files


def rewrite_networkd(ctx: FixupContext, macs: MacMap, ours: Callable[[str], bool]) -> None:
    for path in networkd_files(ctx, ours):
        rewrite_file(ctx, path, rewrite_networkd_text, macs, "systemd-networkd MACAddress",
                     code_of=without_line_comments("#;"))


def rewrite_all(ctx: FixupContext, macs: MacMap, ours_link: Callable[[str], bool]) -> None:
    rewrite_ifupdown(ctx, macs)
    rewrite_nm_keyfiles(ctx, macs)
    rewrite_ifcfg(ctx, macs)
    rewrite_netplan(ctx, macs)
    rewrite_networkd(ctx, macs, ours_link)

