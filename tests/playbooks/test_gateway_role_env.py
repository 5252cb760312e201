"""The gateway role's command line (gateway.env) is accepted by the gateway's own parser, with
and without a bandwidth limit."""
from __future__ import annotations

import shlex

from osam.gateway.main import parse_args
from tests.molecule.test_sentinel_windows_parts import REPO, explain, playbook

ROLE = REPO / "collections/ansible_collections/vmware/osam/roles/gateway"


def render_args(tmp_path, extra_vars: str) -> list:
    done = playbook(tmp_path, f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {{file: "{ROLE}/defaults/main.yml"}}
    - ansible.builtin.set_fact:
        osam_gateway_receiver: "receiver.example:9443"
{extra_vars}
    - ansible.builtin.template: {{src: "{ROLE}/templates/gateway.env.j2", dest: "{tmp_path}/gateway.env", mode: "0644"}}
""")
    assert done.returncode == 0, explain(done)
    lines = (tmp_path / "gateway.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return shlex.split(env["OSAM_GATEWAY_ARGS"])


def test_the_defaults_make_a_command_line_without_a_limit(tmp_path):
    args = parse_args(render_args(tmp_path, "        osam_gateway_log_level: INFO"))
    assert args.receiver == ("receiver.example", 9443) and args.listen == ("0.0.0.0", 8443)
    assert args.bandwidth_limit is None


def test_a_bandwidth_limit_reaches_the_gateway(tmp_path):
    args = parse_args(render_args(tmp_path, "        osam_gateway_bandwidth_limit: 100M"))
    assert args.bandwidth_limit == 100e6
