"""The vmware.osam modules as a user runs them: ansible-playbook from the project's virtual
environment, the collection from ./collections, the connection options set once through
module_defaults for the group vmware.osam.osam, against a real receiver, gateway and sentinel
on loopback with the site's PKI (mutual TLS and bearer token, nothing mocked).

One site serves the whole module and the tests run in file order, following one guest's
migration: check mode first (nothing started yet), then the migration, its report, and the
switchover. Then the failures a user makes (a wrong token, a foreign CA). sentinel_config is
checked against the sentinel's own parser of its files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from osam.sentinel.config import load_config
from tests.e2e.site import Site, run
from tests.util.trees import diff_trees

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
GUEST = "web01"
TIMEOUT = 120  # seconds a phase may take to come on this noisy machine


@pytest.fixture(scope="module")
def base(module_disk_tmp_path):
    return module_disk_tmp_path


@pytest.fixture(scope="module")
def source(base):
    root = base / "guest"
    for directory, files in (("etc", {"hostname": "web01\n", "app.conf": "workers=4\n"}),
                             ("srv/data", {f"part{i}.bin": "x" * (4096 * i) for i in range(8)})):
        (root / directory).mkdir(parents=True)
        for name, text in files.items():
            (root / directory / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def site(base, source):
    s = Site(base / "site")
    try:
        s.start_all(GUEST, source)
        yield s
    finally:
        s.stop_all()


def playbook(base, name, tasks, site=None, pki=None, check=False, diff=False):
    """Run one play of `tasks` on localhost; returns (return code, {task name: result}, output)."""
    pki = pki or (site.pki if site else base)
    play = [{
        "name": name, "hosts": "localhost", "gather_facts": False,
        "module_defaults": {"group/vmware.osam.osam": {
            "api_url": "{{ osam_api }}",
            "api_token": "{{ osam_token | default(lookup('ansible.builtin.file', osam_pki + '/api-token'), true) }}",
            "ca_cert": "{{ osam_ca_cert | default(osam_pki + '/ca.crt', true) }}",
            "client_cert": "{{ osam_pki }}/admin.crt",
            "client_key": "{{ osam_pki }}/admin.key",
        }},
        "tasks": tasks,
    }]
    jobs = base / "plays"
    jobs.mkdir(exist_ok=True)
    (jobs / "ansible.cfg").write_text("[defaults]\n")  # not the repository's: only what is set here
    path = jobs / f"{name}.yml"
    path.write_text(json.dumps(play, indent=1))  # JSON is YAML
    variables = {"osam_pki": str(pki), "osam_api": f"https://127.0.0.1:{site.api_port}" if site else "",
                 "ansible_python_interpreter": sys.executable}
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", json.dumps(variables), str(path)]
    argv += ["--check"] * check + ["--diff"] * diff
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1",
               ANSIBLE_CONFIG=str(jobs / "ansible.cfg"), PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(argv, cwd=jobs, env=env, capture_output=True, text=True, timeout=TIMEOUT * 3)
    output = proc.stdout + proc.stderr
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"ansible-playbook did not report JSON (exit {proc.returncode}):\n{output}")
    results = {task["task"]["name"]: task["hosts"]["localhost"]
               for played in report["plays"] for task in played["tasks"]}
    return proc.returncode, results, output


def test_guest_info_sees_the_guest_and_its_facts(site, base):
    rc, results, output = playbook(base, "guest-info", [
        {"name": "all", "vmware.osam.guest_info": {}, "register": "all"},
        {"name": "one", "vmware.osam.guest_info": {"name": GUEST}},
        {"name": "unknown", "vmware.osam.guest_info": {"name": "nobody-here"}},
    ], site)
    assert rc == 0, output
    guests = {g["name"]: g for g in results["all"]["guests"]}
    assert list(guests) == [GUEST], output
    web01 = guests[GUEST]
    assert web01["connected"] is True and web01["migration_phase"] is None
    assert web01["inventory"]["hostname"] == "web01"  # the name the replicated system is configured with
    assert web01["inventory"]["kernel"]["sysname"] == "Linux" and web01["inventory"]["nics"]
    assert [g["name"] for g in results["one"]["guests"]] == [GUEST]
    assert results["unknown"]["guests"] == [] and not results["unknown"]["changed"]


def test_check_mode_reports_the_new_migration_and_starts_nothing(site, base):
    rc, results, output = playbook(base, "migrate-check", [
        {"name": "migrate", "vmware.osam.migration": {"guest": GUEST, "wait": "continuous_sync"}},
    ], site, check=True, diff=True)
    assert rc == 0, output
    assert results["migrate"]["changed"] is True and results["migrate"]["operation"] == "started", output
    assert results["migrate"]["diff"]["after"]["phase"] == "registered"
    assert site.api("GET", f"/v1/migrations/{GUEST}")[0] == 404


def test_migration_reaches_continuous_sync_and_running_again_changes_nothing(site, base):
    task = {"vmware.osam.migration": {"guest": GUEST, "switchover": "manual", "wait": "continuous_sync",
                                      "wait_timeout": TIMEOUT, "poll_interval": 0.5}}
    rc, results, output = playbook(base, "migrate-twice", [
        dict(task, name="first"), dict(task, name="second")], site)
    assert rc == 0, output + site.dump_logs()
    first, second = results["first"], results["second"]
    assert first["changed"] is True and first["operation"] == "started"
    assert first["migration"]["phase"] == "continuous_sync"
    assert first["migration"]["bytes_done"] == first["migration"]["bytes_total"] > 0
    assert second["changed"] is False and second["operation"] == "none"
    assert second["migration"]["id"] == first["migration"]["id"]


def test_migration_info_reports_progress_and_history(site, base):
    rc, results, output = playbook(base, "migration-info", [
        {"name": "all", "vmware.osam.migration_info": {}},
        {"name": "one", "vmware.osam.migration_info": {"guest": [GUEST, "nobody-here"]}},
    ], site)
    assert rc == 0, output
    assert [m["guest"] for m in results["all"]["migrations"]] == [GUEST]
    (migration,) = results["one"]["migrations"]
    assert [h["to"] for h in migration["history"]] == ["registered", "full_sync", "continuous_sync"]
    assert migration["progress_percent"] == 100.0
    assert {"rate", "eta", "lag", "files_done", "files_total"} <= set(migration)


def test_switchover_waited_for_completes_with_an_identical_replica(site, base, source):
    (source / "etc" / "app.conf").write_text("workers=8\n")  # a last change the final sync must carry
    rc, results, output = playbook(base, "switchover", [
        {"name": "switch over", "vmware.osam.switchover": {"guest": GUEST, "wait": True,
                                                           "wait_timeout": TIMEOUT, "poll_interval": 0.5}},
        {"name": "again", "vmware.osam.switchover": {"guest": GUEST}},
        {"name": "migrate again", "vmware.osam.migration": {"guest": GUEST}},
    ], site)
    assert rc == 0, output + site.dump_logs()
    done = results["switch over"]
    assert done["changed"] is True and done["operation"] == "requested"
    assert done["migration"]["phase"] == "completed"
    assert [h["to"] for h in done["migration"]["history"]][-9:] == ["quiesce", "final_sync", "fixup", "replica_vm", "tools", "replica_on", "source_off", "network", "completed"]
    assert results["again"]["changed"] is False
    assert results["migrate again"]["changed"] is False  # a completed migration counts as present
    assert diff_trees(source, site.replica(GUEST)) == []


def test_a_wrong_token_fails_with_the_receivers_reason(site, base):
    rc, results, output = playbook(base, "wrong-token", [
        {"name": "guests", "vmware.osam.guest_info": {}, "vars": {"osam_token": "not-the-site-token"}},
    ], site)
    assert rc != 0
    message = results["guests"]["msg"]
    assert message == (f"GET https://127.0.0.1:{site.api_port}/v1/guests: HTTP 401: invalid token "
                       "(check api_token: it must be the content of the site's api-token file)"), output
    assert "not-the-site-token" not in output


def test_a_foreign_ca_fails_the_certificate_check(site, base):
    foreign = base / "foreign-pki"
    run([VENV_BIN / "osam", "pki", "init", str(foreign)])
    rc, results, output = playbook(base, "foreign-ca", [
        {"name": "guests", "vmware.osam.guest_info": {}, "vars": {"osam_ca_cert": str(foreign / "ca.crt")}},
    ], site)
    assert rc != 0
    message = results["guests"]["msg"]
    assert message.startswith(f"GET https://127.0.0.1:{site.api_port}/v1/guests: TLS certificate check failed: "), output
    assert "certificate verify failed" in message and "ca_cert" in message


def test_sentinel_config_writes_what_the_sentinel_reads(base):
    etc = base / "sentinel-etc"
    (etc / "etc").mkdir(parents=True)
    (etc / "etc" / "sync.params").write_text("# kept: notes of the team\nverify_interval = 30\n")
    tasks = [{"name": "configure", "vmware.osam.sentinel_config": {
        "etc_dir": str(etc),
        "excluded_paths": ["/var/log/", "/var/cache/apt", "//srv/scratch/."],
        "sync_params": {"max_retry_interval": 2, "quiesce_services": "postgresql, nginx",
                        "pre_quiesce_hook": ["sync", "echo flushed > /run/flushed"], "final_verify": True},
    }}]
    rc, results, output = playbook(base, "sentinel-config", tasks + [dict(tasks[0], name="again")])
    assert rc == 0, output
    reported = results["configure"]
    assert reported["changed"] is True and results["again"]["changed"] is False
    read = load_config(str(etc))
    assert [p.decode() for p in read.excluded_paths] == reported["excluded_paths"] == [
        "/srv/scratch", "/var/cache/apt", "/var/log"]
    params = reported["sync_params"]
    assert (read.max_retry_interval, read.verify_interval, read.quiesce_timeout, read.final_verify) == (
        params["max_retry_interval"], params["verify_interval"], params["quiesce_timeout"], params["final_verify"]) == (
        2, 30, 120, True)
    assert list(read.quiesce_services) == params["quiesce_services"] == ["postgresql", "nginx"]
    assert list(read.pre_quiesce_hooks) == params["pre_quiesce_hook"] == ["sync", "echo flushed > /run/flushed"]
    assert (etc / "etc" / "sync.params").read_text().startswith("# kept: notes of the team\nverify_interval = 30\n")

