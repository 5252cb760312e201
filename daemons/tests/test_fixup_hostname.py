"""hostname: the source's host name stays, and /etc/hosts resolves it as each family does."""
from __future__ import annotations

import os

import test_fixup_fakes as F
from osam.fixup import hostname


def _run(tree):
    ctx = tree.prepared()
    hostname.apply(ctx)
    return ctx


def test_debian_already_right_is_left_alone(tmp_path):
    tree = F.debian12(tmp_path)
    ctx = _run(tree)
    assert ctx.changes == []
    assert tree.read("/etc/hosts") == F.DEBIAN_HOSTS


def test_debian_gets_a_127_0_1_1_line_after_localhost(tmp_path):
    tree = F.debian12(tmp_path)
    F.write(tree.root, "/etc/hosts", "127.0.0.1\tlocalhost\n::1     localhost ip6-localhost ip6-loopback\n")
    os.unlink(os.path.join(tree.root, "etc/hostname"))
    ctx = _run(tree)
    assert tree.read("/etc/hostname") == "web01\n"
    assert tree.read("/etc/hosts") == ("127.0.0.1\tlocalhost\n127.0.1.1\tweb01.example.com web01\n"
                                       "::1     localhost ip6-localhost ip6-loopback\n")
    assert [(c.action, c.target) for c in ctx.changes] == [("create", "/etc/hostname"), ("edit", "/etc/hosts")]
    assert _run(tree).changes == []


def test_a_stale_127_0_1_1_entry_and_another_hostname_are_replaced(tmp_path):
    tree = F.debian12(tmp_path)
    F.write(tree.root, "/etc/hostname", "localhost.localdomain\n")
    F.write(tree.root, "/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 debian-template\n")
    _run(tree)
    assert tree.read("/etc/hostname") == "web01\n"
    assert tree.read("/etc/hosts") == "127.0.0.1 localhost\n127.0.1.1\tweb01.example.com web01\n"


def test_rhel_keeps_a_full_name_in_etc_hostname_and_relies_on_nss_myhostname(tmp_path):
    tree = F.rhel9(tmp_path)
    ctx = _run(tree)
    assert ctx.changes == []
    assert tree.read("/etc/hostname") == "db01.example.com\n" and tree.read("/etc/hosts") == F.RHEL_HOSTS


def test_rhel_without_nss_myhostname_gets_a_hosts_entry(tmp_path):
    tree = F.rocky8_uefi(tmp_path)
    _run(tree)
    assert tree.read("/etc/hosts") == F.RHEL_HOSTS.replace("\n::1", "\n127.0.1.1\tapp01\n::1", 1)


def test_sles_uses_127_0_0_2(tmp_path):
    tree = F.sles15(tmp_path)
    _run(tree)
    assert "127.0.0.1       localhost\n127.0.0.2\tsap01.example.com sap01\n" in tree.read("/etc/hosts")
    assert tree.read("/etc/hostname") == "sap01.example.com\n"
    assert _run(tree).changes == []


def test_no_hostname_in_the_inventory(tmp_path):
    tree = F.debian12(tmp_path)
    del tree.inventory["hostname"]
    ctx = _run(tree)
    assert ctx.changes == [] and "no host name" in ctx.warnings[0]
