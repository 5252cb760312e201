"""The whole Linux fix-up on prepared Debian, RHEL, Rocky and SLES trees: step order, the
report, a second run that changes nothing, path safety, the network hook, dry run, the
command line. The guests' commands are FakeGuest's (see test_fixup_fakes).

The network step belongs to its own module; these tests replace it (absent, or a stand-in)
so that they check this pipeline, not that module."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest

import test_fixup_fakes as F
from osam.fixup import linux
from osam.fixup.context import REPORT_FILE, FixupError

ORDER = ["distro", "fstab", "hostname", "network", "guest_tools", "initramfs", "bootloader", "selinux"]
BUILDS = [F.debian12, F.rhel9, F.rocky8_uefi, F.sles15]


@pytest.fixture
def no_network(monkeypatch):
    monkeypatch.setattr(linux, "NETWORK_MODULE", "osam_fixup_tests_no_such_network_module")


def _fixup(tree, guest=None, **kwargs):
    guest = guest or F.FakeGuest(tree)
    return linux.fixup_linux(tree.root, tree.inventory, tree.target, guest, F.DEVICES, **kwargs), guest


def _steps_in_order(report):
    steps = []
    for change in report["changes"]:
        if change["step"] not in steps:
            steps.append(change["step"])
    return steps


@pytest.mark.parametrize("build", BUILDS)
def test_each_family_is_fixed_up_and_a_second_run_changes_nothing(tmp_path, no_network, build):
    tree = build(tmp_path)
    report, guest = _fixup(tree)
    steps = _steps_in_order(report)
    assert steps == [s for s in ORDER if s in steps]
    assert {"guest_tools", "initramfs", "bootloader"} <= set(steps)
    assert report["facts"]["distro"]["family"] == tree.facts["family"]
    assert "network: osam_fixup_tests_no_such_network_module is not available" in report["warnings"][0]
    assert json.loads(tree.read(REPORT_FILE))["changes"] == report["changes"]
    files = tree.files()

    again, guest = _fixup(tree)
    assert again["changes"] == []
    assert F.changing_calls(guest.calls) == []
    files_again = tree.files()
    del files[REPORT_FILE], files_again[REPORT_FILE]
    assert files_again == files


def test_what_debian_gets(tmp_path, no_network):
    tree = F.debian12(tmp_path)
    report, _ = _fixup(tree)
    edited = {(c["step"], c["target"]) for c in report["changes"] if c["action"] in ("edit", "create")}
    assert {("fstab", "/etc/fstab"), ("initramfs", "/etc/initramfs-tools/modules"),
            ("bootloader", "/boot/grub/grub.cfg"), ("bootloader", "/etc/default/grub")} <= edited
    backups = [c["backup"] for c in report["changes"] if c["backup"]]
    assert all(tree.exists(b) for b in backups) and len(backups) >= 5


def test_a_failing_step_is_named_and_the_report_kept(tmp_path, no_network):
    tree = F.rhel9(tmp_path)
    guest = F.FakeGuest(tree)
    guest.failing["dracut"] = "dracut: FAILED"
    with pytest.raises(FixupError, match="fix-up step initramfs failed: .*dracut: FAILED"):
        _fixup(tree, guest)
    saved = json.loads(tree.read(REPORT_FILE))
    assert saved["facts"]["failed"]["step"] == "initramfs"
    assert {c["step"] for c in saved["changes"]} >= {"fstab", "guest_tools"}


def test_an_unknown_distribution_stops_at_the_first_step(tmp_path, no_network):
    tree = F.debian12(tmp_path)
    os.unlink(os.path.join(tree.root, "etc/os-release"))
    F.write(tree.root, "/etc/os-release", "ID=gentoo\nPRETTY_NAME=\"Gentoo Linux\"\n")
    with pytest.raises(FixupError, match="fix-up step distro failed: unsupported Linux distribution 'Gentoo Linux'"):
        _fixup(tree)


def test_the_network_step_runs_in_its_place(tmp_path, monkeypatch):
    module_dir = tmp_path / "modules"
    module_dir.mkdir()
    (module_dir / "osam_fixup_tests_network.py").write_text(
        "def apply(ctx):\n"
        "    ctx.write_text('/etc/network/interfaces.d/osam-test', 'auto eth0\\n', 'network', 'test stand-in')\n")
    monkeypatch.syspath_prepend(str(module_dir))
    monkeypatch.setattr(linux, "NETWORK_MODULE", "osam_fixup_tests_network")
    tree = F.debian12(tmp_path)
    report, _ = _fixup(tree)
    assert _steps_in_order(report) == ["fstab", "network", "guest_tools", "initramfs", "bootloader"]
    assert tree.read("/etc/network/interfaces.d/osam-test") == "auto eth0\n"


@pytest.mark.skipif(importlib.util.find_spec(linux.NETWORK_MODULE) is None, reason="no osam.fixup.network in this build")
def test_the_network_module_of_this_build_takes_part(tmp_path):
    tree = F.debian12(tmp_path)
    report, _ = _fixup(tree)
    assert _steps_in_order(report)[-2:] == ["initramfs", "bootloader"]
    assert not any(w.startswith("network: osam.fixup.network is not available") for w in report["warnings"])


def test_replica_symlinks_never_lead_outside_it(tmp_path, no_network):
    """Files of the replica that are symlinks to the receiver's files (absolute, with '..',
    or relative climbing out) are resolved inside the replica, as the guest would."""
    tree = F.debian12(tmp_path / "replica")
    outside = tmp_path / "receiver"
    for name in ("fstab", "hostname", "hosts", "modules", "grub"):
        (outside / "etc").mkdir(parents=True, exist_ok=True)
        (outside / "etc" / name).write_text(f"/dev/sda1 / ext4 defaults 0 1\n# receiver's {name}\n")
    escapes = {
        "/etc/fstab": "/../../../../../../.." + str(outside / "etc/fstab"),
        "/etc/hostname": str(outside / "etc/hostname"),
        "/etc/hosts": "../" * 12 + str(outside / "etc/hosts").lstrip("/"),
        "/etc/initramfs-tools/modules": "/../../../../../../.." + str(outside / "etc/modules"),
        "/etc/default/grub": str(outside / "etc/grub"),
    }
    for guest_path, target in escapes.items():
        os.unlink(os.path.join(tree.root, guest_path.lstrip("/")))
        os.symlink(target, os.path.join(tree.root, guest_path.lstrip("/")))
    receiver_before = _snapshot(outside)
    _fixup(tree)
    assert _snapshot(outside) == receiver_before
    # The guest's view: the links lead to files of the replica, created there.
    assert tree.read(str(outside / "etc/hostname")) == "web01\n"
    assert "vmw_pvscsi" in tree.read(str(outside / "etc/modules"))
    assert sorted(os.listdir(tmp_path)) == ["receiver", "replica"]


def test_dry_run_reports_and_changes_nothing(tmp_path, no_network):
    tree = F.rhel9(tmp_path)
    before = tree.files()
    report, guest = _fixup(tree, dry_run=True)
    assert tree.files() == before
    assert report["dry_run"] is True
    assert F.changing_calls(guest.calls) == []          # only queries ran
    assert [c["step"] for c in report["changes"] if c["action"] == "run"] == \
        ["guest_tools", "guest_tools", "initramfs", "initramfs", "bootloader"]
    assert all(c["detail"].startswith("would") for c in report["changes"] if c["action"] != "note")


def test_command_line(tmp_path, monkeypatch, capsys, no_network):
    tree = F.rhel9(tmp_path)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(tree.inventory))
    made = {}

    def runner(root, devices):
        made.update(root=root, devices=devices)
        return F.FakeGuest(tree)
    monkeypatch.setattr("osam.fixup.chroot.ChrootRunner", runner)
    args = ["--root", tree.root, "--inventory", str(inventory), "--package-cache", tree.target.package_cache,
            "--nic-mac", "00:50:56:AA:BB:01", "--boot-disk", "/dev/loop7",
            "--uuid-device", f"{F.ROOT_UUID}=/dev/loop7p2"]
    assert linux.main(args + ["--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] and not tree.exists(REPORT_FILE)
    assert linux.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert made == {"root": tree.root, "devices": {"boot_disk": "/dev/loop7", "by_uuid": {F.ROOT_UUID: "/dev/loop7p2"}}}
    # everything the dry run announced was done (the real run also enables the tools it installed)
    assert {(c["action"], c["target"]) for c in dry["changes"]} <= {(c["action"], c["target"]) for c in report["changes"]}
    assert ["grub2-install --target=i386-pc --modules=part_msdos xfs /dev/loop7"] == \
        [c["target"] for c in report["changes"] if c["target"].startswith("grub2-install")]
    os.unlink(os.path.join(tree.root, "etc/os-release"))
    os.unlink(os.path.join(tree.root, "etc/redhat-release"))
    assert linux.main(args) == 1
    assert "fix-up failed: fix-up step distro failed: unknown Linux distribution" in capsys.readouterr().err


def _snapshot(directory):
    found = {}
    for base, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(base, name)
            st = os.lstat(path)
            found[path] = (st.st_mode, st.st_size, st.st_mtime_ns, open(path, "rb").read() if name in files else None)
    return found
