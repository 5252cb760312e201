"""osam-gateway: the source site's gateway (SGW)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..common import service
from ..common.bandwidth import format_rate, parse_rate
from ..common.hostport import parse_hostport
from ..transport import bound_port, client_context, close_server, serve, server_context
from .relay import Relay

log = logging.getLogger("osam.gateway")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="osam-gateway", description="Relay guests' sentinels to the osam receiver.")
    p.add_argument("--listen", required=True, type=parse_hostport, metavar="HOST:PORT")
    p.add_argument("--receiver", required=True, type=parse_hostport, metavar="HOST:PORT")
    p.add_argument("--pki", required=True, metavar="DIR")
    p.add_argument("--inventory", metavar="FILE",
                   help="keep the source site's inventory (each guest's last registration) in this JSON file")
    p.add_argument("--bandwidth-limit", type=_rate, default=None, metavar="RATE",
                   help="most bytes a second relayed from all guests' data connections together "
                        "to the receiver (one limit shared by all; control channels are exempt), "
                        "e.g. 100M = 100 MB/s, 512Ki; K, M, G are powers of 1000, Ki, Mi, Gi of "
                        "1024; 0 (the default) means no limit")
    p.add_argument("--handshake-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="a guest must finish its TLS handshake within this (default %(default)s)")
    p.add_argument("--hello-timeout", type=float, default=15.0, metavar="SECONDS",
                   help="and send its hello within this once admitted (default %(default)s)")
    p.add_argument("--max-connections-per-guest", type=int, default=8, metavar="N",
                   help="connections one guest certificate may hold open at once (default %(default)s)")
    p.add_argument("--max-connections-per-address", type=int, default=256, metavar="N",
                   help="connections one IP address may hold open at once, handshakes included "
                        "(default %(default)s)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    service.setup_logging("osam-gateway", args.log_level)
    return asyncio.run(_run(args))


async def _run(args) -> int:
    relay = Relay(*args.receiver, client_context(args.pki, "gateway"), args.inventory, args.bandwidth_limit)
    relay.hello_timeout = args.hello_timeout
    server = await serve(*args.listen, server_context(args.pki, "gateway"), relay.handle,
                         allowed_roles=("sentinel",), log=log, handshake_timeout=args.handshake_timeout,
                         max_per_identity=args.max_connections_per_guest,
                         max_per_address=args.max_connections_per_address)
    log.info("gateway listening on %s:%d, forwarding to %s:%d (guests' data: %s)", args.listen[0],
             bound_port(server), *args.receiver, format_rate(args.bandwidth_limit))
    await service.serve_until_stopped()
    close_server(server)
    return 0


def _rate(text: str):
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
