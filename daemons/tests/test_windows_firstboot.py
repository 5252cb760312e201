"""The first-boot runner of a migrated Windows replica, against a fake Windows that keeps
users, Winlogon, RunOnce, services and NICs in memory and 'boots': the service runs at every
boot, and a logon armed in Winlogon runs the RunOnce entries in the user's session. The
runner is a new process at every boot: it reloads its state from the file each time."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import threading
import types

import pytest

from osam.sentinel.windows import firstboot as fb

SERVICE = "vmware-osam-firstboot"
MAC = "00:50:56:aa:bb:01"


class Crash(BaseException):
    """The machine loses power in the middle of an action."""


class FakeWindows(fb.FirstBootOps):
    def __init__(self):
        self.users = {"Administrator": "source-secret"}
        self.profiles = {"Administrator"}
        self.winlogon_values = {"DefaultUserName": "Administrator", "DefaultDomainName": "CORP"}
        self.runonce = {}
        self.services = {SERVICE}
        self.nics = {MAC: None}
        self.drivers = []
        self.tools_installed = False
        self.rebooting = False
        self.reboots = 0
        self.fail = {}          # action → exception to raise
        self.crash_once = set()  # actions that lose power the first time
        self.calls = []

    def _act(self, name):
        self.calls.append(name)
        if name in self.crash_once:
            self.crash_once.discard(name)
            raise Crash(name)
        if name in self.fail:
            raise self.fail[name]

    def create_user(self, name, password):
        self._act("create_user")
        self.users[name] = password
        self.profiles.add(name)

    def delete_user(self, name):
        self._act("delete_user")
        self.users.pop(name, None)
        self.profiles.discard(name)

    def winlogon(self):
        return dict(self.winlogon_values)

    def set_autologon(self, name, password, count):
        self._act("set_autologon")
        self.winlogon_values.update(AutoAdminLogon="1", DefaultUserName=name, DefaultPassword=password,
                                    AutoLogonCount=count, DefaultDomainName="WIN-SOURCE")

    def clear_autologon(self, restore):
        self._act("clear_autologon")
        self.winlogon_values["AutoAdminLogon"] = "0"
        for name in ("DefaultPassword", "AutoLogonCount", "DefaultUserName", "DefaultDomainName"):
            self.winlogon_values.pop(name, None)
        self.winlogon_values.update({k: v for k, v in restore.items()
                                     if k in ("DefaultUserName", "DefaultDomainName")})

    def add_runonce(self, name, command):
        self._act("add_runonce")
        self.runonce[name] = command

    def remove_runonce(self, name):
        self._act("remove_runonce")
        self.runonce.pop(name, None)

    def add_driver(self, inf):
        self._act("add_driver")
        self.drivers.append(inf)

    def set_static_ip(self, mac, settings):
        self._act("set_static_ip")
        if mac not in self.nics:
            raise fb.StepFailed(f"no adapter with MAC {mac}")
        self.nics[mac] = {k: settings[k] for k in ("ipv4", "gateways", "dns")}

    def run(self, command):
        self._act("run")
        if "tools" in self.fail:
            return 1603
        self.tools_installed = True
        return 3010

    def reboot(self):
        self._act("reboot")
        self.rebooting = True
        self.reboots += 1

    def delete_service(self, name):
        self._act("delete_service")
        self.services.discard(name)

    def remove_files(self, directory, keep):
        self._act("remove_files")
        for entry in os.listdir(directory):
            if entry not in keep:
                path = os.path.join(directory, entry)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)


def config(directory, steps=("drivers", "network", "tools")):
    return {"version": 1, "service": SERVICE, "directory": r"C:\ProgramData\VMware\osam\firstboot",
            "python": r"C:\Program Files\VMware\osam\venv\Scripts\python.exe", "steps": list(steps),
            "network": [{"mac": MAC, "source_mac": "52:54:00:12:34:56", "source_name": "Ethernet",
                         "source_interface": "{X}", "dhcp": False,
                         "ipv4": [{"address": "192.0.2.10", "prefix": 24}], "gateways": ["192.0.2.1"],
                         "dns": ["192.0.2.53"]}],
            "drivers": [{"name": "vmxnet3", "inf": r"C:\ProgramData\VMware\osam\firstboot\drivers\vmxnet3\vmxnet3.inf"}],
            "tools": {"installer": r"C:\ProgramData\VMware\osam\firstboot\VMware-tools.exe",
                      "arguments": '/S /v"/qn REBOOT=R"'}}


class Machine:
    """The replica: a directory with firstboot.json, and a fake Windows that boots."""

    def __init__(self, tmp_path, steps=("drivers", "network", "tools")):
        self.dir = tmp_path / "firstboot"
        (self.dir / "drivers" / "vmxnet3").mkdir(parents=True)
        (self.dir / "drivers" / "vmxnet3" / "vmxnet3.inf").write_text("inf")
        self.config_path = self.dir / "firstboot.json"
        self.config_path.write_text(json.dumps(config(self.dir, steps)))
        self.win = FakeWindows()
        self.passwords = []
        original = self.win.create_user

        def remember(name, password):
            self.passwords.append(password)
            original(name, password)
        self.win.create_user = remember
        self.log = self.dir / fb.LOG_NAME
        self._handler = None

    def runner(self):
        """A new process: the state comes from the file."""
        return fb.runner_for(str(self.config_path), self.win) if self.config_path.exists() else None

    def run(self, mode):
        if self._handler is None:
            fb.setup_logging(str(self.dir))
            self._handler = fb.log.handlers[-1]
        runner = self.runner()
        if runner is None:
            return 0
        try:
            return runner.run(mode)
        except Crash:
            self.win.rebooting = True    # the power comes back: a new boot
            return None

    def boot(self):
        """One boot: the service, then an armed autologon runs the RunOnce entries."""
        self.win.rebooting = False
        if SERVICE in self.win.services:
            self.run(fb.SERVICE_MODE)
        if self.win.rebooting:
            return
        w = self.win.winlogon_values
        if w.get("AutoAdminLogon") == "1" and w.get("AutoLogonCount", 0) > 0 and \
                w.get("DefaultPassword") == self.win.users.get(w.get("DefaultUserName")):
            w["AutoLogonCount"] -= 1
            entries, self.win.runonce = self.win.runonce, {}
            for command in entries.values():
                assert "--user" in command and str(self.config_path) in command
                self.run(fb.USER_MODE)

    def boot_until_done(self, limit=8):
        for _ in range(limit):
            self.boot()
            if self.result() is not None:
                break
        return self.result()

    def result(self):
        path = self.dir / fb.RESULT_NAME
        return json.loads(path.read_text()) if path.exists() else None

    def close(self):
        if self._handler is not None:
            fb.log.removeHandler(self._handler)
            self._handler.close()

    def assert_clean(self):
        temp_users = [u for u in self.win.users if u.startswith(fb.USER_PREFIX)]
        assert temp_users == [] and not any(p.startswith(fb.USER_PREFIX) for p in self.win.profiles)
        assert "DefaultPassword" not in self.win.winlogon_values
        assert self.win.winlogon_values.get("AutoAdminLogon") != "1"
        assert self.win.runonce == {}
        assert SERVICE not in self.win.services
        assert sorted(os.listdir(self.dir)) == sorted([fb.LOG_NAME, fb.RESULT_NAME])

    def assert_no_password_written(self):
        assert self.passwords
        texts = [p.read_text() for p in self.dir.iterdir() if p.is_file()]
        for password in self.passwords:
            for text in texts:
                assert password not in text


@pytest.fixture
def machine(tmp_path):
    m = Machine(tmp_path)
    yield m
    m.close()


def test_the_whole_first_boot_across_reboots(machine):
    win = machine.win
    machine.boot()      # 1: the service creates the user, arms autologon and reboots
    user = json.loads((machine.dir / fb.STATE_NAME).read_text())["user"]
    assert re.fullmatch(r"osam-fixup-[0-9a-f]{4}", user)
    assert user in win.users and win.winlogon_values["DefaultUserName"] == user
    assert win.winlogon_values["DefaultPassword"] == win.users[user] and win.winlogon_values["AutoLogonCount"] == 1
    assert list(win.runonce) == [fb.RUNONCE_NAME] and win.reboots == 1
    machine.assert_no_password_written()

    machine.boot()      # 2: the service waits; the user's session installs and reboots
    assert win.drivers == [config(machine.dir)["drivers"][0]["inf"]]
    assert win.nics[MAC] == {"ipv4": [{"address": "192.0.2.10", "prefix": 24}],
                             "gateways": ["192.0.2.1"], "dns": ["192.0.2.53"]}
    assert win.tools_installed and win.reboots == 2
    assert win.calls.index("add_driver") < win.calls.index("set_static_ip") < win.calls.index("run")

    machine.boot()      # 3: the service cleans up and deletes itself; no reboot
    assert win.reboots == 2
    result = machine.result()
    assert result["stage"] == "done" and result["failures"] == []
    machine.assert_clean()
    assert win.winlogon_values == {"AutoAdminLogon": "0", "DefaultUserName": "Administrator",
                                   "DefaultDomainName": "CORP"}
    assert win.users == {"Administrator": "source-secret"}
    machine.assert_no_password_written()

    machine.boot()      # nothing runs any more
    assert win.reboots == 2


def test_a_failed_tools_install_is_recorded_and_the_cleanup_still_runs(machine):
    machine.win.fail["tools"] = True
    result = machine.boot_until_done()
    assert [(f["stage"], f["step"]) for f in result["failures"]] == [("user", "tools")]
    assert "1603" in result["failures"][0]["error"]
    assert machine.win.nics[MAC] is not None      # the other steps ran
    machine.assert_clean()
    machine.assert_no_password_written()


def test_a_failure_in_the_system_stage_goes_straight_to_the_cleanup(machine):
    machine.win.fail["set_autologon"] = RuntimeError("access denied")
    result = machine.boot_until_done()
    assert [(f["stage"], f["step"]) for f in result["failures"]] == [("system", "arm_autologon")]
    assert machine.win.reboots == 0 and machine.win.drivers == []
    machine.assert_clean()


def test_a_power_cut_during_the_system_stage_resumes_at_that_step(machine):
    machine.win.crash_once.add("add_runonce")
    machine.boot()                     # dies: the state says add_runonce was started
    state = json.loads((machine.dir / fb.STATE_NAME).read_text())
    assert state["stage"] == "system" and state["steps"]["system.add_runonce"]["status"] == "started"
    assert state["steps"]["system.arm_autologon"]["status"] == "done"
    result = machine.boot_until_done()
    assert result["failures"] == []
    assert machine.win.calls.count("create_user") == 1   # not a second user
    machine.assert_clean()
    machine.assert_no_password_written()


def test_a_power_cut_while_the_user_is_created_creates_no_second_user(machine):
    machine.win.crash_once.add("set_autologon")
    machine.boot()
    result = machine.boot_until_done()
    assert result["failures"] == []
    assert len(machine.passwords) == 2      # the same user, its password reset to a new one
    assert machine.win.calls.count("set_autologon") == 2
    machine.assert_clean()
    machine.assert_no_password_written()


def test_a_power_cut_in_the_user_stage_rearms_the_logon_and_resumes(machine):
    machine.boot()                               # system stage
    machine.win.crash_once.add("set_static_ip")
    machine.boot()                               # the user stage dies after the drivers
    state = json.loads((machine.dir / fb.STATE_NAME).read_text())
    assert state["steps"]["user.drivers"]["status"] == "done"
    assert state["steps"]["user.network"]["status"] == "started"
    result = machine.boot_until_done()
    assert result["failures"] == []
    assert machine.win.drivers == [config(machine.dir)["drivers"][0]["inf"]]   # not installed twice
    assert machine.win.nics[MAC] is not None and machine.win.tools_installed
    machine.assert_clean()
    machine.assert_no_password_written()


def test_a_user_stage_that_never_runs_is_given_up_and_cleaned_up(machine):
    machine.boot()
    machine.win.winlogon_values["AutoAdminLogon"] = "0"     # e.g. a policy forbids autologon
    machine.win.set_autologon = lambda name, password, count: machine.win.winlogon_values.update(
        DefaultUserName=name, DefaultPassword=password, AutoLogonCount=count)
    result = machine.boot_until_done()
    assert [(f["stage"], f["step"]) for f in result["failures"]] == [("user", "wait")]
    machine.assert_clean()


def test_a_failed_cleanup_step_keeps_the_service_to_retry(machine):
    machine.win.fail["delete_user"] = RuntimeError("the profile is in use")
    machine.boot()
    machine.boot()
    machine.boot()
    assert SERVICE in machine.win.services
    assert "DefaultPassword" not in machine.win.winlogon_values
    del machine.win.fail["delete_user"]
    machine.boot()
    result = machine.result()
    assert result["stage"] == "done"
    assert [(f["stage"], f["step"]) for f in result["failures"]] == [("cleanup", "delete_user")]
    machine.assert_clean()


def test_only_the_selected_user_steps_run(tmp_path):
    m = Machine(tmp_path, steps=("network",))
    try:
        result = m.boot_until_done()
        assert result["failures"] == []
        assert m.win.drivers == [] and not m.win.tools_installed and m.win.nics[MAC] is not None
        m.assert_clean()
    finally:
        m.close()


def test_the_log_tells_the_story_without_the_password(machine):
    machine.boot_until_done()
    text = machine.log.read_text()
    assert "temporary administrator osam-fixup-" in text and "first boot finished" in text
    machine.assert_no_password_written()


def test_passwords_are_complex_and_never_repeat():
    seen = {fb.new_password() for _ in range(50)}
    assert len(seen) == 50
    for p in seen:
        assert len(p) == 24 and re.search("[A-Z]", p) and re.search("[a-z]", p) and re.search("[0-9]", p)
        assert re.search(r"[^A-Za-z0-9]", p)


def test_the_real_ops_hide_secrets_in_what_they_log(caplog, monkeypatch):
    ops = fb.WindowsOps(["s3cret-Pa55"])

    class Done:
        returncode, stdout, stderr = 1, "", "bad password s3cret-Pa55"
    monkeypatch.setattr(fb.subprocess, "run", lambda *a, **k: Done())
    caplog.set_level("INFO", logger=fb.log.name)
    with pytest.raises(fb.StepFailed) as failure:
        ops._run(["net.exe", "user", "x", "s3cret-Pa55"], "resetting")
    assert "s3cret-Pa55" not in str(failure.value) and "s3cret-Pa55" not in caplog.text
    assert "net.exe user x ********" in caplog.text


def test_the_static_ip_script_takes_only_validated_values():
    script = fb.static_ip_script(MAC, config(".")["network"][0])
    assert "$mac = '00-50-56-AA-BB-01'" in script
    assert "New-NetIPAddress -InterfaceIndex $index -IPAddress '192.0.2.10' -PrefixLength 24 " \
           "-DefaultGateway '192.0.2.1'" in script
    assert "Set-DnsClientServerAddress -InterfaceIndex $index -ServerAddresses '192.0.2.53'" in script
    with pytest.raises(ValueError):
        fb.static_ip_script(MAC, {"ipv4": [{"address": "1.2.3.4'; Remove-Item C:\\", "prefix": 24}]})
    with pytest.raises(fb.StepFailed):
        fb.static_ip_script("00:50:56:aa:bb:01'; x", {})


def test_service_mode_runs_under_the_service_manager(tmp_path, monkeypatch):
    m = Machine(tmp_path)
    calls = []
    fake = types.ModuleType("osam.sentinel.windows.service")

    def run_as_service(name, main):
        calls.append(name)
        return main(threading.Event())
    fake.run_as_service = run_as_service
    monkeypatch.setitem(sys.modules, "osam.sentinel.windows.service", fake)
    try:
        assert fb.main(["--service", "--config", str(m.config_path)], ops_factory=lambda: m.win) == 0
        assert calls == [SERVICE] and m.win.reboots == 1
    finally:
        for handler in [h for h in fb.log.handlers if isinstance(h, logging.FileHandler)]:
            fb.log.removeHandler(handler)
            handler.close()
        m.close()
