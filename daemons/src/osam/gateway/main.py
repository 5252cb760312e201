"""osam-gateway: the source site's gateway (SGW)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..common import service
from ..common.hostport import parse_hostport
from ..transport import bound_port, client_context, close_server, serve, server_context
from .relay import Relay

log = logging.getLogger("osam.gateway")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="osam-gateway", description="Relay guests' sentinels to the osam receiver.")
    p.add_argument("--listen", required=True, type=parse_hostport, metavar="HOST:PORT")
    p.add_argument("--receiver", required=True, type=parse_hostport, metavar="HOST:PORT")
    p.add_argument("--pki", required=True, metavar="DIR")
    p.add_argument("--inventory", metavar="FILE",
                   help="keep the source site's inventory (each guest's last registration) in this JSON file")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    service.setup_logging("osam-gateway", args.log_level)
    return asyncio.run(_run(args))


async def _run(args) -> int:
    relay = Relay(*args.receiver, client_context(args.pki, "gateway"), args.inventory)
    server = await serve(*args.listen, server_context(args.pki, "gateway"), relay.handle,
                         allowed_roles=("sentinel",), log=log)
    log.info("gateway listening on %s:%d, forwarding to %s:%d", args.listen[0], bound_port(server), *args.receiver)
    await service.serve_until_stopped()
    close_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
