"""The offline Windows fix-up's registry edits, on a synthetic SYSTEM hive in a directory that
stands for the mounted system volume: every edit read back with hivex, idempotence, backups,
the LSI SAS fallback, and the refusals."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from osam.fixup.context import Nic
from osam.fixup.windows import WindowsFixupError, WindowsTarget, hivex_loader
from osam.fixup.windows.offline import fixup_volume
from tests.util import regf

hivex = hivex_loader.load_hivex()

PYTHON = r"C:\Program Files\VMware\osam\venv\Scripts\python.exe"
NEW_MACS = ["00:50:56:aa:bb:01", "00:50:56:aa:bb:02"]
CS = "ControlSet001"
STORAGE_FILTER_CLASS = regf.STORAGE_CLASSES[0]
SCSI_CLASS = regf.STORAGE_CLASSES[1]


def inventory(python=PYTHON):
    inv = {"hostname": "win-source",
           "nics": [{"name": "Ethernet", "mac": "52:54:00:12:34:56", "guid": regf.STATIC_INTERFACE,
                     "addresses": [{"family": "inet", "address": "192.0.2.10", "prefix": 24}]},
                    {"name": "Ethernet 2", "mac": "52-54-00-AB-CD-EF"}]}
    if python:
        inv["agent"] = {"python": python}
    return inv


def make_volume(base, **hive_options):
    """A directory laid out as a Windows system volume, with a synthetic SYSTEM hive."""
    root = base / "volume"
    config = root / "Windows" / "System32" / "config"
    config.mkdir(parents=True)
    drivers = root / "Windows" / "System32" / "DRIVERS"     # NTFS names ignore case
    drivers.mkdir()
    (drivers / "lsi_sas.sys").write_bytes(b"inbox lsi sas")
    regf.make_system_hive(str(config / "SYSTEM"), hivex, **hive_options)
    regf.empty_hive(str(config / "SOFTWARE"))
    return root


def make_cache(base, pvscsi=True, tools=True):
    cache = base / "cache"
    for name in (["pvscsi"] if pvscsi else []) + ["vmxnet3"]:
        d = cache / "windows" / "drivers" / name
        d.mkdir(parents=True)
        for suffix in ("sys", "inf", "cat"):
            (d / f"{name}.{suffix}").write_bytes(f"{name} {suffix}".encode())
    (cache / "windows").mkdir(parents=True, exist_ok=True)
    if tools:
        (cache / "windows" / "VMware-tools-12.4.0-23259341-x86_64.exe").write_bytes(b"MZ tools")
    return cache


def target(cache, storage="pvscsi"):
    return WindowsTarget(nics=[Nic(m) for m in NEW_MACS], package_cache=str(cache),
                         preferred_storage=storage)


class Reader:
    """Reads a hive back with hivex, as an operator's tool would."""

    def __init__(self, path):
        self.h = hivex.Hivex(str(path))

    def node(self, key):
        node = self.h.root()
        for part in key.split("\\"):
            node = self.h.node_get_child(node, part)
            if not node:
                return None
        return node

    def value(self, key, name):
        node = self.node(key)
        assert node, f"key {key} is missing"
        try:
            handle = self.h.node_get_value(node, name)
        except RuntimeError:   # hivex's answer for a missing value
            return None
        if not handle:
            return None
        kind, data = self.h.value_value(handle)
        if kind in (1, 2):
            return kind, data.decode("utf-16-le").rstrip("\0")
        if kind == 7:
            return kind, [s for s in data.decode("utf-16-le").split("\0") if s]
        if kind == 4:
            return kind, int.from_bytes(data[:4], "little")
        return kind, data


def system_hive(root):
    return root / "Windows" / "System32" / "config" / "SYSTEM"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fixed(tmp_path):
    root = make_volume(tmp_path)
    cache = make_cache(tmp_path)
    work = tmp_path / "work"
    original = system_hive(root).read_bytes()
    report = fixup_volume(str(root), inventory(), target(cache), str(work))
    return root, cache, work, report, original


# -- the REGF builder -----------------------------------------------------------------------------
def test_an_empty_hive_opens_in_hivex_for_writing_and_in_hivexsh(tmp_path):
    path = str(tmp_path / "empty")
    regf.empty_hive(path)
    h = hivex.Hivex(path, write=True)
    assert h.node_children(h.root()) == []
    child = h.node_add_child(h.root(), "Select")
    h.node_set_value(child, {"key": "Current", "t": 4, "value": (1).to_bytes(4, "little")})
    h.commit(path)
    hivexsh = shutil.which("hivexsh")
    if hivexsh is None:
        pytest.skip("hivexsh (libhivex-bin) is not installed")
    done = subprocess.run([hivexsh, path], input="cd Select\nlsval\n", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"Current"=dword:00000001' in done.stdout


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_base_block_checksum_is_the_xor_of_its_first_508_bytes(tmp_path):
    data = regf.empty_hive_bytes()
    assert data[:4] == b"regf" and len(data) == 8192 and data[4096:4100] == b"hbin"
    stored = int.from_bytes(data[508:512], "little")
    assert stored == regf.checksum(data[:4096])
    broken = bytearray(data)
    broken[508] ^= 0xFF
    (tmp_path / "broken").write_bytes(bytes(broken))
    with pytest.raises(RuntimeError):
        hivex.Hivex(str(tmp_path / "broken"))


# -- the edits, read back ---------------------------------------------------------------------------
def test_pvscsi_becomes_the_boot_driver(fixed):
    root, cache, work, report, _ = fixed
    hive = Reader(system_hive(root))
    key = f"{CS}\\Services\\pvscsi"
    assert hive.value(key, "Type") == (4, 1)
    assert hive.value(key, "Start") == (4, 0)
    assert hive.value(key, "ErrorControl") == (4, 1)
    assert hive.value(key, "Group") == (1, "SCSI miniport")
    assert hive.value(key, "ImagePath") == (2, "System32\\drivers\\pvscsi.sys")
    assert hive.value(key, "Tag")[0] == 4
    for pci_id in ("pci#ven_15ad&dev_07c0", "pci#ven_15ad&dev_07c0&subsys_07c015ad&rev_02"):
        cddb = f"{CS}\\Control\\CriticalDeviceDatabase\\{pci_id}"
        assert hive.value(cddb, "Service") == (1, "pvscsi")
        assert hive.value(cddb, "ClassGUID") == (1, "{4D36E97B-E325-11CE-BFC1-08002BE10318}")
    # The existing CDDB entry is untouched.
    assert hive.value(f"{CS}\\Control\\CriticalDeviceDatabase\\pci#ven_8086&dev_7010", "Service") == (1, "intelide")
    assert report["storage"] == "pvscsi"
    assert (root / "Windows" / "System32" / "DRIVERS" / "pvscsi.sys").read_bytes() == b"pvscsi sys"
    assert not (root / "Windows" / "System32" / "drivers").exists()


def test_old_hypervisor_services_and_the_agent_are_disabled_and_their_filters_removed(fixed):
    root, _, _, report, _ = fixed
    hive = Reader(system_hive(root))
    for name in ("viostor", "netkvm", "vmicheartbeat", "xenfilt", "VBoxGuest", "vmware-hcx-osam-sentinel"):
        assert hive.value(f"{CS}\\Services\\{name}", "Start") == (4, 4), name
    assert hive.value(f"{CS}\\Services\\LSI_SAS", "Start") == (4, 3)   # not the boot driver here
    assert hive.value(f"{CS}\\Control\\Class\\{STORAGE_FILTER_CLASS}", "UpperFilters") == \
        (7, ["PartMgr", "EhStorClass"])
    assert hive.value(f"{CS}\\Control\\Class\\{SCSI_CLASS}", "LowerFilters") == (7, ["iaStorF"])
    assert sorted(report["old_hypervisor_services"]) == sorted(
        ["viostor", "netkvm", "vmicheartbeat", "xenfilt", "VBoxGuest"])


def test_a_filter_list_left_empty_is_removed(tmp_path):
    root = make_volume(tmp_path, upper_filters=("xenfilt",), lower_filters=("vioscsi", "iaStorF"))
    fixup_volume(str(root), inventory(), target(make_cache(tmp_path)), str(tmp_path / "work"))
    hive = Reader(system_hive(root))
    assert hive.value(f"{CS}\\Control\\Class\\{STORAGE_FILTER_CLASS}", "UpperFilters") is None
    assert hive.value(f"{CS}\\Control\\Class\\{STORAGE_FILTER_CLASS}", "Class") == (1, "DiskDrive")


def test_san_policy_and_static_interfaces(fixed):
    root, _, _, _, _ = fixed
    hive = Reader(system_hive(root))
    assert hive.value(f"{CS}\\Services\\partmgr\\Parameters", "SanPolicy") == (4, 1)
    interface = f"{CS}\\Services\\Tcpip\\Parameters\\Interfaces\\{regf.STATIC_INTERFACE}"
    assert hive.value(interface, "EnableDHCP") == (4, 1)
    assert hive.value(interface, "IPAddress") == (7, ["0.0.0.0"])
    assert hive.value(interface, "DefaultGateway") is None
    assert hive.value(interface, "NameServer") == (1, "")
    dhcp = f"{CS}\\Services\\Tcpip\\Parameters\\Interfaces\\{regf.DHCP_INTERFACE}"
    assert hive.value(dhcp, "DhcpIPAddress") == (1, "198.51.100.7")


def test_the_first_boot_service_and_its_files(fixed):
    root, _, _, report, _ = fixed
    hive = Reader(system_hive(root))
    key = f"{CS}\\Services\\vmware-osam-firstboot"
    assert hive.value(key, "Type") == (4, 0x10)
    assert hive.value(key, "Start") == (4, 2)
    assert hive.value(key, "ObjectName") == (1, "LocalSystem")
    config_path = r"C:\ProgramData\VMware\osam\firstboot\firstboot.json"
    assert hive.value(key, "ImagePath") == (
        2, f'"{PYTHON}" -m osam.sentinel.windows.firstboot --service --config "{config_path}"')

    staged = root / "ProgramData" / "VMware" / "osam" / "firstboot"
    config = json.loads((staged / "firstboot.json").read_text())
    assert config["steps"] == ["drivers", "network", "tools"]
    assert config["python"] == PYTHON and config["service"] == "vmware-osam-firstboot"
    assert config["network"] == [{
        "mac": NEW_MACS[0], "source_mac": "52:54:00:12:34:56", "source_name": "Ethernet",
        "source_interface": regf.STATIC_INTERFACE, "dhcp": False,
        "ipv4": [{"address": "192.0.2.10", "prefix": 24}], "gateways": ["192.0.2.1"],
        "dns": ["192.0.2.53", "192.0.2.54"]}]
    assert {d["inf"] for d in config["drivers"]} == {
        r"C:\ProgramData\VMware\osam\firstboot\drivers\pvscsi\pvscsi.inf",
        r"C:\ProgramData\VMware\osam\firstboot\drivers\vmxnet3\vmxnet3.inf"}
    assert config["tools"] == {
        "installer": r"C:\ProgramData\VMware\osam\firstboot\VMware-tools-12.4.0-23259341-x86_64.exe",
        "arguments": '/S /v"/qn REBOOT=R"'}
    for name in ("pvscsi.inf", "pvscsi.cat", "pvscsi.sys"):
        assert (staged / "drivers" / "pvscsi" / name).exists()
    assert (staged / "VMware-tools-12.4.0-23259341-x86_64.exe").read_bytes() == b"MZ tools"
    assert report["firstboot"] == config


def test_every_change_is_reported_with_old_and_new(fixed):
    _, _, _, report, _ = fixed
    by_target = {(c.get("key"), c.get("value")): c for c in report["changes"] if c.get("hive")}
    san = by_target[(f"{CS}\\Services\\partmgr\\Parameters", "SanPolicy")]
    assert (san["old"], san["new"], san["type"], san["action"]) == (2, 1, "REG_DWORD", "set")
    filters = by_target[(f"{CS}\\Control\\Class\\{STORAGE_FILTER_CLASS}", "UpperFilters")]
    assert filters["old"] == ["xenfilt", "PartMgr", "EhStorClass"] and filters["new"] == ["PartMgr", "EhStorClass"]
    files = {c["file"] for c in report["changes"] if c.get("file")}
    assert "Windows/System32/drivers/pvscsi.sys" in files
    assert "ProgramData/VMware/osam/firstboot/firstboot.json" in files
    json.dumps(report)   # JSON-able as it is


def test_backups_hold_the_source_hives_and_every_replaced_value(fixed):
    root, _, work, report, original = fixed
    assert (work / "backup" / "SYSTEM").read_bytes() == original
    assert (work / "backup" / "SOFTWARE").exists()
    values = json.loads((work / "backup" / "values.json").read_text())
    by_key = {(v["key"], v["value"]): v for v in values}
    assert by_key[(f"{CS}\\Services\\partmgr\\Parameters", "SanPolicy")]["decoded"] == 2
    assert by_key[(f"{CS}\\Services\\viostor", "Start")]["decoded"] == 0
    assert by_key[(f"{CS}\\Control\\Class\\{STORAGE_FILTER_CLASS}", "UpperFilters")]["decoded"] == \
        ["xenfilt", "PartMgr", "EhStorClass"]
    gateway = by_key[(f"{CS}\\Services\\Tcpip\\Parameters\\Interfaces\\{regf.STATIC_INTERFACE}", "DefaultGateway")]
    assert gateway["type"] == "REG_MULTI_SZ" and gateway["decoded"] == ["192.0.2.1"]
    assert by_key[(f"{CS}\\Services\\pvscsi", "Start")]["existed"] is False
    assert str(work / "backup" / "values.json") in report["backups"]
    assert json.loads((work / "report.json").read_text())["changes"] == report["changes"]


def test_a_second_run_changes_nothing(fixed, tmp_path):
    root, cache, work, first, _ = fixed
    staged = root / "ProgramData" / "VMware" / "osam" / "firstboot" / "firstboot.json"
    before = digest(system_hive(root)), digest(staged)
    values_before = (work / "backup" / "values.json").read_bytes()
    second = fixup_volume(str(root), inventory(), target(cache), str(work))
    assert second["changes"] == []
    assert (digest(system_hive(root)), digest(staged)) == before
    assert (work / "backup" / "values.json").read_bytes() == values_before
    # The settings still come from the source's interface, which the first run released.
    assert second["firstboot"]["network"] == first["firstboot"]["network"]


def test_a_dry_run_reports_and_changes_nothing(tmp_path):
    root = make_volume(tmp_path)
    before = digest(system_hive(root))
    report = fixup_volume(str(root), inventory(), target(make_cache(tmp_path)), str(tmp_path / "work"),
                          dry_run=True)
    assert report["changes"] and all(c["detail"].startswith("would: ") for c in report["changes"])
    assert digest(system_hive(root)) == before
    assert not (root / "ProgramData").exists()
    assert not (tmp_path / "work" / "backup").exists()


# -- fallbacks and refusals -------------------------------------------------------------------------
def test_without_pvscsi_in_the_cache_the_inbox_lsi_sas_driver_boots(tmp_path):
    root = make_volume(tmp_path)
    report = fixup_volume(str(root), inventory(), target(make_cache(tmp_path, pvscsi=False)), str(tmp_path / "w"))
    hive = Reader(system_hive(root))
    assert report["storage"] == "lsilogicsas"
    assert hive.value(f"{CS}\\Services\\LSI_SAS", "Start") == (4, 0)
    assert hive.value(f"{CS}\\Control\\CriticalDeviceDatabase\\pci#ven_1000&dev_0054", "Service") == (1, "LSI_SAS")
    assert hive.node(f"{CS}\\Services\\pvscsi") is None
    assert any("pvscsi.sys is not in the package cache" in w and "LSI Logic SAS" in w for w in report["warnings"])
    assert [d["name"] for d in report["firstboot"]["drivers"]] == ["vmxnet3"]
    assert not (root / "Windows" / "System32" / "DRIVERS" / "pvscsi.sys").exists()


def test_lsi_sas_when_preferred(tmp_path):
    root = make_volume(tmp_path)
    report = fixup_volume(str(root), inventory(), target(make_cache(tmp_path), "lsilogicsas"), str(tmp_path / "w"))
    assert report["storage"] == "lsilogicsas"
    assert any("preferred_storage" in w for w in report["warnings"])


def test_without_the_agents_python_there_is_no_first_boot_and_addresses_stay(tmp_path):
    root = make_volume(tmp_path)
    report = fixup_volume(str(root), inventory(python=None), target(make_cache(tmp_path)), str(tmp_path / "w"))
    hive = Reader(system_hive(root))
    assert hive.node(f"{CS}\\Services\\vmware-osam-firstboot") is None
    interface = f"{CS}\\Services\\Tcpip\\Parameters\\Interfaces\\{regf.STATIC_INTERFACE}"
    assert hive.value(interface, "IPAddress") == (7, ["192.0.2.10"])
    assert any("agent.python" in w for w in report["warnings"])
    assert not (root / "ProgramData").exists()
    assert hive.value(f"{CS}\\Services\\pvscsi", "Start") == (4, 0)


def test_missing_tools_installer_is_a_warning(tmp_path):
    root = make_volume(tmp_path)
    report = fixup_volume(str(root), inventory(), target(make_cache(tmp_path, tools=False)), str(tmp_path / "w"))
    assert "VMware Tools not in the package cache: install it after the switchover" in report["warnings"]
    assert report["firstboot"]["tools"] is None and "tools" not in report["firstboot"]["steps"]


def test_a_hive_without_select_is_refused_and_left_alone(tmp_path):
    root = make_volume(tmp_path, select=False)
    before = digest(system_hive(root))
    with pytest.raises(WindowsFixupError, match=r"Select\\Current"):
        fixup_volume(str(root), inventory(), target(make_cache(tmp_path)), str(tmp_path / "w"))
    assert digest(system_hive(root)) == before


def test_a_current_control_set_that_is_missing_is_refused(tmp_path):
    root = make_volume(tmp_path)
    path = str(system_hive(root))
    h = hivex.Hivex(path, write=True)
    select = h.node_get_child(h.root(), "Select")
    h.node_set_value(select, {"key": "Current", "t": 4, "value": (2).to_bytes(4, "little")})
    h.commit(path)
    with pytest.raises(WindowsFixupError, match="ControlSet002"):
        fixup_volume(str(root), inventory(), target(make_cache(tmp_path)), str(tmp_path / "w"))


def test_an_unflushed_hive_is_reported(tmp_path):
    root = make_volume(tmp_path)
    data = bytearray(system_hive(root).read_bytes())
    data[4:8] = (int.from_bytes(data[8:12], "little") + 1).to_bytes(4, "little")
    data[508:512] = regf.checksum(bytes(data[:4096])).to_bytes(4, "little")
    system_hive(root).write_bytes(bytes(data))
    report = fixup_volume(str(root), inventory(), target(make_cache(tmp_path)), str(tmp_path / "w"))
    assert any("not flushed" in w for w in report["warnings"])


def test_the_hivex_loader_names_the_debian_package_when_it_finds_nothing(tmp_path, monkeypatch):
    if importlib.util.find_spec("hivex") is not None and "hivex" not in sys.modules:
        pytest.skip("hivex is importable directly here")
    monkeypatch.delitem(sys.modules, "hivex", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "dist-packages" not in p])
    with pytest.raises(WindowsFixupError, match="python3-hivex"):
        hivex_loader.load_hivex(search=[str(tmp_path)])


def test_the_hivex_loader_ignores_an_extension_for_another_python(tmp_path):
    (tmp_path / "hivex").mkdir()
    (tmp_path / "hivex" / "__init__.py").write_text("import libhivexmod\n")
    (tmp_path / "libhivexmod.cpython-39-x86_64-linux-gnu.so").write_bytes(b"")
    assert hivex_loader._extension_path(str(tmp_path)) is None


def test_nics_pair_in_inventory_order_skipping_virtual_adapters(tmp_path):
    """No interface GUID in the inventory: the interface holding the NIC's address is the one;
    a Hyper-V virtual switch adapter gets no destination NIC."""
    root = make_volume(tmp_path)
    inv = {"agent": {"python": PYTHON}, "os": {"system_drive": "d:"},
           "nics": [{"name": "vEthernet (Default Switch)", "mac": "00:15:5d:00:00:01", "physical": False},
                    {"name": "Ethernet", "mac": "52:54:00:12:34:56",
                     "addresses": [{"family": "inet", "address": "192.0.2.10", "prefix": 24}]}]}
    report = fixup_volume(str(root), inv, target(make_cache(tmp_path)), str(tmp_path / "w"))
    assert [(n["mac"], n["source_name"]) for n in report["firstboot"]["network"]] == [(NEW_MACS[0], "Ethernet")]
    assert report["firstboot"]["directory"] == r"D:\ProgramData\VMware\osam\firstboot"
    assert r'--config "D:\ProgramData\VMware\osam\firstboot\firstboot.json"' in \
        Reader(system_hive(root)).value(f"{CS}\\Services\\vmware-osam-firstboot", "ImagePath")[1]


def test_static_settings_without_a_destination_nic_are_reported(tmp_path):
    root = make_volume(tmp_path)
    report = fixup_volume(str(root), inventory(), WindowsTarget(nics=[], package_cache=str(make_cache(tmp_path))),
                          str(tmp_path / "w"))
    assert report["firstboot"]["network"] == []
    assert any("has static settings but the destination VM has only 0 NIC(s)" in w for w in report["warnings"])
    interface = f"{CS}\\Services\\Tcpip\\Parameters\\Interfaces\\{regf.STATIC_INTERFACE}"
    assert Reader(system_hive(root)).value(interface, "IPAddress") == (7, ["192.0.2.10"])
