"""selinux: an enabled SELinux relabels the replica on its first boot."""
from __future__ import annotations

import test_fixup_fakes as F
from osam.fixup import selinux


def _run(tree):
    ctx = tree.prepared()
    selinux.apply(ctx)
    return ctx


def test_enforcing_and_permissive_ask_for_a_relabel_once(tmp_path):
    for build, mode in ((F.rhel9, "enforcing"), (F.rocky8_uefi, "permissive")):
        tree = build(tmp_path / build.__name__)
        ctx = _run(tree)
        assert tree.read("/.autorelabel") == ""
        assert [(c.action, c.target) for c in ctx.changes] == [("create", "/.autorelabel"), ("note", "")]
        assert mode in ctx.changes[0].detail
        assert _run(tree).changes == []


def test_disabled_or_absent_selinux_needs_nothing(tmp_path):
    tree = F.rhel9(tmp_path / "rhel")
    F.write(tree.root, "/etc/selinux/config", F.RHEL_SELINUX_CONFIG.format(mode="disabled"))
    assert _run(tree).changes == [] and not tree.exists("/.autorelabel")
    debian = F.debian12(tmp_path / "debian")
    assert _run(debian).changes == [] and not debian.exists("/.autorelabel")
