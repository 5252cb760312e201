"""osam-receiver: the destination's Sentinel Data Receiver (SDR): replicas, the migration
controller and its REST API."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import Dict, Optional

from ..common import service
from ..common.clock import wall_clock
from ..common.hostport import parse_hostport
from ..controller import Controller
from ..pki import CertificateRefused, read_token, verify_peer_certificate
from ..pki.layout import ca_paths
from ..protocol import CHANNEL_CONTROL, Error, Forward, ProtocolError, decode_hello
from ..protocol.frames import HELLO
from ..transport import Connection, bound_port, close_server, serve, server_context
from ..transport.framed import FRAME_TIMEOUT, FramedStream, LinkClosed
from .api import handle_api_connection
from ..controller import phases
from ..destinations.base import NoDestination
from ..destinations.local import LocalDestination
from .cutover import Cutover
from .replica import DISK, FORMATS, TREE
from .session import GuestSession

log = logging.getLogger("osam.receiver")

FORWARD_TIMEOUT = 15.0


class Receiver:
    frame_timeout = FRAME_TIMEOUT

    def __init__(self, data_dir: str, pki_dir: str, replica_format: str = DISK, fixup: bool = True,
                 package_cache: Optional[str] = None, *, boot_replicas: bool = False,
                 source_off_timeout: float = 300.0, vsphere_config=None):
        self.data_dir = data_dir
        self.boot_replicas = boot_replicas
        self.source_off_timeout = source_off_timeout
        self.vsphere_config = vsphere_config
        self.package_cache = package_cache or os.path.join(data_dir, "packages")
        self.replica_format = replica_format
        self.fixup = fixup
        self.pki_dir = pki_dir
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.controller = Controller(os.path.join(data_dir, "osam.sqlite"), clock=wall_clock())
        self.sessions: Dict[str, GuestSession] = {}
        self.ca_cert = ca_paths(pki_dir)[0]

    def session(self, name: str) -> GuestSession:
        if name not in self.sessions:
            self.sessions[name] = GuestSession(name, self.data_dir, self.controller, self.replica_format, self.fixup,
                                               self.package_cache, self.cutover, self.destination_for)
        return self.sessions[name]

    def destination_for(self, session: GuestSession):
        """Where this guest's replica becomes a VM: one destination object per guest (a vCenter
        session is not shared between the threads the guests' steps run in)."""
        if session.replica.format == TREE:
            return NoDestination()
        if self.vsphere_config is not None:
            from ..destinations.vsphere import VsphereDestination
            return VsphereDestination(self.vsphere_config)
        return LocalDestination(session.replica_dir, boot=self.boot_replicas)

    def cutover(self, session: GuestSession) -> Cutover:
        """The driver of a migration's fix-up and cutover, on this receiver's destination."""
        return Cutover(session, session.destination, self.source_off_timeout)

    async def handle_gateway(self, conn: Connection) -> None:
        """A forwarded guest connection: the Forward frame names the guest by its certificate."""
        try:
            stream, first = await self._forwarded(conn)
            identity = verify_peer_certificate(first.peer_cert, self.ca_cert)
            if identity.role != "sentinel":
                raise CertificateRefused(f"forwarded peer is a {identity.role}, not a sentinel")
        except CertificateRefused as exc:
            log.warning("refused guest via gateway %s: %s", conn.identity.name, exc)
            await stream.send(Error("certificate", str(exc)))
            return
        except (ProtocolError, LinkClosed, asyncio.TimeoutError) as exc:
            log.warning("refused connection from gateway %s: %s", conn.peer, exc)
            return
        session = self.session(identity.name)
        log.info("guest %s: %s channel via gateway %s (%s)", identity.name,
                 "control" if first.channel == CHANNEL_CONTROL else "data", conn.identity.name, first.peer_addr)
        try:
            if first.channel == CHANNEL_CONTROL:
                await session.run_control(stream)
            else:
                await session.run_data(stream)
        except (LinkClosed, asyncio.CancelledError) as exc:
            log.info("guest %s: link closed: %s", identity.name, exc or "cancelled")
        except ProtocolError as exc:
            log.warning("guest %s: protocol error, closing: %s", identity.name, exc)

    async def _forwarded(self, conn: Connection):
        """The stream of a forwarded connection and the Forward frame that must open it."""
        try:
            channel = decode_hello(await asyncio.wait_for(conn.reader.readexactly(HELLO.size), FORWARD_TIMEOUT))
        except asyncio.IncompleteReadError:
            raise LinkClosed("closed before its hello") from None
        stream = FramedStream(conn.reader, conn.writer, channel, hello_received=True)
        stream.frame_timeout = self.frame_timeout
        msg = await stream.recv(timeout=FORWARD_TIMEOUT)
        if not isinstance(msg, Forward) or msg.channel != channel:
            raise ProtocolError("a forwarded connection must start with its Forward frame")
        return stream, msg

    async def handle_api(self, conn: Connection) -> None:
        tokens = {read_token(os.path.join(self.pki_dir, "api-token")): "rw",
                  read_token(os.path.join(self.pki_dir, "api-token-ro")): "ro"}
        await handle_api_connection(conn.reader, conn.writer, controller=self.controller, tokens=tokens, log=log)

    async def watchdog(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for m in self.controller.migrations():
                if m["phase"] in phases.CUTOVER:   # also after a restart, guest connected or not
                    self.session(m["guest"]).ensure_cutover()
            for s in list(self.sessions.values()):
                try:
                    s.check_link(now)
                except Exception:  # noqa: BLE001
                    log.exception("link check for %s failed", s.name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="osam-receiver", description="Receive guest replicas and drive their migrations.")
    p.add_argument("--listen", required=True, type=parse_hostport, metavar="HOST:PORT", help="for gateways")
    p.add_argument("--api", required=True, type=parse_hostport, metavar="HOST:PORT", help="REST API (HTTPS)")
    p.add_argument("--pki", required=True, metavar="DIR")
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--replica-format", choices=FORMATS, default=DISK,
                   help="disk: raw images with the source's disks, mounted while syncing and fixed up "
                        "to boot (needs root, loop devices); tree: a directory of the guest's files, "
                        "not bootable (tests, demo). Default %(default)s")
    p.add_argument("--no-fixup", dest="fixup", action="store_false",
                   help="leave disk replicas exactly as synced (data-only replicas, or a fix-up done by hand)")
    p.add_argument("--package-cache", metavar="DIR",
                   help="packages the fix-up installs offline (open-vm-tools with what it needs), in "
                        "DIR/<os id>-<version>/, DIR/<os id>/ or DIR/<family>/ (default DATA/packages)")
    p.add_argument("--vsphere-config", metavar="FILE",
                   help="make replicas VMs in vSphere as this file says (JSON: vCenter, placement, "
                        "datastore and its local path, networks; see the daemons' README); default: "
                        "the local destination")
    p.add_argument("--boot-replicas", action="store_true",
                   help="local destination: power on means booting the replica with qemu on pvscsi and "
                        "vmxnet3 (DATA/replicas/NAME/boot.sh); otherwise it is only recorded")
    p.add_argument("--source-off-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long the switchover waits for the source to power off (default %(default)s)")
    p.add_argument("--handshake-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="a gateway or API client must finish its TLS handshake within this "
                        "(default %(default)s)")
    p.add_argument("--frame-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="a guest's frame, once begun, must arrive whole within this; quiet between "
                        "frames is fine (default %(default)s)")
    p.add_argument("--max-connections-per-address", type=int, default=2048, metavar="N",
                   help="connections one gateway address may hold open at once (two per guest; "
                        "default %(default)s)")
    p.add_argument("--max-api-connections-per-address", type=int, default=64, metavar="N",
                   help="API connections one address may hold open at once (default %(default)s)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    service.setup_logging("osam-receiver", args.log_level)
    if args.vsphere_config:
        from ..destinations.vsphere_config import VsphereConfig, VsphereConfigError
        try:
            args.vsphere_config = VsphereConfig.load(args.vsphere_config)
        except (VsphereConfigError, OSError) as exc:
            print(f"osam-receiver: {exc}", file=sys.stderr)
            return 2
    return asyncio.run(_run(args))


async def _run(args) -> int:
    receiver = Receiver(args.data, args.pki, args.replica_format, args.fixup, args.package_cache,
                        boot_replicas=args.boot_replicas, source_off_timeout=args.source_off_timeout,
                        vsphere_config=args.vsphere_config)
    receiver.frame_timeout = args.frame_timeout
    links = await serve(*args.listen, server_context(args.pki, "receiver"), receiver.handle_gateway,
                        allowed_roles=("gateway",), log=log, handshake_timeout=args.handshake_timeout,
                        max_per_address=args.max_connections_per_address)
    api = await serve(*args.api, server_context(args.pki, "receiver"), receiver.handle_api,
                      allowed_roles=("admin",), log=log, admission_line=False,
                      handshake_timeout=args.handshake_timeout,
                      max_per_address=args.max_api_connections_per_address)
    log.info("receiver listening on %s:%d for gateways, API on https://%s:%d", args.listen[0],
             bound_port(links), args.api[0], bound_port(api))
    watchdog = asyncio.ensure_future(receiver.watchdog())
    await service.serve_until_stopped()
    watchdog.cancel()
    close_server(links)
    close_server(api)
    for session in list(receiver.sessions.values()):
        try:
            await session.shutdown()
        except Exception:  # noqa: BLE001 - the next start releases what is left
            log.exception("guest %s: could not let go of its replica", session.name)
    receiver.controller.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
