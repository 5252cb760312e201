"""osam-sentinel: the guest agent (service vmware-hcx-osam-sentinel)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import re
import signal
import sys
import threading
from typing import List, Optional, Tuple

from ..common import service
from ..common.bandwidth import parse_rate
from ..common.hostport import parse_hostport
from ..common.blockscan import DEFAULT_BLOCK, valid_block_size
from .agent import Agent, AgentOptions
from .block_replicator import RESCAN_INTERVAL, BlockDiskSpec
from .config import DEFAULT_ETC, ConfigError, load_config
from .quiesce import SENTINEL_SERVICE
from .windows.disk import disk_size

WINDOWS = sys.platform == "win32"
# On Windows the role installs under this directory (osam_sentinel_windows_dir) and passes it.
WINDOWS_DIR = r"C:\Program Files\VMware\HCX\osam"
DISK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
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
    p.add_argument("--mode", choices=("file", "block"), default="block" if WINDOWS else "file",
                   help="file: replicate the files under --root (Linux); block: read whole disks and "
                        "send changed blocks (Windows; Linux disks on request) (default %(default)s)")
    p.add_argument("--disk", action="append", default=[], metavar="[NAME=]PATH", type=parse_disk,
                   help="block mode: a disk to replicate (a device or an image file), repeatable; the "
                        "name is the replica image's (default: the file's name). Default: every disk "
                        "of this machine (Windows); Linux needs them named")
    p.add_argument("--block-size", type=parse_block_size, default=DEFAULT_BLOCK, metavar="BYTES",
                   help="block mode: bytes per block, a power of two from 64 KiB to 4 MiB (default 1 MiB)")
    p.add_argument("--rescan-interval", type=float, default=RESCAN_INTERVAL, metavar="SECONDS",
                   help="block mode: seconds between continuous passes over the disks (default %(default)s)")
    p.add_argument("--bandwidth-limit", type=bandwidth, default=None, metavar="RATE",
                   help="most bytes a second the data channel sends (on the wire, after "
                        "compression), e.g. 20M = 20 MB/s, 512Ki; K, M, G are powers of 1000, Ki, "
                        "Mi, Gi of 1024; 0 (the default) means no limit")
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
    try:
        disks = block_disks(args.disk) if args.mode == "block" else []
    except (OSError, ValueError) as exc:
        logging.getLogger("osam.sentinel").error("%s", exc)
        if sys.stderr is not None:
            print(f"osam-sentinel: {exc}", file=sys.stderr)
        return 2
    opts = AgentOptions(host, port, args.pki, args.name, args.root, args.state, args.retry_min, args.retry_max,
                        power_off_command=default_power_off(args.power_off_command, args.root),
                        mode=args.mode, block_disks=disks, block_size=args.block_size,
                        rescan_interval=args.rescan_interval, bandwidth_limit=args.bandwidth_limit)
    return asyncio.run(_run(opts, config, stop))


def parse_disk(text: str) -> Tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep:
        name, path = _image_name(text), text
    if not DISK_NAME.match(name):
        raise argparse.ArgumentTypeError(f"disk name {name!r}: use letters, digits, '.', '_' and '-' (NAME=PATH)")
    return name, path


def _image_name(path: str) -> str:
    base = os.path.basename(path.rstrip("/\\")) or "disk"
    return re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip("._-") or "disk"


def bandwidth(text: str) -> Optional[float]:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_block_size(text: str) -> int:
    size = int(text)
    if not valid_block_size(size):
        raise argparse.ArgumentTypeError("must be a power of two from 65536 to 4194304")
    return size


def block_disks(named: List[Tuple[str, str]]) -> List[BlockDiskSpec]:
    """The disks block mode reads, with their sizes; on Windows every disk by default."""
    if not named:
        if not WINDOWS:
            raise ValueError("--mode block needs the disks to replicate (--disk NAME=PATH)")
        from .windows.commands import LiveWindowsHost
        from .windows.inventory import collect_windows_inventory
        layout = collect_windows_inventory(LiveWindowsHost()).get("layout") or {}
        named = [(d["name"], d["path"]) for d in layout.get("disks") or []]
        if not named:
            raise ValueError("no disks found to replicate (see the inventory's errors)")
    if len({name for name, _ in named}) != len(named):
        raise ValueError("two disks have the same name: name them (--disk NAME=PATH)")
    return [BlockDiskSpec(name, path, disk_size(path)) for name, path in named]


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
