"""Running the sentinel as a Windows service (vmware-hcx-osam-sentinel), through ctypes on
advapi32: StartServiceCtrlDispatcherW, RegisterServiceCtrlHandlerExW and SetServiceStatus.

Why not pywin32: its services run inside pythonservice.exe, a host program that must find the
interpreter and pywin32's DLLs on its own, which a venv does not give it without a post-install
step copying DLLs into place; and the sentinel ships to guests with few dependencies (no
compiler, no internet there). Three advapi32 calls are all a service needs, and ctypes is in the
standard library. The service is registered as the venv's python.exe running this package, so
the interpreter finds the venv as it always does.

The service's life: START_PENDING, then RUNNING while `main(stop_event)` runs in a thread of its
own. STOP or SHUTDOWN sets the event and reports STOP_PENDING, with a wait hint and a new
checkpoint every second until main returns; then STOPPED with main's exit code (a non-zero code
or an exception is reported as ERROR_SERVICE_SPECIFIC_ERROR, the code in
dwServiceSpecificExitCode), so the service manager's recovery actions apply.

The ctypes parts live in `Advapi32`; `run_as_service` only talks to an object with its three
methods, so tests drive it with a fake.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

log = logging.getLogger("osam.sentinel.service")

SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_CONTROL_STOP, SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_SHUTDOWN = 1, 4, 5
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN = 0x1, 0x4
NO_ERROR = 0
ERROR_CALL_NOT_IMPLEMENTED = 120
ERROR_SERVICE_SPECIFIC_ERROR = 1066
ERROR_FAILED_SERVICE_CONTROLLER_CONNECT = 1063

START_WAIT_HINT_MS = 30_000
STOP_WAIT_HINT_MS = 30_000
STOP_CHECK_SECONDS = 1.0
STATE_NAMES = {SERVICE_STOPPED: "STOPPED", SERVICE_START_PENDING: "START_PENDING",
               SERVICE_STOP_PENDING: "STOP_PENDING", SERVICE_RUNNING: "RUNNING"}


@dataclass(frozen=True)
class ServiceStatus:
    """SERVICE_STATUS's fields, service type aside (always an own-process service)."""
    state: int
    controls_accepted: int = 0
    win32_exit_code: int = NO_ERROR
    service_exit_code: int = 0
    checkpoint: int = 0
    wait_hint_ms: int = 0


class ServiceApi(Protocol):
    def start_dispatcher(self, name: str, service_main: Callable[[], None]) -> None:
        """Connect to the service manager and call service_main (in a thread of its own);
        returns once the service has reported STOPPED."""

    def register_handler(self, name: str, handler: Callable[[int], int]) -> Any:
        """Register the control handler; returns the status handle."""

    def set_status(self, handle: Any, status: ServiceStatus) -> None: ...


class ServiceError(OSError):
    """The service manager refused a call; winerror 1063 means the process was not started by it."""


def run_as_service(name: str, main: Callable[[threading.Event], int], *,
                   api: Optional[ServiceApi] = None) -> int:
    """Run `main` as the service `name` until it returns; its exit code is returned. `main` must
    return soon after its event is set."""
    runner = _Runner(name, main, api if api is not None else Advapi32())
    runner.api.start_dispatcher(name, runner.service_main)
    return runner.exit_code


class _Runner:
    def __init__(self, name: str, main: Callable[[threading.Event], int], api: ServiceApi) -> None:
        self.name, self.main, self.api = name, main, api
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.handle: Any = None
        self.status = ServiceStatus(SERVICE_START_PENDING)
        self.exit_code = 1

    def report(self, status: ServiceStatus) -> None:
        with self.lock:
            if self.status.state == SERVICE_STOPPED:
                return                      # nothing may follow STOPPED
            if status.state == SERVICE_RUNNING and self.status.state == SERVICE_STOP_PENDING:
                return                      # a stop came in while starting
            self.status = status
            self.api.set_status(self.handle, status)

    def on_control(self, control: int) -> int:
        """Called on the dispatcher's thread: must return at once."""
        if control in (SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN):
            log.info("service control %s: stopping", "STOP" if control == SERVICE_CONTROL_STOP else "SHUTDOWN")
            self.stop.set()
            self._stop_pending()
            return NO_ERROR
        if control == SERVICE_CONTROL_INTERROGATE:
            return NO_ERROR
        return ERROR_CALL_NOT_IMPLEMENTED

    def _stop_pending(self) -> None:
        with self.lock:
            if self.status.state == SERVICE_STOPPED:
                return
            checkpoint = self.status.checkpoint + 1 if self.status.state == SERVICE_STOP_PENDING else 1
            self.status = ServiceStatus(SERVICE_STOP_PENDING, checkpoint=checkpoint,
                                        wait_hint_ms=STOP_WAIT_HINT_MS)
            self.api.set_status(self.handle, self.status)

    def service_main(self) -> None:
        # An exception escaping a ctypes callback would be printed and lost, with the service
        # left pending: every path ends in STOPPED.
        try:
            self.handle = self.api.register_handler(self.name, self.on_control)
        except Exception:
            log.exception("cannot register the service control handler")
            return
        try:
            self.report(ServiceStatus(SERVICE_START_PENDING, checkpoint=1, wait_hint_ms=START_WAIT_HINT_MS))
            worker = threading.Thread(target=self._run_main, name="service-main", daemon=True)
            worker.start()
            self.report(ServiceStatus(SERVICE_RUNNING,
                                      controls_accepted=SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN))
            while worker.is_alive():
                worker.join(STOP_CHECK_SECONDS)
                if worker.is_alive() and self.stop.is_set():
                    self._stop_pending()        # still stopping: a new checkpoint
        except Exception:
            log.exception("service %s failed", self.name)
            self.exit_code = self.exit_code or 1
        finally:
            self.report(_stopped(self.exit_code))

    def _run_main(self) -> None:
        try:
            self.exit_code = int(self.main(self.stop) or 0)
        except BaseException:  # the service must still report why it stopped
            log.exception("the sentinel stopped on an error")
            self.exit_code = 1


def _stopped(exit_code: int) -> ServiceStatus:
    if exit_code == 0:
        return ServiceStatus(SERVICE_STOPPED)
    return ServiceStatus(SERVICE_STOPPED, win32_exit_code=ERROR_SERVICE_SPECIFIC_ERROR,
                         service_exit_code=exit_code & 0xFFFFFFFF)


class Advapi32:
    """The live ServiceApi. Windows-only: ctypes.WinDLL and WINFUNCTYPE exist only there, so
    they are touched when this is made, never at import."""

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        self._ctypes = ctypes

        class SERVICE_STATUS(ctypes.Structure):
            _fields_ = [("dwServiceType", wintypes.DWORD), ("dwCurrentState", wintypes.DWORD),
                        ("dwControlsAccepted", wintypes.DWORD), ("dwWin32ExitCode", wintypes.DWORD),
                        ("dwServiceSpecificExitCode", wintypes.DWORD),
                        ("dwCheckPoint", wintypes.DWORD), ("dwWaitHint", wintypes.DWORD)]

        self.SERVICE_MAIN = ctypes.WINFUNCTYPE(None, wintypes.DWORD, ctypes.POINTER(wintypes.LPWSTR))
        self.HANDLER_EX = ctypes.WINFUNCTYPE(wintypes.DWORD, wintypes.DWORD, wintypes.DWORD,
                                             wintypes.LPVOID, wintypes.LPVOID)

        class SERVICE_TABLE_ENTRYW(ctypes.Structure):
            _fields_ = [("lpServiceName", wintypes.LPWSTR), ("lpServiceProc", self.SERVICE_MAIN)]

        self.SERVICE_STATUS, self.SERVICE_TABLE_ENTRYW = SERVICE_STATUS, SERVICE_TABLE_ENTRYW
        dll = ctypes.WinDLL("advapi32", use_last_error=True)
        self._dispatcher = dll.StartServiceCtrlDispatcherW
        self._dispatcher.argtypes = [ctypes.POINTER(SERVICE_TABLE_ENTRYW)]
        self._dispatcher.restype = wintypes.BOOL
        self._register = dll.RegisterServiceCtrlHandlerExW
        self._register.argtypes = [wintypes.LPCWSTR, self.HANDLER_EX, wintypes.LPVOID]
        self._register.restype = wintypes.HANDLE
        self._set_status = dll.SetServiceStatus
        self._set_status.argtypes = [wintypes.HANDLE, ctypes.POINTER(SERVICE_STATUS)]
        self._set_status.restype = wintypes.BOOL
        self._keep: list = []       # callbacks must outlive the calls that use them

    def _error(self, call: str) -> ServiceError:
        code = self._ctypes.get_last_error()
        return ServiceError(code, "%s failed: %s" % (call, self._ctypes.FormatError(code).strip()))

    def start_dispatcher(self, name: str, service_main: Callable[[], None]) -> None:
        proc = self.SERVICE_MAIN(lambda argc, argv: service_main())
        table = (self.SERVICE_TABLE_ENTRYW * 2)()
        table[0].lpServiceName = name
        table[0].lpServiceProc = proc
        self._keep.extend([proc, table])
        if not self._dispatcher(table):
            raise self._error("StartServiceCtrlDispatcherW")

    def register_handler(self, name: str, handler: Callable[[int], int]) -> Any:
        proc = self.HANDLER_EX(lambda control, event, data, context: handler(control))
        self._keep.append(proc)
        handle = self._register(name, proc, None)
        if not handle:
            raise self._error("RegisterServiceCtrlHandlerExW")
        return handle

    def set_status(self, handle: Any, status: ServiceStatus) -> None:
        raw = self.SERVICE_STATUS(SERVICE_WIN32_OWN_PROCESS, status.state, status.controls_accepted,
                                  status.win32_exit_code, status.service_exit_code,
                                  status.checkpoint, status.wait_hint_ms)
        if not self._set_status(handle, self._ctypes.byref(raw)):
            raise self._error("SetServiceStatus")


__all__ = ["run_as_service", "ServiceStatus", "ServiceApi", "Advapi32", "ServiceError"]
