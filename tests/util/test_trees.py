"""The tree helpers the end-to-end tests rely on: the rich tree holds what it promises,
a faithful copy compares identical, and the comparer reports each kind of difference."""
from __future__ import annotations

import contextlib
import os
import stat
import subprocess

import pytest

from tests.util import NotOnDisk, is_root, new_disk_tmpdir
from tests.util.trees import (
    EXCLUDED_DIR, EXCLUSION_LOOKALIKES, GID_A, NOBODY, P, SPARSE_EXTENTS, SPARSE_SIZE, UID_A,
    clone_tree, data_ranges, diff_trees, format_acl, make_rich_tree, mutate_rich_tree,
    remove_tree, snapshot,
)

need_root = pytest.mark.need_root


def j(root, rel: bytes) -> bytes:
    return os.path.join(os.fsencode(root), rel)


@contextlib.contextmanager
def times_kept(*paths: bytes):
    """Restore atime/mtime of ``paths`` (not following symlinks) after the block, so a
    modification shows up only as the attribute the test is about."""
    saved = []
    for path in paths:
        st = os.lstat(path)
        saved.append((path, st.st_atime_ns, st.st_mtime_ns))
    yield
    for path, atime, mtime in saved:
        if os.path.lexists(path):
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)


@contextlib.contextmanager
def edit(root, rel: bytes):
    """Edit ``rel`` inside ``root`` keeping its own and its parent's timestamps."""
    path = j(root, rel)
    paths = [os.path.dirname(path)] + ([path] if os.path.lexists(path) else [])
    with times_kept(*paths):
        yield path


def assert_reported(diffs, rel: bytes, keyword: str, *, scope: bytes = None) -> None:
    """A difference naming ``rel`` and ``keyword`` is reported, and nothing outside
    ``scope`` (default: ``rel`` itself)."""
    name = os.fsdecode(rel)
    assert diffs, f"comparer missed a change of {keyword} on {name}"
    assert any(name in d and keyword in d for d in diffs), diffs
    scope_name = os.fsdecode(rel if scope is None else scope)
    assert all(scope_name in d for d in diffs), f"unrelated differences reported: {diffs}"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pristine():
    """(source dir, manifest, snapshot) shared by the module: tests must not change it."""
    try:
        base = new_disk_tmpdir("trees-pristine")
    except NotOnDisk as e:
        pytest.skip(str(e))
    try:
        src = base / "src"
        manifest = make_rich_tree(src)
        yield src, manifest, snapshot(src)
    finally:
        remove_tree(base)


@pytest.fixture
def rich(disk_tmp_path):
    """A fresh rich tree the test may change: (source dir, manifest)."""
    src = disk_tmp_path / "src"
    manifest = make_rich_tree(src)
    return src, manifest


@pytest.fixture
def pair(pristine, disk_tmp_path):
    """(source snapshot, source dir, copy dir): a copy verified identical, free to change."""
    src, _, before = pristine
    dst = disk_tmp_path / "copy"
    clone_tree(src, dst)
    assert diff_trees(before, dst) == []
    return before, src, dst


# ----------------------------------------------------------------- the rich tree itself

def test_rich_tree_holds_every_kind(pristine):
    src, manifest, snap = pristine
    kinds = {e.kind for e in snap.values()}
    assert {"f", "d", "l", "p"} <= kinds
    if is_root():
        assert {"c", "b"} <= kinds
        assert manifest["skipped"] == []
        assert snap[P["chardev"]].rdev == (1, 3)
        assert snap[P["blockdev"]].rdev == (7, 0)
    assert manifest["counts"] == {k: sum(e.kind == k for e in snap.values()) for k in kinds}

    # regular files: empty, small, multi-MiB
    assert snap[P["empty"]].size == 0
    assert 2 * 1024 * 1024 < snap[P["big"]].size < 4 * 1024 * 1024
    # sparse file: 64 MiB apparent, 3 data extents, holes around them
    sparse = snap[P["sparse"]]
    assert sparse.size == SPARSE_SIZE == manifest["sparse"]["size"]
    assert len(sparse.data) == 3
    assert list(sparse.data) == manifest["sparse"]["data"]
    assert [s for s, _ in sparse.data] == [off for off, _ in SPARSE_EXTENTS]
    assert os.stat(j(src, P["sparse"])).st_blocks * 512 < 4 * 1024 * 1024

    # symlinks are recorded, never followed
    assert snap[P["link_rel"]].target == b"../files/small.txt"
    assert snap[P["link_abs"]].target.startswith(b"/")
    assert not os.path.exists(j(src, P["link_dangling"]))
    assert snap[P["link_dir"]].kind == "l"
    assert not any(rel.startswith(P["link_dir"] + b"/") for rel in snap)

    # hard links: 3 names, 2 directories, one group
    group = tuple(sorted(manifest["hardlinks"][0]))
    assert snap[P["hl1"]].links == snap[P["hl3"]].links == group
    assert len({os.path.dirname(r) for r in group}) == 2

    # modes
    assert snap[P["setuid"]].mode & stat.S_ISUID
    assert snap[P["setgid"]].mode & stat.S_ISGID
    assert snap[P["setgid_dir"]].mode & stat.S_ISGID
    assert snap[P["sticky_dir"]].mode & stat.S_ISVTX
    assert snap[P["ro_dir"]].mode == 0o555

    # nanosecond mtimes everywhere, the edges included
    for rel in (P["small"], P["link_rel"], P["empty_dir"], P["deep"], b"dirs/a/b/c"):
        assert snap[rel].mtime_ns % 1000 != 0, rel
    assert snap[P["time_pre_epoch"]].mtime_ns < 0
    # every time was set explicitly, directories after their contents (none is "now")
    recent = [os.fsdecode(rel) for rel, e in snap.items()
              if e.mtime_ns > 1_710_000_000 * 10**9 and rel != P["time_future"]]
    assert recent == []
    assert snap[P["time_future"]].mtime_ns > 4_000_000_000 * 10**9

    # xattrs and ACLs
    x = dict(snap[P["xattr_file"]].xattrs)
    assert x["user.osam.binary"] == bytes(range(256))
    assert x["user.osam.empty"] == b""
    assert "user.osam.dir" in dict(snap[P["xattr_dir"]].xattrs)
    acl_dir = dict(snap[P["acl_dir"]].xattrs)
    assert f"user:{UID_A}:rwx" in format_acl(acl_dir["system.posix_acl_access"])
    assert f"group:{GID_A}:r-x" in format_acl(acl_dir["system.posix_acl_default"])
    assert "system.posix_acl_access" in dict(snap[P["acl_inherited"]].xattrs)

    # names
    for role in ("name_latin1", "name_ff_fe", "name_space", "name_newline", "name_dash",
                 "name_long"):
        assert P[role] in snap, role
    with pytest.raises(UnicodeDecodeError):
        P["name_latin1"].decode()

    # exclusion
    assert any(rel.startswith(EXCLUDED_DIR + b"/") for rel in snap)
    assert all(rel in snap for rel in EXCLUSION_LOOKALIKES)


@need_root
def test_rich_tree_root_only_parts(pristine):
    _, _, snap = pristine
    assert (snap[P["own_a"]].uid, snap[P["own_a"]].gid) == (UID_A, GID_A)
    assert snap[P["own_nobody"]].uid == NOBODY
    assert snap[P["own_dir"]].uid == UID_A
    assert snap[P["own_link"]].uid == UID_A and snap[P["own_link"]].kind == "l"
    # chown before chmod: setuid survived the foreign owner
    assert snap[P["setuid"]].uid == UID_A and snap[P["setuid"]].mode == 0o4755
    assert snap[P["no_perms"]].mode == 0
    assert "trusted.osamtest" in dict(snap[P["trusted_xattr"]].xattrs)
    assert "trusted.osamtest" in dict(snap[P["xattr_link"]].xattrs)


def test_data_ranges_match_extents(pristine):
    src, _, _ = pristine
    assert data_ranges(j(src, P["sparse"])) == [(off, off + n) for off, n in SPARSE_EXTENTS]
    assert data_ranges(j(src, P["empty"])) == []
    size = os.path.getsize(j(src, P["big"]))
    assert data_ranges(j(src, P["big"])) == [(0, size)]


def test_make_rich_tree_is_deterministic(disk_tmp_path):
    a = make_rich_tree(disk_tmp_path / "a", seed=7)
    b = make_rich_tree(disk_tmp_path / "b", seed=7)
    assert diff_trees(disk_tmp_path / "a", disk_tmp_path / "b") == []
    assert a["counts"] == b["counts"]


# ---------------------------------------------------------------- faithful copies

@pytest.mark.parametrize("tool", ["cp", "rsync"])
def test_copy_is_identical(pristine, disk_tmp_path, tool):
    src, _, _ = pristine
    dst = disk_tmp_path / tool
    clone_tree(src, dst, tool=tool)
    assert diff_trees(src, dst) == []
    assert diff_trees(snapshot(src), snapshot(dst)) == []


def test_root_directory_mtime_is_not_compared(pair):
    before, _, dst = pair
    os.utime(dst, ns=(1, 1))
    assert diff_trees(before, dst) == []


def test_snapshot_include_root(pair):
    _, src, dst = pair
    os.utime(dst, ns=(1, 1))
    sa, sb = snapshot(src, include_root=True), snapshot(dst, include_root=True)
    assert sa[b""].kind == "d" and sa[b""].mtime_ns is None
    assert diff_trees(sa, sb) == []
    os.chmod(dst, 0o711)
    assert_reported(diff_trees(sa, snapshot(dst, include_root=True)), b"", "mode")


# ------------------------------------------------------- one difference at a time

def _content_same_size(dst):
    with edit(dst, P["big"]) as path, open(path, "r+b") as f:
        f.seek(2 * 1024 * 1024 + 5)
        old = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([old[0] ^ 0xFF]))
    return P["big"], "content differs"


def _content_appended(dst):
    with edit(dst, P["small"]) as path, open(path, "ab") as f:
        f.write(b"!")
    return P["small"], "size"


def _hole_filled_with_zeros(dst):
    # same bytes, but the replica has data where the source has a hole
    with edit(dst, P["sparse"]) as path:
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, b"\0" * 65536, 8 * 1024 * 1024)
        os.close(fd)
    return P["sparse"], "holes differ"


def _made_dense(dst):
    with edit(dst, P["sparse"]) as path:
        tmp = path + b".dense"
        subprocess.run([b"cp", b"--preserve=all", b"--sparse=never", path, tmp], check=True)
        os.rename(tmp, path)
    return P["sparse"], "holes differ"


def _mode(rel, new):
    def change(dst):
        with edit(dst, rel) as path:
            os.chmod(path, new)
        return rel, "mode"
    change.__name__ = f"mode_{os.fsdecode(os.path.basename(rel))}_{new:04o}"
    return change


def _owner(rel, uid, gid, keyword):
    def change(dst):
        with edit(dst, rel) as path:
            os.chown(path, uid, gid, follow_symlinks=False)
        return rel, keyword
    return change


def _mtime(rel, delta_ns=1, truncate_to_us=False):
    def change(dst):
        path = j(dst, rel)
        st = os.lstat(path)
        new = st.st_mtime_ns // 1000 * 1000 if truncate_to_us else st.st_mtime_ns + delta_ns
        os.utime(path, ns=(st.st_atime_ns, new), follow_symlinks=False)
        return rel, "mtime_ns"
    return change


def _xattr_set(rel, name, value):
    def change(dst):
        os.setxattr(j(dst, rel), name, value, follow_symlinks=False)
        return rel, name
    return change


def _xattr_removed(rel, name):
    def change(dst):
        if name not in os.listxattr(j(dst, rel), follow_symlinks=False):
            pytest.skip(f"{name} not present on {os.fsdecode(rel)} (refused by this kernel)")
        os.removexattr(j(dst, rel), name, follow_symlinks=False)
        return rel, name
    return change


def _acl(rel, *args, keyword="system.posix_acl_access"):
    def change(dst):
        subprocess.run(["setfacl", *args, "--", j(dst, rel)], check=True)
        return rel, keyword
    return change


def _symlink_target(dst):
    rel = P["link_rel"]
    with edit(dst, rel) as path:
        st = os.lstat(path)
        os.unlink(path)
        os.symlink(b"../files/empty", path)
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    return rel, "symlink target"


def _device_number(dst):
    rel = P["chardev"]
    with edit(dst, rel) as path:
        st = os.lstat(path)
        os.unlink(path)
        os.mknod(path, st.st_mode, os.makedev(1, 5))
    return rel, "device 1:3 != 1:5"


def _fifo_to_file(dst):
    rel = P["fifo"]
    with edit(dst, rel) as path:
        st = os.lstat(path)
        os.unlink(path)
        with open(path, "wb"):
            pass
        os.chmod(path, stat.S_IMODE(st.st_mode))
    return rel, "type fifo != regular file"


def _missing(dst):
    with edit(dst, P["deep"]) as path:
        os.unlink(path)
    return P["deep"], "only in a"


def _extra(dst):
    rel = P["empty_dir"] + b"/surprise"
    with edit(dst, rel) as path:
        os.mkfifo(path)
    return rel, "only in b"


def _renamed_non_utf8(dst):
    with edit(dst, P["name_ff_fe"]) as path:
        os.rename(path, path[:-1] + b"\xfd")
    return P["name_ff_fe"], "only in a", P["name_ff_fe"][:-1]


CASES = [
    pytest.param(_content_same_size, id="content-same-size-same-mtime"),
    pytest.param(_content_appended, id="content-size"),
    pytest.param(_hole_filled_with_zeros, id="hole-filled-with-zeros"),
    pytest.param(_made_dense, id="sparse-made-dense"),
    pytest.param(_mode(P["setuid"], 0o755), id="mode-setuid-dropped"),
    pytest.param(_mode(P["setgid"], 0o751), id="mode-setgid-dropped"),
    pytest.param(_mode(P["sticky_dir"], 0o777), id="mode-sticky-dropped"),
    pytest.param(_mode(P["setgid_dir"], 0o775), id="mode-setgid-dir-dropped"),
    pytest.param(_mode(P["readonly"], 0o440), id="mode-permission-bits"),
    pytest.param(_mode(P["ro_dir"], 0o755), id="mode-directory"),
    pytest.param(_owner(P["own_a"], 0, -1, "uid"), id="uid", marks=need_root),
    pytest.param(_owner(P["own_a"], -1, 0, "gid"), id="gid", marks=need_root),
    pytest.param(_owner(P["own_dir"], NOBODY, -1, "uid"), id="uid-directory", marks=need_root),
    pytest.param(_owner(P["own_link"], 0, -1, "uid"), id="uid-symlink", marks=need_root),
    pytest.param(_mtime(P["small"]), id="mtime-file-1ns"),
    pytest.param(_mtime(P["small"], truncate_to_us=True), id="mtime-file-truncated-to-us"),
    pytest.param(_mtime(P["empty_dir"]), id="mtime-directory-1ns"),
    pytest.param(_mtime(b"dirs/a/b/c"), id="mtime-inner-directory-1ns"),
    pytest.param(_mtime(P["link_rel"]), id="mtime-symlink-1ns"),
    pytest.param(_mtime(P["fifo"], delta_ns=-1), id="mtime-fifo-1ns"),
    pytest.param(_mtime(P["time_pre_epoch"], delta_ns=10**9), id="mtime-pre-epoch"),
    pytest.param(_xattr_set(P["xattr_file"], "user.osam.text", b"hellO"), id="xattr-changed"),
    pytest.param(_xattr_set(P["xattr_file"], "user.osam.binary", bytes(range(255))),
                 id="xattr-binary-shortened"),
    pytest.param(_xattr_removed(P["xattr_file"], "user.osam.empty"), id="xattr-empty-removed"),
    pytest.param(_xattr_set(P["small"], "user.osam.new", b""), id="xattr-added"),
    pytest.param(_xattr_set(P["xattr_dir"], "user.osam.dir", b"x"), id="xattr-directory"),
    pytest.param(_xattr_removed(P["security_xattr"], "security.osamtest"), id="xattr-security"),
    pytest.param(_xattr_removed(P["trusted_xattr"], "trusted.osamtest"), id="xattr-trusted",
                 marks=need_root),
    pytest.param(_xattr_removed(P["xattr_link"], "trusted.osamtest"), id="xattr-on-symlink",
                 marks=need_root),
    pytest.param(_acl(P["acl_file"], "-m", f"u:{UID_A}:r--,m::rw-"), id="acl-access-entry"),
    pytest.param(_acl(P["acl_dir"], "-d", "-m", f"g:{GID_A}:rwx",
                      keyword="system.posix_acl_default"), id="acl-default"),
    pytest.param(_acl(P["acl_dir"], "-k", keyword="system.posix_acl_default"),
                 id="acl-default-removed"),
    pytest.param(_symlink_target, id="symlink-target"),
    pytest.param(_device_number, id="device-number", marks=need_root),
    pytest.param(_fifo_to_file, id="type"),
    pytest.param(_missing, id="missing-entry"),
    pytest.param(_extra, id="extra-entry"),
    pytest.param(_renamed_non_utf8, id="non-utf8-name"),
]


@pytest.mark.parametrize("change", CASES)
def test_comparer_reports(pair, change):
    before, _, dst = pair
    rel, keyword, *scope = change(dst)
    diffs = diff_trees(before, dst)
    assert_reported(diffs, rel, keyword, scope=scope[0] if scope else None)
    # the same result when both sides are read from disk
    assert diff_trees(before, snapshot(dst)) == diffs


def test_comparer_reports_acl_decoded(pair):
    before, _, dst = pair
    _acl(P["acl_file"], "-m", f"u:{UID_A}:r--,m::rw-")(dst)
    (msg,) = [d for d in diff_trees(before, dst) if "posix_acl_access" in d]
    assert f"user:{UID_A}:rw-" in msg and f"user:{UID_A}:r--" in msg


def test_hole_difference_is_not_a_content_difference(pair):
    before, _, dst = pair
    _hole_filled_with_zeros(dst)
    diffs = diff_trees(before, dst)
    assert len(diffs) == 1 and "holes differ" in diffs[0], diffs


def test_content_difference_found_without_size_or_mtime_change(pair):
    before, _, dst = pair
    _content_same_size(dst)
    diffs = diff_trees(before, dst)
    assert diffs == [d for d in diffs if "content differs" in d] and len(diffs) == 1, diffs


def test_hard_link_broken(pair):
    before, _, dst = pair
    rel = P["hl3"]
    with edit(dst, rel) as path:
        tmp = path + b".tmp"
        subprocess.run([b"cp", b"-a", path, tmp], check=True)
        os.rename(tmp, path)  # same content and attributes, its own inode now
    diffs = diff_trees(before, dst)
    assert diffs and all(d.startswith("hard links:") for d in diffs), diffs
    assert any(os.fsdecode(rel) in d and "only in a" in d for d in diffs), diffs


def test_hard_link_joined(rich, disk_tmp_path):
    src, _ = rich
    twins = (b"files/twin-1", b"files/twin-2")
    with edit(src, b"files/x"):
        for rel in twins:
            with open(j(src, rel), "wb") as f:
                f.write(b"identical twins\n")
            os.utime(j(src, rel), ns=(10**18, 10**18))
    dst = disk_tmp_path / "copy"
    clone_tree(src, dst)
    assert diff_trees(src, dst) == []
    with edit(dst, twins[1]) as path:
        os.unlink(path)
        os.link(j(dst, twins[0]), path)
    diffs = diff_trees(src, dst)
    assert diffs == ["hard links: group {files/twin-1, files/twin-2} only in b"], diffs


def test_hard_link_group_grown(pair):
    before, _, dst = pair
    rel = b"hl/a/fourth"
    with edit(dst, rel) as path:
        os.link(j(dst, P["hl1"]), path)
    diffs = diff_trees(before, dst)
    assert "only in b: hl/a/fourth (regular file)" in diffs
    assert any(d.startswith("hard links:") and "hl/a/fourth" in d for d in diffs), diffs


def test_messages_show_undecodable_names_with_fsdecode(pair):
    before, _, dst = pair
    _renamed_non_utf8(dst)
    diffs = diff_trees(before, dst)
    assert f"only in a: {os.fsdecode(P['name_ff_fe'])} (regular file)" in diffs
    renamed = os.fsdecode(P["name_ff_fe"][:-1] + b"\xfd")
    assert f"only in b: {renamed} (regular file)" in diffs


# ------------------------------------------------------------------------- ignore

def test_ignore_prefix(pair):
    before, _, dst = pair
    with edit(dst, EXCLUDED_DIR + b"/not-replicated.txt") as path:
        os.unlink(path)
    with edit(dst, EXCLUDED_DIR + b"/new"):
        os.mkdir(j(dst, EXCLUDED_DIR + b"/new"))
    os.utime(j(dst, EXCLUDED_DIR), ns=(5, 5))
    assert diff_trees(before, dst) != []
    for spelling in ("excluded", b"excluded", "excluded/", "/excluded"):
        assert diff_trees(before, dst, ignore=[spelling]) == [], spelling
    # component boundaries: the look-alikes are still compared
    lookalike = EXCLUSION_LOOKALIKES[0]
    with edit(dst, lookalike) as path, open(path, "ab") as f:
        f.write(b"changed")
    assert_reported(diff_trees(before, dst, ignore=["excluded"]), lookalike, "size")


def test_ignore_applies_to_hard_link_groups(pair):
    before, _, dst = pair
    with edit(dst, P["hl3"]) as path:
        os.unlink(path)
    assert diff_trees(before, dst, ignore=["hl/b"]) == []
    assert diff_trees(before, dst, ignore=["hl/b/third"]) == []
    assert diff_trees(before, dst) != []


# ----------------------------------------------------------------------- mutation

def test_mutation_is_seen_and_copyable(rich, disk_tmp_path):
    src, _ = rich
    before = snapshot(src)
    done = mutate_rich_tree(src)
    assert len(done) >= 25
    diffs = diff_trees(before, src)
    text = "\n".join(diffs)
    expected = [
        f"{os.fsdecode(P['big'])}: content differs",            # rewrite in the middle
        f"{os.fsdecode(P['small'])}: size",                     # append
        f"{os.fsdecode(P['sparse'])}: holes differ",            # new extent in a hole
        f"{os.fsdecode(P['trunc_shrink'])}: size 1048576 != 100003",
        f"{os.fsdecode(P['trunc_grow'])}: size 65536 != 8388615",
        "only in b: new/tree/x/y/leaf.bin",
        "only in b: dirs/a-renamed/b/c/d/deep.txt",
        f"only in a: {os.fsdecode(P['deep'])}",
        "only in a: dirs/delete-me (directory)",
        "only in b: files/renamed.txt",
        f"{os.fsdecode(P['file_to_dir'])}: type regular file != directory",
        f"{os.fsdecode(P['dir_to_file'])}: type directory != regular file",
        f"{os.fsdecode(P['readonly'])}: mode 0444 != 0640",
        f"{os.fsdecode(P['setuid'])}: mode 4755 != 0755",
        f"{os.fsdecode(P['xattr_file'])}: xattr user.osam.text differs",
        f"{os.fsdecode(P['xattr_file'])}: xattr user.osam.binary only in a",
        f"{os.fsdecode(P['small'])}: xattr user.osam.added only in b",
        f"{os.fsdecode(P['acl_file'])}: xattr system.posix_acl_access differs",
        f"{os.fsdecode(P['acl_dir'])}: xattr system.posix_acl_default differs",
        f"{os.fsdecode(P['acl_strip'])}: xattr system.posix_acl_access only in a",
        "hard links: group {dirs/second-name.txt, files/single.txt} only in b",
        "hard links: group {hl/a/first, hl/b-renamed/third, hl/fourth} only in b",
        f"{os.fsdecode(P['touch_only'])}: mtime_ns",
    ]
    if is_root():
        expected += [f"{os.fsdecode(P['own_a'])}: uid {UID_A} != {NOBODY}",
                     f"{os.fsdecode(P['own_link'])}: gid {GID_A} != {NOBODY}"]
    missing = [e for e in expected if e not in text]
    assert not missing, f"missing {missing} in:\n{text}"
    # the touch-only file changed its mtime and nothing else
    assert [d for d in diffs if os.fsdecode(P["touch_only"]) in d] == [
        d for d in diffs if d.startswith(os.fsdecode(P["touch_only"]) + ": mtime_ns")]

    # the mutated tree is still copyable exactly
    again = disk_tmp_path / "again"
    clone_tree(src, again)
    assert diff_trees(src, again) == []


def test_mutate_rejects_foreign_tree(disk_tmp_path):
    with pytest.raises(FileNotFoundError, match="not a tree made by make_rich_tree"):
        mutate_rich_tree(disk_tmp_path)


# ------------------------------------------------------------------------- pieces

def test_format_acl():
    value = bytes.fromhex("02000000" "01000600ffffffff" "02000400d2040000"
                          "04000400ffffffff" "10000600ffffffff" "20000000ffffffff")
    assert format_acl(value) == "user::rw-,user:1234:r--,group::r--,mask::rw-,other::---"
    assert format_acl(b"junk").startswith("<undecodable ACL")


def test_fifo_is_never_opened(pair):
    # a reader opening the fifo would block forever; snapshot must only lstat it
    before, _, _ = pair
    assert before[P["fifo"]].kind == "p" and before[P["fifo"]].sha256 is None


def test_disk_tmp_path_is_not_tmpfs(disk_tmp_path):
    from tests.util import mount_fstype
    assert mount_fstype(disk_tmp_path) not in ("tmpfs", "ramfs")
    assert str(disk_tmp_path).startswith(os.environ.get("OSAM_TEST_TMPDIR", "/var/tmp"))
    assert list(disk_tmp_path.iterdir()) == []
