"""Messages over an asyncio stream. Sending coalesces small frames into one buffer (one TLS
record per ~256 KiB, not per frame) and hands large frames over as they are; receiving reads
each frame's header, then exactly its payload, and leaves the parsing to osam.protocol."""
from __future__ import annotations

import asyncio
import time
from typing import List, Optional

from ..common.bandwidth import TokenBucket
from ..protocol import Frame, Message, ProtocolError, decode, decode_hello, encode_hello
from ..protocol.frames import HEADER, HELLO, MAX_PAYLOAD, decode_payload

FLUSH_AT = 256 << 10
LARGE_FRAME = 64 << 10   # frames from this size are written as they are, not copied
# lz4 pays when the link, not the sender, sets the pace, and the link is slower than lz4
# compresses (~0.5 GB/s a core): judged over windows of this many bytes by the share of time
# spent waiting for the link to drain and by the rate the link took the bytes.
JUDGE_EVERY = 32 << 20
LINK_BOUND_SHARE = 0.3
SLOW_LINK_RATE = 250e6   # bytes/s
# A frame once begun must arrive whole within this many seconds (8 MiB at ~70 KB/s): a peer
# may stay quiet between frames as long as it likes, but not stall or trickle inside one.
FRAME_TIMEOUT = 120.0
_timeout = getattr(asyncio, "timeout", None)   # Python 3.11+; the 3.9 sentinel goes without


def link_is_the_bottleneck(nbytes: int, elapsed: float, blocked: float) -> bool:
    """Over a window: the sender waited on the link much of the time, and the link moved
    bytes slower than lz4 compresses them."""
    elapsed = max(elapsed, 1e-6)
    return blocked / elapsed > LINK_BOUND_SHARE and nbytes / elapsed < SLOW_LINK_RATE


class LinkClosed(ConnectionError):
    """The peer closed the connection or it dropped."""


class FramedStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, channel: int,
                 *, hello_sent: bool = False, hello_received: bool = False,
                 limit: Optional[TokenBucket] = None):
        self.reader, self.writer = reader, writer
        self.channel = channel
        self.limit = limit       # a bandwidth limit on the bytes this stream sends
        self._hello_pending = not hello_received
        self._small = bytearray()
        self._chunks: List[bytes] = []
        self._queued = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.link_bound = True   # until measured: assume a slow link, where lz4 pays
        self._window_start = time.monotonic()
        self._window_bytes = 0
        self._window_blocked = 0.0
        self.frame_timeout: Optional[float] = FRAME_TIMEOUT
        if not hello_sent:
            self._small += encode_hello(channel)

    # -- sending -------------------------------------------------------------------------
    def queue(self, msg: Message) -> int:
        """Buffer a message; returns its size on the wire. Call flush() (or maybe_flush())."""
        frame = msg.encode(compress=self.link_bound)
        self.queue_frame(frame)
        return len(frame)

    def queue_frame(self, frame: bytes) -> None:
        """Buffer a frame encoded elsewhere."""
        if len(frame) >= LARGE_FRAME:
            self._seal_small()
            self._chunks.append(frame)
        else:
            self._small += frame
        self._queued += len(frame)

    def _seal_small(self) -> None:
        """Small frames so far become one chunk, keeping their place before what follows."""
        if self._small:
            self._chunks.append(bytes(self._small))
            self._small.clear()

    async def maybe_flush(self) -> None:
        if self._queued >= FLUSH_AT:  # every queued byte, small frames included
            await self.flush()

    async def flush(self) -> None:
        started = time.monotonic()
        if self.limit is not None and (self._small or self._chunks):
            await self._wait_for_bandwidth()
        self._seal_small()
        if self._chunks:
            chunks, self._chunks, self._queued = self._chunks, [], 0
            size = sum(len(c) for c in chunks)
            self.bytes_out += size
            self._window_bytes += size
            if self.limit is not None:
                self.limit.reserve(size, time.monotonic())
            self.writer.writelines(chunks)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise LinkClosed(str(exc) or type(exc).__name__) from None
        self._judge_link(started)

    async def _wait_for_bandwidth(self) -> None:
        """Wait until the limit's bucket is out of debt; what is queued then goes at once (in
        the order queued, whoever flushes), and its size is the next debt. Time waited here
        counts as time the link held the sender up."""
        while True:
            delay = self.limit.wait_time(time.monotonic())
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    def _judge_link(self, drain_started: float) -> None:
        now = time.monotonic()
        self._window_blocked += now - drain_started
        if self._window_bytes >= JUDGE_EVERY:
            self.link_bound = link_is_the_bottleneck(self._window_bytes, now - self._window_start,
                                                     self._window_blocked)
            self._window_start, self._window_bytes, self._window_blocked = now, 0, 0.0

    async def send(self, msg: Message) -> None:
        self.queue(msg)
        await self.flush()

    # -- receiving -----------------------------------------------------------------------
    async def recv(self, timeout: Optional[float] = None) -> Message:
        if timeout is None:
            return await self._recv()
        return await asyncio.wait_for(self._recv(), timeout)

    async def _recv(self) -> Message:
        try:
            if self._hello_pending:
                channel = decode_hello(await self.reader.readexactly(HELLO.size))
                if channel != self.channel:
                    raise ProtocolError(f"peer opened channel {channel}, expected {self.channel}")
                self._hello_pending = False
            first = await self.reader.readexactly(1)
            if self.frame_timeout is None or _timeout is None:
                length, ftype, flags = HEADER.unpack(first + await self.reader.readexactly(HEADER.size - 1))
                if length > MAX_PAYLOAD:
                    raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_PAYLOAD} cap")
                payload = await self.reader.readexactly(length) if length else b""
            else:
                try:
                    async with _timeout(self.frame_timeout):
                        length, ftype, flags = HEADER.unpack(first + await self.reader.readexactly(HEADER.size - 1))
                        if length > MAX_PAYLOAD:
                            raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_PAYLOAD} cap")
                        payload = await self.reader.readexactly(length) if length else b""
                except TimeoutError:
                    raise LinkClosed(f"peer stalled mid-frame: frame not complete within "
                                     f"{self.frame_timeout:g}s") from None
        except asyncio.IncompleteReadError as exc:
            raise LinkClosed("connection closed by peer" if not exc.partial else "connection cut mid-frame") from None
        except (ConnectionError, OSError) as exc:
            raise LinkClosed(str(exc) or type(exc).__name__) from None
        self.bytes_in += HEADER.size + length
        return decode(Frame(ftype, decode_payload(flags, payload)))

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:  # noqa: BLE001 - already gone
            pass


__all__ = ["FramedStream", "LinkClosed", "ProtocolError"]
