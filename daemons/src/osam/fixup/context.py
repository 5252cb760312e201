"""What every fix-up step works with: the mounted replica, the source's inventory, the
destination's hardware, a report of changes and backups of every file touched.

Guest paths ("/etc/fstab") are always resolved inside the replica as a chroot would, one
component at a time: a symlink in the replica (absolute or with "..") can never lead the
receiver, which runs as root, to a file outside the replica root.

Idempotence is part of the contract: a step writes only when the content differs, so a
second run reports nothing. A file's backup is taken the first time it is changed and never
overwritten, so it always holds the source's version.
"""
from __future__ import annotations

import datetime
import errno
import json
import os
import stat
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..common.atomic import atomic_write, fsync_dir

# Inside the replica: the backups of edited files and the report of the last run.
STATE_DIR = "/var/lib/vmware-hcx-osam-fixup"
BACKUP_DIR = STATE_DIR + "/backup"
REPORT_FILE = STATE_DIR + "/report.json"

MAX_SYMLINKS = 40

# Actions a change reports.
EDIT, CREATE, REMOVE, RUN, NOTE = "edit", "create", "remove", "run", "note"


class FixupError(Exception):
    """A step could not be done; the replica must not be booted as it is."""


class UnsafeGuestPath(FixupError):
    """A guest path that escapes the replica or loops through symlinks."""


@dataclass
class Change:
    step: str            # e.g. "initramfs", "fstab", "network"
    action: str          # edit | create | remove | run | note
    target: str          # guest path, or the command for "run"
    detail: str          # one line a person reads
    backup: Optional[str] = None   # guest path of the original's backup


@dataclass
class Nic:
    """One network adapter of the destination VM, in the order the source's NICs map to."""
    mac: str                     # lower-case, colon-separated
    model: str = "vmxnet3"


@dataclass
class Target:
    """The destination's virtual hardware."""
    nics: List[Nic] = field(default_factory=list)
    firmware: str = "bios"       # bios | uefi
    storage_driver: str = "vmw_pvscsi"
    # Receiver directory of packages for the replica (open-vm-tools .deb/.rpm), or None.
    package_cache: Optional[str] = None


class Runner:
    """Runs a command inside the replica (a chroot). The real one is chroot.ChrootRunner."""

    def __call__(self, argv: Sequence[str], *, env: Optional[Dict[str, str]] = None,
                 timeout: float = 1800) -> subprocess.CompletedProcess:
        raise NotImplementedError


class FixupContext:
    def __init__(self, root: str, inventory: Dict[str, Any], target: Target, runner: Runner,
                 *, clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc)):
        self.root = os.path.realpath(root)
        self.inventory = inventory
        self.layout: Dict[str, Any] = inventory.get("layout") or {}
        self.target = target
        self.runner = runner
        self.changes: List[Change] = []
        self.warnings: List[str] = []
        self.facts: Dict[str, Any] = {}   # what steps learned (distribution, kernels, ...)
        self._clock = clock

    # -- paths ---------------------------------------------------------------------------
    def host_path(self, guest_path: str) -> str:
        """The receiver's path for a guest path, resolved inside the replica as a chroot
        would resolve it. The last component is resolved too when it is a symlink; a
        missing component ends resolution (the rest is taken literally)."""
        return self._resolve(guest_path, follow_last=True)

    def host_path_nofollow(self, guest_path: str) -> str:
        """As host_path, but a final symlink is the link itself (to remove or replace it)."""
        return self._resolve(guest_path, follow_last=False)

    def _resolve(self, guest_path: str, follow_last: bool) -> str:
        if not guest_path.startswith("/") or "\0" in guest_path:
            raise UnsafeGuestPath(f"not an absolute guest path: {guest_path!r}")
        pending = [p for p in guest_path.split("/") if p not in ("", ".")]
        pending.reverse()
        done: List[str] = []
        links = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = os.path.join(self.root, *done, part)
            is_last = not pending
            try:
                st = os.lstat(candidate)
            except FileNotFoundError:
                done.append(part)
                done.extend(reversed(pending))
                break
            if stat.S_ISLNK(st.st_mode) and (follow_last or not is_last):
                links += 1
                if links > MAX_SYMLINKS:
                    raise UnsafeGuestPath(f"too many symlinks resolving {guest_path!r}")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    done = []
                rest = [p for p in target.split("/") if p not in ("", ".")]
                pending.extend(reversed(rest))
                continue
            done.append(part)
        return os.path.join(self.root, *done)

    def exists(self, guest_path: str) -> bool:
        return os.path.lexists(self.host_path(guest_path))

    def isdir(self, guest_path: str) -> bool:
        return os.path.isdir(self.host_path(guest_path))

    def listdir(self, guest_path: str) -> List[str]:
        try:
            return sorted(os.listdir(self.host_path(guest_path)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def glob(self, guest_dir: str, predicate: Callable[[str], bool] = lambda n: True) -> List[str]:
        """Guest paths of the entries of guest_dir whose name satisfies predicate."""
        base = guest_dir.rstrip("/")
        return [f"{base}/{name}" for name in self.listdir(guest_dir) if predicate(name)]

    # -- reading -------------------------------------------------------------------------
    def read_bytes(self, guest_path: str) -> Optional[bytes]:
        try:
            with open(self.host_path(guest_path), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def read_text(self, guest_path: str) -> Optional[str]:
        data = self.read_bytes(guest_path)
        return None if data is None else data.decode("utf-8", "surrogateescape")

    # -- changing ------------------------------------------------------------------------
    def write_text(self, guest_path: str, text: str, step: str, detail: str,
                   mode: Optional[int] = None) -> bool:
        return self.write_bytes(guest_path, text.encode("utf-8", "surrogateescape"), step, detail, mode)

    def write_bytes(self, guest_path: str, data: bytes, step: str, detail: str,
                    mode: Optional[int] = None) -> bool:
        """Write a file if its content differs; back the original up first. Returns whether
        anything changed. A new file gets `mode` (default 0644); an existing one keeps its
        mode, owner and group unless `mode` is given."""
        path = self.host_path(guest_path)
        old = self.read_bytes(guest_path)
        if old == data and (mode is None or stat.S_IMODE(os.stat(path).st_mode) == mode):
            return False
        backup = self._backup(guest_path) if old is not None else None
        st = os.stat(path) if old is not None else None
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, data, mode if mode is not None else (stat.S_IMODE(st.st_mode) if st else 0o644))
        if st is not None:
            os.chown(path, st.st_uid, st.st_gid)
        self.record(step, EDIT if old is not None else CREATE, guest_path, detail, backup)
        return True

    def remove(self, guest_path: str, step: str, detail: str) -> bool:
        """Remove a file or symlink (never a directory), backing it up first."""
        path = self.host_path_nofollow(guest_path)
        if not os.path.lexists(path):
            return False
        if os.path.isdir(path) and not os.path.islink(path):
            raise FixupError(f"{guest_path} is a directory; refusing to remove it")
        backup = self._backup(guest_path, follow=False)
        os.unlink(path)
        fsync_dir(os.path.dirname(path))
        self.record(step, REMOVE, guest_path, detail, backup)
        return True

    def symlink(self, guest_path: str, link_target: str, step: str, detail: str) -> bool:
        """Make guest_path a symlink to link_target (as the guest sees it), e.g. to enable or
        mask a systemd unit. Returns whether anything changed."""
        path = self.host_path_nofollow(guest_path)
        if os.path.islink(path) and os.readlink(path) == link_target:
            return False
        backup = None
        if os.path.lexists(path):
            if os.path.isdir(path) and not os.path.islink(path):
                raise FixupError(f"{guest_path} is a directory; refusing to replace it")
            backup = self._backup(guest_path, follow=False)
            os.unlink(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(link_target, path)
        fsync_dir(os.path.dirname(path))
        self.record(step, EDIT if backup else CREATE, guest_path, detail, backup)
        return True

    def run(self, argv: Sequence[str], step: str, detail: str, *,
            env: Optional[Dict[str, str]] = None, timeout: float = 1800,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a command in the replica's chroot; a failure raises FixupError with its output."""
        done = self.runner(list(argv), env=env, timeout=timeout)
        self.record(step, RUN, " ".join(argv), f"{detail} (exit {done.returncode})")
        if check and done.returncode != 0:
            out = (done.stdout or b"") + (done.stderr or b"")
            if isinstance(out, bytes):
                out = out.decode("utf-8", "replace")
            raise FixupError(f"{step}: {' '.join(argv)} exited {done.returncode}: {out[-2000:]}")
        return done

    def record(self, step: str, action: str, target: str, detail: str,
               backup: Optional[str] = None) -> None:
        self.changes.append(Change(step, action, target, detail, backup))

    def note(self, step: str, detail: str) -> None:
        """Something the operator should know that is not a change (e.g. a deferred install)."""
        self.record(step, NOTE, "", detail)

    def warn(self, step: str, detail: str) -> None:
        self.warnings.append(f"{step}: {detail}")

    # -- backups and report ----------------------------------------------------------------
    def _backup(self, guest_path: str, follow: bool = True) -> str:
        """Copy the original to BACKUP_DIR once; later changes keep the first backup."""
        backup_guest = BACKUP_DIR + os.path.normpath(guest_path)
        backup = self.host_path_nofollow(backup_guest)
        if os.path.lexists(backup):
            return backup_guest
        os.makedirs(os.path.dirname(backup), exist_ok=True)
        source = self.host_path(guest_path) if follow else self.host_path_nofollow(guest_path)
        if os.path.islink(source):
            os.symlink(os.readlink(source), backup)
        else:
            with open(source, "rb") as f:
                data = f.read()
            atomic_write(backup, data, stat.S_IMODE(os.stat(source).st_mode))
        return backup_guest

    def report(self) -> Dict[str, Any]:
        return {"finished_at": self._clock().isoformat(), "facts": self.facts,
                "changes": [asdict(c) for c in self.changes], "warnings": list(self.warnings)}

    def save_report(self) -> Dict[str, Any]:
        """Write the report into the replica (REPORT_FILE) and return it."""
        report = self.report()
        path = self.host_path(REPORT_FILE)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, json.dumps(report, indent=2, sort_keys=True).encode(), 0o600)
        return report


def is_missing(exc: OSError) -> bool:
    return exc.errno in (errno.ENOENT, errno.ENOTDIR)
