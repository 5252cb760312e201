import os
import stat

import pytest

from osam.common import atomic
from osam.common.atomic import atomic_write, fsync_dir


def test_writes_content_and_mode(tmp_path):
    target = tmp_path / "state.json"
    atomic_write(target, b"hello", mode=0o640)
    assert target.read_bytes() == b"hello"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_default_mode_is_private(tmp_path):
    target = tmp_path / "secret"
    atomic_write(str(target), b"x")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_replaces_existing_file_with_a_new_inode(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old content, longer than the new one")
    before = target.stat().st_ino
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != before   # renamed over, never rewritten in place


def test_bytes_path_and_large_data(tmp_path):
    target = os.fsencode(tmp_path) + b"/\xff-name"
    data = os.urandom(3 << 20)
    atomic_write(target, data)
    with open(target, "rb") as f:
        assert f.read() == data


def test_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "f"
    target.write_bytes(b"good")

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write(target, b"never visible")
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_temp_file_lives_beside_target(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(src)
        return real_replace(src, dst)
    monkeypatch.setattr(atomic.os, "replace", spy)
    atomic_write(tmp_path / "journal", b"x")
    assert os.path.dirname(seen[0]) == str(tmp_path)
    assert os.path.basename(seen[0]).startswith(atomic.temp_prefix("journal"))


def test_fsync_dir(tmp_path):
    fsync_dir(tmp_path)
    fsync_dir(os.fsencode(tmp_path))
    with pytest.raises(NotADirectoryError):
        (tmp_path / "file").write_bytes(b"")
        fsync_dir(tmp_path / "file")
