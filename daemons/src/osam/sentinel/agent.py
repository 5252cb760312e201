"""The sentinel's session with the receiver, through the gateway: register, then carry out the
receiver's commands; reconnect with backoff when the link drops, resuming where it left off."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import subprocess
import sys
import time
from typing import Optional, Sequence

from .. import __version__
from ..common import service
from ..common.bandwidth import TokenBucket, format_rate
from ..common.blockscan import DEFAULT_BLOCK
from ..protocol import (CHANNEL_CONTROL, CHANNEL_DATA, Command, CommandResult, Error, Heartbeat,
                        ProtocolError, Progress, Register, Welcome)
from ..transport import TransportError, client_context, connect
from ..transport.framed import FramedStream, LinkClosed
from .block_replicator import RESCAN_INTERVAL, BlockDiskSpec, BlockReplicator
from .config import SentinelConfig
from .datalink import DataLink
from .index import Index
from .inventory import collect_inventory
from .quiesce import quiesce, unquiesce
from .replicator import Replicator

log = logging.getLogger("osam.sentinel")

WINDOWS = sys.platform == "win32"

PROGRESS_EVERY = 1.0
CONNECT_TIMEOUT = 15.0
RECEIVER_SILENCE = 35.0   # the receiver sends a heartbeat every 10 s: this quiet means a dead link


@dataclasses.dataclass
class AgentOptions:
    gateway_host: str
    gateway_port: int
    pki: str
    name: str
    root: str
    state: str
    retry_min: float = 0.5
    retry_max: float = 30.0
    # How the receiver's power_off command (after the final sync) powers the guest off: a shell
    # command, or None to stop only this sentinel (a root other than "/" is not this machine).
    power_off_command: Optional[str] = None
    power_off_delay: float = 1.0    # seconds between answering and acting, so the answer gets out
    # Block mode reads these disks whole instead of replicating the files under root.
    mode: str = "file"
    block_disks: Sequence[BlockDiskSpec] = ()
    block_size: int = DEFAULT_BLOCK
    rescan_interval: float = RESCAN_INTERVAL
    bandwidth_limit: Optional[float] = None   # bytes a second the data channel may send


class Agent:
    def __init__(self, opts: AgentOptions, config: SentinelConfig):
        self.opts = opts
        self.config = config
        os.makedirs(opts.state, mode=0o700, exist_ok=True)
        if opts.mode == "block":
            self.replicator = BlockReplicator(opts.block_disks, config, opts.state, opts.block_size,
                                              opts.rescan_interval)
        else:
            index = Index(os.path.join(opts.state, "index.sqlite"))
            self.replicator = Replicator(os.fsencode(opts.root), config, index, own_dirs=(opts.state,))
        self.ssl = client_context(opts.pki, "sentinel", opts.name)
        self.quiesce_report: Optional[dict] = None
        self.continuous: Optional[asyncio.Task] = None
        self.stop_continuous = asyncio.Event()
        self.link: Optional[DataLink] = None
        self._inventory: Optional[dict] = None
        self.failure: Optional[asyncio.Future] = None
        # One bucket for every data connection of this process: a reconnect starts no fresh burst.
        self.bandwidth = TokenBucket(opts.bandwidth_limit) if opts.bandwidth_limit else None
        if self.bandwidth:
            log.info("data channel limited to %s", format_rate(opts.bandwidth_limit))

    async def run(self) -> None:
        down_since = None
        delay = self.opts.retry_min
        service.notify_ready()
        while True:
            try:
                await self.session()
                return
            except (LinkClosed, TransportError, ProtocolError, OSError, asyncio.TimeoutError) as exc:
                now = time.monotonic()
                down_since = down_since or now
                spent = now - down_since
                if spent > self.config.max_retry_seconds:
                    log.error("link down for %.0fs, beyond max_retry_interval=%dh; still retrying "
                              "(the receiver has failed the migration)", spent, self.config.max_retry_interval)
                log.warning("link to the gateway lost: %s; retrying in %.1fs", exc, delay)
                service.notify_status(f"reconnecting: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.opts.retry_max)
            else:
                down_since, delay = None, self.opts.retry_min

    async def _open(self, channel: int) -> FramedStream:
        conn = await connect(self.opts.gateway_host, self.opts.gateway_port, self.ssl,
                             timeout=CONNECT_TIMEOUT, expect_roles=("gateway",))
        stream = FramedStream(conn.reader, conn.writer, channel,
                              limit=self.bandwidth if channel == CHANNEL_DATA else None)
        await stream.flush()
        return stream

    def inventory(self) -> dict:
        if self._inventory is None:
            if WINDOWS:
                from .windows.commands import LiveWindowsHost
                from .windows.inventory import collect_windows_inventory
                self._inventory = collect_windows_inventory(LiveWindowsHost())
            else:
                self._inventory = collect_inventory(self.opts.root if self.opts.root != "/" else "/")
            self._inventory["replication"] = self.replication()
        return self._inventory

    def _quiesce(self) -> dict:
        if WINDOWS:
            from .windows.commands import LiveWindowsHost
            from .windows.quiesce import quiesce_windows
            return quiesce_windows(LiveWindowsHost(), self.config, self.inventory().get("layout") or {})
        return quiesce(self.config, root=self.opts.root)

    def _unquiesce(self, report: dict) -> None:
        if WINDOWS:
            from .windows.commands import LiveWindowsHost
            from .windows.quiesce import unquiesce_windows
            unquiesce_windows(LiveWindowsHost(), report)
        else:
            unquiesce(report)

    def replication(self) -> dict:
        """How this guest replicates, for the receiver (which makes the replica to match)."""
        if self.opts.mode != "block":
            return {"mode": "file"}
        return {"mode": "block", "block_size": self.opts.block_size,
                "disks": [{"name": d.name, "path": d.path, "size": d.size} for d in self.opts.block_disks]}

    async def session(self) -> None:
        control = await self._open(CHANNEL_CONTROL)
        data = None
        try:
            cfg = {"max_retry_interval": self.config.max_retry_interval,
                   "excluded_paths": [os.fsdecode(p) for p in self.config.excluded_paths],
                   "root": self.opts.root}
            await control.send(Register(__version__, self.inventory(), cfg))
            welcome = await control.recv(timeout=CONNECT_TIMEOUT)
            if isinstance(welcome, Error):
                raise LinkClosed(f"receiver refused registration: {welcome.message}")
            if not isinstance(welcome, Welcome):
                raise ProtocolError(f"expected Welcome, got {type(welcome).__name__}")
            data = await self._open(CHANNEL_DATA)
            hello = await data.recv(timeout=CONNECT_TIMEOUT)
            if not isinstance(hello, Welcome):
                raise ProtocolError(f"expected Welcome on the data channel, got {type(hello).__name__}")
            self.link = DataLink(data, self.replicator.index, self.replicator.resend)
            log.info("registered as %s (phase %s)", welcome.guest, welcome.phase)
            service.notify_status(f"registered, phase {welcome.phase}")
            reporter = asyncio.ensure_future(self._report(control))
            try:
                await self._serve_commands(control)
            finally:
                reporter.cancel()
                await self._stop_continuous()
        finally:
            if self.link:
                if self.link.unacknowledged():
                    # Changes sent but never acknowledged have left the change set, and the
                    # index does not have them: walk and compare on the next sync to resend them.
                    self.replicator.changes.needs_verify = True
                await self.link.close()
                self.link = None
            elif data:
                await data.close()
            await control.close()

    async def _report(self, control: FramedStream) -> None:
        try:
            while True:
                await asyncio.sleep(PROGRESS_EVERY)
                await control.send(Progress(self.replicator.progress(self.link)))
        except LinkClosed:
            pass  # the command loop notices the same loss and reconnects

    async def _serve_commands(self, control: FramedStream) -> None:
        running = set()
        failure: asyncio.Future = asyncio.get_running_loop().create_future()
        self.failure = failure
        while True:
            recv = asyncio.ensure_future(control.recv(timeout=RECEIVER_SILENCE))
            try:
                done, _ = await asyncio.wait({recv, failure}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:   # stopping: the pending read goes too, unreported
                recv.cancel()
                raise
            if failure in done:
                recv.cancel()
                raise failure.result()
            try:
                msg = recv.result()
            except asyncio.TimeoutError:
                raise LinkClosed(f"no word from the receiver for {RECEIVER_SILENCE:.0f}s") from None
            if isinstance(msg, Command):
                task = asyncio.ensure_future(self._run_command(control, msg, failure))
                running.add(task)
                task.add_done_callback(running.discard)
            elif isinstance(msg, Error):
                raise LinkClosed(f"receiver: {msg.code}: {msg.message}")
            elif not isinstance(msg, Heartbeat):
                raise ProtocolError(f"unexpected {type(msg).__name__} on the control channel")

    async def _run_command(self, control: FramedStream, cmd: Command, failure: asyncio.Future) -> None:
        log.info("command %s %s", cmd.action, {k: v for k, v in cmd.args.items() if k != "cursor"})
        try:
            detail = await self._dispatch(cmd)
            await control.send(CommandResult(cmd.seq, True, detail or {}))
        except (LinkClosed, TransportError, ProtocolError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
                log.exception("command %s failed", cmd.action)
                await control.send(CommandResult(cmd.seq, False, {"error": str(exc)}))
                return
            if not failure.done():
                failure.set_result(exc)

    async def _dispatch(self, cmd: Command) -> dict:
        args, r = cmd.args, self.replicator
        if cmd.action == "full_sync":
            cursor = args.get("cursor")
            return await r.full_sync(self.link, int(args["sync_id"]), cursor if isinstance(cursor, bytes) else None)
        if cmd.action == "continuous_sync":
            return await self._start_continuous(int(args["sync_id"]))
        if cmd.action == "stop_continuous":
            return await self._stop_continuous()
        if cmd.action == "quiesce":
            await self._stop_continuous()
            self.quiesce_report = await asyncio.get_running_loop().run_in_executor(None, self._quiesce)
            self.replicator.quiesced(self.quiesce_report)
            return self.quiesce_report
        if cmd.action == "unquiesce":
            if self.quiesce_report:
                await asyncio.get_running_loop().run_in_executor(None, self._unquiesce, self.quiesce_report)
            return {}
        if cmd.action == "final_sync":
            await self._stop_continuous()
            return await r.final_sync(self.link, int(args["sync_id"]), bool(args.get("verify", False)))
        if cmd.action == "power_off":
            return self._schedule_power_off()
        raise OSError(f"unknown command {cmd.action!r}")

    def _schedule_power_off(self) -> dict:
        """The switchover's source power-off: answer first, then act. The receiver knows the
        guest is off when its links go quiet and stay so."""
        command = self.opts.power_off_command
        loop = asyncio.get_running_loop()
        if command:
            log.warning("powering this machine off for the switchover: %s", command)
            loop.call_later(self.opts.power_off_delay, lambda: subprocess.Popen(
                command, shell=True, start_new_session=True, stdin=subprocess.DEVNULL))
            return {"power_off": command}
        log.warning("switchover: the replicated root is not this machine; stopping the sentinel instead")
        task = asyncio.current_task()
        main = getattr(self, "main_task", None)
        loop.call_later(self.opts.power_off_delay, lambda: (main or task).cancel())
        return {"power_off": "sentinel stopped"}

    async def _start_continuous(self, sync_id: int) -> dict:
        await self._stop_continuous()
        self.stop_continuous = asyncio.Event()
        first_pass = asyncio.get_running_loop().create_future()
        self.continuous = asyncio.ensure_future(self.replicator.continuous_sync(
            self.link, sync_id, self.stop_continuous,
            first_pass_done=lambda: first_pass.done() or first_pass.set_result(True)))
        done, _ = await asyncio.wait({first_pass, self.continuous}, return_when=asyncio.FIRST_COMPLETED)
        if self.continuous in done:
            self.continuous.result()  # raises why it ended
        self.continuous.add_done_callback(self._continuous_ended)
        return {"first_pass": True}

    def _continuous_ended(self, task: asyncio.Task) -> None:
        """Continuous sync ends only when stopped; anything else restarts the session."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if not isinstance(exc, (LinkClosed, TransportError, ProtocolError)):
            log.error("continuous sync failed", exc_info=exc)
            self.replicator.changes.needs_verify = True
            exc = LinkClosed(f"continuous sync failed: {exc}")
        if self.failure is not None and not self.failure.done():
            self.failure.set_result(exc)

    async def _stop_continuous(self) -> dict:
        task, self.continuous = self.continuous, None
        if task is None:
            return {}
        self.stop_continuous.set()
        try:
            return await task
        except (LinkClosed, TransportError, ProtocolError, asyncio.CancelledError):
            return {}
