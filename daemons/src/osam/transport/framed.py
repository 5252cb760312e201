"""Messages over an asyncio stream: the sans-IO Connection fed from a reader, and an outbox that
coalesces small frames into large writes (one TLS record per ~256 KiB, not per frame)."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Deque, Optional

from ..protocol import Connection, Message, ProtocolError

FLUSH_AT = 256 << 10
READ_SIZE = 1 << 20


class LinkClosed(ConnectionError):
    """The peer closed the connection or it dropped."""


class FramedStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, channel: int,
                 *, hello_sent: bool = False, hello_received: bool = False):
        self.reader, self.writer = reader, writer
        self.conn = Connection(channel)
        if hello_received:
            self.conn.peer_channel = channel
        self._inbox: Deque[Message] = deque()
        self._out = bytearray()
        self.bytes_out = 0
        self.bytes_in = 0
        if not hello_sent:
            self._out += self.conn.hello()

    # -- sending -------------------------------------------------------------------------
    def queue(self, msg: Message) -> int:
        """Buffer a message; returns its size on the wire. Call flush() (or maybe_flush())."""
        frame = msg.encode()
        self._out += frame
        return len(frame)

    def queue_frame(self, frame: bytes) -> None:
        self._out += frame

    async def maybe_flush(self) -> None:
        if len(self._out) >= FLUSH_AT:
            await self.flush()

    async def flush(self) -> None:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            self.bytes_out += len(data)
            self.writer.write(data)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise LinkClosed(str(exc) or type(exc).__name__) from None

    async def send(self, msg: Message) -> None:
        self.queue(msg)
        await self.flush()

    # -- receiving -----------------------------------------------------------------------
    async def recv(self, timeout: Optional[float] = None) -> Message:
        while not self._inbox:
            try:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
            except (ConnectionError, OSError) as exc:
                raise LinkClosed(str(exc) or type(exc).__name__) from None
            if not data:
                raise LinkClosed("connection closed by peer")
            self.bytes_in += len(data)
            self._inbox.extend(self.conn.receive(data))
        return self._inbox.popleft()

    def feed_raw(self, data: bytes) -> None:
        """Bytes read by someone else (e.g. past a hello) that belong to this stream."""
        if data:
            self._inbox.extend(self.conn.receive(data))

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:
            pass


__all__ = ["FramedStream", "LinkClosed", "ProtocolError"]
