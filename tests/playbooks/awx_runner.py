"""Run this repository's playbooks the way AWX runs a job template: ansible-runner with a private
data directory holding project/ (the repository), inventory/hosts and env/extravars, so the
project's ansible.cfg, vars files and templates are found exactly as in an AWX job."""
from __future__ import annotations

import itertools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import ansible_runner

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = ("deploy.yml", "migrate.yml", "switchover.yml", "status.yml")
VENV_BIN = Path(sys.executable).parent
_run_numbers = itertools.count(1)
# What the AWX credential type "vmware.osam API" injects (awx/credential_types/osam_api.yml).
OSAM_ENV = ("OSAM_API", "OSAM_TOKEN", "OSAM_CA_CERT", "OSAM_CLIENT_CERT", "OSAM_CLIENT_KEY", "OSAM_PKI")


@dataclass
class PlaybookRun:
    status: str                 # ansible-runner's: successful, failed, timeout, canceled
    rc: int
    stats: dict                 # the play recap: {"ok": {host: n}, "changed": {...}, "failures": ...}
    stdout: str
    events: list = field(repr=False)
    private_data_dir: Path = None

    def count(self, kind: str, host: str) -> int:
        return (self.stats or {}).get(kind, {}).get(host, 0)

    def changed(self, host: str) -> int:
        return self.count("changed", host)

    def failed(self, host: str) -> int:
        return self.count("failures", host)

    def results(self, task: str) -> dict:
        """{host: module result} of the task with this name (runner_on_ok/failed events)."""
        found = {}
        for event in self.events:
            data = event.get("event_data", {})
            if event.get("event") in ("runner_on_ok", "runner_on_failed") and data.get("task") == task:
                found[data["host"]] = data.get("res", {})
        return found

    def explain(self) -> str:
        return f"status={self.status} rc={self.rc} stats={json.dumps(self.stats)}\n{self.stdout[-6000:]}"


def host(**hostvars) -> dict:
    """A host that Ansible reaches as the controller itself, with the test's Python."""
    return {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **hostvars}


def unreachable_guest() -> dict:
    """A guest over SSH at an address that is never routed (TEST-NET-1): the API playbooks
    must not connect to guests at all, so any task that tried would fail the test."""
    return {"ansible_host": "192.0.2.1", "ansible_connection": "ssh",
            "ansible_ssh_common_args": "-o ConnectTimeout=3 -o BatchMode=yes"}


def site_inventory(api_port: int, groups: dict) -> dict:
    """The inventory shape of inventories/example: an osam_receiver host (the API's address)
    plus the given groups {group: [host names]}."""
    children = {"osam_receiver": {"hosts": {"receiver": {"ansible_host": "127.0.0.1"}}}}
    for group, hosts in groups.items():
        children[group] = {"hosts": {name: unreachable_guest() for name in hosts}}
    return {"all": {"vars": {"osam_receiver_api_port": api_port}, "children": children}}


def run_playbook(base: Path, playbook: str, inventory: dict, extravars: dict = None,
                 cmdline: str = None, envvars: dict = None) -> PlaybookRun:
    """One job: a fresh private data dir under `base` (kept for its artifacts), the repo as project."""
    pdd = base / f"job-{next(_run_numbers):02d}-{Path(playbook).stem}"
    (pdd / "inventory").mkdir(parents=True)
    (pdd / "env").mkdir()
    (pdd / "project").symlink_to(REPO, target_is_directory=True)
    # JSON is YAML: the same files AWX writes.
    (pdd / "inventory" / "hosts.yml").write_text(json.dumps(inventory, indent=1))
    (pdd / "env" / "extravars").write_text(json.dumps(extravars or {}, indent=1))
    env = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1",
           # An OSAM_* variable of the caller's shell would win over the site's PKI: only the test's count.
           **{name: "" for name in OSAM_ENV}, **(envvars or {})}
    runner = ansible_runner.run(private_data_dir=str(pdd), playbook=playbook, cmdline=cmdline,
                                envvars=env, quiet=True)
    return PlaybookRun(status=runner.status, rc=runner.rc, stats=runner.stats,
                       stdout=runner.stdout.read(), events=list(runner.events), private_data_dir=pdd)
