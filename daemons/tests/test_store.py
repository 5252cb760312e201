import os
import stat
import subprocess

import pytest

from osam.common.fsentry import FsEntry
from osam.receiver.store import (
    BaseMismatch, MissingEntry, NotADirectory, ReplicaStore, StoreError, UnsafePath, split_path)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (chown to other users, mknod)")
# Other users' ids when we can chown to them, our own otherwise.
UID, GID = (1234, 5678) if IS_ROOT else (os.getuid(), os.getgid())
MTIME = 1_234_567_890_123_456_789
MIB = 1 << 20

_KIND_OF = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFIFO: "p",
            stat.S_IFCHR: "c", stat.S_IFBLK: "b", stat.S_IFSOCK: "s"}


# --- helpers: read real entries as FsEntry, copy a tree through the store -----------------

def entry_of(top: bytes, rel: bytes) -> FsEntry:
    path = os.path.join(top, rel) if rel else top
    st = os.lstat(path)
    kind = _KIND_OF[stat.S_IFMT(st.st_mode)]
    xattrs = sorted((os.fsencode(n), os.getxattr(path, n, follow_symlinks=False))
                    for n in os.listxattr(path, follow_symlinks=False))
    return FsEntry(path=rel, kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                   mtime_ns=st.st_mtime_ns, size=st.st_size if kind == "f" else 0,
                   rdev=st.st_rdev if kind in "cb" else 0,
                   target=os.readlink(path) if kind == "l" else b"", xattrs=xattrs)


def walk(top: bytes):
    """Relative paths of everything under `top`, parents before children."""
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        for name in sorted(dirnames) + sorted(filenames):
            yield name if rel_dir == b"." else os.path.join(rel_dir, name)


def data_ranges(path: bytes):
    with open(path, "rb") as f:
        fd, size, offset = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                return
            end = os.lseek(fd, start, os.SEEK_HOLE)
            yield start, os.pread(fd, end - start, start)
            offset = end


def write_file(store: ReplicaStore, e: FsEntry, chunks, base=None) -> int:
    writer = store.open_file(e, base=base)
    for offset, data in chunks:
        writer.write(offset, data)
    return writer.commit()


def replicate(store: ReplicaStore, src: bytes) -> None:
    """Copy a real tree into the store as the daemon would: entries top-down, hard links by inode."""
    store.apply_entry(entry_of(src, b""))
    seen = {}
    for rel in walk(src):
        e = entry_of(src, rel)
        st = os.lstat(os.path.join(src, rel))
        if e.kind != "d" and st.st_nlink > 1 and st.st_ino in seen:
            store.hardlink(rel, seen[st.st_ino])
            continue
        seen[st.st_ino] = rel
        if e.kind == "f":
            write_file(store, e, data_ranges(os.path.join(src, rel)))
        else:
            store.apply_entry(e)
    store.flush_dir_times()


def assert_same_tree(src: bytes, dst: bytes) -> None:
    assert sorted(walk(src)) == sorted(walk(dst))
    for rel in [b""] + list(walk(src)):
        assert entry_of(dst, rel) == entry_of(src, rel), rel
        if entry_of(src, rel).kind == "f":
            a, b = os.path.join(src, rel), os.path.join(dst, rel)
            with open(a, "rb") as fa, open(b, "rb") as fb:
                assert fa.read() == fb.read(), rel
            assert os.lstat(b).st_blocks == os.lstat(a).st_blocks, rel


def getfacl(path) -> str:
    out = subprocess.run(["getfacl", "-cpn", path], check=True, capture_output=True).stdout
    return out.decode()


def entry(path: bytes, kind: str, **kw) -> FsEntry:
    defaults = dict(mode=0o755 if kind == "d" else 0o644, uid=os.getuid(), gid=os.getgid(),
                    mtime_ns=MTIME)
    defaults.update(kw)
    return FsEntry(path=path, kind=kind, **defaults)


@pytest.fixture
def replica_dir(tmp_path):
    return os.fsencode(tmp_path / "replica")


@pytest.fixture
def store(replica_dir):
    with ReplicaStore(replica_dir) as s:
        yield s


@pytest.fixture
def root(store, replica_dir):
    return os.path.join(replica_dir, b"root")


@pytest.fixture
def outside(tmp_path):
    """A directory next to the replica that no operation may ever touch."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret").write_bytes(b"do not touch")
    os.chmod(d / "secret", 0o600)
    return os.fsencode(d)


def snapshot(top: bytes):
    return {rel: (entry_of(top, rel), open(os.path.join(top, rel), "rb").read()
                  if os.path.isfile(os.path.join(top, rel)) else None)
            for rel in [b""] + list(walk(top))}


# --- round trips ----------------------------------------------------------------------------

@pytest.fixture
def source_tree(tmp_path):
    """Every kind and attribute replication must keep."""
    src = os.fsencode(tmp_path / "src")
    j = lambda *p: os.path.join(src, *p)
    os.mkdir(src)
    os.mkdir(j(b"etc"))
    os.mkdir(j(b"srv"), 0o755)
    os.mkdir(j(b"\xff\xfe-latin1 \xe9t\xe9"))
    with open(j(b"\xff\xfe-latin1 \xe9t\xe9", b"caf\xe9.txt"), "wb") as f:
        f.write(b"non-UTF-8 names\n")
    with open(j(b"etc", b"passwd"), "wb") as f:
        f.write(b"root:x:0:0::/root:/bin/sh\n")
    os.setxattr(j(b"etc", b"passwd"), "user.checksum", b"\x00\x01binary")
    subprocess.run(["setfacl", "-m", "u:1234:rwx,g:5678:r", j(b"etc", b"passwd")], check=True)
    subprocess.run(["setfacl", "-m", "u:1234:rwx", "-d", "-m", "g:5678:rx", j(b"srv")], check=True)
    os.setxattr(j(b"srv"), "user.role", b"data")
    with open(j(b"srv", b"sparse.img"), "wb") as f:
        f.truncate(64 * MIB)
        f.seek(MIB)
        f.write(os.urandom(8192))
        f.seek(40 * MIB)
        f.write(b"tail data")
    with open(j(b"srv", b"empty"), "wb"):
        pass
    os.link(j(b"etc", b"passwd"), j(b"srv", b"passwd-link"))
    os.symlink(b"../nowhere/\xff dangling", j(b"srv", b"dangling"))
    os.symlink(b"/etc/shadow", j(b"etc", b"absolute-link"))
    os.mkfifo(j(b"srv", b"fifo"), 0o620)
    os.mknod(j(b"srv", b"socket"), 0o755 | stat.S_IFSOCK)
    with open(j(b"suid"), "wb") as f:
        f.write(b"#!/bin/sh\n")
    if IS_ROOT:
        os.mknod(j(b"srv", b"null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(j(b"srv", b"disk"), 0o660 | stat.S_IFBLK, os.makedev(8, 1))
        for rel in (b"suid", b"srv/fifo", b"etc/passwd", b"srv", b"srv/dangling"):
            os.chown(j(rel), UID, GID, follow_symlinks=False)
        os.chown(src, 0, 0)
    os.chmod(j(b"suid"), 0o6755)
    os.chmod(j(b"srv"), 0o3775)       # setgid + sticky on a directory
    for n, rel in enumerate(walk(src)):
        os.utime(j(rel), ns=(MTIME + n, MTIME + 7 * n + 1), follow_symlinks=False)
    os.utime(src, ns=(MTIME, MTIME - 1))
    return src


def test_replicates_every_kind_and_attribute(store, root, source_tree):
    replicate(store, source_tree)
    assert_same_tree(source_tree, root)
    assert getfacl(os.path.join(root, b"etc/passwd")) == getfacl(os.path.join(source_tree, b"etc/passwd"))
    assert getfacl(os.path.join(root, b"srv")) == getfacl(os.path.join(source_tree, b"srv"))
    assert "default:group:5678:r-x" in getfacl(os.path.join(root, b"srv"))
    link = os.lstat(os.path.join(root, b"srv/passwd-link"))
    assert link.st_ino == os.lstat(os.path.join(root, b"etc/passwd")).st_ino
    assert link.st_nlink == 2


def test_replicating_twice_is_stable(store, root, source_tree):
    replicate(store, source_tree)
    replicate(store, source_tree)
    assert_same_tree(source_tree, root)


@needs_root
def test_setuid_and_setgid_survive_chown(store, root):
    write_file(store, entry(b"tool", "f", mode=0o6755, uid=UID, gid=GID, size=3), [(0, b"abc")])
    st = os.lstat(os.path.join(root, b"tool"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o6755, UID, GID)


def test_acl_does_not_clear_special_bits(store, root, tmp_path):
    f = tmp_path / "acl"
    f.write_bytes(b"")
    subprocess.run(["setfacl", "-m", "u:1234:rw", f], check=True)
    acl = [(b"system.posix_acl_access", os.getxattr(f, "system.posix_acl_access"))]
    write_file(store, entry(b"f", "f", mode=0o4764, xattrs=acl), [])
    path = os.path.join(root, b"f")
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o4764
    assert "user:1234:rw-" in getfacl(path)


@needs_root
def test_file_capabilities_survive_chown(store, root, tmp_path):
    src = tmp_path / "ping"
    src.write_bytes(b"\x7fELF")
    subprocess.run(["setcap", "cap_net_raw+ep", src], check=True)
    caps = [(b"security.capability", os.getxattr(src, "security.capability"))]
    write_file(store, entry(b"ping", "f", mode=0o755, uid=UID, gid=GID, size=4, xattrs=caps),
               [(0, b"\x7fELF")])
    out = subprocess.run(["getcap", os.path.join(root, b"ping")], capture_output=True, check=True)
    assert b"cap_net_raw=ep" in out.stdout


def test_root_itself_cannot_be_deleted_or_replaced(store, root):
    for operation in (lambda: store.delete(b""), lambda: store.rename(b"", b"x"),
                      lambda: store.apply_entry(entry(b"", "l", target=b"/")),
                      lambda: store.open_file(entry(b"", "f"))):
        with pytest.raises(UnsafePath, match="root"):
            operation()
    assert os.path.isdir(root) and not os.path.islink(root)


def test_mount_inside_replica_gives_a_clear_error(store, root, monkeypatch):
    import osam.receiver.store as store_module

    def cross_device(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")
    store.apply_entry(entry(b"boot", "d"))
    monkeypatch.setattr(store_module.os, "rename", cross_device)
    with pytest.raises(StoreError, match="another file system"):
        write_file(store, entry(b"boot/vmlinuz", "f"), [])


@needs_root
def test_device_nodes(store, root):
    store.apply_entry(entry(b"null", "c", mode=0o666, rdev=os.makedev(1, 3)))
    store.apply_entry(entry(b"sda1", "b", mode=0o660, uid=UID, gid=6, rdev=os.makedev(8, 1)))
    assert entry_of(root, b"null").rdev == os.makedev(1, 3)
    st = os.lstat(os.path.join(root, b"sda1"))
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(8, 1)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime_ns) == (0o660, UID, MTIME)


def test_fifo_and_socket(store, root):
    store.apply_entry(entry(b"fifo", "p", mode=0o640))
    store.apply_entry(entry(b"sock", "s", mode=0o777))
    assert stat.S_ISFIFO(os.lstat(os.path.join(root, b"fifo")).st_mode)
    assert entry_of(root, b"sock") == entry(b"sock", "s", mode=0o777)


def test_symlink_is_never_followed(store, root, outside):
    e = entry(b"link", "l", mode=0o777, target=os.path.join(outside, b"secret"), mtime_ns=MTIME + 5)
    store.apply_entry(e)
    assert entry_of(root, b"link") == e
    assert os.lstat(os.path.join(outside, b"secret")).st_mtime_ns != MTIME + 5


def test_sparse_file_keeps_holes(store, root):
    e = entry(b"disk.img", "f", size=1 << 30)
    write_file(store, e, [(0, b"boot"), (512 * MIB, b"x" * 4096)])
    st = os.lstat(os.path.join(root, b"disk.img"))
    assert st.st_size == 1 << 30
    assert st.st_blocks * 512 <= 64 * 1024      # two small extents, not a gigabyte
    with open(os.path.join(root, b"disk.img"), "rb") as f:
        assert f.read(4) == b"boot"
        f.seek(512 * MIB)
        assert f.read(4096) == b"x" * 4096


def test_xattrs_are_replaced_exactly(store, root):
    store.apply_entry(entry(b"d", "d", xattrs=[(b"user.old", b"1"), (b"user.keep", b"a")]))
    store.apply_entry(entry(b"d", "d", xattrs=[(b"user.keep", b"b"), (b"user.new", b"")]))
    assert entry_of(root, b"d").xattrs == [(b"user.keep", b"b"), (b"user.new", b"")]
    write_file(store, entry(b"f", "f", xattrs=[(b"user.a", b"1")]), [])
    store.apply_entry(entry(b"f", "f", xattrs=[]))
    assert entry_of(root, b"f").xattrs == []


def test_default_acl_of_parent_is_not_inherited(store, root):
    store.apply_entry(entry(b"d", "d"))
    subprocess.run(["setfacl", "-d", "-m", "u:1234:rwx", os.path.join(root, b"d")], check=True)
    store.apply_entry(entry(b"d/sub", "d", mode=0o750))
    assert entry_of(root, b"d/sub").xattrs == []
    assert entry_of(root, b"d/sub").mode == 0o750


def test_root_directory_attributes(store, root):
    store.apply_entry(entry(b"", "d", mode=0o1777, xattrs=[(b"user.top", b"1")]))
    assert entry_of(root, b"") == entry(b"", "d", mode=0o1777, xattrs=[(b"user.top", b"1")])


def test_file_metadata_update_in_place(store, root):
    write_file(store, entry(b"f", "f", size=5), [(0, b"hello")])
    inode = os.lstat(os.path.join(root, b"f")).st_ino
    changed = entry(b"f", "f", size=5, mode=0o600, mtime_ns=MTIME + 1)
    store.apply_entry(changed)
    assert entry_of(root, b"f") == changed
    assert os.lstat(os.path.join(root, b"f")).st_ino == inode
    with pytest.raises(BaseMismatch):
        store.apply_entry(entry(b"f", "f", size=6))
    with pytest.raises(BaseMismatch):
        store.apply_entry(entry(b"missing", "f"))


# --- file writers ---------------------------------------------------------------------------

def test_commit_returns_bytes_written_and_truncates(store, root):
    writer = store.open_file(entry(b"f", "f", size=10))
    assert writer.write(0, b"0123456789abcdef") == 16
    assert writer.commit() == 16
    with open(os.path.join(root, b"f"), "rb") as f:
        assert f.read() == b"0123456789"


def test_replace_keeps_readers_of_the_old_file_consistent(store, root):
    write_file(store, entry(b"f", "f", size=3), [(0, b"old")])
    with open(os.path.join(root, b"f"), "rb") as old:
        writer = store.open_file(entry(b"f", "f", size=3))
        writer.write(0, b"new")
        with open(os.path.join(root, b"f"), "rb") as f:
            assert f.read() == b"old"       # nothing visible before commit
        writer.commit()
        assert old.read() == b"old"
    with open(os.path.join(root, b"f"), "rb") as f:
        assert f.read() == b"new"


def test_abort_and_context_manager_leave_nothing(store, root, replica_dir):
    writer = store.open_file(entry(b"f", "f", size=3))
    writer.write(0, b"abc")
    writer.abort()
    with pytest.raises(ValueError):
        with store.open_file(entry(b"g", "f", size=3)) as w:
            w.write(0, b"abc")
            raise ValueError
    assert os.listdir(root) == []
    assert os.listdir(os.path.join(replica_dir, b"staging")) == []
    with pytest.raises(StoreError, match="already"):
        writer.write(0, b"late")


def test_commit_into_missing_parent_fails_and_cleans_up(store, replica_dir):
    writer = store.open_file(entry(b"no/such/f", "f", size=1))
    writer.write(0, b"x")
    with pytest.raises(MissingEntry, match="does not exist"):
        writer.commit()
    assert os.listdir(os.path.join(replica_dir, b"staging")) == []


def test_punch_leaves_a_hole(store, root):
    write_file(store, entry(b"f", "f", size=4 * MIB), [(0, os.urandom(4 * MIB))])
    before = os.lstat(os.path.join(root, b"f"))
    writer = store.open_file(entry(b"f", "f", size=4 * MIB), base=(4 * MIB, before.st_mtime_ns))
    writer.punch(MIB, 2 * MIB)
    writer.commit()
    after = os.lstat(os.path.join(root, b"f"))
    assert after.st_blocks < before.st_blocks
    with open(os.path.join(root, b"f"), "rb") as f:
        f.seek(MIB)
        assert f.read(2 * MIB) == bytes(2 * MIB)


# --- delta bases ----------------------------------------------------------------------------

def test_base_copy_keeps_data_and_holes(store, root):
    size = 256 * MIB
    head, middle = os.urandom(MIB), os.urandom(4096)
    write_file(store, entry(b"vm.img", "f", size=size), [(0, head), (100 * MIB, middle)])
    base = os.lstat(os.path.join(root, b"vm.img"))
    writer = store.open_file(entry(b"vm.img", "f", size=size, mtime_ns=MTIME + 1),
                             base=(base.st_size, base.st_mtime_ns))
    writer.write(100 * MIB + 4096, b"appended")
    writer.commit()
    after = os.lstat(os.path.join(root, b"vm.img"))
    assert after.st_size == size
    assert after.st_blocks <= base.st_blocks + 8        # at most one more block
    with open(os.path.join(root, b"vm.img"), "rb") as f:
        assert f.read(MIB) == head
        f.seek(100 * MIB)
        assert f.read(4096 + 8) == middle + b"appended"
        f.seek(200 * MIB)
        assert f.read(MIB) == bytes(MIB)


def test_base_copy_can_shrink_and_grow(store, root):
    write_file(store, entry(b"f", "f", size=10), [(0, b"0123456789")])
    mtime = os.lstat(os.path.join(root, b"f")).st_mtime_ns
    write_file(store, entry(b"f", "f", size=4), [], base=(10, mtime))
    with open(os.path.join(root, b"f"), "rb") as f:
        assert f.read() == b"0123"
    write_file(store, entry(b"f", "f", size=6, mtime_ns=1), [(4, b"xy")], base=(4, MTIME))
    with open(os.path.join(root, b"f"), "rb") as f:
        assert f.read() == b"0123xy"


@pytest.mark.parametrize("base", [(10, MTIME + 1), (11, MTIME)])
def test_base_mismatch(store, root, replica_dir, base):
    write_file(store, entry(b"f", "f", size=10), [(0, b"0123456789")])
    with pytest.raises(BaseMismatch, match="delta expects"):
        store.open_file(entry(b"f", "f", size=10), base=base)
    assert os.listdir(os.path.join(replica_dir, b"staging")) == []


@pytest.mark.parametrize("kind", ["missing", "d", "p", "l", "c"])
def test_base_must_be_a_regular_file(store, root, kind):
    if kind == "c" and not IS_ROOT:
        pytest.skip("needs root for mknod")
    if kind != "missing":
        store.apply_entry(entry(b"x", kind, target=b"/dev/zero", rdev=os.makedev(1, 5)))
    # A fifo would block and a device would be read if they were opened: both must be refused.
    with pytest.raises(BaseMismatch):
        store.open_file(entry(b"x", "f", size=0), base=(0, MTIME))


# --- kind changes ---------------------------------------------------------------------------

def make_subtree(store, top: bytes):
    store.apply_entry(entry(top, "d"))
    store.apply_entry(entry(top + b"/sub", "d"))
    write_file(store, entry(top + b"/sub/f", "f", size=1), [(0, b"x")])
    store.apply_entry(entry(top + b"/sub/l", "l", target=b".."))


def test_directory_replaced_by_file(store, root):
    make_subtree(store, b"x")
    write_file(store, entry(b"x", "f", size=2), [(0, b"hi")])
    assert entry_of(root, b"x").kind == "f"


def test_file_replaced_by_directory(store, root):
    write_file(store, entry(b"x", "f", size=2), [(0, b"hi")])
    store.apply_entry(entry(b"x", "d", mode=0o700))
    assert entry_of(root, b"x") == entry(b"x", "d", mode=0o700)


@pytest.mark.parametrize("kind", ["l", "p", "s"])
def test_directory_replaced_by_node_and_back(store, root, kind):
    make_subtree(store, b"x")
    store.apply_entry(entry(b"x", kind, target=b"x/sub"))
    assert entry_of(root, b"x").kind == kind
    store.apply_entry(entry(b"x", "d"))
    assert entry_of(root, b"x").kind == "d" and os.listdir(os.path.join(root, b"x")) == []


def test_symlink_to_directory_replaced_by_directory(store, root):
    store.apply_entry(entry(b"real", "d"))
    store.apply_entry(entry(b"x", "l", target=b"real"))
    store.apply_entry(entry(b"x", "d", mode=0o711))
    assert entry_of(root, b"x").kind == "d"
    assert entry_of(root, b"real").mode == 0o755


# --- rename, delete, hard links -------------------------------------------------------------

def test_rename_file_replaces_destination(store, root):
    write_file(store, entry(b"a", "f", size=1), [(0, b"a")])
    write_file(store, entry(b"b", "f", size=1), [(0, b"b")])
    store.rename(b"a", b"b")
    assert os.listdir(root) == [b"b"]
    with open(os.path.join(root, b"b"), "rb") as f:
        assert f.read() == b"a"


def test_rename_directory_with_contents(store, root):
    make_subtree(store, b"old")
    store.apply_entry(entry(b"new-parent", "d"))
    store.rename(b"old", b"new-parent/moved")
    assert sorted(walk(root)) == [b"new-parent", b"new-parent/moved", b"new-parent/moved/sub",
                                  b"new-parent/moved/sub/f", b"new-parent/moved/sub/l"]


def test_rename_over_non_empty_directory_and_kind_clash(store, root):
    make_subtree(store, b"a")
    make_subtree(store, b"b")
    store.rename(b"a", b"b")
    assert sorted(os.listdir(root)) == [b"b"]
    write_file(store, entry(b"f", "f"), [])
    store.rename(b"b", b"f")        # directory over file
    assert entry_of(root, b"f").kind == "d"
    write_file(store, entry(b"g", "f"), [])
    store.rename(b"g", b"f")        # file over directory
    assert entry_of(root, b"f").kind == "f"


def test_rename_errors(store, root):
    make_subtree(store, b"a")
    with pytest.raises(MissingEntry, match="rename source"):
        store.rename(b"missing", b"x")
    with pytest.raises(StoreError, match="inside itself"):
        store.rename(b"a", b"a/sub/a")
    with pytest.raises(StoreError, match="ancestor"):
        store.rename(b"a/sub", b"a")
    with pytest.raises(MissingEntry):
        store.rename(b"a/sub/f", b"no-parent/f")
    assert sorted(walk(root)) == [b"a", b"a/sub", b"a/sub/f", b"a/sub/l"]


def test_delete_subtree_file_and_missing(store, root):
    make_subtree(store, b"a")
    write_file(store, entry(b"f", "f"), [])
    store.delete(b"a")
    store.delete(b"f")
    store.delete(b"f")                      # already gone
    store.delete(b"no/such/parent")
    assert os.listdir(root) == []


def test_delete_deep_tree(store, root):
    path = b""
    for i in range(300):                    # deeper than one descriptor per level would fear
        path = path + b"/d" if path else b"d"
        store.apply_entry(entry(path, "d"))
    write_file(store, entry(path + b"/f", "f"), [])
    store.delete(b"d")
    assert os.listdir(root) == []


def test_hardlink_same_inode_and_replaces(store, root):
    write_file(store, entry(b"a", "f", size=1), [(0, b"a")])
    write_file(store, entry(b"b", "f", size=1), [(0, b"b")])
    make_subtree(store, b"dir")
    store.hardlink(b"b", b"a")
    store.hardlink(b"dir", b"a")            # replaces a whole directory
    store.hardlink(b"b", b"a")              # already the same inode: no-op
    ino = os.lstat(os.path.join(root, b"a")).st_ino
    assert os.lstat(os.path.join(root, b"b")).st_ino == ino
    assert os.lstat(os.path.join(root, b"dir")).st_nlink == 3


def test_hardlink_errors(store, root, replica_dir):
    store.apply_entry(entry(b"d", "d"))
    with pytest.raises(MissingEntry):
        store.hardlink(b"x", b"missing")
    with pytest.raises(StoreError, match="directory"):
        store.hardlink(b"x", b"d")
    write_file(store, entry(b"f", "f"), [])
    with pytest.raises(MissingEntry):
        store.hardlink(b"no/parent", b"f")
    assert os.listdir(os.path.join(replica_dir, b"staging")) == []


def test_hardlink_of_symlink_links_the_link(store, root):
    store.apply_entry(entry(b"l", "l", target=b"/etc/passwd"))
    store.hardlink(b"l2", b"l")
    assert os.lstat(os.path.join(root, b"l2")).st_ino == os.lstat(os.path.join(root, b"l")).st_ino


# --- staging, locking, durability -----------------------------------------------------------

def test_staging_is_wiped_on_reopen(replica_dir):
    store = ReplicaStore(replica_dir)
    writer = store.open_file(entry(b"f", "f", size=3))
    writer.write(0, b"half")
    staging = os.path.join(replica_dir, b"staging")
    os.makedirs(os.path.join(staging, b"left/over"))
    os.symlink(b"/etc", os.path.join(staging, b"left/link"))
    store.close()                           # as if killed: no commit, no abort
    with ReplicaStore(replica_dir):
        assert os.listdir(staging) == []
        assert os.listdir(os.path.join(replica_dir, b"root")) == []
    assert os.path.isdir(b"/etc")


def test_second_store_on_same_replica_is_refused(store, replica_dir):
    with pytest.raises(StoreError, match="in use"):
        ReplicaStore(replica_dir)


def test_replica_root_that_is_a_symlink_is_refused(tmp_path, outside):
    os.mkdir(tmp_path / "r")
    os.symlink(outside, tmp_path / "r" / "root")
    with pytest.raises(StoreError, match="not a usable directory"):
        ReplicaStore(tmp_path / "r")


def test_sync(store):
    write_file(store, entry(b"f", "f", size=1), [(0, b"x")])
    store.sync()


# --- directory times ------------------------------------------------------------------------

def test_dir_mtimes_restored_after_children(store, root):
    store.apply_entry(entry(b"", "d", mtime_ns=MTIME - 1))
    store.apply_entry(entry(b"a", "d", mtime_ns=MTIME + 1))
    store.apply_entry(entry(b"a/b", "d", mtime_ns=MTIME + 2))
    write_file(store, entry(b"a/b/f", "f", size=1), [(0, b"x")])
    store.apply_entry(entry(b"a/b/l", "l", target=b"f"))
    store.hardlink(b"a/hard", b"a/b/f")
    store.rename(b"a/b/l", b"a/l")
    store.delete(b"a/b/f")
    assert os.lstat(os.path.join(root, b"a")).st_mtime_ns != MTIME + 1
    store.flush_dir_times()
    assert os.lstat(root).st_mtime_ns == MTIME - 1
    assert os.lstat(os.path.join(root, b"a")).st_mtime_ns == MTIME + 1
    assert os.lstat(os.path.join(root, b"a/b")).st_mtime_ns == MTIME + 2


def test_dir_mtime_follows_renamed_directory(store, root):
    store.apply_entry(entry(b"a", "d", mtime_ns=MTIME + 1))
    store.rename(b"a", b"b")
    write_file(store, entry(b"b/f", "f"), [])
    store.flush_dir_times()
    assert os.lstat(os.path.join(root, b"b")).st_mtime_ns == MTIME + 1


def test_flush_skips_directories_that_are_gone(store, root):
    store.apply_entry(entry(b"a", "d"))
    write_file(store, entry(b"a/f", "f"), [])
    store.delete(b"a")
    write_file(store, entry(b"a", "f"), [])
    store.flush_dir_times()                 # `a` is a file now: its old mtime is not applied
    assert os.lstat(os.path.join(root, b"a")).st_mtime_ns == MTIME


# --- path validation and traversal ----------------------------------------------------------

BAD_PATHS = [
    b"..", b"../x", b"a/..", b"a/../b", b"a/b/..", b"../../../../etc/passwd",
    b".", b"./a", b"a/./b", b"a/.",
    b"/etc/passwd", b"/",
    b"a\0b", b"\0",
    b"a//b", b"a/", b"/a", b"//",
    b"n" * 256, b"a/" + b"n" * 256, (b"d/" * 2048) + b"f",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_split_path_rejects(path):
    with pytest.raises(UnsafePath):
        split_path(path)


def test_split_path_accepts():
    assert split_path(b"a/b\xff/...x/..a") == (b"a", b"b\xff", b"...x", b"..a")
    assert split_path(b"", allow_root=True) == ()
    assert split_path(b"n" * 255) == (b"n" * 255,)
    with pytest.raises(UnsafePath, match="root"):
        split_path(b"")
    with pytest.raises(UnsafePath, match="bytes"):
        split_path("a")


def _every_operation(store, path: bytes, other: bytes = b"f"):
    yield lambda: store.apply_entry(entry(path, "d"))
    yield lambda: store.apply_entry(entry(path, "l", target=b"/etc"))
    yield lambda: store.apply_entry(entry(path, "p"))
    yield lambda: store.apply_entry(entry(path, "f"))
    yield lambda: write_file(store, entry(path, "f", size=4), [(0, b"evil")])
    yield lambda: write_file(store, entry(path, "f", size=4), [], base=(12, MTIME))
    yield lambda: store.hardlink(path, other)
    yield lambda: store.hardlink(other, path)
    yield lambda: store.rename(other, path)
    yield lambda: store.rename(path, other)


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_are_refused_by_every_operation(store, root, tmp_path, path):
    write_file(store, entry(b"f", "f", size=1), [(0, b"x")])
    before = snapshot(os.fsencode(tmp_path))
    for operation in _every_operation(store, path):
        with pytest.raises(UnsafePath):
            operation()
    with pytest.raises(UnsafePath):
        store.delete(path)
    assert snapshot(os.fsencode(tmp_path)) == before


@pytest.fixture
def escape_link(store, root, outside):
    """`inside/esc` is a symlink in the replica to a directory outside it."""
    store.apply_entry(entry(b"inside", "d"))
    store.apply_entry(entry(b"inside/esc", "l", target=outside))
    write_file(store, entry(b"f", "f", size=1), [(0, b"x")])
    return b"inside/esc"


@pytest.mark.parametrize("suffix", [b"/secret", b"/new", b"/secret/deeper", b"/new/deeper"])
def test_symlinked_parent_is_refused(store, root, outside, escape_link, suffix):
    before = snapshot(outside)
    path = escape_link + suffix
    for operation in _every_operation(store, path):
        with pytest.raises(UnsafePath, match="'inside/esc' is a symlink"):
            operation()
    store.delete(path)                      # names nothing in the replica: quietly a no-op
    assert snapshot(outside) == before
    assert os.readlink(os.path.join(root, escape_link)) == outside


def test_symlinked_parent_error_names_the_link(store, escape_link):
    with pytest.raises(UnsafePath, match=r"'inside/esc' is a symlink in the replica"):
        store.apply_entry(entry(b"inside/esc/x", "d"))


def test_symlink_to_replica_directory_is_refused_too(store, root):
    store.apply_entry(entry(b"real", "d"))
    store.apply_entry(entry(b"alias", "l", target=b"real"))
    with pytest.raises(UnsafePath):
        write_file(store, entry(b"alias/f", "f"), [])
    assert os.listdir(os.path.join(root, b"real")) == []


def test_file_as_parent_is_refused(store):
    write_file(store, entry(b"file", "f"), [])
    with pytest.raises(NotADirectory, match="not a directory"):
        store.apply_entry(entry(b"file/x", "d"))


def test_final_symlink_is_replaced_not_written_through(store, root, outside):
    secret = os.path.join(outside, b"secret")
    before = snapshot(outside)
    for kind in ("f", "d", "p", "l", "f-meta", "f-base"):
        store.apply_entry(entry(b"l", "l", target=secret))
        if kind == "f":
            write_file(store, entry(b"l", "f", size=4, mode=0o777), [(0, b"evil")])
        elif kind == "f-meta":
            with pytest.raises(BaseMismatch):
                store.apply_entry(entry(b"l", "f", size=12, mode=0o777))
            continue
        elif kind == "f-base":
            with pytest.raises(BaseMismatch):
                store.open_file(entry(b"l", "f", size=12), base=(12, os.stat(secret).st_mtime_ns))
            continue
        else:
            store.apply_entry(entry(b"l", kind, mode=0o777, target=b"elsewhere",
                                    xattrs=[(b"user.evil", b"1")] if kind == "d" else []))
        assert entry_of(root, b"l").kind == kind
        assert snapshot(outside) == before
    store.apply_entry(entry(b"l", "l", target=secret))
    store.delete(b"l")
    assert snapshot(outside) == before


def test_hardlink_to_symlink_pointing_outside_links_the_symlink(store, root, outside):
    store.apply_entry(entry(b"l", "l", target=os.path.join(outside, b"secret")))
    store.hardlink(b"h", b"l")
    assert os.path.islink(os.path.join(root, b"h"))
    assert os.lstat(os.path.join(outside, b"secret")).st_nlink == 1


def test_rename_destination_escaping_is_refused(store, root, outside, escape_link):
    before = snapshot(outside)
    for dest in (b"../f", b"inside/esc/f", b"inside/esc", b"/tmp/f"):
        with pytest.raises(UnsafePath):
            store.rename(b"f", dest if dest != b"inside/esc" else dest + b"/x")
    store.rename(b"f", b"inside/esc")        # replaces the symlink itself, follows nothing
    assert entry_of(root, b"inside/esc").kind == "f"
    assert snapshot(outside) == before


def test_delete_of_subtree_with_escaping_symlinks_stays_inside(store, root, outside):
    store.apply_entry(entry(b"a", "d"))
    store.apply_entry(entry(b"a/esc", "l", target=outside))
    store.apply_entry(entry(b"a/abs", "l", target=b"/"))
    store.apply_entry(entry(b"a/sub", "d"))
    store.apply_entry(entry(b"a/sub/up", "l", target=b"../../.."))
    before = snapshot(outside)
    store.delete(b"a")
    assert os.listdir(root) == []
    assert snapshot(outside) == before


def test_a_restarted_receiver_keeps_directory_times_it_did_not_apply_itself(replica_dir, tmp_path):
    """Files written into a directory after a restart (a resent change) must not move the
    directory's mtime: the new store never saw the directory's entry, the old one did."""
    first = ReplicaStore(replica_dir)
    first.apply_entry(entry(b"d", "d", mtime_ns=1_000_000_000))
    first.flush_dir_times()
    first.close()
    second = ReplicaStore(replica_dir)
    write_file(second, entry(b"d/new", "f", size=5), [(0, b"hello")])
    second.delete(b"d/absent")
    second.flush_dir_times()
    second.close()
    assert os.stat(os.path.join(replica_dir, b"root", b"d")).st_mtime_ns == 1_000_000_000
