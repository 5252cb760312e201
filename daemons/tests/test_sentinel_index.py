"""The sentinel's index of what the replica acknowledged: renames and deletes move whole subtrees,
names that are not UTF-8 survive, and hard-link groups are found by inode."""
import os

from osam.sentinel.index import Index, Row


def row(path: bytes, kind="f", ino=1) -> Row:
    return Row(path, kind, 0o644, 0, 0, 10, 1, 1, 2049, ino, None)


def test_rename_moves_a_subtree_and_nothing_beside_it(tmp_path):
    idx = Index(str(tmp_path / "i.sqlite"))
    idx.apply([("put", row(p, "d" if p in (b"a", b"a/b") else "f", i)) for i, p in enumerate(
        [b"a", b"a/b", b"a/b/c", b"a/x", b"a0", b"a-", b"ab"])])
    idx.apply([("rename", b"a", b"z\xff")])
    paths = sorted(r.path for r in idx.all_rows())
    assert paths == sorted([b"z\xff", b"z\xff/b", b"z\xff/b/c", b"z\xff/x", b"a0", b"a-", b"ab"])


def test_rename_replaces_the_destination_subtree(tmp_path):
    idx = Index(str(tmp_path / "i.sqlite"))
    idx.apply([("put", row(b"old")), ("put", row(b"new", "d")), ("put", row(b"new/child"))])
    idx.apply([("rename", b"old", b"new")])
    assert [r.path for r in idx.all_rows()] == [b"new"]
    assert idx.get(b"new").kind == "f"


def test_delete_removes_a_subtree_only(tmp_path):
    idx = Index(str(tmp_path / "i.sqlite"))
    idx.apply([("put", row(p)) for p in (b"d", b"d/1", b"d/2/3", b"d0", b"e")])
    idx.apply([("delete", b"d")])
    assert [r.path for r in idx.all_rows()] == [b"d0", b"e"]


def test_hard_link_names_are_found_by_inode_and_survive_reopening(tmp_path):
    path = str(tmp_path / "i.sqlite")
    idx = Index(path)
    idx.apply([("put", row(b"x", ino=42)), ("put", row(b"y/z", ino=42)), ("put", row(b"w", ino=7))])
    idx.close()
    idx = Index(path)
    assert idx.paths_with_inode(2049, 42) == [b"x", b"y/z"]
    assert len(idx) == 3


def test_a_failed_batch_changes_nothing(tmp_path):
    idx = Index(str(tmp_path / "i.sqlite"))
    idx.apply([("put", row(b"keep"))])
    try:
        idx.apply([("delete", b"keep"), ("put", ("not", "a", "row"))])
    except Exception:
        pass
    assert idx.get(b"keep") is not None
    assert os.path.exists(tmp_path / "i.sqlite")
