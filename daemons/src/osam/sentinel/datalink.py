"""The sentinel's side of the data channel: queue messages, mark checkpoints, and apply the
index changes a checkpoint covers once the receiver acknowledges it has made them durable."""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Callable, List, Optional

from ..common.fsentry import is_under
from ..protocol import (Checkpoint, CheckpointAck, Error, Heartbeat, Message, Resend, SyncBegin,
                        SyncEnd, SyncEndAck)
from ..transport.framed import FramedStream, LinkClosed
from .index import Index

# Unacknowledged checkpoints allowed in flight: bounds what a dropped link makes us resend.
MAX_IN_FLIGHT = 2


class DataLink:
    def __init__(self, stream: FramedStream, index: Index, on_resend: Callable[[bytes], None]):
        self.stream = stream
        self.index = index
        self.on_resend = on_resend
        self.ops: List[tuple] = []          # index changes since the last checkpoint
        self.oldest_change: Optional[float] = None  # monotonic time of the oldest change in ops
        self._seq = 0
        self._in_flight: "OrderedDict[int, tuple]" = OrderedDict()
        self._acked = asyncio.Condition()
        self._sync_end: Optional[asyncio.Future] = None
        self._failure: Optional[BaseException] = None
        self._reader = asyncio.ensure_future(self._read_acks())

    # -- sending -------------------------------------------------------------------------
    def queue(self, msg: Message) -> int:
        return self.stream.queue(msg)

    def queue_frame(self, frame: bytes) -> None:
        """A message encoded elsewhere (a prefetch thread)."""
        self.stream.queue_frame(frame)

    async def maybe_flush(self) -> None:
        self._check()
        await self.stream.maybe_flush()

    def note_change(self, op: tuple, since: Optional[float] = None) -> None:
        self.ops.append(op)
        if since is not None and (self.oldest_change is None or since < self.oldest_change):
            self.oldest_change = since

    async def begin(self, sync_id: int, kind: str) -> None:
        self.queue(SyncBegin(sync_id, kind))
        await self.stream.flush()

    async def checkpoint(self, cursor: bytes = b"", stats: Optional[dict] = None) -> None:
        """Everything queued so far becomes one durable step once acknowledged."""
        self._seq += 1
        self._in_flight[self._seq] = (self.ops, self.oldest_change)
        self.ops, self.oldest_change = [], None
        self.queue(Checkpoint(self._seq, cursor, stats or {}))
        await self.stream.flush()
        async with self._acked:
            await self._acked.wait_for(lambda: self._failure or len(self._in_flight) < MAX_IN_FLIGHT)
        self._check()

    async def drain(self) -> None:
        """Wait until every checkpoint sent is acknowledged."""
        async with self._acked:
            await self._acked.wait_for(lambda: self._failure or not self._in_flight)
        self._check()

    async def end(self, sync_id: int, stats: dict) -> dict:
        await self.checkpoint(b"", stats)
        await self.drain()
        self._sync_end = asyncio.get_running_loop().create_future()
        self.queue(SyncEnd(sync_id, stats))
        await self.stream.flush()
        return await self._sync_end

    def current_name(self, path: bytes) -> Optional[bytes]:
        """Where an acknowledged index path will be once the changes in flight land: renames
        move it, deletes drop it (None)."""
        for ops, _ in list(self._in_flight.values()) + [(self.ops, None)]:
            for op in ops:
                if op[0] == "rename" and is_under(path, op[1]):
                    path = op[2] + path[len(op[1]):]
                elif op[0] == "delete" and is_under(path, op[1]):
                    return None
        return path

    def lag(self, now: float) -> float:
        """Age of the oldest change not yet durable on the replica."""
        times = [t for _, t in self._in_flight.values() if t is not None]
        if self.oldest_change is not None:
            times.append(self.oldest_change)
        return max(0.0, now - min(times)) if times else 0.0

    # -- receiving -----------------------------------------------------------------------
    async def _read_acks(self) -> None:
        try:
            while True:
                msg = await self.stream.recv()
                if isinstance(msg, CheckpointAck):
                    await self._acknowledge(msg.seq)
                elif isinstance(msg, SyncEndAck):
                    if self._sync_end and not self._sync_end.done():
                        self._sync_end.set_result(msg.stats)
                elif isinstance(msg, Resend):
                    self.on_resend(msg.path)
                elif isinstance(msg, Error):
                    raise LinkClosed(f"receiver reported {msg.code}: {msg.message}")
                elif not isinstance(msg, Heartbeat):
                    raise LinkClosed(f"unexpected {type(msg).__name__} on the data channel")
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits next
            self._failure = exc if not isinstance(exc, asyncio.CancelledError) else LinkClosed("closed")
            if self._sync_end and not self._sync_end.done():
                self._sync_end.set_exception(self._failure)
            async with self._acked:
                self._acked.notify_all()

    async def _acknowledge(self, seq: int) -> None:
        while self._in_flight:
            first = next(iter(self._in_flight))
            if first > seq:
                break
            ops, _ = self._in_flight.pop(first)
            if ops:
                self.index.apply(ops)
        async with self._acked:
            self._acked.notify_all()

    def unacknowledged(self) -> bool:
        """True while changes were sent (or queued) that the receiver has not acknowledged."""
        return bool(self.ops) or any(ops for ops, _ in self._in_flight.values())

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        self._reader.cancel()
        try:
            await self._reader
        except BaseException:  # noqa: BLE001
            pass
        await self.stream.close()
