"""Change journal against the real kernel: both back ends, real files in tmp dirs."""
from __future__ import annotations

import ctypes
import errno
import os
import select
import shutil
import statistics
import subprocess
import sys
import time

import pytest

from osam.sentinel import journal as journal_mod
from osam.sentinel.journal import ChangeEvent, open_journal

IS_ROOT = os.geteuid() == 0


def changed(path):
    return ChangeEvent("changed", path)


def deleted(path):
    return ChangeEvent("deleted", path)


def renamed(old, new):
    return ChangeEvent("renamed", new, old)


@pytest.fixture(params=["fanotify", "inotify"])
def backend(request):
    if request.param == "fanotify" and not IS_ROOT:
        pytest.skip("fanotify with FAN_MARK_FILESYSTEM needs CAP_SYS_ADMIN (run as root)")
    return request.param


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    path.mkdir()
    return os.fsencode(path)


@pytest.fixture
def watch(backend):
    """Open a journal on a root (after the test has laid out its files)."""
    opened = []

    def opener(root, **kwargs):
        kwargs.setdefault("ignore_pids", ())
        j = open_journal(root, prefer=backend, **kwargs)
        assert j.backend == backend
        opened.append(j)
        return j

    yield opener
    for j in opened:
        j.close()


def wait_for(j, predicate, timeout=2.0):
    """Read events until ``predicate(events)`` holds or the deadline passes."""
    events = []
    deadline = time.monotonic() + timeout
    while True:
        events += j.read_events()
        if predicate(events):
            return events
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return events
        select.select([j], [], [], min(remaining, 0.05))


def wait_until_seen(j, *expected, timeout=2.0):
    events = wait_for(j, lambda evs: all(e in evs for e in expected), timeout)
    missing = [e for e in expected if e not in events]
    assert not missing, f"not reported: {missing}; got {events}"
    return events


def p(root, rel):
    return os.path.join(root, rel)


def write(path, data=b"x", mode="wb"):
    with open(path, mode) as f:
        f.write(data)


# --- content and metadata ------------------------------------------------------

def test_create_file(root, watch):
    j = watch(root)
    write(p(root, b"new"))
    wait_until_seen(j, changed(b"new"))


def test_write_and_append(root, watch):
    write(p(root, b"f"), b"one")
    j = watch(root)
    write(p(root, b"f"), b"two")
    wait_until_seen(j, changed(b"f"))
    write(p(root, b"f"), b"three", "ab")
    wait_until_seen(j, changed(b"f"))


def test_truncate(root, watch):
    write(p(root, b"f"), b"0123456789")
    j = watch(root)
    os.truncate(p(root, b"f"), 3)
    wait_until_seen(j, changed(b"f"))


def test_chmod(root, watch):
    write(p(root, b"f"))
    os.mkdir(p(root, b"d"))
    j = watch(root)
    os.chmod(p(root, b"f"), 0o600)
    os.chmod(p(root, b"d"), 0o700)
    wait_until_seen(j, changed(b"f"), changed(b"d"))


@pytest.mark.skipif(not IS_ROOT, reason="chown to another owner needs root")
def test_chown(root, watch):
    write(p(root, b"f"))
    j = watch(root)
    os.chown(p(root, b"f"), 1234, 1234)
    wait_until_seen(j, changed(b"f"))


def test_setxattr(root, watch):
    write(p(root, b"f"))
    j = watch(root)
    try:
        os.setxattr(p(root, b"f"), "user.osam", b"1")
    except OSError as exc:
        if exc.errno == errno.ENOTSUP:
            pytest.skip("user xattrs not supported on the tmp file system")
        raise
    wait_until_seen(j, changed(b"f"))


@pytest.mark.skipif(shutil.which("setfacl") is None, reason="setfacl not installed")
def test_setfacl(root, watch):
    write(p(root, b"f"))
    j = watch(root)
    result = subprocess.run(["setfacl", "-m", "u:1234:r", os.fsdecode(p(root, b"f"))],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"ACLs not supported here: {result.stderr!r}")
    wait_until_seen(j, changed(b"f"))


# --- namespace ---------------------------------------------------------------------

def test_unlink(root, watch):
    write(p(root, b"f"))
    j = watch(root)
    os.unlink(p(root, b"f"))
    wait_until_seen(j, deleted(b"f"))


def test_mkdir(root, watch):
    j = watch(root)
    os.mkdir(p(root, b"d"))
    wait_until_seen(j, changed(b"d"))


def test_rmdir(root, watch):
    os.mkdir(p(root, b"d"))
    j = watch(root)
    os.rmdir(p(root, b"d"))
    wait_until_seen(j, deleted(b"d"))


def test_rename_file_within_directory(root, watch):
    write(p(root, b"a"))
    j = watch(root)
    os.rename(p(root, b"a"), p(root, b"b"))
    events = wait_until_seen(j, renamed(b"a", b"b"))
    assert deleted(b"a") not in events


def test_rename_file_across_directories(root, watch):
    os.makedirs(p(root, b"x/y"))
    os.mkdir(p(root, b"z"))
    write(p(root, b"x/y/f"))
    j = watch(root)
    os.rename(p(root, b"x/y/f"), p(root, b"z/g"))
    wait_until_seen(j, renamed(b"x/y/f", b"z/g"))


def test_rename_directory_is_one_event_and_later_changes_use_the_new_path(root, watch):
    os.makedirs(p(root, b"old/sub"))
    write(p(root, b"old/sub/f"))
    j = watch(root)
    os.rename(p(root, b"old"), p(root, b"new"))
    events = wait_until_seen(j, renamed(b"old", b"new"))
    events += wait_for(j, lambda evs: False, timeout=0.1)
    assert events == [renamed(b"old", b"new")]
    write(p(root, b"new/sub/f"), b"more", "ab")
    write(p(root, b"new/sub/g"))
    events = wait_until_seen(j, changed(b"new/sub/f"), changed(b"new/sub/g"))
    assert not [e for e in events if e.path.startswith(b"old")]


def test_file_replaced_by_directory(root, watch):
    write(p(root, b"f"))
    j = watch(root)
    os.unlink(p(root, b"f"))
    os.mkdir(p(root, b"f"))
    write(p(root, b"f/inner"))
    events = wait_until_seen(j, deleted(b"f"), changed(b"f"), changed(b"f/inner"))
    assert events.index(deleted(b"f")) < len(events) - 1 - events[::-1].index(changed(b"f"))


def test_hard_link(root, watch):
    write(p(root, b"f"))
    j = watch(root)
    os.link(p(root, b"f"), p(root, b"h"))
    wait_until_seen(j, changed(b"h"))


def test_names_that_are_not_utf8(root, watch):
    os.mkdir(p(root, b"\xff"))
    j = watch(root)
    write(p(root, b"\xff/\xfe\x80"))
    wait_until_seen(j, changed(b"\xff/\xfe\x80"))
    os.rename(p(root, b"\xff/\xfe\x80"), p(root, b"\xff/\xc3"))
    wait_until_seen(j, renamed(b"\xff/\xfe\x80", b"\xff/\xc3"))


def test_moves_across_the_root_boundary(root, watch):
    outside = os.path.dirname(root)
    write(p(outside, b"incoming"))
    write(p(root, b"leaving"))
    j = watch(root)
    os.rename(p(outside, b"incoming"), p(root, b"incoming"))
    os.rename(p(root, b"leaving"), p(outside, b"leaving"))
    wait_until_seen(j, changed(b"incoming"), deleted(b"leaving"))


def test_change_outside_the_root_is_not_reported(root, watch):
    sibling = os.path.join(os.path.dirname(root), b"sibling")
    os.mkdir(sibling)
    j = watch(root)
    write(p(sibling, b"f"))
    os.chmod(p(sibling, b"f"), 0o600)
    write(p(root, b"marker"))
    events = wait_until_seen(j, changed(b"marker"))
    assert set(events) == {changed(b"marker")}


def _write_from_another_process(path):
    subprocess.run([sys.executable, "-c", f"open({path!r}, 'wb').write(b'm')"], check=True)


def test_changes_by_an_ignored_pid_are_not_reported(root, watch, backend):
    if backend == "inotify":
        pytest.skip("inotify cannot tell who made a change (see test_own_reads_are_silent)")
    write(p(root, b"f"))
    j = watch(root, ignore_pids=(os.getpid(),))
    write(p(root, b"f"), b"mine", "ab")
    os.chmod(p(root, b"f"), 0o600)
    os.mkdir(p(root, b"d"))
    os.rename(p(root, b"f"), p(root, b"d/f"))
    _write_from_another_process(p(root, b"marker"))
    events = wait_until_seen(j, changed(b"marker"))
    assert set(events) == {changed(b"marker")}


def test_own_reads_are_silent(root, watch):
    write(p(root, b"f"), b"data" * 1000)
    os.mkdir(p(root, b"d"))
    j = watch(root)
    with open(p(root, b"f"), "rb") as f:
        f.read()
    os.listdir(p(root, b"d"))
    os.stat(p(root, b"f"))
    write(p(root, b"marker"))
    events = wait_until_seen(j, changed(b"marker"))
    assert set(events) == {changed(b"marker")}


def test_readiness_via_select(root, watch):
    j = watch(root)
    assert select.select([j.fileno()], [], [], 0)[0] == []
    write(p(root, b"f"))
    assert select.select([j.fileno()], [], [], 2.0)[0] == [j.fileno()]
    assert changed(b"f") in j.read_events()
    assert select.select([j.fileno()], [], [], 0)[0] == []
    assert j.read_events() == []


def test_burst_of_5000_creates_is_complete(root, watch, backend):
    os.mkdir(p(root, b"burst"))
    j = watch(root)
    names = [b"burst/%05d" % i for i in range(5000)]
    for name in names:
        write(p(root, name))
    wanted = {changed(n) for n in names}
    start = time.perf_counter()
    events = wait_for(j, lambda evs: wanted <= set(evs) or any(e.kind == "overflow" for e in evs),
                      timeout=10)
    elapsed = time.perf_counter() - start
    assert not [e for e in events if e.kind == "overflow"]
    assert wanted <= set(events)
    print(f"\n[{backend}] drained {len(events)} events for 5000 creates in {elapsed * 1000:.1f} ms "
          f"({len(events) / elapsed:,.0f} events/s)")


# --- replay: applying the events to a copy of the namespace gives the tree ------

def walk(root):
    found = set()
    for top, dirs, files in os.walk(root):
        rel = os.path.relpath(top, root) if top != root else b""
        for name in dirs + files:
            found.add(os.path.join(rel, name) if rel else name)
    return found


def replay(root, replica, events):
    """Apply a batch the way the contract asks: namespace first, then look.

    Renames and deletions act on the replica and on the paths still to be
    looked at; 'changed' paths are looked at in the tree once the batch is in.
    """
    dirty = set()

    def below(paths, rel):
        return [q for q in paths if q == rel or q.startswith(rel + b"/")]

    def move(paths, old, new):
        for q in below(paths, new):
            paths.discard(q)
        for q in below(paths, old):
            paths.discard(q)
            paths.add(new + q[len(old):])

    for ev in events:
        if ev.kind == "overflow":
            dirty.update(walk(root) | replica)
        elif ev.kind == "deleted":
            for paths in (replica, dirty):
                for q in below(paths, ev.path):
                    paths.discard(q)
        elif ev.kind == "renamed" and (below(replica, ev.old_path) or below(dirty, ev.old_path)):
            move(replica, ev.old_path, ev.path)
            move(dirty, ev.old_path, ev.path)
        else:   # changed, or renamed from something we never had
            dirty.add(ev.path)
    for rel in sorted(dirty, key=lambda q: q.count(b"/")):
        full = p(root, rel)
        if os.path.lexists(full):
            replica.add(rel)
            if os.path.isdir(full) and not os.path.islink(full):
                replica.update(os.path.join(rel, q) for q in walk(full))
        else:
            for q in below(replica, rel):
                replica.discard(q)


def test_directory_games_before_the_journal_is_read_replay_to_the_tree(root, watch):
    os.mkdir(p(root, b"keep"))
    j = watch(root)
    replica = walk(root)
    os.mkdir(p(root, b"e"))
    write(p(root, b"e/x"))
    os.rename(p(root, b"e"), p(root, b"g"))       # renamed before anything was read
    write(p(root, b"g/y"))
    os.mkdir(p(root, b"e"))                       # the old name comes back
    write(p(root, b"e/z"))
    os.rename(p(root, b"keep"), p(root, b"g/keep"))
    write(p(root, b"g/keep/k"))
    write(p(root, b"f"))
    os.unlink(p(root, b"f"))
    write(p(root, b"marker"))
    events = wait_until_seen(j, changed(b"marker"))
    replay(root, replica, events)
    assert replica == walk(root)


# --- mounts, limits, fallback ------------------------------------------------------

@pytest.fixture
def tmpfs_below(root):
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mnt = p(root, b"mnt")
    os.mkdir(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "osam-journal-test", mnt]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", mnt], check=False)  # lazy: a journal may still hold it


def test_skip_dir_keeps_the_journal_off_a_mount(root, tmpfs_below, watch):
    asked = []
    j = watch(root, skip_dir=lambda rel: asked.append(rel) or rel == b"mnt")
    assert asked == [b"mnt"]
    write(p(tmpfs_below, b"f"))
    write(p(root, b"marker"))
    events = wait_until_seen(j, changed(b"marker"))
    assert set(events) == {changed(b"marker")}


def test_mount_below_the_root_is_watched(root, tmpfs_below, watch):
    os.mkdir(p(tmpfs_below, b"d"))
    j = watch(root)
    write(p(tmpfs_below, b"d/f"))
    wait_until_seen(j, changed(b"mnt/d/f"))


class _NoMoreWatches:
    """libc stand-in whose inotify_add_watch fails as at the watch limit."""

    def __init__(self, real):
        self._real = real

    def inotify_add_watch(self, *args):
        ctypes.set_errno(errno.ENOSPC)
        return -1

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_inotify_watch_limit_reports_overflow(root, caplog):
    j = open_journal(root, prefer="inotify")
    try:
        j._libc = _NoMoreWatches(j._libc)
        os.mkdir(p(root, b"d"))
        events = wait_for(j, lambda evs: ChangeEvent("overflow", b"") in evs)
        assert changed(b"d") in events and ChangeEvent("overflow", b"") in events
        assert "watch limit" in caplog.text
    finally:
        j.close()


def test_falls_back_to_inotify_when_fanotify_is_refused(root, monkeypatch):
    from osam.sentinel import journal_fanotify

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, "fanotify_init")

    monkeypatch.setattr(journal_fanotify, "FanotifyJournal", refuse)
    with open_journal(root) as j:
        assert j.backend == "inotify"
        write(p(root, b"f"))
        wait_until_seen(j, changed(b"f"))


def test_mountinfo_escapes_and_nesting(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_bytes(
        b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        b"2 1 0:5 / /srv/data/with\\040space rw - tmpfs t rw\n"
        b"3 1 0:6 / /srv/data/a rw - nfs h:/x rw\n"
        b"4 3 0:7 / /srv/data/a/b rw - tmpfs t rw\n"
        b"5 1 0:8 / /srv/database rw - tmpfs t rw\n")
    assert journal_mod.mount_points_below(b"/srv/data", str(info)) == [
        b"a", b"with space", b"a/b"]


# --- figures (printed, never asserted) ------------------------------------------------

def test_measure_event_latency(root, watch, backend):
    write(p(root, b"f"))
    j = watch(root)
    samples = []
    fd = os.open(p(root, b"f"), os.O_WRONLY | os.O_APPEND)
    try:
        for _ in range(200):
            start = time.perf_counter()
            os.write(fd, b"x")
            wait_until_seen(j, changed(b"f"))
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    print(f"\n[{backend}] write-to-event latency over 200 writes: median "
          f"{statistics.median(samples) * 1e6:.0f} us, p90 "
          f"{sorted(samples)[179] * 1e6:.0f} us")


# --- fanotify specifics ----------------------------------------------------------------

@pytest.fixture
def pairless_fanotify(monkeypatch):
    """fanotify as on Linux 5.9-5.16: names reported, but no FAN_RENAME."""
    if not IS_ROOT:
        pytest.skip("fanotify with FAN_MARK_FILESYSTEM needs CAP_SYS_ADMIN (run as root)")
    from osam.sentinel import journal_fanotify as jf

    def old_kernel_init(self):
        fd = self._libc.fanotify_init(jf.FAN_CLASS_NOTIF | jf.FAN_CLOEXEC | jf.FAN_NONBLOCK
                                      | jf.FAN_UNLIMITED_QUEUE | jf.FAN_REPORT_DFID_NAME,
                                      os.O_RDONLY)
        assert fd >= 0
        return fd, False

    monkeypatch.setattr(jf.FanotifyJournal, "_init_group", old_kernel_init)
    return jf.FanotifyJournal


def test_fanotify_without_rename_events_reports_delete_and_change(root, pairless_fanotify):
    os.mkdir(p(root, b"d"))
    write(p(root, b"d/f"))
    write(p(root, b"a"))
    with pairless_fanotify(root) as j:
        replica = walk(root)
        os.rename(p(root, b"a"), p(root, b"b"))
        os.rename(p(root, b"d"), p(root, b"e"))
        write(p(root, b"e/g"))
        events = wait_until_seen(j, deleted(b"a"), changed(b"b"), deleted(b"d"), changed(b"e"),
                                 changed(b"e/g"))
        assert not [e for e in events if e.kind == "renamed"]
        replay(root, replica, events)
        assert replica == walk(root)


def test_paths_resolved_late_are_revisited_after_a_directory_rename(root):
    """A directory moved right after a batch was resolved: its paths come again."""
    if not IS_ROOT:
        pytest.skip("fanotify with FAN_MARK_FILESYSTEM needs CAP_SYS_ADMIN (run as root)")
    from osam.sentinel.journal_fanotify import FanotifyJournal

    with FanotifyJournal(root) as j:
        j._unsettled = [b"new/x", b"newer", b"other"]
        groups = [[changed(b"a")], [renamed(b"old", b"new")], [changed(b"b")]]
        assert j._revisit_moved(groups) == [
            changed(b"a"), renamed(b"old", b"new"), changed(b"new/x"), changed(b"b")]
