"""Files written into the replica's system volume: only when their content differs, a
replaced file backed up first (once: the backup keeps the source's version), every write
reported, and durable (temp file, fsync, rename, fsync of the directory).

Paths are relative to the volume root with "/" separators ("Windows/System32/drivers/x.sys").
"""
from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional

from ...common.atomic import TEMP_SUFFIX, atomic_write, fsync_dir, temp_prefix
from . import ntfs

CHUNK = 1 << 20


class VolumeWriter:
    def __init__(self, root: str, backup_dir: str, *, dry_run: bool = False):
        self.root = root
        self.backup_dir = backup_dir
        self.dry_run = dry_run
        self.changes: List[Dict[str, Any]] = []
        self.backups: List[str] = []

    def write_bytes(self, relative: str, data: bytes, step: str, detail: str) -> bool:
        current = ntfs.find(self.root, relative)
        if current is not None and _read(current) == data:
            return False
        return self._replace(relative, current, step, detail, lambda dst: atomic_write(dst, data, 0o644))

    def copy(self, source: str, relative: str, step: str, detail: str) -> bool:
        current = ntfs.find(self.root, relative)
        if current is not None and filecmp.cmp(source, current, shallow=False):
            return False
        return self._replace(relative, current, step, detail, lambda dst: copy_durably(source, dst))

    def _replace(self, relative: str, current: Optional[str], step: str, detail: str, write) -> bool:
        backup = None
        if current is not None and not self.dry_run:
            backup = self._backup(relative, current)
        self.changes.append({"step": step, "action": "edit" if current else "create",
                             "file": relative, "backup": backup,
                             "detail": f"would: {detail}" if self.dry_run else detail})
        if self.dry_run:
            return True
        directory, name = os.path.split(relative)
        target = current or os.path.join(ntfs.ensure_dir(self.root, directory), name)
        write(target)
        return True

    def _backup(self, relative: str, current: str) -> str:
        backup = os.path.join(self.backup_dir, "files", relative)
        if not os.path.exists(backup):
            os.makedirs(os.path.dirname(backup), exist_ok=True)
            copy_durably(current, backup)
        self.backups.append(backup)
        return backup


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def copy_durably(source: str, target: str) -> None:
    """atomic_write for a file too big to hold in memory (a tools installer)."""
    directory = os.path.dirname(target) or "."
    fd, temp = tempfile.mkstemp(dir=directory, prefix=temp_prefix(target), suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_dir(directory)

