"""Check mode: the fix-up reports what it would change and changes nothing.

Writes, removals, links and commands are reported as "would ..." and not done; read-only
queries (package lists, initramfs listings) still run in the chroot, since the decisions
depend on them. A step that would act on the result of an earlier change (a package it
would install, an image it would rebuild) reports from the replica as it is now, so a dry
run can list a little less than the real run does.
"""
from __future__ import annotations

import os
import subprocess
from typing import Dict, Optional, Sequence

from .context import CREATE, EDIT, REMOVE, RUN, FixupContext


class DryRunContext(FixupContext):
    dry_run = True

    def write_bytes(self, guest_path: str, data: bytes, step: str, detail: str,
                    mode: Optional[int] = None) -> bool:
        old = self.read_bytes(guest_path)
        if old == data:
            return False
        self.record(step, EDIT if old is not None else CREATE, guest_path, f"would: {detail}")
        return True

    def remove(self, guest_path: str, step: str, detail: str) -> bool:
        if not os.path.lexists(self.host_path_nofollow(guest_path)):
            return False
        self.record(step, REMOVE, guest_path, f"would: {detail}")
        return True

    def symlink(self, guest_path: str, link_target: str, step: str, detail: str) -> bool:
        path = self.host_path_nofollow(guest_path)
        if os.path.islink(path) and os.readlink(path) == link_target:
            return False
        self.record(step, EDIT if os.path.lexists(path) else CREATE, guest_path, f"would: {detail}")
        return True

    def run(self, argv: Sequence[str], step: str, detail: str, *,
            env: Optional[Dict[str, str]] = None, timeout: float = 1800,
            check: bool = True) -> subprocess.CompletedProcess:
        self.record(step, RUN, " ".join(argv), f"would: {detail}")
        return subprocess.CompletedProcess(list(argv), 0, b"", b"")

    def save_report(self):
        """Nothing is written into the replica in a dry run."""
        report = self.report()
        report["dry_run"] = True
        return report
