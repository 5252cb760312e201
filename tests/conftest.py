"""Fixtures shared by every test suite.

``need_root``
    Skips tests that need root. Use it either as a fixture argument
    (``def test_x(need_root): ...``) or as a marker (``@pytest.mark.need_root``, or
    ``pytestmark = pytest.mark.need_root`` for a module). The skip reason says why.

``disk_tmp_path`` (and ``module_disk_tmp_path``, one per test module)
    A fresh, empty directory (``pathlib.Path``) on a real disk file system: under
    ``/var/tmp`` (or ``$OSAM_TEST_TMPDIR``), never on tmpfs/ramfs, because replication
    tests depend on what disk file systems do with holes (SEEK_DATA/SEEK_HOLE), xattrs,
    POSIX ACLs and nanosecond timestamps. Skips the test when no such directory is
    available. Removed afterwards unless ``OSAM_KEEP_TMP=1``. For wider scopes use
    ``tests.util.new_disk_tmpdir`` directly.
"""
from __future__ import annotations

import os

import pytest

from tests.util import ROOT_SKIP_REASON, NotOnDisk, is_root, new_disk_tmpdir
from tests.util.trees import remove_tree

KEEP_TMP_ENV = "OSAM_KEEP_TMP"


def pytest_configure(config):
    config.addinivalue_line("markers", f"need_root: skip the test unless it runs as root ({ROOT_SKIP_REASON})")


def pytest_runtest_setup(item):
    if item.get_closest_marker("need_root") is not None and not is_root():
        pytest.skip(ROOT_SKIP_REASON)


@pytest.fixture
def need_root():
    """Skip the requesting test with a clear reason unless it runs as root."""
    if not is_root():
        pytest.skip(ROOT_SKIP_REASON)


def _disk_tmpdir(name: str):
    try:
        path = new_disk_tmpdir(name)
    except NotOnDisk as e:
        pytest.skip(str(e))
    try:
        yield path
    finally:
        if os.environ.get(KEEP_TMP_ENV) == "1":
            print(f"kept {path} (${KEEP_TMP_ENV}=1)")
        else:
            remove_tree(path)


@pytest.fixture
def disk_tmp_path(request):
    yield from _disk_tmpdir(request.node.name)


@pytest.fixture(scope="module")
def module_disk_tmp_path(request):
    """Like disk_tmp_path, shared by the tests of one module (for a site they all use)."""
    yield from _disk_tmpdir(request.module.__name__.rsplit(".", 1)[-1])
