"""The built collection carries the daemons: `scripts/build-collection.sh` bundles the osam
wheel into the tarball; installed into an empty collections directory and run from a directory
without the source tree, the wheelhouse role builds wheelhouses from that bundled wheel, and a
host installs the daemons from one of them with no package index."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
WHEEL_MEMBER = re.compile(r"^roles/wheelhouse/files/osam-[^/]+\.whl$")
# What the role's pip bootstrap does on a host: pip run from its own wheel, into a venv without pip.
PIP_FROM_WHEEL = ("import runpy, sys, sysconfig; sysconfig._PIP_USE_SYSCONFIG = True; "
                  "sys.path.insert(0, sys.argv[1]); sys.argv[:2] = ['pip']; "
                  "runpy.run_module('pip', run_name='__main__', alter_sys=True)")


def run(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)


def explain(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = run(["bash", REPO / "scripts" / "build-collection.sh", out], cwd=REPO)
    assert done.returncode == 0, explain(done)
    return Path(done.stdout.strip().splitlines()[-1])


def bundled_wheel(tarball: Path) -> tuple:
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if WHEEL_MEMBER.match(m.name)]
        assert len(members) == 1, [m.name for m in members]
        return Path(members[0].name).name, tar.extractfile(members[0]).read()


def test_tarball_bundles_the_osam_wheel_and_the_checkout_keeps_none(tarball):
    name, data = bundled_wheel(tarball)
    version = re.search(r'^version = "([^"]+)"', (REPO / "daemons" / "pyproject.toml").read_text(), re.M).group(1)
    assert name == f"osam-{version}-py3-none-any.whl"
    assert data[:2] == b"PK"
    # In the checkout the role builds from daemons/: a wheel left there would go stale.
    files = REPO / "collections/ansible_collections/vmware/osam/roles/wheelhouse/files"
    assert not list(files.glob("osam-*.whl"))


def play_recap(stdout: str) -> dict:
    match = re.search(r"^localhost\s*:\s*(.*)$", stdout, re.M)
    assert match, stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def test_installed_collection_builds_wheelhouses_without_the_source_tree(tarball, tmp_path):
    collections = tmp_path / "collections"
    # From tmp_path: the checkout's ansible.cfg would point at its own copy of the collection.
    done = run([VENV_BIN / "ansible-galaxy", "collection", "install", "--offline", "--force", "-p", collections,
                tarball], cwd=tmp_path)
    assert done.returncode == 0, explain(done)
    installed_role = collections / "ansible_collections/vmware/osam/roles/wheelhouse"
    assert installed_role.is_dir()

    work = tmp_path / "work"   # no ansible.cfg, no daemons/ anywhere above the installed collection
    work.mkdir()
    wheelhouse = tmp_path / "wheelhouse"
    (work / "wheelhouse.yml").write_text(f"""
- name: Build wheelhouses from the installed collection
  hosts: localhost
  gather_facts: false
  roles:
    - role: vmware.osam.wheelhouse
      osam_wheelhouse_dir: {wheelhouse}
      osam_wheelhouse_targets:
        - {{python: "3.11"}}
        - {{python: "3.9"}}
""")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), PATH=f"{VENV_BIN}:{os.environ['PATH']}",
               ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_CONFIG", None)
    playbook = [VENV_BIN / "ansible-playbook", "-i", "localhost,", "-c", "local",
                "-e", f"ansible_python_interpreter={sys.executable}", "wheelhouse.yml"]
    done = run(playbook, cwd=work, env=env)
    assert done.returncode == 0, explain(done)
    assert not (tmp_path / "daemons").exists()

    name, data = bundled_wheel(tarball)
    for target in ("cp311-manylinux_2_28_x86_64", "cp39-manylinux_2_28_x86_64"):
        wheels = sorted(p.name for p in (wheelhouse / target).glob("*.whl"))
        assert name in wheels, wheels
        assert (wheelhouse / target / name).read_bytes() == data   # the bundled wheel, as shipped
        for dep in ("cryptography", "lz4", "msgpack", "xxhash", "h11", "pip"):
            assert any(w.startswith(dep + "-") for w in wheels), (target, dep, wheels)
        assert (wheelhouse / f"{target}.tar").is_file()
    assert any("-cp39-" in w or "-abi3-" in w for w in os.listdir(wheelhouse / "cp39-manylinux_2_28_x86_64")
               if w.startswith("lz4-"))

    # A second run finds the wheelhouses complete and changes nothing.
    again = run(playbook, cwd=work, env=env)
    assert again.returncode == 0, explain(again)
    assert play_recap(again.stdout)["changed"] == 0, explain(again)

    # A host installs from the wheelhouse with no index: here, this machine's Python 3.11.
    target = wheelhouse / "cp311-manylinux_2_28_x86_64"
    if sys.version_info[:2] != (3, 11):
        pytest.skip(f"the offline install needs Python 3.11 here, not {sys.version.split()[0]}")
    venv = tmp_path / "venv"
    done = run([sys.executable, "-m", "venv", "--without-pip", venv])
    assert done.returncode == 0, explain(done)
    pip_wheel = next(target.glob("pip-*.whl"))
    done = run([venv / "bin/python", "-c", PIP_FROM_WHEEL, pip_wheel, "install", "--quiet", "--no-index",
                "--no-cache-dir", "--find-links", target, "osam[receiver]"], env=dict(env, PIP_CONFIG_FILE=os.devnull))
    assert done.returncode == 0, explain(done)
    done = run([venv / "bin/osam-sentinel", "--help"])
    assert done.returncode == 0 and "--gateway" in done.stdout, explain(done)
    sums = (target / "SHA256SUMS").read_text()
    assert f"{hashlib.sha256(data).hexdigest()}  {name}" in sums
