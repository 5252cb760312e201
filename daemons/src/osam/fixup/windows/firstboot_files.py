"""What the replica's first boot needs, written into its system volume under
ProgramData/VMware/osam/firstboot/: the configuration the guest-side runner
(osam.sentinel.windows.firstboot) reads, the driver packages it installs with pnputil, and
the VMware Tools installer.

firstboot.json (version 1):
  version        1
  service        the first-boot service's name (the runner deletes it when done)
  directory      the Windows path of this directory
  python         the sentinel's python.exe on the replica
  steps          the user-stage work, in order: "drivers", "network", "tools"
  network        [{mac, source_mac, source_name, source_interface, dhcp, ipv4: [{address, prefix}],
                   gateways, dns}]: settings for the destination NIC with `mac`
  drivers        [{name, inf}]: Windows paths of the staged driver packages' .inf files
  tools          {installer, arguments} or null
"""
from __future__ import annotations

import glob
import json
import ntpath
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .volume_files import VolumeWriter

STEP = "firstboot"
DIRECTORY = "ProgramData/VMware/osam/firstboot"
CONFIG_NAME = "firstboot.json"
DRIVER_PACKAGES = ("pvscsi", "vmxnet3")
DRIVER_SUFFIXES = (".sys", ".inf", ".cat", ".dll", ".pnf")
TOOLS_PATTERN = "VMware-tools-*.exe"
TOOLS_ARGUMENTS = '/S /v"/qn REBOOT=R"'
TOOLS_MISSING = "VMware Tools not in the package cache: install it after the switchover"


@dataclass
class FirstBootPlan:
    python: str
    drive: str = "C:"
    network: List[Dict[str, Any]] = field(default_factory=list)
    driver_dirs: Dict[str, str] = field(default_factory=dict)   # name → package cache dir
    tools: Optional[str] = None                                   # installer in the package cache

    @property
    def windows_dir(self) -> str:
        return self.drive + "\\" + DIRECTORY.replace("/", "\\")

    @property
    def config_path(self) -> str:
        return ntpath.join(self.windows_dir, CONFIG_NAME)

    def steps(self) -> List[str]:
        # The runner's order: drivers first, the new NICs appear once vmxnet3 is installed.
        wanted = [("drivers", self.driver_dirs), ("network", self.network), ("tools", self.tools)]
        return [name for name, present in wanted if present]


def driver_packages(package_cache: Optional[str], storage: str) -> Dict[str, str]:
    """The driver packages in the cache to install at first boot (pvscsi only when it is
    the boot controller's driver)."""
    found = {}
    if not package_cache:
        return found
    for name in DRIVER_PACKAGES:
        if name == "pvscsi" and storage != "pvscsi":
            continue
        directory = os.path.join(package_cache, "windows", "drivers", name)
        if glob.glob(os.path.join(directory, "*.inf")):
            found[name] = directory
    return found


def tools_installer(package_cache: Optional[str]) -> Optional[str]:
    """The newest-named VMware Tools installer in the cache."""
    if not package_cache:
        return None
    found = sorted(glob.glob(os.path.join(package_cache, "windows", TOOLS_PATTERN)))
    return found[-1] if found else None


def config(plan: FirstBootPlan, service: str) -> Dict[str, Any]:
    drivers = []
    for name, directory in sorted(plan.driver_dirs.items()):
        for inf in sorted(f for f in os.listdir(directory) if f.lower().endswith(".inf")):
            drivers.append({"name": name, "inf": ntpath.join(plan.windows_dir, "drivers", name, inf)})
    tools = None
    if plan.tools:
        tools = {"installer": ntpath.join(plan.windows_dir, os.path.basename(plan.tools)),
                 "arguments": TOOLS_ARGUMENTS}
    return {"version": 1, "service": service, "directory": plan.windows_dir, "python": plan.python,
            "steps": plan.steps(), "network": plan.network, "drivers": drivers, "tools": tools}


def write(writer: VolumeWriter, plan: FirstBootPlan, service: str) -> Dict[str, Any]:
    """Stage the drivers and the installer, then write the configuration (last: a
    configuration never names a file that is not there yet)."""
    for name, directory in sorted(plan.driver_dirs.items()):
        for entry in sorted(os.listdir(directory)):
            if entry.lower().endswith(DRIVER_SUFFIXES):
                writer.copy(os.path.join(directory, entry), f"{DIRECTORY}/drivers/{name}/{entry}",
                            STEP, f"{name} driver package for pnputil at first boot")
    if plan.tools:
        writer.copy(plan.tools, f"{DIRECTORY}/{os.path.basename(plan.tools)}", STEP,
                    "VMware Tools installer, run silently at first boot")
    document = config(plan, service)
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    writer.write_bytes(f"{DIRECTORY}/{CONFIG_NAME}", data, STEP, "first-boot configuration")
    return document
