"""One logged-in vCenter session: made on first use, made again once when it dropped
(vCenter ends idle sessions after 30 minutes by default, and a migration waits for hours
between two calls), logged out by close(). Tasks are waited for here, with a timeout, and
every vSphere fault leaves as a DestinationError whose message a person can act on.

The password goes only to SmartConnect; messages carry the URL and the user, never it.
"""
from __future__ import annotations

import http.client
import logging
import ssl
import time
from typing import Any, Callable, Optional, TypeVar

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from .base import DestinationError
from .vsphere_config import Connection

log = logging.getLogger("osam.destinations.vsphere")

T = TypeVar("T")
HTTP_TIMEOUT = 60            # seconds for one API request
POLL_FIRST, POLL_MAX = 0.05, 2.0
# What a dropped session looks like: vCenter forgot it, or the connection under it broke.
DROPPED = (vim.fault.NotAuthenticated, http.client.HTTPException, ConnectionError, TimeoutError)


def fault_text(fault: BaseException) -> str:
    """A vSphere fault's own message (the task's localized message), else its type."""
    msg = getattr(fault, "msg", "") or getattr(fault, "localizedMessage", "") or ""
    name = getattr(fault, "_wsdlName", "") or type(fault).__name__
    return f"{msg} ({name})" if msg and name not in msg else (msg or name)


class Session:
    def __init__(self, connection: Connection):
        self.connection = connection
        self._si: Any = None

    @property
    def where(self) -> str:
        return f"{self.connection.url} as {self.connection.user}"

    # ---------------------------------------------------------------- connect, reconnect, close
    def service_instance(self) -> Any:
        if self._si is None:
            self._si = self._connect()
        return self._si

    def content(self) -> Any:
        return self.service_instance().RetrieveContent()

    def stub(self) -> Any:
        return self.service_instance()._stub

    def run(self, what: str, action: Callable[[], T]) -> T:
        """action() on the session; once more on a new session when the first one dropped.
        Only for idempotent actions: the first try may have reached vCenter."""
        try:
            try:
                return action()
            except DROPPED as e:
                log.info("vCenter %s: session dropped (%s) during %s; logging in again",
                         self.connection.url, type(e).__name__, what)
                self.close()
                return action()
        except DestinationError:
            raise
        except vmodl.MethodFault as e:
            raise DestinationError(f"{what}: {fault_text(e)}") from None
        except (OSError, http.client.HTTPException) as e:
            raise DestinationError(f"{what}: vCenter {self.connection.url} does not answer: {e}") from None

    def close(self) -> None:
        si, self._si = self._si, None
        if si is not None:
            try:
                Disconnect(si)
            except Exception as e:  # noqa: BLE001 - the session may be gone already: nothing to log out
                log.debug("vCenter %s: logout: %s", self.connection.url, e)

    def _connect(self) -> Any:
        c = self.connection
        try:
            si = SmartConnect(host=c.host, port=c.port, user=c.user, pwd=c.password.reveal(),
                              sslContext=self._ssl_context(), httpConnectionTimeout=HTTP_TIMEOUT)
        except vim.fault.InvalidLogin:
            raise DestinationError(f"vCenter {self.where}: login refused (wrong user or password)") from None
        except vmodl.MethodFault as e:
            raise DestinationError(f"vCenter {self.where}: login failed: {fault_text(e)}") from None
        except ssl.SSLError as e:
            raise DestinationError(f"vCenter {c.url}: TLS failed ({e.reason or e}); give its CA in "
                                   "'ca_file'") from None
        except (OSError, http.client.HTTPException) as e:
            raise DestinationError(f"vCenter {c.url} does not answer: {e}") from None
        log.info("vCenter %s: logged in (API %s)", self.where, si._stub.version)
        return si

    def _ssl_context(self) -> ssl.SSLContext:
        if self.connection.insecure:   # labs and tests only: anyone in between can read the password
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=self.connection.ca_file)

    # ---------------------------------------------------------------- tasks
    def wait(self, task: Any, what: str, timeout: Optional[float] = None) -> Any:
        """The task's result once it succeeded; DestinationError with vCenter's message when it
        failed, or when it is still running after `timeout` (the connection's task_timeout)."""
        timeout = self.connection.task_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        pause = POLL_FIRST
        while True:
            info = task.info
            if info.state == vim.TaskInfo.State.success:
                return info.result
            if info.state == vim.TaskInfo.State.error:
                raise DestinationError(f"{what}: {fault_text(info.error) if info.error else 'failed'}")
            if time.monotonic() >= deadline:
                raise DestinationError(f"{what}: task {task._moId} still {info.state} after {timeout:g}s; "
                                       "it may yet finish in vCenter: look at its recent tasks")
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, POLL_MAX)

    def __repr__(self) -> str:
        return f"Session({self.where}, {'logged in' if self._si is not None else 'not logged in'})"
