"""SELinux relabels the replica on its first boot.

Files the fix-up wrote carry no SELinux label (the receiver writes them), and the replica's
file systems were recreated, so the first boot must relabel or confined services fail to
read their files. /.autorelabel asks for that once (it takes a few minutes and reboots).
"""
from __future__ import annotations

from .context import FixupContext

STEP = "selinux"

AUTORELABEL = "/.autorelabel"


def apply(ctx: FixupContext) -> None:
    mode = ctx.facts.get("selinux")
    if mode not in ("enforcing", "permissive"):
        return
    if ctx.exists(AUTORELABEL):
        return
    ctx.write_text(AUTORELABEL, "", STEP, f"SELinux is {mode}: the first boot relabels the file systems")
    ctx.note(STEP, "SELinux relabels every file on the first boot: it takes a few minutes and reboots once")
