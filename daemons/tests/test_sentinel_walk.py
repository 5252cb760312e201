"""The sentinel's tree walk and per-entry metadata, on real trees in temporary directories."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess

import pytest

from osam.common.fsentry import FsEntry
from osam.sentinel import walk as walk_module
from osam.sentinel.fsmeta import HardLinkTracker, stat_entry
from osam.sentinel.walk import (
    LocalMountFilter, local_mount_filter, parse_mountinfo, unescape_mountinfo, walk, walk_key,
)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, mount)")
MTIME_NS = 1_234_567_890_123_456_789
NON_UTF8 = b"caf\xe9"


def _write(path: bytes, data: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture
def tree(tmp_path):
    """A tree holding every kind of entry the sentinel must describe."""
    root = os.fsencode(tmp_path / "root")
    j = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    os.mkdir(root)
    _write(j(b"empty"))
    with open(j(b"sparse"), "wb") as f:
        f.truncate(8 << 20)
        f.seek(3 << 20)
        f.write(b"x" * 4096)
    os.makedirs(j(b"dir", b"sub"))
    _write(j(b"dir", b"a"), b"alpha")
    _write(j(b"dir", b"sub", b"deep"), b"deep")
    _write(j(b"dir-"), b"sorts after dir, before dir/ contents end")
    os.symlink(b"dir", j(b"link"))
    os.symlink(b"/nowhere/at/all", j(b"dangling"))
    _write(j(b"hard1"), b"linked")
    os.link(j(b"hard1"), j(b"dir", b"hard2"))
    os.mkfifo(j(b"fifo"))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(j(b"sock"))
    sock.close()
    _write(j(b"setuid"), b"#!/bin/sh\n")
    os.chmod(j(b"setuid"), 0o4755)
    os.mkdir(j(b"setgid"))
    os.chmod(j(b"setgid"), 0o2775)
    os.mkdir(j(b"sticky"))
    os.chmod(j(b"sticky"), 0o1777)
    _write(j(NON_UTF8), b"latin-1 name")
    _write(j(b"cafz"), b"sorts before caf\xe9 as bytes")
    _write(j(b"xattr"), b"x")
    os.setxattr(j(b"xattr"), b"user.b", b"2")
    os.setxattr(j(b"xattr"), b"user.a", b"1")
    _write(j(b"acl"), b"acl")
    subprocess.run(["setfacl", "-m", "u:nobody:r", j(b"acl")], check=True)
    os.mkdir(j(b"acldir"))
    subprocess.run(["setfacl", "-d", "-m", "u:nobody:rx", j(b"acldir")], check=True)
    if IS_ROOT:
        os.mknod(j(b"null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(j(b"loop"), 0o660 | stat.S_IFBLK, os.makedev(7, 0))
        os.chmod(j(b"null"), 0o666)  # mknod's mode passes through the umask
    os.utime(j(b"dir", b"a"), ns=(MTIME_NS, MTIME_NS))
    return root


def entries(root, **kwargs):
    return {entry.path: entry for entry, _ in walk(root, **kwargs)}


def test_every_kind_is_described(tree):
    got = entries(tree)
    kinds = {path: e.kind for path, e in got.items()}
    assert kinds[b""] == "d"
    assert kinds[b"empty"] == kinds[b"sparse"] == kinds[b"hard1"] == kinds[NON_UTF8] == "f"
    assert kinds[b"dir"] == kinds[b"dir/sub"] == "d"
    assert kinds[b"link"] == kinds[b"dangling"] == "l"
    assert kinds[b"fifo"] == "p"
    assert kinds[b"sock"] == "s"
    assert got[b"sparse"].size == 8 << 20
    assert got[b"empty"].size == 0
    assert got[b"link"].target == b"dir"
    assert got[b"dangling"].target == b"/nowhere/at/all"
    assert got[b"setuid"].mode == 0o4755
    assert got[b"setgid"].mode == 0o2775
    assert got[b"sticky"].mode == 0o1777
    assert got[b"dir/a"].mtime_ns == MTIME_NS
    assert got[b"dir"].size == 0 and got[b"link"].size == 0
    assert got[b"xattr"].xattrs == [(b"user.a", b"1"), (b"user.b", b"2")]
    st = os.lstat(os.path.join(tree, b"dir/a"))
    assert (got[b"dir/a"].uid, got[b"dir/a"].gid) == (st.st_uid, st.st_gid)


def test_acls_are_carried_as_xattrs(tree):
    got = entries(tree)
    names = [name for name, _ in got[b"acl"].xattrs]
    assert b"system.posix_acl_access" in names
    assert b"system.posix_acl_default" in [name for name, _ in got[b"acldir"].xattrs]
    value = dict(got[b"acl"].xattrs)[b"system.posix_acl_access"]
    assert value == os.getxattr(os.path.join(tree, b"acl"), "system.posix_acl_access")


@needs_root
def test_device_nodes(tree):
    got = entries(tree)
    assert got[b"null"].kind == "c" and got[b"null"].rdev == os.makedev(1, 3)
    assert got[b"loop"].kind == "b" and got[b"loop"].rdev == os.makedev(7, 0)
    assert got[b"null"].mode == 0o666


def test_symlinks_are_never_followed(tree):
    got = entries(tree)
    assert not [p for p in got if p.startswith(b"link/") or p.startswith(b"dangling/")]
    dir_fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        entry, st = stat_entry(dir_fd, b"link", b"link")
    finally:
        os.close(dir_fd)
    assert stat.S_ISLNK(st.st_mode) and entry.kind == "l"


def test_order_is_preorder_with_names_sorted_as_bytes(tree):
    paths = [entry.path for entry, _ in walk(tree)]
    assert paths[0] == b""
    assert paths == sorted(paths, key=walk_key)
    assert len(paths) == len(set(paths))
    # A directory comes right before its own contents, "dir-" only after all of "dir/".
    assert paths.index(b"dir") < paths.index(b"dir/a") < paths.index(b"dir/sub/deep") \
        < paths.index(b"dir-")
    assert paths.index(b"cafz") < paths.index(NON_UTF8)  # 0xe9 sorts after ASCII


def test_resumed_walk_yields_exactly_the_tail(tree):
    full = [entry.path for entry, _ in walk(tree)]
    for i, cursor in enumerate(full):
        resumed = [entry.path for entry, _ in walk(tree, start_after=cursor)]
        assert resumed == full[i + 1:], cursor


@pytest.mark.parametrize("cursor", [b"dir/0gone", b"dir/sub/zz", b"dir/zz", b"zzz", b"a",
                                    b"dir/sub/deep/below-a-file"])
def test_resume_after_a_cursor_that_no_longer_exists(tree, cursor):
    full = [entry.path for entry, _ in walk(tree)]
    expected = [p for p in full if walk_key(p) > walk_key(cursor)]
    assert [entry.path for entry, _ in walk(tree, start_after=cursor)] == expected


def test_resume_does_not_open_subtrees_before_the_cursor(tree, monkeypatch):
    opened = []
    real_open = os.open

    def recording_open(path, flags, *args, **kwargs):
        opened.append(os.fsencode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(walk_module.os, "open", recording_open)
    list(walk(tree, start_after=b"hard1"))
    assert b"dir" not in opened and b"sub" not in opened and b"acldir" not in opened
    assert b"setgid" in opened  # after the cursor


def test_skip_prunes_a_whole_subtree(tree):
    got = entries(tree, skip=lambda rel: rel == b"dir")
    assert b"dir" not in got and not [p for p in got if p.startswith(b"dir/")]
    assert b"dir-" in got


def test_entries_vanishing_mid_walk_are_skipped(tree):
    def delete_later_siblings(relpath):
        if relpath == b"dir/a":
            os.unlink(os.path.join(tree, b"dir/hard2"))
            shutil.rmtree(os.path.join(tree, b"dir/sub"))
        return False

    got = entries(tree, skip=delete_later_siblings)
    assert b"dir/a" in got and b"dir/hard2" not in got and b"dir/sub" not in got


def test_swapping_a_directory_for_a_symlink_cannot_escape_the_root(tree, tmp_path):
    outside = os.fsencode(tmp_path / "outside")
    os.mkdir(outside)
    _write(os.path.join(outside, b"secret"))

    def swap(relpath):
        if relpath == b"dir/a":  # dir is open; dir/sub not yet
            os.rename(os.path.join(tree, b"dir/sub"), os.path.join(outside, b"sub"))
            os.symlink(outside, os.path.join(tree, b"dir/sub"))
        return False

    got = entries(tree, skip=swap)
    assert got[b"dir/sub"].kind == "l"
    assert not [p for p in got if p.startswith(b"dir/sub/")]


def test_renaming_the_current_directory_keeps_its_relpaths(tree, tmp_path):
    def move_dir_away(relpath):
        if relpath == b"dir/a":
            os.rename(os.path.join(tree, b"dir"), os.fsencode(tmp_path / "moved"))
        return False

    got = entries(tree, skip=move_dir_away)
    # The open fd still lists the moved directory's contents, under the walk's own relpaths.
    assert b"dir/sub/deep" in got
    assert all(not p.startswith(b"moved") for p in got)


def test_stopping_early_closes_every_fd(tree):
    before = len(os.listdir("/proc/self/fd"))
    it = walk(tree)
    for entry, _ in it:
        if entry.path == b"dir/sub/deep":
            break
    it.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_permission_errors_go_to_on_error(tree, monkeypatch):
    real_listdir = os.listdir
    sub_fds = set()
    real_open = os.open

    def tracking_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if os.fsencode(path) == b"sub":
            sub_fds.add(fd)
        return fd

    def failing_listdir(target):
        if target in sub_fds:
            raise PermissionError(13, "Permission denied")
        return real_listdir(target)

    monkeypatch.setattr(walk_module.os, "open", tracking_open)
    monkeypatch.setattr(walk_module.os, "listdir", failing_listdir)
    with pytest.raises(PermissionError):
        list(walk(tree))
    errors = []
    got = entries(tree, on_error=lambda rel, exc: errors.append(rel))
    assert errors == [b"dir/sub"] and b"dir/sub" in got and b"dir/sub/deep" not in got


def test_entry_of_the_root_itself(tree):
    os.setxattr(tree, b"user.root", b"r")
    first, st = next(iter(walk(tree)))
    assert isinstance(first, FsEntry) and first.path == b"" and first.kind == "d"
    assert st.st_ino == os.stat(tree).st_ino
    assert first.xattrs == [(b"user.root", b"r")]


def test_without_proc_the_walk_fails_loudly(tree, monkeypatch):
    # Without /proc every xattr lookup says ENOENT; that must not read as "entry vanished".
    from osam.sentinel import fsmeta
    monkeypatch.setattr(fsmeta, "PROC_FD", b"/nonexistent/proc/self/fd")
    with pytest.raises(RuntimeError, match="is /proc mounted"):
        list(walk(tree))


# ---------------------------------------------------------------- hard links

def test_hard_link_tracker_returns_the_first_name(tree):
    tracker = HardLinkTracker()
    links = {}
    for entry, st in walk(tree):
        first = tracker.first_path(st, entry.path)
        if first is not None:
            links[entry.path] = first
    # "dir/hard2" comes first in walk order, so "hard1" is the later name.
    assert links == {b"hard1": b"dir/hard2"}
    assert len(tracker) == 1  # directories (nlink > 1 too) are never tracked


# ---------------------------------------------------------------- mounts

MOUNTINFO_SAMPLE = b"""\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
22 27 0:21 / /proc rw,relatime - proc proc rw
40 27 0:40 / /srv/with\\040space rw,relatime shared:5 master:3 - nfs4 srv:/export rw
41 27 0:41 / /srv/ram rw - tmpfs tmpfs rw
42 41 8:1 / /srv/ram rw - xfs /dev/sdb1 rw
43 27 0:43 / /home/u/remote rw - fuse.sshfs u@h: rw
44 27 8:2 / /data rw - ext4 /dev/sda2 rw
45 44 0:45 / /data/cache rw - tmpfs tmpfs rw
46 27 0:46 / /srv/back\\134slash rw - cifs //h/s rw
"""


def test_mountinfo_octal_escapes_and_optional_fields():
    mounts = parse_mountinfo(MOUNTINFO_SAMPLE)
    nfs = mounts[2]
    assert nfs.mount_point == b"/srv/with space" and nfs.fstype == "nfs4"
    assert nfs.source == b"srv:/export" and nfs.dev == "0:40"
    assert mounts[-1].mount_point == b"/srv/back\\slash"
    assert unescape_mountinfo(b"a\\011b\\012c") == b"a\tb\nc"


def _filter_for(tmp_path, root):
    path = tmp_path / "mountinfo"
    path.write_bytes(MOUNTINFO_SAMPLE)
    return LocalMountFilter(root, mountinfo=str(path))


def test_local_mount_filter_rules(tmp_path):
    mounts = _filter_for(tmp_path, b"/")
    assert mounts.foreign == {b"proc", b"srv/with space", b"home/u/remote", b"data/cache",
                              b"srv/back\\slash"}
    assert mounts(b"proc") and not mounts(b"proc/1/status")   # mount point kept, empty
    assert mounts(b"srv/ram/file")           # xfs stacked on the tmpfs: what is visible
    assert mounts(b"data/file") and not mounts(b"data/cache/x/y")
    assert mounts(b"usr/bin/env") and mounts(b"")


def test_this_machines_proc_is_a_foreign_mount():
    mounts = local_mount_filter("/")
    assert mounts.is_foreign_mount(b"proc") and not mounts(b"proc/self/status")
    assert not mounts.is_foreign_mount(b"usr")


def test_local_mount_filter_relative_to_another_root(tmp_path):
    mounts = _filter_for(tmp_path, b"/data")
    assert mounts.foreign == {b"cache"}
    assert not mounts(b"cache/x") and mounts(b"x")


def test_a_filter_rebased_onto_a_subtree(tmp_path):
    mounts = _filter_for(tmp_path, b"/").rebased(b"/srv")
    assert mounts.root == b"/srv"
    assert mounts.foreign == {b"with space", b"back\\slash"}
    assert not mounts(b"with space/x") and mounts(b"ram/x")


@pytest.fixture
def mounted_tmpfs(tree):
    if not IS_ROOT:
        pytest.skip("needs root to mount a tmpfs")
    point = os.path.join(tree, b"dir", b"ram")
    os.mkdir(point)
    subprocess.run(["mount", "-t", "tmpfs", "osam-test", point], check=True)
    try:
        _write(os.path.join(point, b"inside"), b"not replicated")
        yield point
    finally:
        subprocess.run(["umount", "-l", point], check=False)


def test_tmpfs_inside_the_tree_is_not_descended(tree, mounted_tmpfs):
    got = entries(tree)
    assert got[b"dir/ram"].kind == "d"
    assert b"dir/ram/inside" not in got
    assert local_mount_filter(tree).is_foreign_mount(b"dir/ram")
    assert b"dir/sub/deep" in got


def test_walking_a_subtree_with_the_whole_trees_filter(tree, mounted_tmpfs):
    whole = local_mount_filter(tree)
    got = entries(os.path.join(tree, b"dir"), mounts=whole)
    assert got[b"ram"].kind == "d" and b"ram/inside" not in got and b"sub/deep" in got


def test_tmpfs_mounted_after_the_walk_started_is_noticed(tree):
    if not IS_ROOT:
        pytest.skip("needs root to mount a tmpfs")
    stale = local_mount_filter(tree)  # read before the mount exists
    point = os.path.join(tree, b"late")
    os.mkdir(point)
    subprocess.run(["mount", "-t", "tmpfs", "osam-test", point], check=True)
    try:
        _write(os.path.join(point, b"inside"))
        got = entries(tree, mounts=stale)
        assert b"late" in got and b"late/inside" not in got
    finally:
        subprocess.run(["umount", "-l", point], check=False)


def test_walks_a_root_given_as_str(tree):
    assert entries(os.fsdecode(tree)).keys() == entries(tree).keys()


def test_walk_of_a_real_system_directory_is_ordered():
    paths = [entry.path for entry, _ in walk(b"/etc", on_error=lambda rel, exc: None)]
    assert paths == sorted(paths, key=walk_key)


def test_an_empty_root_yields_just_itself(tmp_path):
    assert [e.path for e, _ in walk(str(tmp_path))] == [b""]
