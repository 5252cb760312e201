"""Applies one guest's data channel to its replica. Sans-IO: messages in, replies out; the one
slow step, making a checkpoint durable, is returned to the caller to run off the event loop."""
from __future__ import annotations

import json
import logging
import os
from typing import List, Optional

from ..common.fsentry import REGULAR, FsEntry
from ..protocol import (BlockDisk, BlockManifest, Checkpoint, CheckpointAck, Delete, Entry, FileData,
                        FileEnd, FileHole, HardLink, Heartbeat, Message, ProtocolError, Rename, Resend,
                        SyncBegin, SyncEnd, SyncEndAck)
from .checkpoint import CheckpointJournal, encode_cursor
from .store import BaseMismatch, FileWriter, MissingEntry, ReplicaStore, StoreError, UnsafePath

# Messages of the sync itself, in either mode; the others belong to one mode only.
_EITHER_MODE = (Checkpoint, SyncBegin, SyncEnd, Heartbeat)

log = logging.getLogger("osam.receiver.applier")


class Refused(Exception):
    """The guest sent something that must end the connection (named in the message)."""


class Applier:
    def __init__(self, guest: str, store: ReplicaStore, journal: CheckpointJournal):
        self.guest = guest
        self.store = store
        self.journal = journal
        self.sync: Optional[dict] = None
        self.file: Optional[FileWriter] = None
        self.skip_file = False            # data of a file we are not writing (Resend asked)
        self.file_size = 0
        self.bytes_written = 0
        self.entries = 0
        self.last_seq: Optional[int] = None   # of this connection's last checkpoint

    def handle(self, msg: Message) -> List[Message]:
        """Apply one message; returns replies. A Checkpoint returns a callable in the list:
        run it (blocking: it syncs the file system), then send the ack it returns.
        Raises Refused for input that must end the connection; OSError when the replica's
        file system fails (e.g. full): the guest resends after reconnecting."""
        try:
            return self._handle(msg)
        except UnsafePath as exc:
            self.abort_file()
            raise Refused(f"unsafe path: {exc}") from None

    def _handle(self, msg: Message) -> List[Message]:
        if isinstance(msg, (FileData, FileHole)):
            if self.file is not None:
                self._write(msg)
            elif not self.skip_file:
                raise Refused("file data outside a file")
            return []
        if isinstance(msg, FileEnd):
            return self._end_file(msg.ok)
        if self.file is not None:
            raise Refused(f"{type(msg).__name__} inside a file")
        self.skip_file = False
        blocks = self.store.kind == "blocks"
        if isinstance(msg, (BlockDisk, BlockManifest)) != blocks and not isinstance(msg, _EITHER_MODE):
            raise Refused(f"{type(msg).__name__} does not belong to a {'block' if blocks else 'file'}-mode replica")
        if isinstance(msg, Entry):
            return self._entry(msg)
        if isinstance(msg, BlockDisk):
            return self._open_disk(msg)
        try:
            if isinstance(msg, HardLink):
                self.store.hardlink(msg.path, msg.target)
            elif isinstance(msg, Delete):
                self.store.delete(msg.path)
            elif isinstance(msg, Rename):
                self._rename(msg)
            elif isinstance(msg, BlockManifest):
                self._manifest(msg)
            elif isinstance(msg, Checkpoint):
                self._check_checkpoint(msg)
                # Directory times are restored here, in order with the changes around them;
                # only the slow file-system sync runs elsewhere.
                self.store.flush_dir_times()
                return [lambda: self._durable(msg)]
            elif isinstance(msg, SyncBegin):
                self._begin(msg)
            elif isinstance(msg, SyncEnd):
                self._check_end(msg)
                self.store.flush_dir_times()
                return [lambda: self._end_sync(msg)]
            elif isinstance(msg, Heartbeat):
                pass
            else:
                raise Refused(f"unexpected {type(msg).__name__} on the data channel")
        except UnsafePath as exc:
            raise Refused(f"unsafe path: {exc}") from None
        except MissingEntry as exc:
            if isinstance(msg, HardLink):
                return [Resend(msg.path, f"link target missing: {exc}")]
            raise
        self.entries += 1
        return []

    def _entry(self, msg: Entry) -> List[Message]:
        if msg.size < 0 or msg.size > 1 << 50:
            raise Refused("entry size out of range")
        problem = _entry_problem(msg)
        if problem:
            raise Refused(f"bad entry {os.fsdecode(msg.path)!r}: {problem}")
        e = FsEntry(msg.path, msg.kind, msg.mode, msg.uid, msg.gid, msg.mtime_ns, msg.size,
                    msg.rdev, msg.target, [tuple(x) for x in msg.xattrs])
        self.entries += 1
        try:
            if e.kind != REGULAR:
                self.store.apply_entry(e)
                return []
            base = (msg.base_size, msg.base_mtime_ns) if msg.base_size >= 0 else None
            try:
                self.file = self.store.open_file(e, base=base)
                self.file_size = e.size
            except (BaseMismatch, MissingEntry) as exc:
                self.skip_file = True
                return [Resend(msg.path, str(exc))]
        except UnsafePath as exc:
            raise Refused(f"unsafe path: {exc}") from None
        except (StoreError, ValueError) as exc:
            raise Refused(f"bad entry {os.fsdecode(msg.path)!r}: {exc}") from None
        return []

    def _open_disk(self, msg: BlockDisk) -> List[Message]:
        if self.sync is None:
            raise Refused("a disk outside a sync")
        try:
            self.file = self.store.open_disk(msg.name, msg.size, msg.block_size)
        except StoreError as exc:
            raise Refused(str(exc)) from None
        self.file_size = msg.size
        return []

    def _manifest(self, msg: BlockManifest) -> None:
        if self.sync is None:
            raise Refused("a manifest outside a sync")
        try:
            self.store.add_manifest(msg.name, msg.block_size, msg.first, msg.digests)
        except StoreError as exc:
            raise Refused(str(exc)) from None

    def _write(self, msg) -> None:
        length = len(msg.data) if isinstance(msg, FileData) else msg.length
        if msg.offset < 0 or length < 0 or msg.offset + length > self.file_size:
            raise Refused(f"file range {msg.offset}+{length} outside the file's {self.file_size} bytes")
        if isinstance(msg, FileData):
            self.bytes_written += self.file.write(msg.offset, msg.data)
        else:
            self.file.punch(msg.offset, length)

    def _end_file(self, ok: bool) -> List[Message]:
        f, self.file = self.file, None
        if f is None:
            if self.skip_file:
                self.skip_file = False
                return []
            raise Refused("file end outside a file")
        if ok:
            f.commit()
        else:
            f.abort()
        return []

    def _rename(self, msg: Rename) -> None:
        try:
            self.store.rename(msg.old, msg.new)
        except MissingEntry:
            # The sentinel renamed something it believed we had; it sends the new name whole.
            log.info("%s: rename source %r missing; expecting the new name in full",
                     self.guest, os.fsdecode(msg.old))

    def _begin(self, msg: SyncBegin) -> None:
        if msg.kind not in ("full", "continuous", "final", "verify"):
            raise Refused(f"unknown sync kind {msg.kind!r}")
        state = self.journal.load()
        current = state.get("sync_id")
        if isinstance(current, int) and msg.sync_id < current:
            # The receiver records each sync's id before it asks for it: an older one is a
            # replay (or a confused sentinel) and must not roll the journal back.
            raise Refused(f"sync {msg.sync_id} is older than the current sync {current}")
        self.last_seq = None
        if state.get("sync_id") != msg.sync_id:
            state = {"sync_id": msg.sync_id, "kind": msg.kind, "seq": 0, "cursor": None,
                     "complete": False, "migration": state.get("migration")}
        self.sync = state
        if self.store.kind == "blocks":
            self.store.begin_sync()

    def _check_checkpoint(self, msg: Checkpoint) -> None:
        """A checkpoint belongs to the open sync, its seq grows within a connection (the
        sentinel numbers them from 1 on each link), and its stats are plain JSON."""
        if self.sync is None:
            raise Refused("checkpoint outside a sync")
        if self.last_seq is not None and msg.seq <= self.last_seq:
            raise Refused(f"checkpoint {msg.seq} after checkpoint {self.last_seq} (a replay?)")
        self.last_seq = msg.seq
        _check_stats(msg.stats)

    def _check_end(self, msg: SyncEnd) -> None:
        if self.sync is None or self.sync.get("sync_id") != msg.sync_id:
            open_id = self.sync.get("sync_id") if self.sync else None
            raise Refused(f"end of sync {msg.sync_id} while " +
                          (f"sync {open_id} is open" if open_id is not None else "no sync is open"))
        _check_stats(msg.stats)

    def _durable(self, msg: Checkpoint) -> Message:
        """Blocking: sync the replica's file system, then record the step."""
        self.store.sync()
        if self.sync is None:
            raise ProtocolError("checkpoint outside a sync")
        self.sync = dict(self.sync, seq=msg.seq, stats=msg.stats)
        if msg.cursor:
            self.sync["cursor"] = encode_cursor(msg.cursor)
        self.journal.commit(self.sync)
        return CheckpointAck(msg.seq)

    def _end_sync(self, msg: SyncEnd) -> Message:
        self.store.sync()
        stats = msg.stats
        state = dict(self.sync or {}, sync_id=msg.sync_id, complete=True, cursor=None, stats=stats)
        if self.store.kind == "blocks" and self.store.has_manifest():
            # Blocking, like the sync before it: read the images back against the source's digests.
            check = self.store.verify_manifests()
            stats = dict(stats, manifest=check)
            state.update(stats=stats, manifest_ok=check["ok"])
            log.log(logging.INFO if check["ok"] else logging.WARNING, "%s: final manifest %s: %s", self.guest,
                    "matches" if check["ok"] else "does NOT match", check["disks"])
        self.journal.commit(state)
        self.sync = None
        return SyncEndAck(msg.sync_id, stats)

    def abort_file(self) -> None:
        if self.file is not None:
            self.file.abort()
            self.file = None


# Ranges of the numbers in an Entry that the receiver's system calls take (larger ones would
# raise OverflowError there, not a refusal).
_ID_MAX = (1 << 32) - 2          # uid_t / gid_t; (uid_t)-1 means "unchanged"
_NS_LIMIT = 1 << 63
_XATTR_NAME_MAX = 255
_XATTR_SIZE_MAX = 1 << 16


def _entry_problem(msg: Entry) -> Optional[str]:
    if not 0 <= msg.mode <= 0o7777:
        return f"mode {msg.mode:#o} is not permission bits"
    if not (0 <= msg.uid <= _ID_MAX and 0 <= msg.gid <= _ID_MAX):
        return f"owner {msg.uid}:{msg.gid} out of range"
    if not -_NS_LIMIT <= msg.mtime_ns < _NS_LIMIT:
        return "mtime out of range"
    if not 0 <= msg.rdev < 1 << 64:
        return "device number out of range"
    for name, value in msg.xattrs:
        if not 0 < len(name) <= _XATTR_NAME_MAX or b"\0" in name or len(value) > _XATTR_SIZE_MAX:
            return f"bad extended attribute {name[:64]!r}"
    return None


def _check_stats(stats: dict) -> None:
    """Stats go into the checkpoint journal (JSON): no bytes, NaN or infinities."""
    try:
        json.dumps(stats, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise Refused(f"sync stats are not plain JSON: {exc}") from None
