"""The sentinel role's Linux branch in block mode: the service's arguments the role writes are
accepted by the sentinel's own parser, and a block mode without disks is refused up front."""
from __future__ import annotations

import shlex

from osam.sentinel.main import parse_args
from tests.molecule.test_sentinel_windows_parts import ROLE, explain, playbook


def render_env(tmp_path, extra_vars: str) -> dict:
    done = playbook(tmp_path, f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {{file: "{ROLE}/defaults/main.yml"}}
    - ansible.builtin.set_fact:
        osam_sentinel_name: db01
        osam_sentinel_gateway: "gw.example:8443"
{extra_vars}
    - ansible.builtin.template: {{src: "{ROLE}/templates/sentinel.env.j2", dest: "{tmp_path}/sentinel.env", mode: "0644"}}
""")
    assert done.returncode == 0, explain(done)
    lines = (tmp_path / "sentinel.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_block_mode_arguments_reach_the_sentinel(tmp_path):
    env = render_env(tmp_path, """        osam_sentinel_mode: block
        osam_sentinel_block_disks: [{name: sda, path: /dev/sda}, {name: data, path: /dev/vdb}]
        osam_sentinel_block_size: 262144
        osam_sentinel_rescan_interval: 30""")
    args = parse_args(["--gateway", env["OSAM_GATEWAY"], *shlex.split(env["OSAM_SENTINEL_ARGS"])])
    assert args.mode == "block"
    assert args.disk == [("sda", "/dev/sda"), ("data", "/dev/vdb")]
    assert (args.block_size, args.rescan_interval) == (262144, 30.0)


def test_file_mode_is_the_default_and_adds_nothing(tmp_path):
    env = render_env(tmp_path, "        osam_sentinel_log_level: INFO")
    args = parse_args(["--gateway", env["OSAM_GATEWAY"], *shlex.split(env["OSAM_SENTINEL_ARGS"])])
    assert args.mode == "file" and args.disk == []
    assert "--mode" not in env["OSAM_SENTINEL_ARGS"]


def test_block_mode_without_disks_is_refused(tmp_path):
    done = playbook(tmp_path, f"""
- hosts: localhost
  gather_facts: false
  vars:
    ansible_facts: {{service_mgr: systemd, os_family: Debian}}
    osam_sentinel_mode: block
  tasks:
    - ansible.builtin.include_role: {{name: vmware.osam.sentinel, tasks_from: linux}}
""")
    assert done.returncode != 0
    assert "block mode needs osam_sentinel_block_disks" in done.stdout, explain(done)


def test_a_bandwidth_limit_reaches_the_sentinel_and_none_adds_nothing(tmp_path):
    env = render_env(tmp_path, "        osam_sentinel_bandwidth_limit: 20M")
    args = parse_args(["--gateway", env["OSAM_GATEWAY"], *shlex.split(env["OSAM_SENTINEL_ARGS"])])
    assert args.bandwidth_limit == 20e6
    env = render_env(tmp_path, "        osam_sentinel_log_level: INFO")
    assert "--bandwidth-limit" not in env["OSAM_SENTINEL_ARGS"]
