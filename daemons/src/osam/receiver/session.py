"""One guest as the receiver sees it: its control and data connections (forwarded by the
gateway), the replica they write, and the driver that walks the migration through its phases
by commanding the sentinel. Phases and their rules live in osam.controller; this only acts."""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Dict, List, Optional

from ..controller import phases
from ..protocol import (Command, CommandResult, Error, Heartbeat, ProtocolError, Progress,
                        Register, Welcome)
from ..transport.framed import FramedStream, LinkClosed
from .applier import Applier, Refused
from .checkpoint import CheckpointJournal, decode_cursor
from .replica import BLOCK, TREE, make_replica, replica_format_for
from .store import ReplicaStore, StoreError
from .worker import ApplyWorker

log = logging.getLogger("osam.receiver")

POLL = 0.1                 # how often the driver looks at the controller's state
CONTROL_SILENCE = 30.0     # a control channel this quiet is dead (the sentinel reports every second)
HEARTBEAT_EVERY = 10.0     # so a sentinel can tell a silent receiver from a dead link


class GuestSession:
    def __init__(self, name: str, data_dir: str, controller, replica_format: str = TREE, fixup: bool = True,
                 package_cache: Optional[str] = None, cutover_factory=None, destination_factory=None):
        self.name = name
        self.controller = controller
        self.replica_dir = os.path.join(data_dir, "replicas", name)
        os.makedirs(self.replica_dir, exist_ok=True)
        self.replica_format, self.package_cache = replica_format, package_cache
        known = (controller.guest(name) or {}).get("inventory")
        self.replica = make_replica(replica_format_for(known, replica_format), self.replica_dir, package_cache)
        self.fixup_enabled = fixup
        self.cutover_factory = cutover_factory      # session -> Cutover (osam.receiver.cutover)
        self.cutover_task: Optional[asyncio.Task] = None
        self.destination_factory = destination_factory  # session -> Destination
        self._destination = None
        self.replica_ready = asyncio.Event()    # its disks are built and mounted (or it is a tree)
        if self.replica.format == TREE:
            self.replica_ready.set()            # a directory is ready as it is
        self.journal = CheckpointJournal(os.path.join(self.replica_dir, "checkpoint.json"))
        self.store: Optional[ReplicaStore] = None
        self.control: Optional[FramedStream] = None
        self.data_ready = asyncio.Event()
        self.data_task: Optional[asyncio.Task] = None
        self.worker: Optional[ApplyWorker] = None
        self.driver: Optional[asyncio.Task] = None
        self.results: Dict[int, asyncio.Future] = {}
        self.seq = 0
        self.config: dict = {}
        self.down_since: Optional[float] = time.monotonic()

    # -- control channel -----------------------------------------------------------------
    async def run_control(self, stream: FramedStream) -> None:
        reg = await stream.recv(timeout=CONTROL_SILENCE)
        if not isinstance(reg, Register):
            raise ProtocolError(f"expected Register, got {type(reg).__name__}")
        self.controller.register_guest(self.name, reg.inventory, reg.agent_version)
        self._match_replica(reg.inventory)
        self.controller.set_connected(self.name, True)
        self.config = reg.config
        m = self.controller.migration(self.name)
        await stream.send(Welcome(self.name, m["phase"] if m else phases.REGISTERED, {}))
        if self.control is not None:
            await self.control.close()  # a reconnect replaces a stale session
        self.control = stream
        self.down_since = None
        log.info("guest %s registered (agent %s)", self.name, reg.agent_version)
        self.driver = asyncio.ensure_future(self._drive())
        heartbeat = asyncio.ensure_future(self._heartbeat(stream))
        try:
            while True:
                msg = await stream.recv(timeout=CONTROL_SILENCE)
                if isinstance(msg, CommandResult):
                    fut = self.results.pop(msg.seq, None)
                    if fut and not fut.done():
                        fut.set_result(msg)
                elif isinstance(msg, Progress):
                    self._progress(msg.stats)
                elif isinstance(msg, Error):
                    log.warning("guest %s reports %s: %s", self.name, msg.code, msg.message)
                elif not isinstance(msg, Heartbeat):
                    raise ProtocolError(f"unexpected {type(msg).__name__} on the control channel")
        except asyncio.TimeoutError:
            log.warning("guest %s: control channel silent for %.0fs; dropping it", self.name, CONTROL_SILENCE)
        finally:
            heartbeat.cancel()
            if self.control is stream:
                self.control = None
                self.down_since = time.monotonic()
                self.driver.cancel()
                for fut in self.results.values():
                    fut.cancel()
                self.results.clear()
                self.controller.set_connected(self.name, False)
                if self.data_task:
                    self.data_task.cancel()

    def _match_replica(self, inventory: dict) -> None:
        """A guest that registers in block mode gets a block replica (and the other way round),
        as long as nothing of the replica is in use yet."""
        wanted = replica_format_for(inventory, self.replica_format)
        if wanted == self.replica.format or self.store is not None:
            return
        if self.replica.format != TREE and self.replica_ready.is_set():
            return
        self.replica = make_replica(wanted, self.replica_dir, self.package_cache)
        self._destination = None
        if wanted == TREE:
            self.replica_ready.set()
        else:
            self.replica_ready.clear()

    @staticmethod
    async def _heartbeat(stream: FramedStream) -> None:
        try:
            while True:
                await asyncio.sleep(HEARTBEAT_EVERY)
                await stream.send(Heartbeat(time.time()))
        except LinkClosed:
            pass

    def _progress(self, stats: dict) -> None:
        m = self.controller.migration(self.name)
        if m is None or phases.is_terminal(m["phase"]):
            return
        def count(key):
            v = stats.get(key)
            return v if isinstance(v, int) and v >= 0 else None
        lag = stats.get("lag")
        self.controller.update_progress(
            self.name, bytes_done=count("bytes_done"), bytes_total=count("bytes_total"),
            files_done=count("files_done"), files_total=count("files_total"),
            lag=lag if isinstance(lag, (int, float)) and lag >= 0 else None)
        self.last_stats = stats

    async def command(self, action: str, **args) -> dict:
        if self.control is None:
            raise LinkClosed("guest not connected")
        self.seq += 1
        fut = asyncio.get_running_loop().create_future()
        self.results[self.seq] = fut
        await self.control.send(Command(self.seq, action, args))
        result: CommandResult = await fut
        if not result.ok:
            raise RuntimeError(f"{action} failed on the guest: {result.detail.get('error', result.detail)}")
        self.controller.note_error(self.name, None)  # it worked: whatever went wrong is over
        return result.detail

    # -- data channel --------------------------------------------------------------------
    async def run_data(self, stream: FramedStream) -> None:
        loop = asyncio.get_running_loop()
        if self.data_task is not None:
            self.data_task.cancel()
        me = self.data_task = asyncio.current_task()
        if self.worker is not None:  # the previous connection's writes finish first
            self.worker.stop()
            await loop.run_in_executor(None, self.worker.join)
        failure: list = []
        pending_ack: List[Optional[asyncio.Future]] = [None]

        def on_reply(reply) -> None:
            if callable(reply):
                # Durable steps run in order, off the loop and the worker, while data keeps arriving.
                pending_ack[0] = asyncio.ensure_future(
                    self._ack_after(pending_ack[0], loop.run_in_executor(None, reply), stream))
            else:
                stream.queue(reply)
                asyncio.ensure_future(stream.flush())

        def on_failure(exc: BaseException) -> None:
            failure.append(exc)
            me.cancel()

        await stream.send(Welcome(self.name, "", {}))
        self.data_ready.set()
        worker = None
        try:
            # The driver mounts the replica before it asks for data; nothing comes before.
            await self.replica_ready.wait()
            if self.store is None:
                self.store = self.replica.open_store()
            worker = self.worker = ApplyWorker(Applier(self.name, self.store, self.journal), loop, on_reply, on_failure)
            while True:
                await worker.put(await stream.recv())
        except asyncio.CancelledError:
            if not failure:
                raise
            await self._report_failure(stream, failure[0])
        finally:
            if worker is not None:
                worker.stop()
            self.data_ready.clear()
            if self.data_task is me:
                self.data_task = None

    async def _report_failure(self, stream: FramedStream, exc: BaseException) -> None:
        if isinstance(exc, Refused):
            code, message = "refused", f"refused data from the guest: {exc}"
            log.warning("guest %s: %s", self.name, message)
        elif isinstance(exc, (OSError, StoreError)):
            code, message = "replica", f"cannot write the replica: {exc}"
            log.error("guest %s: %s", self.name, message)
        else:
            code, message = "internal", f"applying data failed: {type(exc).__name__}: {exc}"
            log.error("guest %s: %s", self.name, message, exc_info=exc)
        self.controller.note_error(self.name, message[:1000])
        await stream.send(Error(code, message))

    @staticmethod
    async def _ack_after(prev, durable, stream: FramedStream) -> None:
        if prev is not None:
            await prev
        ack = await durable
        stream.queue(ack)
        await stream.flush()

    # -- the driver ----------------------------------------------------------------------
    async def _drive(self) -> None:
        try:
            while True:
                m = self.controller.migration(self.name)
                phase = m["phase"] if m else None
                if phase is None or phases.is_terminal(phase) or phase in phases.CUTOVER:
                    await asyncio.sleep(POLL)     # the cutover has its own driver (ensure_cutover)
                    continue
                await asyncio.wait_for(self.data_ready.wait(), CONTROL_SILENCE)
                await self._watch_abort(self._step(m))
        except asyncio.CancelledError:
            raise
        except (LinkClosed, asyncio.TimeoutError) as exc:
            log.info("guest %s: %s", self.name, exc)
        except Exception as exc:  # noqa: BLE001 - the migration records why it stopped
            log.exception("guest %s: migration step failed", self.name)
            m = self.controller.migration(self.name)
            if m and not phases.is_terminal(m["phase"]):
                self.controller.fail(self.name, f"{type(exc).__name__}: {exc}")

    async def _watch_abort(self, step) -> None:
        """Run a step, abandoning it if the migration is aborted meanwhile."""
        task = asyncio.ensure_future(step)
        while not task.done():
            await asyncio.wait({task}, timeout=POLL)
            m = self.controller.migration(self.name)
            if m and phases.is_terminal(m["phase"]) and not task.done():
                task.cancel()
                log.info("guest %s: migration %s; stopping the guest's work", self.name, m["phase"])
                try:
                    await self.command("stop_continuous")
                except Exception:  # noqa: BLE001 - best effort
                    pass
        if not task.cancelled():
            task.result()

    async def _step(self, m: dict) -> None:
        phase, name = m["phase"], self.name
        if phase == phases.REGISTERED:
            await self._placed(m)
        await self._replica_mounted()
        if phase == phases.REGISTERED:
            self.controller.advance(name, phases.FULL_SYNC)
        elif phase == phases.FULL_SYNC:
            sync_id, cursor = self._full_sync_position(m)
            log.info("guest %s: full sync %d %s", name, sync_id,
                     f"resuming after {os.fsdecode(cursor)!r}" if cursor else "from the start")
            self._progress(await self.command("full_sync", sync_id=sync_id, cursor=cursor))
            self.controller.advance(name, phases.CONTINUOUS_SYNC)
        elif phase == phases.CONTINUOUS_SYNC:
            await self.command("continuous_sync", sync_id=self._next_sync_id(m, "continuous"))
            self.controller.update_progress(name, last_sync_at=time.time())  # first pass done
            while not self.controller.begin_switchover_if_due(name):
                await asyncio.sleep(POLL)
                if self.controller.migration(name)["phase"] != phases.CONTINUOUS_SYNC:
                    return
        elif phase == phases.QUIESCE:
            report = await self.command("quiesce")
            log.info("guest %s quiesced: %s", name, report)
            self.controller.advance(name, phases.FINAL_SYNC)
        elif phase == phases.FINAL_SYNC:
            self._progress(await self.command("final_sync", sync_id=self._next_sync_id(m, "final"), verify=False))
            self.controller.advance(name, phases.FIXUP)
            self.ensure_cutover()

    # -- after the final sync ------------------------------------------------------------
    def ensure_cutover(self) -> None:
        """Drive the fix-up and cutover phases, unless that is under way already."""
        if self.cutover_factory is None or (self.cutover_task is not None and not self.cutover_task.done()):
            return
        self.cutover_task = asyncio.ensure_future(self._run_cutover())

    async def _run_cutover(self) -> None:
        try:
            await self.cutover_factory(self).run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the migration records why it stopped
            log.exception("guest %s: cutover step failed", self.name)
            m = self.controller.migration(self.name)
            if m and not phases.is_terminal(m["phase"]):
                self.controller.fail(self.name, f"{type(exc).__name__}: {exc}")

    async def fixup(self) -> None:
        """Fix the replica up (a disk replica, unless disabled), then let go of its disks."""
        name = self.name
        await self._close_store()
        if self.replica.format == BLOCK:
            state = self.journal.load()
            if not state.get("manifest_ok"):
                raise RuntimeError("the block replica was not checked against the source's final manifest "
                                   f"(final sync {state.get('sync_id')}: {state.get('stats', {}).get('manifest')})")
        await self._replica_mounted()
        loop = asyncio.get_running_loop()
        guest = self.controller.guest(name) or {}
        report = (await loop.run_in_executor(None, self.replica.fixup, name, guest.get("inventory") or {})
                  if self.fixup_enabled else {"skipped": "the receiver runs with --no-fixup"})
        log.info("guest %s: fix-up %s", name, report.get("skipped") or
                 f"made {len(report.get('changes', []))} changes, warnings: {report.get('warnings') or 'none'}")
        await loop.run_in_executor(None, self.replica.finish)
        self.replica_ready.clear()

    @property
    def destination(self):
        if self._destination is None and self.destination_factory is not None:
            self._destination = self.destination_factory(self)
        return self._destination

    async def _placed(self, m: dict) -> None:
        """Before anything is made: the destination accepts the VM this replica will be, and
        says where its images go (a datastore); the VM definition is saved with them."""
        if self.replica.format == TREE or self.destination is None:
            return
        from .cutover import vm_spec

        def place() -> None:
            inventory = (self.controller.guest(self.name) or {}).get("inventory") or {}
            vm = self.replica.vm_draft(self.name, inventory)
            spec = vm_spec(m, vm, inventory)
            for i, disk in enumerate(vm["disks"]):
                disk["image"] = self.destination.image_path(spec, i) or disk["image"]
            problems = self.destination.validate(vm_spec(m, vm, inventory))
            if problems:
                raise RuntimeError("the destination cannot take this guest: " + "; ".join(problems))
            self.replica.save_vm(vm)
        await asyncio.get_running_loop().run_in_executor(None, place)

    async def _replica_mounted(self) -> None:
        """Build (once) and mount the replica's disks before anything is written to them."""
        if self.replica_ready.is_set():
            return
        guest = self.controller.guest(self.name) or {}
        await asyncio.get_running_loop().run_in_executor(
            None, self.replica.prepare, self.name, guest.get("inventory") or {})
        self.replica_ready.set()

    async def _close_store(self) -> None:
        """Stop writing: the data channel's worker ends and the store lets go of the mounts."""
        if self.data_task is not None:
            self.data_task.cancel()
        if self.worker is not None:
            self.worker.stop()
            await asyncio.get_running_loop().run_in_executor(None, self.worker.join)
            self.worker = None
        if self.store is not None:
            self.store.close()
            self.store = None

    async def shutdown(self) -> None:
        """The receiver stops: let go of the replica (a disk replica is unmounted)."""
        for task in (self.driver, self.cutover_task):
            if task is not None:
                task.cancel()
        await self._close_store()
        if self.replica_ready.is_set():
            self.replica_ready.clear()
            await asyncio.get_running_loop().run_in_executor(None, self.replica.finish)

    def _full_sync_position(self, m: dict):
        state = self.journal.load()
        if state.get("migration") == m["id"] and state.get("kind") == "full" and not state.get("complete"):
            cursor = state.get("cursor")
            return state["sync_id"], decode_cursor(cursor) if cursor else None
        return self._next_sync_id(m, "full"), None

    def _next_sync_id(self, m: dict, kind: str) -> int:
        state = self.journal.load()
        sync_id = int(state.get("sync_id", 0)) + 1
        self.journal.commit({"migration": m["id"], "sync_id": sync_id, "kind": kind, "seq": 0,
                             "cursor": None, "complete": False})
        return sync_id

    # -- link watchdog -------------------------------------------------------------------
    def check_link(self, now: float) -> None:
        """Fail the migration once the link has been down longer than the guest allows."""
        if self.down_since is None:
            return
        hours = self.config.get("max_retry_interval", 8)
        limit = (hours if isinstance(hours, int) and 1 <= hours <= 8 else 8) * 3600 * LINK_TIME_SCALE
        if now - self.down_since > limit:
            m = self.controller.migration(self.name)
            if m and not phases.is_terminal(m["phase"]) and m["phase"] != phases.REGISTERED:
                self.controller.fail(self.name, f"link to the guest down for more than "
                                                f"max_retry_interval ({hours} h)")


# Tests scale hours down (OSAM_LINK_TIME_SCALE=0.001 makes an hour 3.6 s).
LINK_TIME_SCALE = float(os.environ.get("OSAM_LINK_TIME_SCALE", "1"))
