"""The inventory a receiver gets from a Windows guest, from the answers PowerShell gives on
realistic machines (data/windows/*.json), ConvertTo-Json's quirks included."""
from __future__ import annotations

import json

from windows_fakes import host_for_machine, load

from osam.sentinel.windows.commands import WindowsCommandError
from osam.sentinel.windows.inventory import (PROBES, collect_windows_inventory, parse_nics,
                                              windows_version_id)
from osam.sentinel.windows.layout import build_layout, parse_disks

SERVER_2019 = load("server2019_uefi.json")
SERVER_2012 = load("server2012r2_bios_dynamic.json")


def collect(machine, **overrides):
    return collect_windows_inventory(host_for_machine(machine, **overrides),
                                     install_dir="C:\\Program Files\\VMware\\HCX\\osam",
                                     python="C:\\Program Files\\VMware\\HCX\\osam\\venv\\Scripts\\python.exe")


def test_same_top_level_keys_as_the_linux_inventory_and_json_able():
    inventory = collect(SERVER_2019)
    linux_keys = {
        "hostname", "os", "kernel", "cpus", "memory", "disks", "mounts", "nics", "boot",
        "system_uuid", "layout", "collected_at", "errors"}
    assert linux_keys <= set(inventory)
    assert inventory["errors"] == []
    json.dumps(inventory)


def test_server_2019_machine_as_the_receiver_sees_it():
    inv = collect(SERVER_2019)
    assert inv["hostname"] == "APP01"
    assert inv["domain"] == {"domain": "corp.example.com", "part_of_domain": True}
    assert inv["os"]["id"] == "windows"
    assert inv["os"]["name"] == "Microsoft Windows Server 2019 Datacenter"
    assert (inv["os"]["version_id"], inv["os"]["version"], inv["os"]["build"]) == ("2019", "10.0.17763", "17763")
    assert inv["kernel"] == {"sysname": "Windows", "release": "10.0.17763", "version": "17763",
                             "machine": "x86_64"}
    assert inv["cpus"] == {"count": 4, "sockets": 2, "model": "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz"}
    assert inv["memory"] == 8589463552
    assert inv["system_uuid"] == "4237a1b2-c3d4-e5f6-0718-293a4b5c6d7e"
    assert inv["boot"] == "uefi"
    assert inv["agent"] == {"python": "C:\\Program Files\\VMware\\HCX\\osam\\venv\\Scripts\\python.exe",
                            "install_dir": "C:\\Program Files\\VMware\\HCX\\osam"}


def test_nic_has_name_lowercase_mac_prefixes_gateways_dns_and_guid():
    [nic] = collect(SERVER_2019)["nics"]
    assert nic["name"] == "Ethernet0"
    assert nic["mac"] == "00:50:56:9a:3b:4c"
    assert nic["link_type"] == "ether" and nic["state"] == "up"
    assert nic["addresses"] == [{"family": "inet", "address": "10.20.30.41", "prefix": 24},
                                {"family": "inet6", "address": "fe80::8d2c:1f3e:aa01:5b2c", "prefix": 64}]
    assert nic["gateways"] == ["10.20.30.1"]
    assert nic["dns"] == ["10.20.0.10", "10.20.0.11"]
    assert nic["dhcp"] is False
    assert nic["guid"] == "{5B3E1C2A-7D44-4F0B-9E61-2C8A7F3D9B10}"


def test_gpt_disks_partition_tables_in_bytes_with_volumes():
    layout = collect(SERVER_2019)["layout"]
    names = [d["name"] for d in layout["disks"]]
    assert names == ["PhysicalDrive0", "PhysicalDrive1", "PhysicalDrive2"]
    disk0 = layout["disks"][0]
    assert disk0["path"] == "\\\\.\\PhysicalDrive0" and disk0["size"] == 64424509440
    table = disk0["partition_table"]
    assert table["label"] == "gpt" and table["unit"] == "bytes"
    assert table["id"] == "3F2A9C8E-1B4D-4E6F-A7B8-C9D0E1F2A3B4"
    parts = table["partitions"]
    assert [p["number"] for p in parts] == [1, 2, 3, 4]        # in disk order, not Get-Partition's
    esp, msr, windows, recovery = parts
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" and esp["system"]
    assert esp["volume"]["fs"] == "FAT32" and esp["drive_letter"] == ""
    assert msr["volume"] is None and msr["access_paths"] == []
    assert windows == {
        "number": 3, "start": 122683392, "size": 63767855104,
        "type": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "uuid": "A1B2C3D4-0003-4000-8000-000000000003",
        "role": "Basic", "drive_letter": "C",
        "access_paths": ["C:\\", "\\\\?\\Volume{33333333-0000-0000-0000-300000000000}\\"],
        "bootable": False, "boot": True, "system": False, "hidden": False,
        "volume": {"path": "\\\\?\\Volume{33333333-0000-0000-0000-300000000000}\\", "fs": "NTFS",
                   "label": "", "size": 63767851008, "free": 41234567168}}
    assert recovery["volume"]["label"] == "Recovery"
    assert layout["boot"] == {"mode": "uefi", "bootloader": "windows", "boot_disk": "PhysicalDrive0",
                              "system_partition": {"disk": "PhysicalDrive0", "number": 1},
                              "windows_partition": {"disk": "PhysicalDrive0", "number": 3}}
    assert layout["root"] == "C:\\"


def test_a_disk_without_partitions_and_a_cd_rom_volume():
    layout = collect(SERVER_2019)["layout"]
    raw = layout["disks"][2]
    assert raw["partition_table"] is None and raw["size"] == 10737418240 and raw["model"] == "VMware Virtual disk"
    cdrom = next(v for v in layout["volumes"] if v["drive_letter"] == "E")
    assert cdrom["drive_type"] == "CD-ROM" and cdrom["partition"] is None
    assert [f["mountpoint"] for f in layout["filesystems"]] == ["C:\\", None, None, "D:\\"]
    assert layout["filesystems"][1]["fstype"] == "vfat"
    assert layout["filesystems"][0]["parent"] == {"kind": "partition", "disk": "PhysicalDrive0", "number": 3}
    assert [m["target"] for m in layout["mounts"]] == ["C:\\", "D:\\", "E:\\"]


def test_mbr_bios_machine_with_a_dynamic_disk_is_flagged():
    inv = collect(SERVER_2012)
    assert inv["boot"] == "bios" and inv["os"]["version_id"] == "2012r2"
    assert inv["system_uuid"] == ""                      # all-F: the firmware has none
    assert inv["memory"] == 4294430720                   # a string in the answer
    assert inv["cpus"]["model"] == ""
    layout = inv["layout"]
    disk0, disk1 = layout["disks"]
    assert disk0["partition_table"]["label"] == "dos" and disk0["partition_table"]["id"] == "0x12345678"
    reserved, windows = disk0["partition_table"]["partitions"]
    assert reserved["type"] == "7" and reserved["bootable"] and reserved["volume"]["label"] == "System Reserved"
    assert windows["drive_letter"] == "C" and reserved["drive_letter"] == ""   # chars as numbers
    assert disk0["bus_type"] == "SCSI" and not disk0["dynamic"]
    assert disk1["dynamic"] and disk1["partition_table"]["partitions"][0]["type"] == "42"
    assert any("PhysicalDrive1 is a dynamic disk" in w for w in layout["warnings"])
    assert layout["boot"]["boot_disk"] == "PhysicalDrive0"
    assert layout["boot"]["system_partition"] == {"disk": "PhysicalDrive0", "number": 1}
    spanned = next(v for v in layout["volumes"] if v["drive_letter"] == "F")
    assert spanned["partition"] is None                  # a dynamic volume maps to no partition


def test_single_object_answers_and_missing_adapters():
    inv = collect(SERVER_2012)
    # Win32_NetworkAdapter failed: NICs are named by description, the failure is reported.
    assert [n["name"] for n in inv["nics"]] == ["Microsoft Hyper-V Network Adapter",
                                                "Microsoft Hyper-V Network Adapter #2"]
    assert [e["probe"] for e in inv["errors"]] == ["nic_adapters"]
    second = inv["nics"][1]
    assert second["addresses"] == [{"family": "inet", "address": "192.168.1.20", "prefix": 23}]
    assert second["gateways"] == [] and second["dns"] == [] and second["dhcp"] and second["mtu"] == 1500
    # One disk: ConvertTo-Json writes an object, not an array.
    disks, _ = parse_disks(SERVER_2019["disks"][0], SERVER_2019["partitions"], [])
    assert [d["name"] for d in disks] == ["PhysicalDrive0"]
    assert len(disks[0]["partition_table"]["partitions"]) == 4


def test_every_probe_fails_alone():
    failing = WindowsCommandError("PowerShell (Get-CimInstance)", 1, "Access denied")
    inv = collect(SERVER_2019, partitions=failing, system_uuid=failing, firmware=failing)
    assert {e["probe"] for e in inv["errors"]} == {"partitions", "system_uuid", "firmware"}
    assert "Access denied" in json.dumps(inv["errors"])
    assert inv["hostname"] == "APP01" and inv["system_uuid"] == "" and inv["boot"] == ""
    # The disks are still described; their tables are unknown, and the layout says why.
    assert [d["partition_table"] for d in inv["layout"]["disks"]] == [None, None, None]
    assert [d["partition_style"] for d in inv["layout"]["disks"]] == ["gpt", "gpt", "raw"]
    assert [d["size"] for d in inv["disks"]] == [64424509440, 107374182400, 10737418240]
    assert [e["probe"] for e in inv["layout"]["errors"]] == ["partitions"]


def test_without_get_disk_the_layout_is_empty_and_the_rest_collected():
    inv = collect(SERVER_2019, disks=WindowsCommandError("PowerShell (Get-Disk)", 1, "not recognized"))
    assert inv["layout"] == {} and inv["disks"] == []
    assert [e["probe"] for e in inv["errors"]] == ["disks"]
    assert inv["nics"] and inv["os"]["id"] == "windows"


def test_each_script_runs_once():
    host = host_for_machine(SERVER_2019)
    collect_windows_inventory(host)
    scripts = host.scripts()
    assert sorted(scripts) == sorted(set(scripts))
    assert set(scripts) == set(PROBES.values())


def test_marketing_versions():
    assert windows_version_id("Microsoft Windows Server 2022 Standard Evaluation") == "2022"
    assert windows_version_id("Microsoft Windows Server 2012 R2 Datacenter") == "2012r2"
    assert windows_version_id("Microsoft Windows 11 Pro") == "11"
    assert windows_version_id("Microsoft Windows 10 Enterprise LTSC") == "10"
    assert windows_version_id("Microsoft Windows Server 2025 Datacenter") == "2025"


def test_nulls_everywhere_do_not_break_parsing():
    assert parse_nics(None) == []
    assert parse_nics({"Index": 0, "MACAddress": None, "IPAddress": None})[0]["addresses"] == []
    layout = build_layout([{"Number": 0, "Size": None, "PartitionStyle": None}], None, None, boot_mode="")
    assert layout["disks"][0]["partition_table"] is None and layout["disks"][0]["size"] == 0
