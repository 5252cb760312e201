"""ansible-lint with the production profile, offline, passes over the whole repository
(playbooks, inventories, molecule scenarios, AWX definitions, the collection) and over the
collection on its own, the way a user runs it from the collection's root.

ansible-lint searches ~/.ansible/collections before ./collections, so a copy of vmware.osam
installed there (by molecule's prerun, or an online ansible-lint, both of which install the
repository root as the collection) would be linted against instead of this checkout: the test
gives ansible-lint an empty ANSIBLE_HOME."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "collections" / "ansible_collections" / "vmware" / "osam"
VENV_BIN = Path(sys.executable).parent


@pytest.mark.parametrize("where", [REPO, COLLECTION], ids=["repository", "collection"])
def test_ansible_lint_production_profile_passes(where, tmp_path):
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", NO_COLOR="1",
               ANSIBLE_HOME=str(tmp_path / "ansible-home"))
    proc = subprocess.run([str(VENV_BIN / "ansible-lint"), "--nocolor"], cwd=where, env=env,
                          capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # The config was read: production is the profile asked for, and it is the one met.
    assert "Profile 'production' was required, and it passed" in output, output
