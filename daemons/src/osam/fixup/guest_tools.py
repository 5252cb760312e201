"""Guest tools: the old hypervisor's agents go, open-vm-tools comes.

Old agents (Hyper-V daemons, VirtualBox additions, the QEMU guest agent, the SPICE agent,
Azure, Google and XenServer agents) would start and fail, or worse talk to a cloud that is no
longer there. Their packages are removed when the package database knows them (dpkg --purge,
rpm -e --nodeps) and units still present afterwards (SysV scripts, /opt installs, packages
that would not go) are masked. amazon-ssm-agent is only reported: it also serves on-premises.

open-vm-tools: enabled when installed; otherwise installed offline from the receiver's
package cache; otherwise a one-shot unit installs it from the distribution's repositories on
the first boot (noted in the report).

Package cache layout (Target.package_cache), the first directory with an open-vm-tools
package of the guest's format (.deb for Debian, .rpm otherwise) and architecture wins:
  <cache>/<id>-<version_id>, <cache>/<id>-<major>, <cache>/<id>/<version_id>, <cache>/<id>/<major>,
  <cache>/<id>, <cache>/<family>-<major>, <cache>/<family>, <cache>
All the packages of that directory that the guest lacks are installed together; a failing
install (a dependency missing from the cache) stops the fix-up, to be run again once the
cache is complete.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Set, Tuple

from . import units
from .context import STATE_DIR, FixupContext
from .distro import DEBIAN, RHEL, SUSE
from .guest import errors, family, find_executable, is_dry_run, query_text

STEP = "guest_tools"


@dataclass(frozen=True)
class OldTool:
    what: str
    packages: Tuple[str, ...]
    units: Tuple[str, ...]


OLD_TOOLS = (
    OldTool("Hyper-V integration daemons",
            ("hyperv-daemons", "hypervkvpd", "hypervvssd", "hypervfcopyd", "hyperv-daemons-license",
             "hyperv-tools", "hyper-v"),
            ("hv-kvp-daemon.service", "hv-vss-daemon.service", "hv-fcopy-daemon.service",
             "hypervkvpd.service", "hypervvssd.service", "hypervfcopyd.service",
             "hv_kvp_daemon.service", "hv_vss_daemon.service", "hv_fcopy_daemon.service")),
    OldTool("VirtualBox guest additions",
            ("virtualbox-guest-utils", "virtualbox-guest-x11", "virtualbox-guest-dkms",
             "virtualbox-guest-tools", "virtualbox-kmp-default", "VirtualBox-guest-additions"),
            ("vboxadd.service", "vboxadd-service.service", "vboxadd-x11.service",
             "virtualbox-guest-utils.service", "vboxservice.service")),
    OldTool("QEMU guest agent", ("qemu-guest-agent",), ("qemu-guest-agent.service",)),
    OldTool("SPICE agent", ("spice-vdagent",), ("spice-vdagentd.service", "spice-vdagentd.socket")),
    OldTool("Azure Linux agent",
            ("walinuxagent", "WALinuxAgent", "python-azure-agent", "python3-azure-agent"),
            ("walinuxagent.service", "waagent.service")),
    OldTool("Google guest agent",
            ("google-guest-agent", "google-osconfig-agent", "google-compute-engine",
             "python-google-compute-engine", "python3-google-compute-engine"),
            ("google-guest-agent.service", "google-osconfig-agent.service",
             "google-startup-scripts.service", "google-shutdown-scripts.service",
             "google-accounts-daemon.service", "google-clock-skew-daemon.service",
             "google-network-daemon.service")),
    OldTool("XenServer guest utilities", ("xe-guest-utilities",),
            ("xe-linux-distribution.service", "xe-daemon.service")),
)
REPORTED_ONLY = {"amazon-ssm-agent": "amazon-ssm-agent is kept: it also serves on-premises "
                                     "(hybrid activation); remove it if the VM no longer needs it"}

VM_TOOLS = "open-vm-tools"
VM_TOOLS_UNITS = ("open-vm-tools.service", "vmtoolsd.service")
PACKAGES_DIR = STATE_DIR + "/packages"
FIRSTBOOT_UNIT = "vmware-osam-firstboot-tools.service"
SENTINEL_UNIT = "vmware-hcx-osam-sentinel.service"
FIRSTBOOT_DONE = STATE_DIR + "/firstboot-tools.done"
FIRSTBOOT_INSTALL = {
    DEBIAN: "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y open-vm-tools",
    RHEL: "if command -v dnf >/dev/null; then dnf -y install open-vm-tools; "
            "else yum -y install open-vm-tools; fi",
    SUSE: "zypper -n in open-vm-tools",
}
FIRSTBOOT_ENABLE = {DEBIAN: "open-vm-tools.service", RHEL: "vmtoolsd.service", SUSE: "vmtoolsd.service"}
ARCHES = {"deb": ("amd64", "all"), "rpm": ("x86_64", "noarch")}


def apply(ctx: FixupContext) -> None:
    packages = PackageDb.of(ctx)
    remove_old_tools(ctx, packages)
    stop_migration_agent(ctx)
    if packages.has(VM_TOOLS) or (packages.kind is None and find_executable(ctx, "vmtoolsd")):
        enable_vm_tools(ctx)
        remove_firstboot_unit(ctx)
    elif not install_from_cache(ctx, packages):
        defer_to_first_boot(ctx)


# -- the package database ----------------------------------------------------------------------
class PackageDb:
    """Installed package names, read once with the guest's own dpkg-query or rpm."""

    def __init__(self, kind: Optional[str], installed: Set[str]):
        self.kind = kind            # "deb" | "rpm" | None (no package manager found)
        self.installed = installed

    @classmethod
    def of(cls, ctx: FixupContext) -> "PackageDb":
        if family(ctx) == DEBIAN and find_executable(ctx, "dpkg-query"):
            text = query_text(ctx, ["dpkg-query", "-W", "-f", "${Package}\\t${Status}\\n"], STEP)
            installed = {line.split("\t")[0] for line in text.splitlines()
                         if line.endswith(" installed")}
            return cls("deb", installed)
        if family(ctx) != DEBIAN and find_executable(ctx, "rpm"):
            text = query_text(ctx, ["rpm", "-qa", "--qf", "%{NAME}\\n"], STEP)
            return cls("rpm", {line.strip() for line in text.splitlines() if line.strip()})
        ctx.warn(STEP, "no package manager in the replica: packages are neither removed nor installed")
        return cls(None, set())

    def has(self, name: str) -> bool:
        return name in self.installed

    def add(self, names: Sequence[str]) -> None:
        self.installed.update(names)


# -- old agents ---------------------------------------------------------------------------------
def remove_old_tools(ctx: FixupContext, packages: PackageDb) -> None:
    for tool in OLD_TOOLS:
        installed = [p for p in tool.packages if packages.has(p)]
        removed = bool(installed) and _remove_packages(ctx, packages, installed, tool.what)
        if installed and not removed:
            ctx.warn(STEP, f"could not remove {' '.join(installed)}; their units are masked instead")
        if removed and is_dry_run(ctx):
            continue            # the units would go with the packages
        if units.has_systemd(ctx):
            for unit in tool.units:
                if units.unit_exists(ctx, unit) and not units.is_masked(ctx, unit):
                    units.mask(ctx, unit, STEP, f"{tool.what} have no use on VMware")
        elif installed:
            ctx.warn(STEP, f"no systemd in the replica: {tool.what} stay enabled if still installed")
    vbox = [name for name in ctx.listdir("/opt") if name.startswith("VBoxGuestAdditions-")]
    if vbox:
        ctx.warn(STEP, f"VirtualBox guest additions in /opt/{vbox[0]} stay on disk; their units are masked")
    for package, why in REPORTED_ONLY.items():
        if packages.has(package):
            ctx.warn(STEP, why)


def stop_migration_agent(ctx: FixupContext) -> None:
    """The replica carries the source's sentinel and its certificate: started, it would register
    as the source guest. Masked, it stays on disk for the operator to remove."""
    if units.has_systemd(ctx) and units.unit_exists(ctx, SENTINEL_UNIT) and not units.is_masked(ctx, SENTINEL_UNIT):
        units.mask(ctx, SENTINEL_UNIT, STEP, "the replica must not register as the source guest")


def _remove_packages(ctx: FixupContext, packages: PackageDb, names: List[str], what: str) -> bool:
    if packages.kind == "deb":
        argv = ["dpkg", "--purge", *names]
    else:
        argv = ["rpm", "-e", "--nodeps", *names]
    done = ctx.run(argv, STEP, f"{what} removed", check=False)
    if done.returncode == 0:
        packages.installed.difference_update(names)
        return True
    ctx.warn(STEP, f"{' '.join(argv)}: {errors(done)}")
    return False


# -- open-vm-tools ---------------------------------------------------------------------------------
def enable_vm_tools(ctx: FixupContext) -> None:
    found = [u for u in VM_TOOLS_UNITS if units.unit_file(ctx, u)]
    if not found:
        if not is_dry_run(ctx):
            ctx.warn(STEP, "open-vm-tools is installed but no vmtoolsd unit was found to enable")
        return
    # Debian names the unit open-vm-tools.service with vmtoolsd.service as its alias.
    units.enable(ctx, found[0], STEP)


def install_from_cache(ctx: FixupContext, packages: PackageDb) -> bool:
    """Install open-vm-tools from the receiver's package cache; False when it has none for
    this guest (or the guest has no package manager)."""
    if packages.kind is None or not ctx.target.package_cache:
        return False
    chosen = cached_packages(ctx, packages.kind)
    if not chosen:
        return False
    needed = [(name, path) for name, path in chosen if not packages.has(name)]
    guest_files = []
    for _, host_file in needed:
        guest_file = f"{PACKAGES_DIR}/{os.path.basename(host_file)}"
        with open(host_file, "rb") as f:
            ctx.write_bytes(guest_file, f.read(), STEP, "package copied for an offline install")
        guest_files.append(guest_file)
    if packages.kind == "deb":
        argv = ["dpkg", "-i", *guest_files]
    else:
        argv = ["rpm", "-Uvh", *guest_files]
    ctx.run(argv, STEP, "open-vm-tools installed from the receiver's package cache")
    packages.add([name for name, _ in needed])
    enable_vm_tools(ctx)
    remove_firstboot_unit(ctx)
    return True


def cached_packages(ctx: FixupContext, kind: str) -> List[Tuple[str, str]]:
    """(package name, receiver path) of the first cache directory fit for this guest."""
    for directory in _cache_directories(ctx):
        files = []
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            parsed = parse_package_file(name, kind)
            if parsed and parsed[1] in ARCHES[kind]:
                files.append((parsed[0], os.path.join(directory, name)))
        if any(name == VM_TOOLS for name, _ in files):
            return files
    return []


def _cache_directories(ctx: FixupContext) -> List[str]:
    cache = ctx.target.package_cache or ""
    distro = ctx.facts["distro"]
    os_id, version_id = distro["id"], distro.get("version_id") or ""
    major = str(distro["version"][0]) if distro.get("version") else ""
    names = []
    if version_id:
        names += [f"{os_id}-{version_id}", f"{os_id}-{major}", f"{os_id}/{version_id}", f"{os_id}/{major}"]
    names += [os_id]
    if major:
        names += [f"{distro['family']}-{major}"]
    names += [distro["family"], ""]
    seen: List[str] = []
    for name in names:
        path = os.path.normpath(os.path.join(cache, name))
        if path not in seen:
            seen.append(path)
    return seen


def parse_package_file(filename: str, kind: str) -> Optional[Tuple[str, str]]:
    """(name, architecture) of name_version_arch.deb or name-version-release.arch.rpm."""
    if kind == "deb" and filename.endswith(".deb"):
        parts = filename[:-4].split("_")
        return (parts[0], parts[-1]) if len(parts) == 3 else None
    if kind == "rpm" and filename.endswith(".rpm") and not filename.endswith(".src.rpm"):
        stem, _, arch = filename[:-4].rpartition(".")
        name_parts = stem.rsplit("-", 2)
        return (name_parts[0], arch) if len(name_parts) == 3 else None
    return None


def defer_to_first_boot(ctx: FixupContext) -> None:
    """A one-shot unit installs open-vm-tools from the distribution's repositories once the
    VM has its network on VMware; it runs until it succeeds once."""
    fam = family(ctx)
    if not units.has_systemd(ctx):
        ctx.warn(STEP, "open-vm-tools is not installed and the replica has no systemd to install it "
                       "on the first boot: install it after the migration")
        return
    unit_path = f"{units.ADMIN_DIR}/{FIRSTBOOT_UNIT}"
    wrote = ctx.write_text(unit_path, firstboot_unit(fam), STEP,
                           "installs open-vm-tools on the first boot")
    linked = ctx.symlink(f"{units.ADMIN_DIR}/multi-user.target.wants/{FIRSTBOOT_UNIT}", unit_path,
                         STEP, f"{FIRSTBOOT_UNIT} enabled")
    if wrote or linked:
        ctx.note(STEP, "open-vm-tools is not in the receiver's package cache for this distribution: "
                       f"{FIRSTBOOT_UNIT} installs it on the first boot (needs the distribution's "
                       "repositories reachable from the VM)")
    else:
        ctx.warn(STEP, f"open-vm-tools is still deferred to the first boot ({FIRSTBOOT_UNIT})")


def firstboot_unit(fam: str) -> str:
    return (
        "# vmware.osam: installs open-vm-tools on the first boot after the migration to VMware.\n"
        "# It runs on each boot until the install succeeds once.\n"
        "[Unit]\n"
        "Description=Install open-vm-tools after the migration to VMware (vmware.osam)\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        f"ConditionPathExists=!{FIRSTBOOT_DONE}\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart=/bin/sh -c '{FIRSTBOOT_INSTALL[fam]}'\n"
        f"ExecStart=/bin/sh -c 'systemctl enable --now {FIRSTBOOT_ENABLE[fam]}'\n"
        f"ExecStart=/bin/sh -c 'touch {FIRSTBOOT_DONE}'\n"
        "TimeoutStartSec=30min\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n")


def remove_firstboot_unit(ctx: FixupContext) -> None:
    ctx.remove(f"{units.ADMIN_DIR}/multi-user.target.wants/{FIRSTBOOT_UNIT}", STEP,
               "open-vm-tools is installed: the first-boot install is not needed")
    ctx.remove(f"{units.ADMIN_DIR}/{FIRSTBOOT_UNIT}", STEP,
               "open-vm-tools is installed: the first-boot install is not needed")
