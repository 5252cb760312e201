"""The offline Windows fix-up on real disk images: a GPT (or MBR) disk with an EFI system
partition and an NTFS volume made by mkntfs that holds a synthetic Windows SYSTEM hive,
mapped with losetup and mounted with ntfs-3g exactly as the receiver does it.

Afterwards the volume is mounted again, as an operator would, to read the edits back; no
loop device or mount may be left behind, also when the fix-up refuses the replica."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.util import is_root, regf

if not is_root():
    pytest.skip("needs root: loop devices and ntfs-3g mounts", allow_module_level=True)
for tool in ("ntfs-3g", "mkntfs", "sfdisk", "losetup"):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (ntfs-3g, fdisk, mount packages)", allow_module_level=True)

from osam.fixup.context import Nic  # noqa: E402
from osam.fixup.windows import WindowsFixupError, WindowsTarget, fixup_windows, ntfs  # noqa: E402
from osam.fixup.windows.hivex_loader import load_hivex  # noqa: E402

pytestmark = [pytest.mark.need_root, pytest.mark.slow]

hivex = load_hivex()
MiB = 1 << 20
IMAGE_SIZE = 64 * MiB
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
PYTHON = r"C:\Program Files\VMware\osam\venv\Scripts\python.exe"
NEW_MAC = "00:50:56:01:02:03"
CS = "ControlSet001"
CONFIG = "ProgramData/VMware/osam/firstboot/firstboot.json"


def sh(*argv, **kw):
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw)


def release(image: Path) -> None:
    """Whatever a failed test left attached or mounted for this image."""
    for device in ntfs.loop_devices_of(str(image)):
        for point in ntfs.mounts_of(device):
            subprocess.run(["umount", point], capture_output=True)
        subprocess.run(["losetup", "-d", device], capture_output=True)


def ntfs_partition(image: Path) -> ntfs.Partition:
    return [p for p in ntfs.partitions(str(image)) if ntfs.is_ntfs(str(image), p.start)][0]


class Volume:
    """The image's NTFS partition mounted for the test's own reading and writing."""

    def __init__(self, image: Path, read_only: bool = True):
        self.image, self.read_only = image, read_only

    def __enter__(self) -> Path:
        self.point = tempfile.mkdtemp(prefix="osam-ntfs-check-")
        part = ntfs_partition(self.image)
        self.ctx = ntfs.mounted(part, self.point, read_only=self.read_only)
        return Path(self.ctx.__enter__())

    def __exit__(self, *exc):
        try:
            self.ctx.__exit__(*exc)
        finally:
            os.rmdir(self.point)


def build_image(base: Path, label: str = "gpt") -> Path:
    image = base / f"disk-{label}.img"
    with open(image, "wb") as f:
        f.truncate(IMAGE_SIZE)
    if label == "gpt":
        table = f"label: gpt\n,8MiB,{ESP}\n,,{BASIC_DATA}\n"
    else:
        table = "label: dos\n,8MiB,ef\n,,7,*\n"
    sh("sfdisk", "--quiet", str(image), input=table)
    part = ntfs_partition_by_table(image)
    device = sh("losetup", "--find", "--show", "--offset", str(part.start), "--sizelimit", str(part.size),
                str(image)).stdout.strip()
    try:
        sh("mkntfs", "--quick", "--force", "--label", "Windows", device)
    finally:
        sh("losetup", "-d", device)
    hive = base / "SYSTEM"
    regf.make_system_hive(str(hive), hivex)
    software = regf.empty_hive(str(base / "SOFTWARE"))
    with Volume(image, read_only=False) as root:
        config = root / "Windows" / "System32" / "config"
        config.mkdir(parents=True)
        shutil.copyfile(hive, config / "SYSTEM")
        shutil.copyfile(software, config / "SOFTWARE")
        (root / "Windows" / "System32" / "drivers").mkdir()
        (root / "Windows" / "System32" / "drivers" / "lsi_sas.sys").write_bytes(b"inbox lsi sas")
    return image


def ntfs_partition_by_table(image: Path) -> ntfs.Partition:
    return ntfs.partitions(str(image))[1]


def make_cache(base: Path) -> Path:
    cache = base / "cache"
    for name in ("pvscsi", "vmxnet3"):
        d = cache / "windows" / "drivers" / name
        d.mkdir(parents=True)
        for suffix in ("sys", "inf", "cat"):
            (d / f"{name}.{suffix}").write_bytes(f"{name}.{suffix} bytes".encode())
    (cache / "windows" / "VMware-tools-12.4.0-23259341-x86_64.exe").write_bytes(b"MZ fake tools")
    return cache


INVENTORY = {"hostname": "win-source", "os": {"system_drive": "C:"},
             "agent": {"python": PYTHON},
             "nics": [{"name": "Ethernet", "mac": "52:54:00:12:34:56", "guid": regf.STATIC_INTERFACE,
                       "physical": True, "link_type": "ether"}]}


def read_value(hive_path: Path, key: str, name: str):
    h = hivex.Hivex(str(hive_path))
    node = h.root()
    for part in key.split("\\"):
        node = h.node_get_child(node, part)
        assert node, f"{key} is missing"
    kind, data = h.value_value(h.node_get_value(node, name))
    if kind == 4:
        return int.from_bytes(data[:4], "little")
    if kind == 7:
        return [s for s in data.decode("utf-16-le").split("\0") if s]
    return data.decode("utf-16-le").rstrip("\0")


def nothing_left(image: Path, work: Path) -> None:
    assert ntfs.loop_devices_of(str(image)) == []
    assert sh("losetup", "-j", str(image)).stdout.strip() == ""
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    assert str(work) not in mounts
    assert str(image) not in mounts


@pytest.fixture
def site(tmp_path):
    images = []

    def make(label="gpt"):
        image = build_image(tmp_path, label)
        images.append(image)
        return image

    try:
        yield make, tmp_path
    finally:
        for image in images:
            release(image)


@pytest.mark.parametrize("label", ["gpt", "dos"])
def test_fixup_of_a_windows_disk_image(site, label):
    make, base = site
    image = make(label)
    work, cache = base / "work", make_cache(base)
    target = WindowsTarget(nics=[Nic(NEW_MAC)], package_cache=str(cache))

    report = fixup_windows([str(image)], INVENTORY, target, str(work))

    nothing_left(image, work)
    assert report["storage"] == "pvscsi"
    assert report["system_volume"]["number"] == 2 and report["system_volume"]["control_set"] == CS
    assert report["changes"] and report["warnings"] == []
    with Volume(image) as root:
        hive = root / "Windows" / "System32" / "config" / "SYSTEM"
        assert read_value(hive, f"{CS}\\Services\\pvscsi", "Start") == 0
        assert read_value(hive, f"{CS}\\Control\\CriticalDeviceDatabase\\pci#ven_15ad&dev_07c0", "Service") == "pvscsi"
        assert read_value(hive, f"{CS}\\Services\\viostor", "Start") == 4
        assert read_value(hive, f"{CS}\\Services\\vmware-hcx-osam-sentinel", "Start") == 4
        assert read_value(hive, f"{CS}\\Services\\partmgr\\Parameters", "SanPolicy") == 1
        assert read_value(hive, f"{CS}\\Control\\Class\\{regf.STORAGE_CLASSES[0]}", "UpperFilters") == \
            ["PartMgr", "EhStorClass"]
        assert "--service" in read_value(hive, f"{CS}\\Services\\vmware-osam-firstboot", "ImagePath")
        assert (root / "Windows" / "System32" / "drivers" / "pvscsi.sys").read_bytes() == b"pvscsi.sys bytes"
        config = json.loads((root / CONFIG).read_text())
        staged = root / "ProgramData" / "VMware" / "osam" / "firstboot"
        assert (staged / "drivers" / "vmxnet3" / "vmxnet3.inf").exists()
        assert (staged / "VMware-tools-12.4.0-23259341-x86_64.exe").read_bytes() == b"MZ fake tools"
        hive_bytes = hive.read_bytes()
    assert config["steps"] == ["drivers", "network", "tools"]
    assert [(n["mac"], n["ipv4"], n["gateways"], n["dns"]) for n in config["network"]] == [
        (NEW_MAC, [{"address": "192.0.2.10", "prefix": 24}], ["192.0.2.1"], ["192.0.2.53", "192.0.2.54"])]
    assert (work / "backup" / "SYSTEM").read_bytes()[:4] == b"regf"
    assert read_value(work / "backup" / "SYSTEM", f"{CS}\\Services\\viostor", "Start") == 0
    assert (work / "backup" / "SOFTWARE").exists()
    assert any(v["value"] == "SanPolicy" and v["decoded"] == 2
               for v in json.loads((work / "backup" / "values.json").read_text()))

    again = fixup_windows([str(image)], INVENTORY, target, str(work))
    nothing_left(image, work)
    assert again["changes"] == []
    with Volume(image) as root:
        assert (root / "Windows" / "System32" / "config" / "SYSTEM").read_bytes() == hive_bytes


def test_a_dry_run_mounts_read_only_and_changes_nothing(site):
    make, base = site
    image = make()
    before = image.read_bytes()
    report = fixup_windows([str(image)], INVENTORY, WindowsTarget([Nic(NEW_MAC)], str(make_cache(base))),
                           str(base / "work"), dry_run=True)
    nothing_left(image, base / "work")
    assert report["changes"] and all(c["detail"].startswith("would: ") for c in report["changes"])
    assert image.read_bytes() == before


def test_what_a_killed_run_left_mounted_is_released_first(site):
    make, base = site
    image = make()
    work = base / "work"
    stale = work / "mnt" / "system"
    stale.mkdir(parents=True)
    part = ntfs_partition(image)
    device = sh("losetup", "--find", "--show", "--offset", str(part.start), "--sizelimit", str(part.size),
                str(image)).stdout.strip()
    sh("ntfs-3g", device, str(stale))

    report = fixup_windows([str(image)], INVENTORY, WindowsTarget([Nic(NEW_MAC)], str(make_cache(base))), str(work))

    nothing_left(image, work)
    assert any(device in w for w in report["warnings"])
    assert report["storage"] == "pvscsi"


def test_an_image_mounted_elsewhere_is_refused(site):
    make, base = site
    image = make()
    with Volume(image, read_only=True) as elsewhere:
        with pytest.raises(WindowsFixupError, match="is in use"):
            fixup_windows([str(image)], INVENTORY, WindowsTarget([Nic(NEW_MAC)]), str(base / "work"))
        assert ntfs.find(str(elsewhere), "Windows/System32/config/SYSTEM")


def test_a_hibernated_windows_is_refused_with_what_to_do(site):
    make, base = site
    image = make()
    with Volume(image, read_only=False) as root:
        # What Windows leaves after hibernating or a Fast Startup shutdown.
        (root / "hiberfil.sys").write_bytes(b"HIBR" + bytes(8188))
    with Volume(image) as root:
        hive_before = (root / "Windows" / "System32" / "config" / "SYSTEM").read_bytes()

    with pytest.raises(WindowsFixupError, match="disable Fast Startup"):
        fixup_windows([str(image)], INVENTORY, WindowsTarget([Nic(NEW_MAC)], str(make_cache(base))),
                      str(base / "work"))

    nothing_left(image, base / "work")
    with Volume(image) as root:
        assert (root / "Windows" / "System32" / "config" / "SYSTEM").read_bytes() == hive_before


def test_disks_without_windows_are_refused(site):
    make, base = site
    image = base / "blank.img"
    with open(image, "wb") as f:
        f.truncate(16 * MiB)
    sh("sfdisk", "--quiet", str(image), input=f"label: gpt\n,,{BASIC_DATA}\n")
    with pytest.raises(WindowsFixupError, match="no NTFS partition"):
        fixup_windows([str(image)], INVENTORY, WindowsTarget(), str(base / "work"))
    nothing_left(image, base / "work")
