"""The replicator against the real change journal and a real data link (a socket pair): a path
that vanished because a directory above it was renamed is moved, never deleted."""
import asyncio
import os
import socket
import subprocess
import time

import pytest

from osam.common.fsentry import FsEntry
from osam.protocol import CHANNEL_DATA, Delete, Entry, Rename
from osam.receiver.applier import Applier
from osam.receiver.checkpoint import CheckpointJournal
from osam.receiver.store import ReplicaStore
from osam.sentinel.config import SentinelConfig
from osam.sentinel.datalink import DataLink
from osam.sentinel.fsmeta import HardLinkTracker
from osam.sentinel.index import Index, row_from_stat
from osam.sentinel.replicator import Replicator
from osam.transport.framed import FramedStream, LinkClosed


async def link_pair(index):
    a, b = socket.socketpair()
    r1, w1 = await asyncio.open_connection(sock=a)
    r2, w2 = await asyncio.open_connection(sock=b)
    link = DataLink(FramedStream(r1, w1, CHANNEL_DATA), index, lambda path: None)
    return link, FramedStream(r2, w2, CHANNEL_DATA)


async def receive(peer: FramedStream, applier: Applier, out: list) -> None:
    """The receiver's side: apply every message to a real replica, acknowledge checkpoints."""
    try:
        while True:
            msg = await peer.recv()
            out.append(msg)
            for reply in applier.handle(msg):
                await peer.send(reply() if callable(reply) else reply)
    except LinkClosed:
        pass


@pytest.mark.parametrize("prefer", ["fanotify", "inotify"])
def test_a_file_whose_directory_was_renamed_before_it_was_read_is_moved_not_deleted(tmp_path, prefer):
    if prefer == "fanotify" and os.geteuid() != 0:
        pytest.skip("fanotify needs root")
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f").write_bytes(b"before")
    index = Index(str(tmp_path / "index.sqlite"))
    index.apply([("put", row_from_stat(p, k, os.lstat(root / os.fsdecode(p))))
                 for p, k in ((b"a", "d"), (b"a/f", "f"))])

    async def run():
        import osam.sentinel.replicator as rep
        rep_open = rep.open_journal
        rep.open_journal = lambda root_, **kw: rep_open(root_, prefer=prefer, **kw)
        try:
            r = Replicator(os.fsencode(root), SentinelConfig(), index)
            r.start_journal()
            link, peer = await link_pair(index)
            store = ReplicaStore(tmp_path / "replica")
            for p, k in ((b"a", "d"), (b"a/f", "f")):  # the replica as the full sync left it
                st = os.lstat(root / os.fsdecode(p))
                e = FsEntry(p, k, st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size)
                if k == "d":
                    store.apply_entry(e)
                else:
                    w = store.open_file(e)
                    w.write(0, b"before")
                    w.commit()
            applier = Applier("g", store, CheckpointJournal(tmp_path / "replica" / "checkpoint.json"))
            msgs: list = []
            receiver = asyncio.ensure_future(receive(peer, applier, msgs))
            await link.begin(2, "continuous")
            # Changes come from another process: the sentinel's journal ignores its own.
            subprocess.run(["sh", "-c", f"printf after > '{root}/a/f'"], check=True)
            await asyncio.sleep(0.1)
            r.drain_journal()
            assert b"a/f" in r.changes.dirty
            subprocess.run(["mv", str(root / "a"), str(root / "b")], check=True)  # queued, not yet read
            since = r.changes.dirty.pop(b"a/f")
            await r._send_path(link, b"a/f", since, HardLinkTracker(), continuous=True)
            await r.send_changes(link, continuous=True)
            r.stop_journal()
            await link.close()
            await receiver
            store.close()
            return msgs
        finally:
            rep.open_journal = rep_open

    msgs = asyncio.run(run())
    assert not [m for m in msgs if isinstance(m, Delete)], msgs
    assert Rename(b"a", b"b") in msgs
    assert [m for m in msgs if isinstance(m, Entry) and m.path == b"b/f"]
    replica = tmp_path / "replica" / "root"
    assert (replica / "b" / "f").read_bytes() == b"after" and not (replica / "a").exists()


def test_a_full_sync_that_ends_before_its_survey_reports_what_it_walked_as_the_total(tmp_path, monkeypatch):
    """On a busy machine the background survey can finish after the walk: the sync's result
    must still carry totals (the progress the API shows), and the late survey must not move them."""
    import threading
    import osam.sentinel.replicator as rep
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    for i in range(5):
        (root / "d" / f"f{i}").write_bytes(b"x" * (1000 + i))
    release = threading.Event()

    def slow_survey(*args, **kwargs):
        release.wait(10)
        return 999, 999_999                                     # what a late survey would say
    monkeypatch.setattr(rep, "survey", slow_survey)
    monkeypatch.setattr(rep.os.path, "ismount", lambda path: False)
    index = Index(str(tmp_path / "index.sqlite"))

    async def run():
        r = Replicator(os.fsencode(root), SentinelConfig(), index)
        link, peer = await link_pair(index)
        store = ReplicaStore(tmp_path / "replica")
        applier = Applier("g", store, CheckpointJournal(tmp_path / "replica" / "checkpoint.json"))
        receiver = asyncio.ensure_future(receive(peer, applier, []))
        try:
            return await r.full_sync(link, 1, None), r
        finally:
            release.set()
            receiver.cancel()
            r.stop_journal()

    result, r = asyncio.run(run())
    assert result["bytes_total"] == result["bytes_done"] == sum(1000 + i for i in range(5))
    assert result["files_total"] == result["files_done"] > 0
    time.sleep(0.2)                                            # the survey ends now: too late to count
    assert (r.stats.bytes_total, r.stats.files_total) == (result["bytes_total"], result["files_total"])
