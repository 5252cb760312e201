"""vSphere's guest OS identifier for a source OS (the inventory's os-release `id`,
`version_id`, `id_like`; Windows sources say `id: windows`).

The id tells vSphere which virtual hardware defaults and VMware Tools suit the guest. Versions
newer than the table knows take the newest id of their family (a Debian 13 guest runs fine as
debian12_64Guest); the table stops at ids vSphere 8.0 knows, the oldest release this targets.
An OS the table does not know is otherLinux64Guest (or Windows Server 2019 for Windows).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

LINUX_FALLBACK = "otherLinux64Guest"
WINDOWS_FALLBACK = "windows2019srv_64Guest"

# os-release id -> (id template with {v} for the major version, lowest, highest major version)
VERSIONED: Dict[str, Tuple[str, int, int]] = {
    "debian": ("debian{v}_64Guest", 6, 12),
    "rhel": ("rhel{v}_64Guest", 5, 9),
    "centos": ("centos{v}_64Guest", 6, 9),
    "ol": ("oracleLinux{v}_64Guest", 6, 9),
    "sles": ("sles{v}_64Guest", 11, 15),
    "sled": ("sles{v}_64Guest", 11, 15),
}
# os-release id -> one id whatever the version
UNVERSIONED: Dict[str, str] = {
    "ubuntu": "ubuntu64Guest",
    "fedora": "fedora64Guest",
    "opensuse-leap": "opensuse64Guest",
    "opensuse-tumbleweed": "opensuse64Guest",
    "opensuse": "opensuse64Guest",
    "rocky": "rockylinux_64Guest",
    "almalinux": "almalinux_64Guest",
    "photon": "vmwarePhoton64Guest",
}
AMAZON = {"2": "amazonlinux2_64Guest", "2023": "amazonlinux3_64Guest"}
# Windows version_id (marketing version) -> id
WINDOWS: Dict[str, str] = {
    "2012": "windows8Server64Guest", "2012r2": "windows8Server64Guest",
    "2016": "windows9Server64Guest", "2019": "windows2019srv_64Guest",
    "2022": "windows2019srvNext_64Guest", "2025": "windows2022srvNext_64Guest",
    "10": "windows9_64Guest", "11": "windows11_64Guest",
}


def guest_id(os_info: Dict[str, Any]) -> str:
    os_id = str(os_info.get("id") or "").lower()
    version = str(os_info.get("version_id") or "")
    if os_id == "windows":
        return WINDOWS.get(version.lower().replace(" ", ""), WINDOWS_FALLBACK)
    for candidate in [os_id] + [str(i).lower() for i in os_info.get("id_like") or ()]:
        found = _linux_id(candidate, version)
        if found:
            return found
    return LINUX_FALLBACK


def is_windows(vsphere_guest_id: str) -> bool:
    return vsphere_guest_id.lower().startswith("win")


def _linux_id(os_id: str, version: str) -> Optional[str]:
    if os_id in UNVERSIONED:
        return UNVERSIONED[os_id]
    if os_id == "amzn":
        return AMAZON.get(version, "amazonlinux2_64Guest")
    if os_id in VERSIONED:
        template, lowest, highest = VERSIONED[os_id]
        major = _major(version)
        return template.format(v=min(max(major, lowest), highest)) if major else template.format(v=highest)
    return None


def _major(version: str) -> int:
    m = re.match(r"\d+", version)
    return int(m.group()) if m else 0
