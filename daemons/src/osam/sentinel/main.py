"""osam-sentinel: the guest agent (service vmware-hcx-osam-sentinel)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from ..common import service
from ..common.hostport import parse_hostport
from .agent import Agent, AgentOptions
from .config import DEFAULT_ETC, ConfigError, load_config


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="osam-sentinel", description="Replicate this guest to an osam receiver, through a gateway.")
    p.add_argument("--gateway", required=True, type=parse_hostport, metavar="HOST:PORT")
    p.add_argument("--pki", required=True, metavar="DIR", help="holds ca.crt and sentinels/NAME.crt/.key")
    p.add_argument("--name", required=True, help="this guest's name (its certificate's)")
    p.add_argument("--root", default="/", help="tree to replicate (default /)")
    p.add_argument("--state", default="/var/lib/vmware-hcx-osam", metavar="DIR",
                   help="the sentinel's own state: what the replica acknowledged (default %(default)s)")
    p.add_argument("--etc", default=DEFAULT_ETC, metavar="DIR",
                   help="holds excluded_paths and etc/sync.params (default %(default)s)")
    p.add_argument("--power-off-command", metavar="CMD",
                   help="how the switchover powers this machine off after the final sync (default: "
                        "systemctl poweroff with --root /; with another root only the sentinel stops)")
    p.add_argument("--retry-min", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--retry-max", type=float, default=30.0, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    service.setup_logging("osam-sentinel", args.log_level)
    try:
        config = load_config(args.etc)
    except ConfigError as exc:
        logging.getLogger("osam.sentinel").error("%s", exc)
        print(f"osam-sentinel: {exc}", file=sys.stderr)
        return 2
    host, port = args.gateway
    power_off = args.power_off_command
    if power_off is None and os.path.realpath(args.root) == "/":
        power_off = "systemctl poweroff"
    opts = AgentOptions(host, port, args.pki, args.name, args.root, args.state, args.retry_min, args.retry_max,
                        power_off_command=power_off or None)
    return asyncio.run(_run(opts, config))


async def _run(opts: AgentOptions, config) -> int:
    agent = Agent(opts, config)
    task = agent.main_task = asyncio.ensure_future(agent.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        service.notify_stopping()
    return 0


if __name__ == "__main__":
    sys.exit(main())
