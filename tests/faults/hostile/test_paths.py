"""Hostile paths and numbers through the real Applier and replica stores (file and block
mode): `..`, absolute paths, NUL, overlong names, symlinks in the replica pointing outside and
then written through, renames and hard links whose source or target escapes, a directory
replaced by a symlink between messages, disks named "../x", writes past an image, numbers
the system calls cannot take. Each must end in a clean refusal (or a harmless outcome) and
leave a canary file and directory outside the replica exactly as they were.

Already covered elsewhere, and extended here: daemons/tests/test_store.py (the store's own
symlink rules), test_block_mode.py (unknown disks, writes past the disk) and
tests/e2e/test_refusals.py (six hostile names end to end)."""
import pytest

from osam.protocol import Checkpoint, SyncBegin, SyncEnd
from osam.receiver.applier import Refused
from tests.faults.hostile import attacks



def _names(kind):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        fence = attacks.Fence(Path(d))
        return sorted((attacks.file_scripts if kind == "file" else attacks.block_scripts)(fence))


@pytest.mark.parametrize("name", _names("file"))
def test_file_mode_hostile_script(tmp_path, name):
    fence = attacks.Fence(tmp_path)
    expected, msgs = attacks.file_scripts(fence)[name]
    applier, store = attacks.file_applier(fence)
    try:
        outcome, detail = attacks.run_script(applier, msgs)
    finally:
        applier.abort_file()
        store.close()
    assert fence.touched() == []
    assert (outcome, name) == (expected, name), detail
    if outcome == "refused":
        assert detail                 # the reason the guest's Error frame will carry


@pytest.mark.parametrize("name", _names("block"))
def test_block_mode_hostile_script(tmp_path, name):
    fence = attacks.Fence(tmp_path)
    expected, msgs = attacks.block_scripts(fence)[name]
    applier, store, image = attacks.block_applier(fence)
    try:
        outcome, detail = attacks.run_script(applier, msgs)
    finally:
        applier.abort_file()
        store.close()
    assert fence.touched() == []
    assert image.stat().st_size == attacks.DISK_SIZE
    assert (outcome, name) == (expected, name), detail


def test_a_stale_sync_is_refused_and_leaves_the_journal_and_replica_alone(tmp_path):
    fence = attacks.Fence(tmp_path)
    applier, store = attacks.file_applier(fence)
    try:
        attacks.run_script(applier, attacks.file(b"f", b"new!!") + [Checkpoint(1, b"c", {})], sync_id=5)
        for reply in applier.handle(SyncEnd(5, {})):
            reply()
        journal = applier.journal.load()
        with pytest.raises(Refused, match="older than the current sync 5"):
            applier.handle(SyncBegin(4, "full"))
        with pytest.raises(Refused, match="end of sync 4 while no sync is open"):
            applier.handle(SyncEnd(4, {}))
        assert applier.journal.load() == journal
        assert (fence.replica_dir / "root" / "f").read_bytes() == b"new!!"
    finally:
        store.close()


def test_an_old_checkpoint_after_a_newer_one_is_refused(tmp_path):
    fence = attacks.Fence(tmp_path)
    applier, store = attacks.file_applier(fence)
    try:
        outcome, _ = attacks.run_script(applier, [Checkpoint(2, b"b", {}), Checkpoint(3, b"c", {})], sync_id=1)
        assert outcome == "harmless"
        state = applier.journal.load()
        with pytest.raises(Refused, match="checkpoint 2 after checkpoint 3"):
            applier.handle(Checkpoint(2, b"a", {}))
        assert applier.journal.load() == state
    finally:
        store.close()
