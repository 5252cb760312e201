"""migrate.yml, switchover.yml and status.yml run the way AWX runs them (ansible-runner, the
repository as project) against a real site on loopback: receiver, gateway and three guests'
sentinels as processes, the site's PKI as the controller's osam_pki_dir. deploy.yml installs
systemd services and is covered by the molecule end_to_end scenario instead.

One site serves the whole module, so the tests run in file order: nothing is migrating before
the first one, and the switchover tests start from guests in continuous sync."""
from __future__ import annotations


import pytest

from tests.e2e.site import Site, wait_for
from tests.playbooks.awx_runner import run_playbook, site_inventory, unreachable_guest
from tests.util.trees import diff_trees, make_rich_tree

pytestmark = [pytest.mark.need_root, pytest.mark.e2e]  # owners and device nodes on the replicas

GUESTS = ("web01", "web02", "db01")
TIMEOUT = 120  # seconds a guest may take to reach a phase (osam_wait_timeout)


@pytest.fixture(scope="module")
def base(module_disk_tmp_path):
    return module_disk_tmp_path


@pytest.fixture(scope="module")
def site(base):
    s = Site(base / "site")
    try:
        s.start_receiver()
        s.start_gateway()
        for seed, name in enumerate(GUESTS, 1):
            make_rich_tree(source(base, name), seed=seed)
            s.start_sentinel(name, source(base, name))
        for name in GUESTS:
            wait_for(lambda: s.guest(name), 30, f"guest {name} to register")
        yield s
    finally:
        s.stop_all()


def source(base, name):
    return base / "sources" / name


def job(site, base, playbook, extravars=None, groups=None, **kw):
    inventory = site_inventory(site.api_port, groups or {"osam_guests": GUESTS})
    return run_playbook(base / "jobs", f"playbooks/{playbook}", inventory,
                        {"osam_pki_dir": str(site.pki), "osam_poll_interval": 0.5, **(extravars or {})}, **kw)


def phase(site, name):
    return site.migration(name)["phase"]


def test_check_mode_reports_what_would_start_and_starts_nothing(site, base):
    run = job(site, base, "migrate.yml", {"osam_wait_phase": "continuous_sync"}, cmdline="--check")

    assert run.status == "successful", run.explain()
    assert {name: run.changed(name) for name in GUESTS} == {name: 1 for name in GUESTS}, run.explain()
    assert site.api("GET", "/v1/migrations") == (200, {"migrations": []})


def test_migrate_twice_the_second_run_changes_nothing(site, base):
    first = job(site, base, "migrate.yml", {"osam_wait_phase": "continuous_sync", "osam_wait_timeout": TIMEOUT})
    assert first.status == "successful", first.explain() + site.dump_logs()
    assert {name: first.changed(name) for name in GUESTS} == {name: 1 for name in GUESTS}, first.explain()
    assert {name: phase(site, name) for name in GUESTS} == {name: "continuous_sync" for name in GUESTS}
    started = {name: site.migration(name)["id"] for name in GUESTS}

    second = job(site, base, "migrate.yml", {"osam_wait_phase": "continuous_sync", "osam_wait_timeout": TIMEOUT})
    assert second.status == "successful", second.explain()
    assert {name: second.changed(name) for name in GUESTS} == {name: 0 for name in GUESTS}, second.explain()
    assert all(second.count("ok", name) > 0 for name in GUESTS), second.explain()
    assert {name: site.migration(name)["id"] for name in GUESTS} == started


def test_status_report_with_the_awx_credential_shows_each_guest(site, base):
    """The API reached through the OSAM_* variables the AWX credential type injects: no PKI
    directory and no osam_receiver host in the inventory."""
    report = base / "status.txt"
    env = {"OSAM_API": f"https://127.0.0.1:{site.api_port}",
           "OSAM_TOKEN": (site.pki / "api-token-ro").read_text().strip(),
           "OSAM_CA_CERT": str(site.pki / "ca.crt"), "OSAM_CLIENT_CERT": str(site.pki / "admin.crt"),
           "OSAM_CLIENT_KEY": str(site.pki / "admin.key")}
    guests = {name: unreachable_guest() for name in GUESTS + ("ghost",)}
    inventory = {"all": {"children": {"osam_guests": {"hosts": guests}}}}
    run = run_playbook(base / "jobs", "playbooks/status.yml", inventory, {"osam_status_report": str(report)},
                       envvars=env)

    assert run.status == "successful", run.explain()
    lines = report.read_text().splitlines()
    rows = {line.split()[0]: line for line in lines[2:]}
    for name in GUESTS:
        assert f" {phase(site, name)} " in rows[name], lines
        assert f" {phase(site, name)} " in run.stdout
    assert " not registered " in rows["ghost"]
    stats = next(e for e in run.events if e["event"] == "playbook_on_stats")["event_data"]
    artifact = stats["artifact_data"]["osam_status"]
    assert {name: artifact[name]["phase"] for name in GUESTS} == {name: phase(site, name) for name in GUESTS}
    assert artifact["ghost"]["registered"] is False


def test_switchover_check_mode_reports_and_switches_nothing(site, base):
    run = job(site, base, "switchover.yml", {"osam_switchover_batch": "50%"}, cmdline="--check")

    assert run.status == "successful", run.explain()
    assert {name: run.changed(name) for name in GUESTS} == {name: 1 for name in GUESTS}, run.explain()
    for name in GUESTS:
        migration = site.migration(name)
        assert (migration["phase"], migration["switchover_requested"]) == ("continuous_sync", False)


def test_a_failing_guest_stops_the_later_batches(site, base):
    """Batches of one over web01, ghost (no sentinel, no migration), web02: web01 completes,
    ghost fails, and web02 is never touched."""
    for name in ("web01", "web02"):
        assert phase(site, name) == "continuous_sync"
    run = job(site, base, "switchover.yml", {"osam_guest_hosts": "wave", "osam_switchover_batch": 1,
                                             "osam_wait_timeout": TIMEOUT},
              groups={"osam_guests": GUESTS, "wave": ["web01", "ghost", "web02"]})

    assert run.status == "failed", run.explain()
    assert phase(site, "web01") == "completed", run.explain() + site.dump_logs()
    assert run.failed("ghost") == 1, run.explain()
    untouched = site.migration("web02")
    assert (untouched["phase"], untouched["switchover_requested"]) == ("continuous_sync", False)
    assert run.count("ok", "web02") == 0 and run.changed("web02") == 0, run.explain()
    assert diff_trees(source(base, "web01"), site.replica("web01")) == []


def test_switchover_in_batches_completes_every_guest_with_identical_replicas(site, base):
    """The whole group in batches of two, after the failure above: web01 has already completed
    and is left as it is, the others switch over."""
    run = job(site, base, "switchover.yml", {"osam_switchover_batch": 2, "osam_wait_timeout": TIMEOUT})

    assert run.status == "successful", run.explain() + site.dump_logs()
    assert {name: phase(site, name) for name in GUESTS} == {name: "completed" for name in GUESTS}
    assert run.changed("web01") == 0 and run.changed("web02") == 1 and run.changed("db01") == 1, run.explain()
    for name in GUESTS:
        assert diff_trees(source(base, name), site.replica(name)) == [], name
