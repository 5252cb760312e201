"""The collection's molecule scenarios, in podman containers with systemd as PID 1:
`molecule test -s NAME` from the repository root, as a developer runs it. Each passes create,
converge, idempotence (no change on the second run) and verify; containers and networks are
removed whatever happens. The images come from scripts/podman-host.sh (built once, cached)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# molecule's own limit, below the test's, so that the test still gets to clean up.
MOLECULE_TIMEOUT = 1500

pytestmark = [pytest.mark.need_root, pytest.mark.molecule, pytest.mark.slow]


def tail(text: str, lines: int = 150) -> str:
    return "\n".join(ANSI.sub("", text).splitlines()[-lines:])


@pytest.fixture(scope="session")
def podman_host():
    """podman configured for this host and the local systemd images built (or found current)."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/setup.sh installs it)")
    info = subprocess.run(["podman", "info"], capture_output=True, text=True)
    if info.returncode != 0:
        pytest.skip(f"podman is not usable here: {info.stderr.strip()[-500:]}")
    done = subprocess.run(["bash", str(REPO / "scripts" / "podman-host.sh")], capture_output=True, text=True)
    assert done.returncode == 0, f"scripts/podman-host.sh failed:\n{tail(done.stdout + done.stderr, 60)}"


def molecule_env() -> dict:
    env = dict(os.environ)
    env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '')}", ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
               ANSIBLE_NOCOLOR="1", PY_COLORS="0", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    env.pop("ANSIBLE_CONFIG", None)
    return env


def remove_leftovers(scenario: str) -> None:
    """What the scenario may leave behind when molecule itself is killed: its containers, network."""
    config = yaml.safe_load((REPO / "molecule" / scenario / "molecule.yml").read_text())
    for platform in config["platforms"]:
        subprocess.run(["podman", "rm", "--force", "--time", "5", platform["name"]], capture_output=True)
    for network in {p["network"] for p in config["platforms"] if p.get("network")}:
        subprocess.run(["podman", "network", "rm", "--force", network], capture_output=True)


@pytest.mark.timeout(MOLECULE_TIMEOUT + 300)
@pytest.mark.parametrize("scenario", ["appliances", "sentinel", "end_to_end"])
def test_molecule_scenario(scenario, podman_host):
    env = molecule_env()
    try:
        try:
            done = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", scenario], cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=MOLECULE_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            pytest.fail(f"molecule test -s {scenario} ran over {MOLECULE_TIMEOUT}s:\n{tail(out)}")
        output = ANSI.sub("", done.stdout + done.stderr)
        assert done.returncode == 0, f"molecule test -s {scenario} failed (exit {done.returncode}):\n{tail(output)}"
        for step in ("converge", "idempotence", "verify"):
            # "appliances ➜ verify: Executed: Successful" on a terminal, "appliances > verify: ..." in a pipe
            assert re.search(rf"{scenario} (?:➜|>) {step}\]?:? Executed: Successful", output), \
                f"{step} did not pass:\n{tail(output)}"
    finally:
        subprocess.run([str(VENV_BIN / "molecule"), "destroy", "-s", scenario], cwd=REPO, env=env,
                       capture_output=True, timeout=300)
        remove_leftovers(scenario)
