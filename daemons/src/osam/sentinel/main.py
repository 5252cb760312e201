"""osam-sentinel: the guest agent (service vmware-hcx-osam-sentinel)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import signal
import sys
import threading
from typing import Optional

from ..common import service
from ..common.hostport import parse_hostport
from .agent import Agent, AgentOptions
from .config import DEFAULT_ETC, ConfigError, load_config
from .quiesce import SENTINEL_SERVICE

WINDOWS = sys.platform == "win32"
# On Windows the role installs under this directory (osam_sentinel_windows_dir) and passes it.
WINDOWS_DIR = r"C:\Program Files\VMware\HCX\osam"
LOG_FILE_BYTES, LOG_FILE_BACKUPS = 10 * 1024 * 1024, 5


def _system_drive() -> str:
    return os.environ.get("SystemDrive", "C:") + "\\"


def parse_args(argv=None) -> argparse.Namespace:
    root, state, etc = ((_system_drive(), os.path.join(WINDOWS_DIR, "state"), WINDOWS_DIR) if WINDOWS
                        else ("/", "/var/lib/vmware-hcx-osam", DEFAULT_ETC))
    p = argparse.ArgumentParser(prog="osam-sentinel", description="Replicate this guest to an osam receiver, through a gateway.")
    p.add_argument("--gateway", required=True, type=parse_hostport, metavar="HOST:PORT")
    p.add_argument("--pki", required=True, metavar="DIR", help="holds ca.crt and sentinels/NAME.crt/.key")
    p.add_argument("--name", required=True, help="this guest's name (its certificate's)")
    p.add_argument("--root", default=root, help="tree to replicate (default %(default)s)")
    p.add_argument("--state", default=state, metavar="DIR",
                   help="the sentinel's own state: what the replica acknowledged (default %(default)s)")
    p.add_argument("--etc", default=etc, metavar="DIR",
                   help="holds excluded_paths and etc/sync.params (default %(default)s)")
    p.add_argument("--power-off-command", metavar="CMD",
                   help="how the switchover powers this machine off after the final sync (default: "
                        "systemctl poweroff, on Windows shutdown /s, when replicating the whole "
                        "machine; with another root only the sentinel stops)")
    p.add_argument("--service", action="store_true",
                   help="Windows: run under the service manager as %s (what the service's "
                        "command line says)" % SENTINEL_SERVICE)
    p.add_argument("--log-file", metavar="FILE",
                   help="also log to FILE, rotated at 10 MiB (a Windows service has no console)")
    p.add_argument("--retry-min", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--retry-max", type=float, default=30.0, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.service:
        if not WINDOWS:
            print("osam-sentinel: --service is for Windows; systemd runs the sentinel as it is",
                  file=sys.stderr)
            return 2
        from .windows.service import run_as_service
        return run_as_service(SENTINEL_SERVICE, lambda stop: serve(args, stop))
    return serve(args)


def serve(args: argparse.Namespace, stop: Optional[threading.Event] = None) -> int:
    """Run the agent until it ends, a signal comes, or `stop` (the Windows service's) is set."""
    service.setup_logging("osam-sentinel", args.log_level)
    if args.log_file:
        _log_to_file(args.log_file)
    try:
        config = load_config(args.etc)
    except ConfigError as exc:
        logging.getLogger("osam.sentinel").error("%s", exc)
        if sys.stderr is not None:
            print(f"osam-sentinel: {exc}", file=sys.stderr)
        return 2
    host, port = args.gateway
    opts = AgentOptions(host, port, args.pki, args.name, args.root, args.state, args.retry_min, args.retry_max,
                        power_off_command=default_power_off(args.power_off_command, args.root))
    return asyncio.run(_run(opts, config, stop))


def default_power_off(command: Optional[str], root: str) -> Optional[str]:
    """The command given, else how this machine powers off when it is what is replicated."""
    if command is not None:
        return command or None
    if WINDOWS:
        same = os.path.normcase(os.path.abspath(root)) == os.path.normcase(_system_drive())
        return "shutdown.exe /s /t 0 /d p:4:1" if same else None
    return "systemctl poweroff" if os.path.realpath(root) == "/" else None


def _log_to_file(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_FILE_BYTES,
                                                   backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
    handler.setFormatter(logging.Formatter(service.STDERR_FORMAT))
    handler.addFilter(service.RedactSecrets())
    logging.getLogger().addHandler(handler)


def cancel_when_set(stop: threading.Event, loop: asyncio.AbstractEventLoop,
                    task: "asyncio.Future") -> threading.Thread:
    """Cancel `task` from `loop`'s thread once `stop` is set (the service manager's STOP comes
    on another thread); the watcher ends with the task."""
    def watch() -> None:
        while not stop.wait(0.5):
            if task.done():
                return
        try:
            loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:    # the loop is already closed: nothing left to cancel
            pass

    watcher = threading.Thread(target=watch, name="service-stop", daemon=True)
    watcher.start()
    return watcher


async def _run(opts: AgentOptions, config, stop: Optional[threading.Event] = None) -> int:
    agent = Agent(opts, config)
    task = agent.main_task = asyncio.ensure_future(agent.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, task.cancel)
        except NotImplementedError:   # Windows: Ctrl+C interrupts asyncio.run, which cancels
            break
    if stop is not None:
        cancel_when_set(stop, loop, task)
    try:
        await task
    except asyncio.CancelledError:
        service.notify_stopping()
    return 0


if __name__ == "__main__":
    sys.exit(main())
