"""What the replica runs: distribution family and version, installed kernels, the initramfs
tool, the bootloader and SELinux. Later steps decide from these facts, never from the
receiver's own system.

Facts (ctx.facts): "distro" {family, id, version_id, version, pretty_name, id_like, source},
"kernels" [versions, oldest first], "initramfs_tool" (update-initramfs | dracut | mkinitrd |
None), "bootloader" {kind, mkconfig, install, update_grub, grub_dir, bls}, "selinux"
(enforcing | permissive | disabled | None).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from .context import FixupContext, FixupError
from .guest import find_executable, kernel_sort_key, parse_assignments, version_tuple

STEP = "distro"

DEBIAN, RHEL, SUSE = "debian", "rhel", "suse"

FAMILY_OF_ID = {
    **dict.fromkeys(("debian", "ubuntu", "linuxmint", "raspbian", "devuan", "pop", "kali"), DEBIAN),
    **dict.fromkeys(("rhel", "centos", "rocky", "almalinux", "ol", "fedora", "scientific",
                     "cloudlinux", "eurolinux", "virtuozzo", "amzn"), RHEL),
    **dict.fromkeys(("sles", "sled", "sles_sap", "opensuse", "opensuse-leap",
                     "opensuse-tumbleweed", "opensuse-microos"), SUSE),
}
# ID_LIKE words, in the order they are tried (derivatives name their parent there).
FAMILY_OF_LIKE = (("suse", SUSE), ("opensuse", SUSE), ("rhel", RHEL), ("fedora", RHEL),
                  ("centos", RHEL), ("debian", DEBIAN), ("ubuntu", DEBIAN))

# /etc/redhat-release names → os-release IDs.
REDHAT_RELEASE_NAMES = (("red hat enterprise linux", "rhel"), ("centos", "centos"),
                        ("rocky", "rocky"), ("almalinux", "almalinux"), ("oracle", "ol"),
                        ("fedora", "fedora"), ("scientific", "scientific"))


def apply(ctx: FixupContext) -> None:
    distro = detect_release(ctx)
    ctx.facts["distro"] = distro
    ctx.facts["kernels"] = installed_kernels(ctx)
    if not ctx.facts["kernels"]:
        raise FixupError("no installed kernel: /lib/modules/<version> with a /boot/vmlinuz-<version> "
                         "was not found in the replica")
    ctx.facts["initramfs_tool"] = initramfs_tool(ctx)
    ctx.facts["bootloader"] = bootloader(ctx)
    ctx.facts["selinux"] = selinux_mode(ctx)
    _compare_with_inventory(ctx, distro)


# -- release ---------------------------------------------------------------------------------
def detect_release(ctx: FixupContext) -> Dict[str, Any]:
    for detect in (_from_os_release, _from_redhat_release, _from_suse_release, _from_debian_version):
        found = detect(ctx)
        if found:
            found["family"] = _family(found["id"], found.get("id_like", ""))
            if found["family"]:
                found["version"] = list(version_tuple(found["version_id"]))
                return found
            raise FixupError(f"unsupported Linux distribution {found.get('pretty_name') or found['id']!r} "
                             f"(from {found['source']}): only the Debian, RHEL and SUSE families are fixed up")
    raise FixupError("unknown Linux distribution: the replica has no /etc/os-release, /usr/lib/os-release, "
                     "/etc/redhat-release, /etc/SuSE-release or /etc/debian_version")


def _family(os_id: str, id_like: str) -> Optional[str]:
    if os_id in FAMILY_OF_ID:
        return FAMILY_OF_ID[os_id]
    words = id_like.split()
    for word, fam in FAMILY_OF_LIKE:
        if word in words:
            return fam
    return None


def _from_os_release(ctx: FixupContext) -> Optional[Dict[str, Any]]:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        values = parse_assignments(ctx.read_text(path))
        if values.get("ID"):
            return {"id": values["ID"].lower(), "version_id": values.get("VERSION_ID", ""),
                    "pretty_name": values.get("PRETTY_NAME") or values.get("NAME", ""),
                    "id_like": values.get("ID_LIKE", "").lower(), "source": path}
    return None


def _from_redhat_release(ctx: FixupContext) -> Optional[Dict[str, Any]]:
    text = (ctx.read_text("/etc/redhat-release") or "").strip()
    match = re.match(r"(?P<name>.+?)\s+release\s+(?P<version>[\d.]+)", text)
    if not match:
        return None
    name = match.group("name").lower()
    os_id = next((i for prefix, i in REDHAT_RELEASE_NAMES if name.startswith(prefix)), "rhel")
    return {"id": os_id, "version_id": match.group("version"), "pretty_name": text.splitlines()[0],
            "id_like": "rhel fedora", "source": "/etc/redhat-release"}


def _from_suse_release(ctx: FixupContext) -> Optional[Dict[str, Any]]:
    text = ctx.read_text("/etc/SuSE-release")
    if not text or not text.strip():
        return None
    first = text.strip().splitlines()[0]
    fields = dict(re.findall(r"^\s*(\w+)\s*=\s*(\S+)", text, re.M))
    version = fields.get("VERSION", "")
    if fields.get("PATCHLEVEL"):
        version += "." + fields["PATCHLEVEL"]
    lower = first.lower()
    os_id = "sles" if "enterprise server" in lower else "sled" if "enterprise desktop" in lower else "opensuse"
    return {"id": os_id, "version_id": version, "pretty_name": first, "id_like": "suse",
            "source": "/etc/SuSE-release"}


def _from_debian_version(ctx: FixupContext) -> Optional[Dict[str, Any]]:
    text = (ctx.read_text("/etc/debian_version") or "").strip()
    if not text:
        return None
    version = text if re.match(r"^\d+(\.\d+)*$", text) else ""
    return {"id": "debian", "version_id": version, "pretty_name": f"Debian GNU/Linux {text}",
            "id_like": "", "source": "/etc/debian_version"}


def _compare_with_inventory(ctx: FixupContext, distro: Dict[str, Any]) -> None:
    reported = (ctx.inventory.get("os") or {}).get("id")
    if reported and reported.lower() != distro["id"]:
        ctx.warn(STEP, f"the source reported {reported!r} but the replica's {distro['source']} "
                       f"says {distro['id']!r}; the replica's files are followed")


# -- kernels, tools ---------------------------------------------------------------------------
def installed_kernels(ctx: FixupContext) -> List[str]:
    """Kernel versions with both modules and a kernel image (a modules directory left behind
    by a removed kernel does not count)."""
    kernels = []
    for version in ctx.listdir("/lib/modules"):
        if not ctx.isdir(f"/lib/modules/{version}"):
            continue
        if ctx.exists(f"/boot/vmlinuz-{version}") or ctx.exists(f"/lib/modules/{version}/vmlinuz"):
            kernels.append(version)
    return sorted(kernels, key=kernel_sort_key)


def initramfs_tool(ctx: FixupContext) -> Optional[str]:
    if find_executable(ctx, "update-initramfs") and ctx.isdir("/etc/initramfs-tools"):
        return "update-initramfs"
    if find_executable(ctx, "dracut"):
        return "dracut"
    if find_executable(ctx, "mkinitrd"):
        return "mkinitrd"
    return None


def bootloader(ctx: FixupContext) -> Dict[str, Any]:
    mkconfig = find_executable(ctx, "grub2-mkconfig", "grub-mkconfig")
    defaults = parse_assignments(ctx.read_text("/etc/default/grub"))
    entries = ctx.glob("/boot/loader/entries", lambda n: n.endswith(".conf"))
    if mkconfig:
        kind = "grub2"
    elif ctx.exists("/boot/grub/menu.lst") or ctx.exists("/boot/grub/grub.conf"):
        kind = "grub-legacy"
    else:
        kind = None
    return {
        "kind": kind,
        "mkconfig": mkconfig,
        "install": find_executable(ctx, "grub2-install", "grub-install"),
        "update_grub": find_executable(ctx, "update-grub", "update-grub2"),
        "grub_dir": "/boot/grub2" if mkconfig and "grub2-" in mkconfig else "/boot/grub",
        "bls": bool(entries) and defaults.get("GRUB_ENABLE_BLSCFG", "").lower() == "true",
    }


def selinux_mode(ctx: FixupContext) -> Optional[str]:
    values = parse_assignments(ctx.read_text("/etc/selinux/config"))
    mode = values.get("SELINUX", "").strip().lower()
    return mode or None
