"""vmware.osam.wheelhouse on the controller: a rebuilt osam wheel with an unchanged version
(0.1.0 from a changed checkout) must replace the one already in the target's wheelhouse, or
the hosts keep running the old daemons. Runs the role for one target twice against a copy of
daemons/ changed in between; pip fetches the dependencies (PyPI or its cache)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

PLAY = """\
- hosts: localhost
  gather_facts: false
  roles:
    - role: vmware.osam.wheelhouse
      osam_wheelhouse_dir: "{wheelhouse}"
      osam_wheelhouse_source_dir: "{source}"
      osam_wheelhouse_targets: [{{python: "3.11"}}]
"""


def run_role(tmp_path, wheelhouse, source):
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(wheelhouse=wheelhouse, source=source))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"), ANSIBLE_NOCOLOR="1",
               PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    done = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(play)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def osam_wheel_files(target_dir):
    (wheel,) = target_dir.glob("osam-*.whl")
    with zipfile.ZipFile(wheel) as z:
        return wheel, set(z.namelist())


def test_a_rebuilt_wheel_of_the_same_version_replaces_the_old_one(tmp_path, disk_tmp_path):
    source = disk_tmp_path / "daemons"
    shutil.copytree(REPO / "daemons", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    wheelhouse = disk_tmp_path / "wheelhouse"
    run_role(tmp_path, wheelhouse, source)
    target = next(p for p in wheelhouse.iterdir() if p.is_dir() and p.name.startswith("cp311-"))
    first, files = osam_wheel_files(target)
    assert "osam/fixup_marker.py" not in files

    (source / "src" / "osam" / "fixup_marker.py").write_text("CHANGED = True\n")
    run_role(tmp_path, wheelhouse, source)
    second, files = osam_wheel_files(target)
    assert second.name == first.name, "same version, same file name"
    assert "osam/fixup_marker.py" in files, "the wheelhouse still holds the wheel of the earlier build"
    checksum = subprocess.run(["sha256sum", str(second)], capture_output=True, text=True).stdout.split()[0]
    assert checksum in (target / "SHA256SUMS").read_text()
    tar = wheelhouse / f"{target.name}.tar"
    assert f"{checksum}  {second.name}" in subprocess.run(["tar", "-xOf", str(tar), "SHA256SUMS"], capture_output=True,
                                                         text=True).stdout, "the tar the hosts get holds the new wheel"

    # A run stopped after the wheel list but before the tar leaves the old tar: the next run packs again.
    (source / "src" / "osam" / "fixup_marker.py").write_text("CHANGED = 2\n")
    run_role(tmp_path, wheelhouse, source)
    (target / "SHA256SUMS").write_text((target / "SHA256SUMS").read_text() + "0" * 64 + "  stale.whl\n")
    (wheelhouse / f"{target.name}.tar.SHA256SUMS").unlink()
    run_role(tmp_path, wheelhouse, source)
    assert "stale.whl" not in subprocess.run(["tar", "-xOf", str(tar), "SHA256SUMS"], capture_output=True,
                                             text=True).stdout
