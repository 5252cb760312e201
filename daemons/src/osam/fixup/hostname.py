"""The replica keeps the source's host name, and /etc/hosts resolves it.

/etc/hostname gets the short name when it is missing or names another host (a file that
already holds the full or the short name is left alone). When no /etc/hosts entry names the
host, a loopback entry is added as the distribution's installer would: 127.0.1.1 on Debian
and Ubuntu, 127.0.0.2 on SUSE; on the RHEL family only when nss-myhostname (which resolves
the host name without /etc/hosts) is not configured.
"""
from __future__ import annotations

import re
from typing import List, Optional

from .context import FixupContext
from .distro import DEBIAN, SUSE
from .guest import family

STEP = "hostname"

LOOPBACK_FOR_HOSTNAME = {DEBIAN: "127.0.1.1", SUSE: "127.0.0.2"}
DEFAULT_LOOPBACK = "127.0.1.1"


def apply(ctx: FixupContext) -> None:
    fqdn = (ctx.inventory.get("hostname") or "").strip().rstrip(".")
    if not fqdn:
        ctx.warn(STEP, "the inventory has no host name; /etc/hostname and /etc/hosts are left as they are")
        return
    short = fqdn.split(".")[0]
    write_hostname(ctx, fqdn, short)
    map_in_hosts(ctx, fqdn, short)


def write_hostname(ctx: FixupContext, fqdn: str, short: str) -> None:
    current = (ctx.read_text("/etc/hostname") or "").strip()
    if current in (fqdn, short):
        return
    ctx.write_text("/etc/hostname", short + "\n", STEP, f"host name {short} (the source's)")


def map_in_hosts(ctx: FixupContext, fqdn: str, short: str) -> None:
    text = ctx.read_text("/etc/hosts")
    if text is None:
        text = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    if {fqdn, short} & names_in_hosts(text):
        return
    fam = family(ctx)
    if fam not in LOOPBACK_FOR_HOSTNAME and uses_nss_myhostname(ctx):
        return
    address = LOOPBACK_FOR_HOSTNAME.get(fam, DEFAULT_LOOPBACK)
    names = f"{fqdn} {short}" if fqdn != short else short
    ctx.write_text("/etc/hosts", with_entry(text, address, names), STEP, f"{address} maps {names}")


def names_in_hosts(text: str) -> set:
    names = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        names.update(fields[1:])
    return names


def with_entry(text: str, address: str, names: str) -> str:
    """The hosts file with `address names`: an existing line for that address gets the
    names (a stale name there is replaced), else a line after the 127.0.0.1 entry."""
    lines = text.splitlines(keepends=True)
    entry = f"{address}\t{names}\n"
    for i, line in enumerate(lines):
        if line.split("#", 1)[0].split()[:1] == [address]:
            lines[i] = entry
            return "".join(lines)
    after = _last_index(lines, lambda l: l.split()[:1] == ["127.0.0.1"])
    at = after + 1 if after is not None else 0
    if at and not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    lines.insert(at, entry)
    return "".join(lines)


def _last_index(lines: List[str], predicate) -> Optional[int]:
    found = None
    for i, line in enumerate(lines):
        if predicate(line):
            found = i
    return found


def uses_nss_myhostname(ctx: FixupContext) -> bool:
    for line in (ctx.read_text("/etc/nsswitch.conf") or "").splitlines():
        if re.match(r"^\s*hosts\s*:", line) and "myhostname" in line.split("#", 1)[0]:
            return True
    return False
