"""systemd units of the replica, enabled, masked and unmasked offline, by the same symlinks
`systemctl enable/mask` would make (systemctl itself needs a running systemd or --root,
and a link is simpler to check, report and back up)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Set

from .context import FixupContext

ADMIN_DIR = "/etc/systemd/system"
VENDOR_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")
MASK_TARGET = "/dev/null"


def has_systemd(ctx: FixupContext) -> bool:
    return any(ctx.exists(p) for p in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd"))


def unit_file(ctx: FixupContext, unit: str) -> Optional[str]:
    """Guest path of the unit's file: the administrator's copy before the vendor's."""
    admin = f"{ADMIN_DIR}/{unit}"
    admin_host = ctx.host_path_nofollow(admin)
    if os.path.isfile(admin_host) and not os.path.islink(admin_host):
        return admin
    for directory in VENDOR_DIRS:
        if os.path.isfile(ctx.host_path(f"{directory}/{unit}")):
            return f"{directory}/{unit}"
    return None


def unit_exists(ctx: FixupContext, unit: str) -> bool:
    """A unit file, or a SysV script systemd turns into that unit."""
    sysv = unit[:-len(".service")] if unit.endswith(".service") else None
    return unit_file(ctx, unit) is not None or bool(sysv and ctx.exists(f"/etc/init.d/{sysv}"))


def is_masked(ctx: FixupContext, unit: str) -> bool:
    link = ctx.host_path_nofollow(f"{ADMIN_DIR}/{unit}")
    return os.path.islink(link) and os.readlink(link) == MASK_TARGET


def mask(ctx: FixupContext, unit: str, step: str, why: str) -> bool:
    return ctx.symlink(f"{ADMIN_DIR}/{unit}", MASK_TARGET, step, f"{unit} masked: {why}")


def unmask(ctx: FixupContext, unit: str, step: str) -> bool:
    if not is_masked(ctx, unit):
        return False
    return ctx.remove(f"{ADMIN_DIR}/{unit}", step, f"{unit} unmasked")


def install_section(text: str) -> Dict[str, List[str]]:
    """WantedBy=, RequiredBy=, Alias=, Also= of a unit's [Install] section."""
    found: Dict[str, List[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Install]" and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            found.setdefault(key, []).extend(value.split())
    return found


def enable(ctx: FixupContext, unit: str, step: str, _seen: Optional[Set[str]] = None) -> bool:
    """Unmask the unit and make its [Install] links (and those of its Also= units).
    Returns whether anything changed; a unit without a file changes nothing."""
    seen = _seen if _seen is not None else set()
    if unit in seen:
        return False
    seen.add(unit)
    changed = unmask(ctx, unit, step)
    path = unit_file(ctx, unit)
    if path is None or "@" in unit:
        return changed
    install = install_section(ctx.read_text(path) or "")
    links = [f"{ADMIN_DIR}/{t}.wants/{unit}" for t in install.get("WantedBy", [])]
    links += [f"{ADMIN_DIR}/{t}.requires/{unit}" for t in install.get("RequiredBy", [])]
    links += [f"{ADMIN_DIR}/{alias}" for alias in install.get("Alias", [])]
    for link in links:
        if not _points_to(ctx, link, path):
            changed |= ctx.symlink(link, path, step, f"{unit} enabled")
    for other in install.get("Also", []):
        changed |= enable(ctx, other, step, seen)
    return changed


def _points_to(ctx: FixupContext, link: str, path: str) -> bool:
    """An existing link that already leads to the unit file (whatever spelling it uses)."""
    host_link = ctx.host_path_nofollow(link)
    return os.path.islink(host_link) and ctx.host_path(link) == ctx.host_path(path)

