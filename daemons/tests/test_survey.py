"""The survey's totals: every entry once, data bytes once per inode, holes not counted."""
import os

from osam.sentinel.survey import survey


def test_totals_count_hard_links_once_and_skip_holes(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a").write_bytes(b"x" * 10000)
    os.link(tmp_path / "d" / "a", tmp_path / "d" / "e" / "b")
    with open(tmp_path / "sparse", "wb") as f:
        f.truncate(64 << 20)
        f.write(b"y" * 4096)
    os.symlink("d/a", tmp_path / "link")
    entries, data = survey(os.fsencode(tmp_path), lambda rel: False)
    assert entries == 1 + 6  # the root, d, d/e, d/a, d/e/b, sparse, link
    assert data == 10000 + 4096


def test_foreign_mounts_are_not_entered(tmp_path):
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt" / "inside").write_bytes(b"z" * 100)
    entries, data = survey(os.fsencode(tmp_path), lambda rel: rel == b"mnt")
    assert (entries, data) == (2, 0)


def test_totals_of_a_whole_file_system_come_from_statvfs():
    from osam.sentinel.survey import totals_from_file_systems
    entries, used = totals_from_file_systems(b"/", [])
    st = os.statvfs("/")
    assert entries == st.f_files - st.f_ffree and entries > 1000
    assert used == (st.f_blocks - st.f_bfree) * st.f_frsize
