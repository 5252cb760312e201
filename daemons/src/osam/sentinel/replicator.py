"""File-level replication of a root: full sync, continuous sync from the change journal, and
final sync. The change journal starts before the full sync walks, so whatever changes while a
file is read, or after it was sent, is sent again by the next pass."""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections import deque
from typing import Deque, Optional

from ..common.fsentry import DIRECTORY, REGULAR, FsEntry, is_under
from ..protocol import Delete, FileData, HardLink, Rename
from .config import SentinelConfig
from .datalink import DataLink
from .fsmeta import HardLinkTracker, stat_entry
from .index import Index, row_from_stat
from .changes import ChangeSet
from .journal import open_journal
from .prefetch import Prefetcher, open_for_read
from .sender import DELTA_MIN, FileSender, entry_message
from .survey import survey, totals_from_file_systems
from .walk import local_mount_filter, relative_to, walk, walk_key

log = logging.getLogger("osam.sentinel.replicator")

# Checkpoint a full sync after this much data, this many entries, or this long.
CHECKPOINT_BYTES = 32 << 20
CHECKPOINT_ENTRIES = 8192
CHECKPOINT_SECONDS = 2.0
# Continuous sync waits this long after the first event so a burst travels as one batch.
DEBOUNCE = 0.002
BATCH_ENTRIES = 2048
# Prefetched entries held ahead of the sender: enough to hide read latency, bounded in memory.
WINDOW_ENTRIES = 512
WINDOW_BYTES = 64 << 20


class Stats:
    def __init__(self):
        self.files_done = self.bytes_done = 0
        self.files_total = self.bytes_total = 0
        self.bytes_sent = 0
        self.counted = False
        self.lock = threading.Lock()     # the background survey and the walk's end both set totals

    def set_totals(self, files: int, size: int) -> None:
        """The first answer wins: the survey's, or what a finished full sync walked."""
        with self.lock:
            if not self.counted:
                self.files_total, self.bytes_total = files, size
                self.counted = True

    def add_data(self, nbytes: int, *, after_full_sync: bool) -> None:
        self.bytes_done += nbytes
        if after_full_sync:  # changes are more work to do, not part of the surveyed total
            self.bytes_total += nbytes

    def as_dict(self) -> dict:
        return {"files_done": self.files_done, "bytes_done": self.bytes_done,
                "files_total": self.files_total, "bytes_total": self.bytes_total,
                "bytes_sent": self.bytes_sent}


class Replicator:
    def __init__(self, root: bytes, config: SentinelConfig, index: Index, own_dirs=()):
        self.root = os.path.abspath(os.fsencode(root))
        # The sentinel's own state never travels: it would change with every acknowledgement.
        self.own = tuple(rel for rel in (relative_to(os.path.abspath(os.fsencode(d)), self.root) for d in own_dirs)
                         if rel is not None)
        self.config = config
        self.index = index
        self.mounts = local_mount_filter(self.root)
        self.changes = ChangeSet()
        self.stats = Stats()
        self.journal = None
        self.watching_since_sync_start = False     # the journal saw every change of this sync
        self.phase = "idle"

    # -- change journal ------------------------------------------------------------------
    def start_journal(self) -> None:
        if self.journal is not None:
            return
        self.journal = open_journal(self.root, ignore_pids=(os.getpid(),),
                                    skip_dir=self.mounts.is_foreign_mount)
        asyncio.get_running_loop().add_reader(self.journal.fileno(), self.drain_journal)
        log.info("change journal: %s on %s", self.journal.backend, os.fsdecode(self.root))

    def stop_journal(self) -> None:
        if self.journal is not None:
            asyncio.get_running_loop().remove_reader(self.journal.fileno())
            self.journal.close()
            self.journal = None

    def drain_journal(self) -> None:
        now = time.monotonic()
        for ev in self.journal.read_events():
            if not (self.is_own(ev.path) or (ev.old_path is not None and self.is_own(ev.old_path))):
                self.changes.record(ev, now)
        if self.changes:
            self.changes.changed.set()

    def resend(self, path: bytes) -> None:
        """The receiver could not patch this file: send it whole next time."""
        row = self.index.get(path)
        if row is not None:
            self.index.apply([("put", row._replace(hashes=None, size=-1))])
        self.changes.dirty.setdefault(path, time.monotonic())
        self.changes.changed.set()

    def quiesced(self, report: dict) -> None:
        """File mode reads the live tree, which the quiesce has brought to rest."""

    def is_own(self, path: bytes) -> bool:
        return any(is_under(path, own) for own in self.own)

    # -- progress ------------------------------------------------------------------------
    def count_in_background(self) -> None:
        """Totals for progress and ETA, surveyed beside the sync (which also warms the cache)."""
        stats = self.stats

        if os.path.ismount(self.root):  # a whole file system, "/" most often: ask it
            local = [rel for rel in self.mounts.known - self.mounts.foreign if self.mounts(rel)]
            stats.set_totals(*totals_from_file_systems(self.root, local))
            return

        def count():
            stats.set_totals(*survey(self.root, self.mounts.is_foreign_mount))

        threading.Thread(target=count, name="osam-count", daemon=True).start()

    def progress(self, link: Optional[DataLink]) -> dict:
        d = self.stats.as_dict()
        d["phase"] = self.phase
        d["dirty"] = len(self.changes.dirty) + len(self.changes.renames)
        d["deferred"] = len(self.changes.deferred)
        now = time.monotonic()
        oldest = self.changes.oldest()
        lag = link.lag(now) if link else 0.0
        if oldest is not None:
            lag = max(lag, now - oldest)
        d["lag"] = round(lag, 4)
        d["journal"] = self.journal.backend if self.journal else None
        return d

    # -- sending entries -----------------------------------------------------------------
    async def _send_file(self, link: DataLink, e: FsEntry, st, tracker: HardLinkTracker,
                         since: Optional[float]) -> None:
        if st.st_nlink > 1:
            first = tracker.first_path(st, e.path)
            if first is None:
                first = self._replica_name_of_inode(link, e.path, st)
            if first is not None and first != e.path:
                link.queue(HardLink(e.path, first))
                link.note_change(("put", row_from_stat(e.path, e.kind, st)), since)
                self.stats.files_done += 1
                return
        fd = open_for_read(os.path.join(self.root, e.path))
        if fd is None:
            return
        try:
            row = self.index.get(e.path) if self.phase != "full_sync" else None
            delta = (row is not None and row.kind == REGULAR and row.hashes is not None
                     and e.size >= DELTA_MIN and row.size >= 0)
            sender = FileSender(fd, e, old_hashes=row.hashes if delta else None,
                                base=(row.size, row.mtime_ns) if delta else None,
                                allocated=st.st_blocks * 512)
            for msg in sender.messages():
                link.queue(msg)
                if isinstance(msg, FileData):
                    await link.maybe_flush()
            self.stats.add_data(sender.data_bytes, after_full_sync=self.phase != "full_sync")
        finally:
            os.close(fd)
        self.stats.files_done += 1
        link.note_change(("put", row_from_stat(e.path, e.kind, st, sender.hashes)), since)

    async def _emit(self, link: DataLink, e: FsEntry, st, slot, tracker: HardLinkTracker) -> None:
        """Send one walked entry, from what a prefetch thread encoded when there is that."""
        if slot is None:
            await self.send_entry(link, e, st, tracker)
            return
        encoded = await slot.result()
        if encoded is None:
            return  # vanished since the walk
        for frame in encoded.frames:
            link.queue_frame(frame)
        await link.maybe_flush()
        self.stats.add_data(encoded.data_bytes, after_full_sync=False)
        self.stats.files_done += 1
        link.note_change(("put", row_from_stat(e.path, e.kind, st, encoded.hashes)))

    async def send_entry(self, link: DataLink, e: FsEntry, st, tracker: HardLinkTracker,
                         since: Optional[float] = None) -> None:
        if e.kind == REGULAR:
            await self._send_file(link, e, st, tracker, since)
        else:
            link.queue(entry_message(e))
            link.note_change(("put", row_from_stat(e.path, e.kind, st)), since)
            self.stats.files_done += 1
            await link.maybe_flush()

    # -- phases --------------------------------------------------------------------------
    async def full_sync(self, link: DataLink, sync_id: int, cursor: Optional[bytes]) -> dict:
        """Walk and send everything after `cursor` (None: from the start)."""
        self.phase = "full_sync"
        if cursor is None:
            self.index.clear()
            self.watching_since_sync_start = True
        elif self.journal is None:
            self.watching_since_sync_start = False
        self.start_journal()
        if cursor is None or not self.stats.counted:
            # A resumed sync keeps counting, so re-sent bytes show in bytes_done.
            self.stats = Stats() if cursor is None else self.stats
            self.count_in_background()
        await link.begin(sync_id, "full")
        tracker = HardLinkTracker()
        if cursor:
            await self._resend_cursor_dirs(link, cursor, tracker)
        last = time.monotonic()
        entries = data_mark = 0
        window: Deque[tuple] = deque()
        window_bytes = 0
        prefetcher = Prefetcher(self.root)
        try:
            walker = walk(self.root, start_after=cursor, mounts=self.mounts, skip=self.is_own,
                          on_error=self._walk_error)
            for item in itertools.chain(walker, [None]):  # None: the walk is over, drain the window
                if item is not None:
                    e, st = item
                    ahead = e.kind == REGULAR and prefetcher.wants(e, st)
                    prefetcher.compress = link.stream.link_bound
                    window.append((e, st, prefetcher.add(e, st) if ahead else None))
                    window_bytes += e.size if ahead else 0
                while window and (item is None or len(window) > WINDOW_ENTRIES or window_bytes > WINDOW_BYTES):
                    e0, st0, slot = window.popleft()
                    window_bytes -= e0.size if slot else 0
                    await self._emit(link, e0, st0, slot, tracker)
                    entries += 1
                    now = time.monotonic()
                    if (entries >= CHECKPOINT_ENTRIES or self.stats.bytes_done - data_mark >= CHECKPOINT_BYTES
                            or now - last >= CHECKPOINT_SECONDS):
                        await link.checkpoint(e0.path, self.stats.as_dict())
                        entries, data_mark, last = 0, self.stats.bytes_done, now
        finally:
            for _, _, slot in window:
                if slot:
                    slot.cancel()
            prefetcher.close()
        # Changes to entries walked before this process started were never watched.
        self.changes.needs_verify = not self.watching_since_sync_start
        # A survey still running on a busy machine: the finished walk has seen the whole tree.
        self.stats.set_totals(self.stats.files_done, self.stats.bytes_done)
        return await self._end(link, sync_id)

    async def _end(self, link: DataLink, sync_id: int) -> dict:
        self.stats.bytes_sent = link.stream.bytes_out
        return await link.end(sync_id, self.stats.as_dict())

    async def _resend_cursor_dirs(self, link: DataLink, cursor: bytes, tracker: HardLinkTracker) -> None:
        """A resumed walk adds entries to the directories around its cursor, which changes their
        mtimes on the replica: send those directories again so the receiver restores them."""
        parts = cursor.split(b"/")
        for i in range(len(parts) + 1):
            path = b"/".join(parts[:i])
            e, st = self._stat(path)
            if e is not None and e.kind == DIRECTORY:
                await self.send_entry(link, e, st, tracker)

    def _stat(self, path: bytes):
        """(FsEntry, stat) of a path below the root, or (None, None) when it is gone."""
        parent, _, name = path.rpartition(b"/")
        try:
            dfd = os.open(os.path.join(self.root, parent) if parent else self.root,
                          os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None, None
        try:
            return stat_entry(dfd, name or b".", path)
        except OSError:
            return None, None
        finally:
            os.close(dfd)

    def _walk_error(self, relpath: bytes, exc: OSError) -> None:
        log.warning("cannot read %s: %s", os.fsdecode(relpath) or "/", exc.strerror)

    async def continuous_sync(self, link: DataLink, sync_id: int, stop: asyncio.Event,
                              first_pass_done=None) -> dict:
        self.phase = "continuous_sync"
        self.start_journal()
        await link.begin(sync_id, "continuous")
        if self.changes.needs_verify:
            self.verify_walk(skip_excluded=True)
        await self.send_changes(link, continuous=True)
        if first_pass_done:
            first_pass_done()
        next_verify = time.monotonic() + self.config.verify_interval if self.config.verify_interval else None
        while not stop.is_set():
            timeout = None if next_verify is None else max(0.0, next_verify - time.monotonic())
            waiter = asyncio.ensure_future(self.changes.changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stop.is_set():
                break
            due = next_verify is not None and time.monotonic() >= next_verify
            if due or self.changes.needs_verify:  # periodic, or the journal lost events
                self.verify_walk(skip_excluded=True)
                if next_verify is not None:
                    next_verify = time.monotonic() + self.config.verify_interval
            await asyncio.sleep(DEBOUNCE)
            await self.send_changes(link, continuous=True)
        await self.send_changes(link, continuous=True)
        return await self._end(link, sync_id)

    async def final_sync(self, link: DataLink, sync_id: int, verify: bool = False) -> dict:
        """After quiesce: what the journal saw since the last pass, plus the excluded paths."""
        self.phase = "final_sync"
        self.start_journal()
        await link.begin(sync_id, "final")
        await asyncio.sleep(0.05)  # let the kernel hand over the last events of the quiesce
        self.drain_journal()
        if verify or self.config.final_verify or self.changes.needs_verify:
            self.verify_walk(skip_excluded=False)
        for p, t in self.changes.deferred.items():
            self.changes.dirty.setdefault(p, t)
        self.changes.deferred.clear()
        await self.send_changes(link, continuous=False)
        return await self._end(link, sync_id)

    def verify_walk(self, *, skip_excluded: bool) -> int:
        """Compare the tree with what the replica acknowledged; queue every difference."""
        now = time.monotonic()
        seen = set()
        found = 0

        def skip(path: bytes) -> bool:
            return self.is_own(path) or (skip_excluded and self.config.is_excluded(path))

        for e, st in walk(self.root, mounts=self.mounts, skip=skip, on_error=self._walk_error):
            seen.add(e.path)
            row = self.index.get(e.path)
            if row is None or row != row_from_stat(e.path, e.kind, st, row.hashes):
                self.changes.dirty.setdefault(e.path, now)
                found += 1
        for row in self.index.all_rows():
            if row.path not in seen and not skip(row.path):
                self.changes.dirty.setdefault(row.path, now)
                found += 1
        self.changes.needs_verify = False
        if found:
            self.changes.changed.set()
        log.info("verifying walk: %d differences", found)
        return found

    async def send_changes(self, link: DataLink, *, continuous: bool) -> None:
        """Send everything queued, in batches, each ending with a checkpoint."""
        while self.changes:
            self.changes.changed.clear()
            renames, self.changes.renames = self.changes.renames, []
            for old, new, since in renames:
                self._send_rename(link, old, new, since, continuous)
            batch = sorted(self.changes.dirty.items(), key=lambda kv: walk_key(kv[0]))[:BATCH_ENTRIES]
            tracker = HardLinkTracker()
            for path, _ in batch:
                since = self.changes.dirty.pop(path, None)
                if since is None:  # sent with a new subtree, or renamed since: queued anew
                    continue
                if continuous and self.config.is_excluded(path):
                    self.changes.deferred.setdefault(path, since)
                    continue
                await self._send_path(link, path, since, tracker, continuous)
            await link.checkpoint(b"", self.stats.as_dict())
        await link.drain()

    def _send_rename(self, link: DataLink, old: bytes, new: bytes, since: float, continuous: bool) -> None:
        excluded = continuous and (self.config.is_excluded(old) or self.config.is_excluded(new))
        if excluded or not old or self.index.get(old) is None:
            # The replica does not have the old name (or it must not change now): send the new
            # name as new content and remove the old one.
            if old:
                self.changes.dirty.setdefault(old, since)
            self.changes.dirty.setdefault(new, since)
            self.changes.new_subtrees.add(new)
            return
        link.queue(Rename(old, new))
        link.note_change(("rename", old, new), since)

    async def _send_path(self, link: DataLink, path: bytes, since: float, tracker: HardLinkTracker,
                         continuous: bool) -> None:
        e, st = self._stat(path)
        if e is None and self.journal is not None:
            # Gone, or moved away: a rename is queued in the journal by the time lstat fails.
            self.drain_journal()
            moved = self.changes.moved_name(path)
            if moved is not None:
                self.changes.dirty.setdefault(moved, since)
                return
        if e is None:
            link.queue(Delete(path))
            link.note_change(("delete", path), since)
            return
        row = self.index.get(path)
        if row is not None and row.kind == DIRECTORY and e.kind != DIRECTORY:
            link.note_change(("delete", path), since)
        await self.send_entry(link, e, st, tracker, since)
        if e.kind == REGULAR and st.st_nlink > 1:
            self._relink_others(link, e.path, st, since)
        if e.kind == DIRECTORY and path and (row is None or path in self.changes.new_subtrees):
            # A directory the replica never had: its contents may predate the journal's view.
            self.changes.new_subtrees.discard(path)
            skip = self.config.is_excluded if continuous else None
            for ce, cst in walk(os.path.join(self.root, path), mounts=self.mounts,
                                skip=lambda rel: self.is_own(path + b"/" + rel), on_error=self._walk_error):
                if not ce.path:
                    continue
                ce.path = path + b"/" + ce.path
                if skip and skip(ce.path):
                    self.changes.deferred.setdefault(ce.path, since)
                    continue
                self.changes.dirty.pop(ce.path, None)
                await self.send_entry(link, ce, cst, tracker, since)

    def _replica_name_of_inode(self, link: DataLink, path: bytes, st) -> Optional[bytes]:
        """A name the replica has for this unchanged inode, so `path` can be linked to it."""
        for known in self.index.paths_with_inode(st.st_dev, st.st_ino):
            row = self.index.get(known)
            current = link.current_name(known)
            if current is None or current == path:
                continue
            # ctime moves when a link is added: then the content is sent once more.
            if (row.size, row.mtime_ns, row.ctime_ns) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                return current
        return None

    def _relink_others(self, link: DataLink, path: bytes, st, since: float) -> None:
        """New content under one name of a hard-link group: the other names follow it."""
        for known in self.index.paths_with_inode(st.st_dev, st.st_ino):
            other = link.current_name(known)
            if other is None or other == path or other in self.changes.dirty:
                continue
            try:
                ost = os.lstat(os.path.join(self.root, other))
            except OSError:
                continue
            if (ost.st_dev, ost.st_ino) == (st.st_dev, st.st_ino):
                link.queue(HardLink(other, path))
                link.note_change(("put", row_from_stat(other, REGULAR, ost)), since)

