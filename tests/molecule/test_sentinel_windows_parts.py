"""The parts of vmware.osam.sentinel's Windows branch that can run without a Windows host
(there is none here; see the role's README for what is and is not covered):
  - the controller builds a win_amd64 wheelhouse in which every dependency is a Windows wheel;
  - the two configuration files it templates (Windows cannot run the Python module
    sentinel_config) are read back by the sentinel's own parser with the intended values;
  - the branch's settings are refused with the role's message when they are wrong;
  - the command line the service is registered with, split as Windows splits it, is one the
    sentinel's own argument parser accepts, with --service and the role's directories."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path


from osam.sentinel.config import load_config
from osam.sentinel.main import parse_args

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ROLE = REPO / "collections/ansible_collections/vmware/osam/roles/sentinel"


def playbook(tmp_path: Path, text: str, *args) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(text)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"), ANSIBLE_NOCOLOR="1",
               PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", *args, str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)


def explain(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n{done.stdout[-5000:]}\n{done.stderr[-2000:]}"


def test_windows_wheelhouse_holds_only_windows_or_pure_wheels(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    done = playbook(tmp_path, f"""
- hosts: localhost
  gather_facts: false
  roles:
    - role: vmware.osam.wheelhouse
      osam_wheelhouse_dir: {wheelhouse}
      osam_wheelhouse_targets: [{{python: "3.11", os: windows}}]
""")
    assert done.returncode == 0, explain(done)
    target = wheelhouse / "cp311-win_amd64"
    wheels = sorted(p.name for p in target.glob("*.whl"))
    for dep in ("osam", "cryptography", "cffi", "lz4", "msgpack", "xxhash", "pip"):
        assert any(w.startswith(dep + "-") for w in wheels), (dep, wheels)
    for wheel in wheels:
        platform_tag = wheel[:-4].split("-")[-1]
        assert platform_tag in ("any", "win_amd64"), wheel
        with zipfile.ZipFile(target / wheel) as zf:   # real wheels, not error pages
            assert any(n.endswith("/WHEEL") for n in zf.namelist()), wheel


def test_templated_configuration_reads_back_with_the_sentinels_parser(tmp_path):
    etc = tmp_path / "etc_dir"
    done = playbook(tmp_path, f"""
- hosts: localhost
  gather_facts: false
  vars:
    osam_sentinel_excluded_paths: [/var/log, /srv/cache]
    __osam_sentinel_params:
      max_retry_interval: 3
      verify_interval: 0
      quiesce_services: [postgresql, nginx]
      pre_quiesce_hook: [sync, "echo quiesce >> /var/log/quiesce.log"]
      final_verify: true
      quiesce_timeout: null
  tasks:
    - ansible.builtin.file: {{path: "{etc}/etc", state: directory, mode: "0755"}}
    - ansible.builtin.template: {{src: "{ROLE}/templates/excluded_paths.j2", dest: "{etc}/excluded_paths", mode: "0644"}}
    - ansible.builtin.template: {{src: "{ROLE}/templates/sync.params.j2", dest: "{etc}/etc/sync.params", mode: "0644"}}
""")
    assert done.returncode == 0, explain(done)
    config = load_config(str(etc))
    assert config.excluded_paths == (b"/srv/cache", b"/var/log")
    assert config.max_retry_interval == 3
    assert config.verify_interval == 0
    assert config.quiesce_services == ("postgresql", "nginx")
    assert config.pre_quiesce_hooks == ("sync", "echo quiesce >> /var/log/quiesce.log")
    assert config.final_verify is True
    assert config.quiesce_timeout == 120   # null: the key is left out, the default applies


def test_windows_branch_refuses_an_out_of_range_retry_interval(tmp_path):
    done = playbook(tmp_path, f"""
- hosts: localhost
  gather_facts: false
  vars:
    ansible_facts: {{os_family: Windows}}
    osam_sentinel_cert: {tmp_path}/x.crt
    osam_sentinel_key: {tmp_path}/x.key
    osam_pki_dir: {tmp_path}
    osam_sentinel_gateway: "gw.example:8443"
    osam_sentinel_sync_params: {{max_retry_interval: 9}}
  tasks:
    - ansible.builtin.include_role: {{name: vmware.osam.sentinel, tasks_from: windows}}
""")
    assert done.returncode != 0
    assert "max_retry_interval" in done.stdout and "from 1 to 8" in done.stdout, explain(done)


def windows_argv(command_line: str) -> list:
    """CommandLineToArgvW's rules for what the role writes: double quotes group, backslashes
    are literal unless they precede a quote (which the role refuses)."""
    argv, current, quoted, started = [], [], False, False
    for ch in command_line:
        if ch == '"':
            quoted, started = not quoted, True
        elif ch in " \t" and not quoted:
            if started:
                argv.append("".join(current))
            current, started = [], False
        else:
            current.append(ch)
            started = True
    if started:
        argv.append("".join(current))
    return argv


def service_command(tmp_path: Path, extra_vars: str) -> str:
    done = playbook(tmp_path, f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {{file: "{ROLE}/defaults/main.yml"}}
    - ansible.builtin.set_fact:
{extra_vars}
    - ansible.builtin.copy: {{content: "{{{{ osam_sentinel_windows_service_command }}}}", dest: "{tmp_path}/cmd.txt", mode: "0644"}}
""")
    assert done.returncode == 0, explain(done)
    return (tmp_path / "cmd.txt").read_text()


def test_the_service_command_line_runs_the_sentinel_as_a_windows_service(tmp_path):
    line = service_command(tmp_path, """        osam_sentinel_name: web01
        osam_sentinel_gateway: "gw.example:8443"
        osam_sentinel_log_level: DEBUG
        osam_sentinel_bandwidth_limit: 512Ki
        osam_sentinel_windows_extra_args: [--power-off-command, "shutdown.exe /s /t 60"]""")
    argv = windows_argv(line)
    home = "C:\\Program Files\\VMware\\HCX\\osam"
    assert argv[:4] == [home + "\\venv\\Scripts\\python.exe", "-m", "osam.sentinel.main", "--service"]
    args = parse_args(argv[3:])
    assert args.service is True
    assert args.gateway == ("gw.example", 8443) and args.name == "web01"
    assert args.pki == home + "\\etc\\pki"
    assert args.etc == home                          # excluded_paths and etc\\sync.params live here
    assert args.state == home + "\\state"
    assert args.log_file == home + "\\logs\\sentinel.log"
    assert args.log_level == "DEBUG"
    assert args.power_off_command == "shutdown.exe /s /t 60"
    assert args.bandwidth_limit == 512 * 1024
    # The role's win_service task registers exactly this variable.
    tasks = (ROLE / "tasks/windows.yml").read_text()
    assert 'path: "{{ osam_sentinel_windows_service_command }}"' in tasks


def test_windows_branch_refuses_a_directory_ending_in_a_backslash(tmp_path):
    done = playbook(tmp_path, f"""
- hosts: localhost
  gather_facts: false
  vars:
    ansible_facts: {{os_family: Windows}}
    osam_sentinel_cert: {tmp_path}/x.crt
    osam_sentinel_key: {tmp_path}/x.key
    osam_pki_dir: {tmp_path}
    osam_sentinel_gateway: "gw.example:8443"
    osam_sentinel_windows_dir: 'D:\\osam\\'
  tasks:
    - ansible.builtin.include_role: {{name: vmware.osam.sentinel, tasks_from: windows}}
""")
    assert done.returncode != 0
    assert "may not end with a backslash" in done.stdout, explain(done)
