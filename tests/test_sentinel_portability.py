"""The sentinel ships alone to guests: it must not pull in receiver-side code, and it must run on
the oldest Python the guests have (3.9, Debian 11)."""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SENTINEL_SIDE_TESTS = ["test_protocol.py", "test_sentinel_walk.py", "test_sentinel_reader.py",
                       "test_sentinel_config.py", "test_sentinel_journal.py", "test_sentinel_index.py",
                       "test_survey.py", "test_inventory.py", "test_quiesce.py", "test_layout.py",
                       "test_block_mode.py", "test_windows_inventory.py", "test_windows_vss.py",
                       "test_windows_quiesce.py", "test_windows_service.py", "test_windows_disk.py",
                       "test_windows_firstboot.py", "test_bandwidth.py"]
GUEST_REQUIREMENTS = ["cryptography>=42,<47", "lz4>=4.3,<5", "msgpack>=1.0.5,<2", "xxhash>=3.4,<5",
                      "pytest==8.3.5", "hypothesis==6.113.0"]


def test_the_sentinel_imports_nothing_of_the_receiver_side():
    code = ("import sys, osam.sentinel.main, osam.sentinel.agent; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('osam.', 'h11')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not [m for m in loaded if m.startswith(("osam.receiver", "osam.controller", "osam.gateway", "h11"))], loaded


def python39():
    for candidate in sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9")) + [shutil.which("python3.9")]:
        if candidate and subprocess.run([candidate, "-c", "import venv"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_sentinel_side_tests_pass_on_python_3_9():
    py39 = python39()
    if py39 is None:
        pytest.skip("no Python 3.9 interpreter here (python3.9 on PATH or under pyenv)")
    key = hashlib.sha256("\n".join(GUEST_REQUIREMENTS + [py39]).encode()).hexdigest()[:12]
    venv = REPO / ".cache" / f"py39-{key}"
    if not (venv / "ready").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([py39, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", "--only-binary=:all:", *GUEST_REQUIREMENTS],
                       check=True, capture_output=True)
        (venv / "ready").write_text("")
    env = dict(os.environ, PYTHONPATH=str(REPO / "daemons" / "src"))
    result = subprocess.run(
        [str(venv / "bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "/dev/null",
         *[str(REPO / "daemons" / "tests" / t) for t in SENTINEL_SIDE_TESTS]],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
