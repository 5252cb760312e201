"""The collection's own quality gates, as its maintainers run them: ansible-test sanity and units
(through scripts/ansible-test.sh, which makes them work without the internet), the changelog
lint, and ansible-doc for every module."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "collections" / "ansible_collections" / "vmware" / "osam"
VENV_BIN = Path(sys.executable).parent
MODULES = ["guest_info", "migration", "migration_info", "sentinel_config", "switchover"]


def run(argv, cwd=REPO, timeout=900, **env):
    environment = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **env)
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def quiet(output):
    """ansible-test's output without the lines of pip installing its requirements."""
    noise = ("Looking in", "WARNING: Location", "Collecting", "Downloading", "Installing", "Successfully",
             "Processing", "Requirement already", "━")
    return "\n".join(line for line in output.splitlines() if not line.lstrip().startswith(noise))


@pytest.mark.slow
def test_ansible_test_sanity_passes():
    rc, output = run(["bash", REPO / "scripts" / "ansible-test.sh", "sanity"])
    assert rc == 0, quiet(output)
    assert 'Running sanity test "validate-modules"' in output  # it really ran the module checks


@pytest.mark.slow
def test_ansible_test_units_pass():
    rc, output = run(["bash", REPO / "scripts" / "ansible-test.sh", "units"])
    assert rc == 0, quiet(output)
    assert " passed" in output and " failed" not in output, quiet(output)


def test_sanity_ignore_files_are_empty():
    ignores = sorted((COLLECTION / "tests" / "sanity").glob("ignore-*.txt"))
    assert {path.name: path.read_text().strip() for path in ignores} == {path.name: "" for path in ignores}


def test_changelog_fragments_and_changelog_lint_clean():
    rc, output = run([VENV_BIN / "antsibull-changelog", "lint"], cwd=COLLECTION)
    assert rc == 0 and not output.strip(), output
    rc, output = run([VENV_BIN / "antsibull-changelog", "lint-changelog-yaml", "changelogs/changelog.yaml"],
                     cwd=COLLECTION)
    assert rc == 0 and not output.strip(), output


def test_every_module_is_documented_for_ansible_doc():
    found = sorted(p.stem for p in (COLLECTION / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    assert found == MODULES
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"))
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "--json"] + [f"vmware.osam.{m}" for m in MODULES],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = json.loads(proc.stdout)
    for module in MODULES:
        entry = docs[f"vmware.osam.{module}"]
        assert entry["doc"]["short_description"] and entry["doc"]["author"], module
        assert entry["examples"].strip() and entry["return"], module
        assert entry["doc"]["attributes"]["check_mode"]["support"] == "full", module


def test_api_modules_form_the_module_defaults_group():
    runtime = yaml.safe_load((COLLECTION / "meta" / "runtime.yml").read_text())
    # sentinel_config runs on guests and never calls the API.
    assert runtime["action_groups"]["osam"] == ["guest_info", "migration", "migration_info", "switchover"]
