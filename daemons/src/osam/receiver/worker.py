"""One thread per guest applies its data channel to the replica, in order, while the event loop
keeps decrypting and decoding what arrives next: file-system calls then no longer stall every
other guest's connections, and writing overlaps with TLS and decompression."""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Callable, Deque, Optional, Tuple

from ..protocol import FileData, Message
from .applier import Applier

# Bytes of decoded messages waiting for the thread before the connection stops reading.
QUEUE_BYTES = 32 << 20


class ApplyWorker:
    """`put` messages from the loop; replies and failures come back through the callbacks,
    on the loop: `on_reply(reply)` for each reply (a message, or a durable step to run
    elsewhere), `on_failure(exc)` once, after which nothing more is applied."""

    def __init__(self, applier: Applier, loop: asyncio.AbstractEventLoop,
                 on_reply: Callable[[object], None], on_failure: Callable[[BaseException], None]):
        self.applier = applier
        self.loop = loop
        self.on_reply, self.on_failure = on_reply, on_failure
        self._queue: Deque[Tuple[Optional[Message], int]] = deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._room = asyncio.Event()
        self._room.set()
        self._failed = False
        self._thread = threading.Thread(target=self._run, name=f"osam-apply-{applier.guest}", daemon=True)
        self._thread.start()

    async def put(self, msg: Message) -> None:
        size = len(msg.data) if isinstance(msg, FileData) else 256
        while self._queued_bytes + size > QUEUE_BYTES and self._queued_bytes:
            self._room.clear()
            await self._room.wait()
        with self._cond:
            self._queue.append((msg, size))
            self._queued_bytes += size
            self._cond.notify()

    def stop(self) -> None:
        """Finish what is queued, then end the thread (it aborts an unfinished file)."""
        with self._cond:
            self._queue.append((None, 0))
            self._cond.notify()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                msg, size = self._queue.popleft()
            if msg is None:
                self.applier.abort_file()
                return
            if not self._failed:
                try:
                    replies = self.applier.handle(msg)
                except BaseException as exc:  # noqa: BLE001 - reported on the loop
                    self._failed = True
                    self.applier.abort_file()
                    self.loop.call_soon_threadsafe(self.on_failure, exc)
                    replies = ()
                for reply in replies:
                    self.loop.call_soon_threadsafe(self.on_reply, reply)
            with self._cond:
                self._queued_bytes -= size
            if self._queued_bytes <= QUEUE_BYTES // 2:
                self.loop.call_soon_threadsafe(self._room.set)
