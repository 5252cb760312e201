"""The registration inventory, collected from this machine."""
from __future__ import annotations

import datetime
import json
import os

from osam.sentinel import inventory as inventory_module
from osam.sentinel.inventory import collect_inventory, parse_os_release

KEYS = {"hostname", "os", "kernel", "cpus", "memory", "disks", "mounts", "nics", "boot", "system_uuid",
        "layout", "collected_at", "errors"}


def test_inventory_of_this_machine():
    inv = collect_inventory()
    assert set(inv) == KEYS
    assert inv["errors"] == []
    json.dumps(inv)  # sent as JSON on registration
    assert inv["hostname"] == os.uname().nodename
    assert inv["os"]["id"] and inv["os"]["pretty_name"]
    assert inv["kernel"]["release"] == os.uname().release
    assert inv["cpus"]["count"] == os.cpu_count() and inv["cpus"]["model"]
    assert inv["memory"] > 64 << 20
    assert inv["boot"] in ("uefi", "bios")
    assert inv["layout"]["root"] == "/" and inv["layout"]["boot"]["mode"] == inv["boot"]
    assert {"disks", "filesystems", "lvm", "mounts", "errors"} <= set(inv["layout"])
    datetime.datetime.fromisoformat(inv["collected_at"])


def test_disks_come_from_lsblk_with_sizes_in_bytes():
    disks = collect_inventory()["disks"]
    assert disks, "this machine has at least one block device"
    for disk in disks:
        assert {"name", "kname", "path", "size", "type", "fstype", "uuid", "label", "partuuid",
                "ptuuid", "pttype", "mountpoints", "model", "serial"} <= set(disk)
        assert isinstance(disk["size"], int) and isinstance(disk["mountpoints"], list)
        assert None not in disk["mountpoints"]
    assert any("/" in d["mountpoints"] for d in _flatten(disks))


def _flatten(devices):
    for dev in devices:
        yield dev
        yield from _flatten(dev.get("children", []))


def test_mounts_and_nics():
    inv = collect_inventory()
    root = [m for m in inv["mounts"] if m["target"] == "/"]
    assert root and root[-1]["fstype"] and root[-1]["source"]
    lo = [n for n in inv["nics"] if n["name"] == "lo"]
    assert lo and {"address": "127.0.0.1", "prefix": 8, "family": "inet"} in lo[0]["addresses"]
    assert all({"name", "mac", "mtu", "state", "addresses"} <= set(n) for n in inv["nics"])


def test_missing_tools_become_errors_not_exceptions(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither lsblk nor ip can be found
    inv = collect_inventory()
    assert inv["disks"] == [] and inv["nics"] == [] and inv["layout"] == {}
    assert {e["probe"] for e in inv["errors"]} == {"disks", "nics", "layout"}
    assert all(e["error"] for e in inv["errors"])
    assert inv["hostname"] and inv["memory"]  # the other probes still answered


def test_a_failing_tool_is_reported(monkeypatch, tmp_path):
    fake = tmp_path / "lsblk"
    fake.write_text("#!/bin/sh\necho 'lsblk: permission denied' >&2\nexit 32\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    errors = collect_inventory()["errors"]
    assert [e["probe"] for e in errors] == ["disks", "layout"]
    assert all("exited 32" in e["error"] and "permission denied" in e["error"] for e in errors)


def test_old_lsblk_without_mountpoints_column(monkeypatch, tmp_path):
    fake = tmp_path / "lsblk"
    fake.write_text("""#!/bin/sh
case "$*" in *MOUNTPOINTS*) echo "lsblk: unknown column: MOUNTPOINTS" >&2; exit 1;; esac
echo '{"blockdevices": [{"name": "sda", "mountpoint": null, "children": [
  {"name": "sda1", "mountpoint": "/boot"}]}]}'
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    disks = inventory_module.read_disks()
    assert disks == [{"name": "sda", "mountpoints": [], "children": [
        {"name": "sda1", "mountpoints": ["/boot"]}]}]


def test_os_release_below_another_root(tmp_path):
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "os-release").write_text(
        'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n'
        'PRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\n# comment\n')
    inv = collect_inventory(str(tmp_path))
    assert inv["os"] == {"id": "rocky", "version_id": "9.3",
                         "pretty_name": "Rocky Linux 9.3 (Blue Onyx)",
                         "id_like": ["rhel", "centos", "fedora"]}
    missing = collect_inventory(str(tmp_path / "nothing"))
    assert missing["os"] == {} and [e["probe"] for e in missing["errors"]] == ["os"]


def test_parse_os_release_unquotes():
    assert parse_os_release("ID=debian\nVERSION_ID='12'\nPRETTY_NAME=\"a \\\"b\\\"\"\n") == {
        "id": "debian", "version_id": "12", "pretty_name": 'a "b"', "id_like": []}


def test_boot_mode(tmp_path):
    assert inventory_module.read_boot_mode(str(tmp_path)) == "bios"
    (tmp_path / "sys" / "firmware" / "efi").mkdir(parents=True)
    assert inventory_module.read_boot_mode(str(tmp_path)) == "uefi"


def test_hostname_of_another_root_is_the_one_it_is_configured_with(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname").write_text("src-guest\n")
    assert collect_inventory(str(tmp_path))["hostname"] == "src-guest"
    (tmp_path / "etc" / "hostname").write_text("")
    assert collect_inventory(str(tmp_path))["hostname"] == os.uname().nodename
