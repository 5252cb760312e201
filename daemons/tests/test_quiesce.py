"""Quiesce before the final sync.

systemd is not PID 1 on the machines these tests run on, so stopping services is tested
against a fake `run` that plays systemctl; the path for a root other than "/" runs for real.
"""
from __future__ import annotations

import subprocess

import pytest

from osam.sentinel import quiesce as quiesce_module
from osam.sentinel.config import SentinelConfig
from osam.sentinel.quiesce import is_essential, quiesce, unquiesce

RUNNING = [
    "ssh.service", "vmware-hcx-osam-sentinel.service", "systemd-journald.service",
    "dbus.service", "getty@tty1.service", "serial-getty@ttyS0.service", "cron.service",
    "networking.service", "NetworkManager.service", "rsyslog.service", "chrony.service",
    "polkit.service", "user@1000.service", "auditd.service",
    "postgresql@15-main.service", "nginx.service", "docker.service",
]


class FakeSystemctl:
    """Plays `systemctl` (and /bin/sh for hooks), recording every command line."""

    def __init__(self, running, refuse_to_stop=(), hook_codes=None, hook_timeouts=()):
        self.running = list(running)
        self.refuse = set(refuse_to_stop)
        self.hook_codes = hook_codes or {}
        self.hook_timeouts = set(hook_timeouts)
        self.calls = []

    def __call__(self, argv, *, capture_output, text, timeout):
        assert capture_output and text and timeout > 0
        self.calls.append(list(argv))
        if argv[:2] == ["/bin/sh", "-c"]:
            if argv[2] in self.hook_timeouts:
                raise subprocess.TimeoutExpired(argv, timeout)
            return subprocess.CompletedProcess(argv, self.hook_codes.get(argv[2], 0), "out", "")
        assert argv[0] == "systemctl"
        if argv[1] == "list-units":
            listing = "".join("%s loaded active running Some service\n" % u
                              for u in self.running)
            return subprocess.CompletedProcess(argv, 0, listing, "")
        units = argv[argv.index("--") + 1:]
        if argv[1] == "stop":
            self.running = [u for u in self.running if u not in units or u in self.refuse]
            failed = [u for u in units if u in self.refuse]
            return subprocess.CompletedProcess(argv, 1 if failed else 0, "",
                                               "Job for %s failed" % failed if failed else "")
        if argv[1] == "start":
            self.running += [u for u in units if u not in self.running]
            return subprocess.CompletedProcess(argv, 0, "", "")
        raise AssertionError(argv)


@pytest.fixture
def no_sync(monkeypatch):
    synced = []
    monkeypatch.setattr(quiesce_module.os, "sync", lambda: synced.append(True))
    return synced


def test_spare_list():
    for unit in ["ssh.service", "sshd", "vmware-hcx-osam-sentinel.service",
                 "systemd-logind.service", "dbus-broker.service", "getty@tty1.service",
                 "serial-getty@ttyS0.service", "user@0.service", "NetworkManager.service"]:
        assert is_essential(unit), unit
    for unit in ["nginx.service", "postgresql@15-main.service", "cron.service", "mysqld"]:
        assert not is_essential(unit), unit


def test_stops_application_services_and_spares_essentials(no_sync):
    fake = FakeSystemctl(RUNNING)
    config = SentinelConfig(quiesce_services=("ssh",))  # configured: stopped even if spared
    report = quiesce(config, root="/", run=fake, systemd=True)
    assert report["services_touched"]
    assert report["stopped"] == ["cron.service", "docker.service", "nginx.service",
                                 "postgresql@15-main.service", "ssh.service"]
    assert report["failed_to_stop"] == [] and report["errors"] == []
    assert "vmware-hcx-osam-sentinel.service" in report["still_running"]
    assert "chrony.service" in report["still_running"]
    assert no_sync == [True] and report["synced"]


def test_the_sentinel_is_never_stopped_even_when_configured(no_sync):
    fake = FakeSystemctl(RUNNING)
    config = SentinelConfig(quiesce_services=("vmware-hcx-osam-sentinel", "not-there"))
    report = quiesce(config, root="/", run=fake, systemd=True)
    assert "vmware-hcx-osam-sentinel.service" not in report["stopped"]
    assert report["configured_not_running"] == ["not-there.service"]


def test_hooks_run_before_services_are_stopped(no_sync):
    fake = FakeSystemctl(RUNNING, hook_codes={"false": 1}, hook_timeouts={"sleep 999"})
    config = SentinelConfig(pre_quiesce_hooks=("flush-app", "false", "sleep 999"))
    report = quiesce(config, root="/", run=fake, systemd=True)
    assert [c[2] for c in fake.calls[:3]] == ["flush-app", "false", "sleep 999"]
    assert fake.calls[3][:2] == ["systemctl", "list-units"]
    assert [(h["command"], h["exit_code"], h["timed_out"]) for h in report["hooks"]] == [
        ("flush-app", 0, False), ("false", 1, False), ("sleep 999", None, True)]
    assert report["stopped"]  # a failing hook does not stop the quiesce


def test_what_refuses_to_stop_is_reported(no_sync):
    fake = FakeSystemctl(RUNNING, refuse_to_stop={"docker.service"})
    report = quiesce(SentinelConfig(), root="/", run=fake, systemd=True)
    assert report["failed_to_stop"] == ["docker.service"]
    assert "docker.service" not in report["stopped"]
    assert "docker.service" in report["still_running"]
    assert report["errors"] and "exited 1" in report["errors"][0]


def test_systemctl_failing_is_reported_not_raised(no_sync):
    def broken(argv, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "systemctl")

    report = quiesce(SentinelConfig(), root="/", run=broken, systemd=True)
    assert report["stopped"] == [] and "cannot list running services" in report["errors"][0]
    assert report["synced"]


def test_unquiesce_restarts_what_was_stopped(no_sync):
    fake = FakeSystemctl(RUNNING)
    report = quiesce(SentinelConfig(), root="/", run=fake, systemd=True)
    result = unquiesce(report, run=fake)
    assert result["started"] == report["stopped"] and result["failed"] == []
    assert sorted(fake.running) == sorted(RUNNING)
    start = [c for c in fake.calls if c[:2] == ["systemctl", "start"]]
    assert start == [["systemctl", "start", "--"] + report["stopped"]]


def test_unquiesce_with_nothing_stopped_runs_nothing():
    def never(*args, **kwargs):
        raise AssertionError("must not run anything")

    assert unquiesce({"stopped": []}, run=never) == {"started": [], "failed": [], "errors": []}


def test_without_systemd_services_are_left_alone(no_sync):
    if quiesce_module.systemd_is_pid1():
        pytest.skip("systemd is PID 1 here")

    def no_systemctl(argv, **kwargs):
        assert argv[0] != "systemctl"
        return subprocess.run(argv, **kwargs)

    report = quiesce(SentinelConfig(), root="/", run=no_systemctl)
    assert not report["services_touched"] and "systemd is not PID 1" in report["services_note"]


def test_another_root_runs_hooks_for_real_and_never_touches_services(tmp_path):
    calls = []

    def recording_run(argv, **kwargs):
        calls.append(argv)
        return subprocess.run(argv, **kwargs)

    marker = tmp_path / "flushed"
    config = SentinelConfig(
        quiesce_services=("nginx",),
        pre_quiesce_hooks=("echo flushing; touch %s" % marker, "exit 3", "sleep 5"),
        quiesce_timeout=1)
    report = quiesce(config, root=str(tmp_path), run=recording_run, systemd=True)
    assert marker.exists()
    assert [(h["exit_code"], h["timed_out"]) for h in report["hooks"]] == [
        (0, False), (3, False), (None, True)]
    assert "flushing" in report["hooks"][0]["output"]
    assert all(argv[0] == "/bin/sh" for argv in calls)
    assert not report["services_touched"]
    assert report["services_note"] == 'services left alone because root is not "/"'
    assert report["stopped"] == [] and report["synced"]
