"""The sentinel as a Windows service, driven through a fake advapi32: what the service manager
would see (statuses in order, exit codes) and what the sentinel's main sees (its stop event)."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from osam.sentinel.windows import service as svc
from osam.sentinel.windows.service import ServiceStatus, run_as_service


class FakeAdvapi32:
    """The service manager: calls ServiceMain on a thread of its own, as Windows does, and
    records every status; `control()` sends a control as the dispatcher thread would."""

    def __init__(self):
        self.statuses = []
        self.handler = None
        self.running = threading.Event()
        self.registered_name = None

    def start_dispatcher(self, name, service_main):
        thread = threading.Thread(target=service_main)
        thread.start()
        thread.join(20)
        assert not thread.is_alive(), "ServiceMain never returned"

    def register_handler(self, name, handler):
        self.registered_name, self.handler = name, handler
        return "handle-42"

    def set_status(self, handle, status):
        assert handle == "handle-42"
        self.statuses.append(status)
        if status.state == svc.SERVICE_RUNNING:
            self.running.set()

    def control(self, code):
        assert self.running.wait(5), "never RUNNING"
        return self.handler(code)

    def states(self):
        return [svc.STATE_NAMES[s.state] for s in self.statuses]


def run_in_background(api, main):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", run_as_service(
        "vmware-hcx-osam-sentinel", main, api=api)))
    thread.start()
    return thread, result


@pytest.fixture(autouse=True)
def quick_checkpoints(monkeypatch):
    monkeypatch.setattr(svc, "STOP_CHECK_SECONDS", 0.05)


def test_a_stop_request_reaches_main_and_statuses_come_in_order():
    api = FakeAdvapi32()
    seen = {}

    def main(stop):
        seen["stopped"] = stop.wait(10)
        time.sleep(0.2)            # cleaning up: the service reports STOP_PENDING meanwhile
        return 0

    thread, result = run_in_background(api, main)
    assert api.control(svc.SERVICE_CONTROL_STOP) == svc.NO_ERROR
    thread.join(10)
    assert seen["stopped"] is True and result["rc"] == 0
    assert api.registered_name == "vmware-hcx-osam-sentinel"
    states = api.states()
    assert states[:3] == ["START_PENDING", "RUNNING", "STOP_PENDING"] and states[-1] == "STOPPED"
    assert set(states[2:-1]) == {"STOP_PENDING"} and len(states) > 4   # checkpoints while stopping
    pending = [s for s in api.statuses if s.state == svc.SERVICE_STOP_PENDING]
    assert [s.checkpoint for s in pending] == list(range(1, len(pending) + 1))
    assert all(s.wait_hint_ms > 0 for s in pending)
    running = api.statuses[1]
    assert running.controls_accepted == svc.SERVICE_ACCEPT_STOP | svc.SERVICE_ACCEPT_SHUTDOWN
    assert api.statuses[-1] == ServiceStatus(svc.SERVICE_STOPPED)


def test_shutdown_stops_it_too_and_other_controls_are_not_implemented():
    api = FakeAdvapi32()
    thread, result = run_in_background(api, lambda stop: 0 if stop.wait(10) else 5)
    assert api.control(svc.SERVICE_CONTROL_INTERROGATE) == svc.NO_ERROR
    assert api.control(0x80) == svc.ERROR_CALL_NOT_IMPLEMENTED      # a user-defined control
    assert api.control(svc.SERVICE_CONTROL_SHUTDOWN) == svc.NO_ERROR
    thread.join(10)
    assert result["rc"] == 0 and api.states()[-1] == "STOPPED"


def test_an_exception_in_main_ends_in_stopped_with_a_non_zero_exit_code():
    api = FakeAdvapi32()

    def main(stop):
        raise RuntimeError("cannot read the PKI")

    assert run_as_service("vmware-hcx-osam-sentinel", main, api=api) == 1
    last = api.statuses[-1]
    assert last.state == svc.SERVICE_STOPPED
    assert last.win32_exit_code == svc.ERROR_SERVICE_SPECIFIC_ERROR and last.service_exit_code == 1
    assert api.states().count("STOPPED") == 1


def test_main_returning_an_error_code_on_its_own():
    api = FakeAdvapi32()
    assert run_as_service("vmware-hcx-osam-sentinel", lambda stop: 2, api=api) == 2
    assert api.states()[0] == "START_PENDING" and api.states()[-1] == "STOPPED"
    assert api.statuses[-1].service_exit_code == 2


def test_nothing_is_reported_after_stopped():
    api = FakeAdvapi32()
    thread, result = run_in_background(api, lambda stop: stop.wait(10) and 0)
    api.control(svc.SERVICE_CONTROL_STOP)
    thread.join(10)
    count = len(api.statuses)
    api.handler(svc.SERVICE_CONTROL_STOP)            # a late control
    assert len(api.statuses) == count


def test_the_module_imports_without_windows():
    with pytest.raises((AttributeError, OSError, ImportError)):
        svc.Advapi32()                               # ctypes.WinDLL exists on Windows only


def test_the_services_stop_event_cancels_the_agents_task():
    from osam.sentinel.main import cancel_when_set

    async def scenario():
        stop = threading.Event()
        task = asyncio.ensure_future(asyncio.sleep(30))
        cancel_when_set(stop, asyncio.get_running_loop(), task)
        threading.Timer(0.05, stop.set).start()      # STOP arrives on another thread
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert task.cancelled()

    asyncio.run(scenario())


def test_service_flag_is_refused_off_windows_and_linux_defaults_are_unchanged(capsys):
    from osam.sentinel import main as sentinel_main

    base = ["--gateway", "gw:8443", "--pki", "/p", "--name", "g1"]
    assert sentinel_main.main(base + ["--service"]) == 2
    assert "--service is for Windows" in capsys.readouterr().err
    args = sentinel_main.parse_args(base)
    assert (args.root, args.state, args.etc) == ("/", "/var/lib/vmware-hcx-osam", "/opt/vmware/hcx/osam")
    assert args.service is False and args.log_file is None
    assert sentinel_main.default_power_off(None, "/") == "systemctl poweroff"
    assert sentinel_main.default_power_off(None, "/mnt/guest") is None
    assert sentinel_main.default_power_off("", "/") is None
