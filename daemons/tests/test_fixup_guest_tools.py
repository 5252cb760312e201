"""guest_tools: the old hypervisor's agents removed or masked; open-vm-tools enabled,
installed from the receiver's package cache, or deferred to the first boot. dpkg and rpm
are FakeGuest's (see test_fixup_fakes); the units and links are real files."""
from __future__ import annotations

import os

import test_fixup_fakes as F
from osam.fixup import guest_tools
from osam.fixup.guest_tools import FIRSTBOOT_UNIT, PACKAGES_DIR, parse_package_file

WANTS = "/etc/systemd/system/multi-user.target.wants"


def _run(tree, guest=None):
    guest = guest or F.FakeGuest(tree)
    ctx = tree.prepared(guest)
    guest.calls.clear()
    guest_tools.apply(ctx)
    return ctx, guest


def _link(tree, path):
    host = os.path.join(tree.root, path.lstrip("/"))
    return os.readlink(host) if os.path.islink(host) else None


def test_debian_purges_kvm_agents_and_installs_open_vm_tools_from_the_cache(tmp_path):
    tree = F.debian12(tmp_path)
    ctx, guest = _run(tree)
    packages = f"{PACKAGES_DIR}/libmspack0_0.11-1_amd64.deb", f"{PACKAGES_DIR}/open-vm-tools_12.2.0-1+deb12u2_amd64.deb"
    assert guest.calls == [
        ["dpkg-query", "-W", "-f", "${Package}\\t${Status}\\n"],
        ["dpkg", "--purge", "qemu-guest-agent"],
        ["dpkg", "--purge", "spice-vdagent"],
        ["dpkg", "-i", *packages]]      # base-files is installed already; the arm64 build is left out
    assert not tree.exists("/lib/systemd/system/qemu-guest-agent.service")
    # /lib is /usr/lib on a merged-/usr Debian: the links name the real directory
    assert _link(tree, f"{WANTS}/open-vm-tools.service") == "/usr/lib/systemd/system/open-vm-tools.service"
    assert _link(tree, "/etc/systemd/system/vmtoolsd.service") == "/usr/lib/systemd/system/open-vm-tools.service"
    assert not tree.exists(f"/etc/systemd/system/{FIRSTBOOT_UNIT}")
    assert [c.action for c in ctx.changes] == ["run", "run", "create", "create", "run", "create", "create"]


def test_rhel_removes_hyperv_daemons_and_installs_rpms_from_the_cache(tmp_path):
    tree = F.rhel9(tmp_path)
    ctx, guest = _run(tree)
    assert guest.calls == [
        ["rpm", "-qa", "--qf", "%{NAME}\\n"],
        ["rpm", "-e", "--nodeps", "hyperv-daemons", "hypervkvpd", "hypervvssd", "hypervfcopyd", "hyperv-daemons-license"],
        ["rpm", "-Uvh", f"{PACKAGES_DIR}/libmspack-0.10.1-0.8.alpha.el9.x86_64.rpm",
         f"{PACKAGES_DIR}/open-vm-tools-12.2.5-3.el9.x86_64.rpm"]]
    assert _link(tree, f"{WANTS}/vmtoolsd.service") == "/usr/lib/systemd/system/vmtoolsd.service"
    # the removed packages' units are gone, nothing is left to mask
    assert not [c for c in ctx.changes if "masked" in c.detail]


def test_sles_without_a_cache_defers_the_install_to_the_first_boot_and_masks_vbox(tmp_path):
    tree = F.sles15(tmp_path)
    ctx, guest = _run(tree)
    assert guest.calls == [["rpm", "-qa", "--qf", "%{NAME}\\n"],
                           ["rpm", "-e", "--nodeps", "virtualbox-guest-tools"]]
    assert _link(tree, "/etc/systemd/system/vboxadd.service") == "/dev/null"     # /opt install, no package
    unit = tree.read(f"/etc/systemd/system/{FIRSTBOOT_UNIT}")
    assert "ExecStart=/bin/sh -c 'zypper -n in open-vm-tools'\n" in unit
    assert "After=network-online.target\n" in unit and "Type=oneshot\n" in unit
    assert f"ConditionPathExists=!{guest_tools.FIRSTBOOT_DONE}\n" in unit
    assert _link(tree, f"{WANTS}/{FIRSTBOOT_UNIT}") == f"/etc/systemd/system/{FIRSTBOOT_UNIT}"
    notes = [c.detail for c in ctx.changes if c.action == "note"]
    assert len(notes) == 1 and "installs it on the first boot" in notes[0]
    assert any("VBoxGuestAdditions-7.0.12 stay on disk" in w for w in ctx.warnings)


def test_rocky_defers_with_dnf_and_debian_with_apt(tmp_path):
    rocky = F.rocky8_uefi(tmp_path / "rocky")
    _run(rocky)
    assert "dnf -y install open-vm-tools" in rocky.read(f"/etc/systemd/system/{FIRSTBOOT_UNIT}")
    assert "systemctl enable --now vmtoolsd.service" in rocky.read(f"/etc/systemd/system/{FIRSTBOOT_UNIT}")
    debian = F.debian12(tmp_path / "debian", cache=False)
    _run(debian)
    unit = debian.read(f"/etc/systemd/system/{FIRSTBOOT_UNIT}")
    assert "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y open-vm-tools" in unit


def test_a_cache_for_another_distribution_is_not_used(tmp_path):
    tree = F.sles15(tmp_path)
    cache = tmp_path / "cache"
    F.write(str(cache), "/rhel-9/open-vm-tools-12.2.5-3.el9.x86_64.rpm", F.fake_package("open-vm-tools", {}))
    F.write(str(cache), "/debian/open-vm-tools_12.2.0-1_amd64.deb", F.fake_package("open-vm-tools", {}))
    tree.target.package_cache = str(cache)
    _run(tree)
    assert tree.exists(f"/etc/systemd/system/{FIRSTBOOT_UNIT}")
    F.write(str(cache), "/suse/open-vm-tools-12.1.5-150500.3.6.1.x86_64.rpm", F.fake_package("open-vm-tools", {
        "/usr/lib/systemd/system/vmtoolsd.service": F.RHEL_VMTOOLS_UNIT}))
    ctx, guest = _run(tree)
    assert guest.calls[-1] == ["rpm", "-Uvh", f"{PACKAGES_DIR}/open-vm-tools-12.1.5-150500.3.6.1.x86_64.rpm"]
    assert not tree.exists(f"/etc/systemd/system/{FIRSTBOOT_UNIT}")       # no longer needed
    assert not tree.exists(f"{WANTS}/{FIRSTBOOT_UNIT}")


def test_installed_but_masked_open_vm_tools_is_unmasked_and_enabled(tmp_path):
    tree = F.rhel9(tmp_path, cache=False)
    F.write(tree.root, "/usr/lib/systemd/system/vmtoolsd.service", F.RHEL_VMTOOLS_UNIT)
    F.link(tree.root, "/etc/systemd/system/vmtoolsd.service", "/dev/null")
    db = F.FakeGuest(tree)._rpmdb()
    db["open-vm-tools"] = {"files": []}
    F.rpmdb(tree.root, {name: value["files"] for name, value in db.items()})
    ctx, _ = _run(tree)
    assert not tree.exists("/etc/systemd/system/vmtoolsd.service")
    assert _link(tree, f"{WANTS}/vmtoolsd.service") == "/usr/lib/systemd/system/vmtoolsd.service"
    assert ("remove", "/etc/systemd/system/vmtoolsd.service") in [(c.action, c.target) for c in ctx.changes]


def test_an_existing_enablement_link_spelled_otherwise_counts(tmp_path):
    tree = F.rhel9(tmp_path, cache=False)
    F.write(tree.root, "/usr/lib/systemd/system/vmtoolsd.service", F.RHEL_VMTOOLS_UNIT)
    F.link(tree.root, f"{WANTS}/vmtoolsd.service", "../../../../usr/lib/systemd/system/vmtoolsd.service")
    F.rpmdb(tree.root, {"open-vm-tools": []})
    ctx, _ = _run(tree)
    assert [c for c in ctx.changes if "vmtoolsd" in c.target] == []


def test_a_package_that_will_not_go_is_masked_instead(tmp_path):
    tree = F.debian12(tmp_path)
    guest = F.FakeGuest(tree)
    dpkg = guest.cmd_dpkg

    def dpkg_refusing_to_purge(args, env):
        if args[0] == "--purge":
            return 2, "", f"dpkg: dependency problems prevent removal of {args[1]}:\n task-desktop depends on it.\n"
        return dpkg(args, env)
    guest.cmd_dpkg = dpkg_refusing_to_purge
    ctx, _ = _run(tree, guest)
    assert _link(tree, "/etc/systemd/system/qemu-guest-agent.service") == "/dev/null"
    assert _link(tree, "/etc/systemd/system/spice-vdagentd.service") == "/dev/null"
    assert _link(tree, "/etc/systemd/system/spice-vdagentd.socket") == "/dev/null"
    assert any("could not remove spice-vdagent" in w for w in ctx.warnings)


def test_amazon_ssm_agent_is_only_reported(tmp_path):
    tree = F.rhel9(tmp_path)
    F.rpmdb(tree.root, {"amazon-ssm-agent": [], "open-vm-tools": []})
    ctx, guest = _run(tree)
    assert guest.calls == [["rpm", "-qa", "--qf", "%{NAME}\\n"]]
    assert any("amazon-ssm-agent is kept" in w for w in ctx.warnings)


def test_no_package_manager_masks_and_defers(tmp_path):
    tree = F.rocky8_uefi(tmp_path)
    os.unlink(os.path.join(tree.root, "usr/bin/rpm"))
    ctx, guest = _run(tree)
    assert guest.calls == []
    assert _link(tree, "/etc/systemd/system/qemu-guest-agent.service") == "/dev/null"
    assert tree.exists(f"/etc/systemd/system/{FIRSTBOOT_UNIT}")
    assert any("no package manager" in w for w in ctx.warnings)


def test_a_second_run_changes_nothing(tmp_path):
    for build in (F.debian12, F.rhel9, F.rocky8_uefi, F.sles15):
        tree = build(tmp_path / build.__name__)
        _run(tree)
        ctx, guest = _run(tree)
        assert ctx.changes == [], build.__name__
        assert F.changing_calls(guest.calls) == []


def test_package_file_names():
    assert parse_package_file("open-vm-tools_12.2.0-1+deb12u2_amd64.deb", "deb") == ("open-vm-tools", "amd64")
    assert parse_package_file("libmspack-0.10.1-0.8.alpha.el9.x86_64.rpm", "rpm") == ("libmspack", "x86_64")
    assert parse_package_file("open-vm-tools-desktop-12.2.5-3.el9.x86_64.rpm", "rpm") == ("open-vm-tools-desktop", "x86_64")
    assert parse_package_file("open-vm-tools-12.2.5-3.el9.src.rpm", "rpm") is None
    assert parse_package_file("open-vm-tools.deb", "deb") is None
    assert parse_package_file("open-vm-tools_12_amd64.deb", "rpm") is None


def test_the_sentinel_copied_with_the_source_is_masked_once(tmp_path):
    tree = F.debian12(tmp_path)
    guest = F.FakeGuest(tree)
    guest.put("/etc/systemd/system/vmware-hcx-osam-sentinel.service", "[Service]\nExecStart=/bin/true\n")
    guest.put(f"{WANTS}/vmware-hcx-osam-sentinel.service", "")
    ctx, _ = _run(tree, guest)
    # An admin-dir unit file is replaced by the mask: the replica can no longer start it.
    assert _link(tree, "/etc/systemd/system/vmware-hcx-osam-sentinel.service") == "/dev/null"
    assert any("must not register" in c.detail for c in ctx.changes)
    ctx, _ = _run(tree, guest)
    assert not [c for c in ctx.changes if "sentinel" in c.detail]
