"""The gateway's shared bandwidth limit: data pipes take their turns in one bucket; the others
are not held."""
import asyncio
import time

from osam.common.bandwidth import TokenBucket
from osam.gateway.relay import _pipe


class Sink:
    def __init__(self):
        self.data, self.closed = bytearray(), False

    def write(self, data):
        self.data += data

    async def drain(self):
        pass

    def close(self):
        self.closed = True


def feed(payload: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=1 << 16)
    reader.feed_data(payload)
    reader.feed_eof()
    return reader


def test_pipes_sharing_a_limit_share_its_rate_and_pass_every_byte():
    rate, each = 8e6, 1_000_000

    async def run():
        limit = TokenBucket(rate, now=time.monotonic())
        payloads = [bytes([i]) * each for i in range(3)]
        sinks = [Sink() for _ in payloads]
        started = time.monotonic()
        await asyncio.gather(*(_pipe(feed(p), s, None, limit) for p, s in zip(payloads, sinks)))
        return time.monotonic() - started, payloads, sinks

    elapsed, payloads, sinks = asyncio.run(run())
    assert [bytes(s.data) for s in sinks] == payloads and all(s.closed for s in sinks)
    assert elapsed >= (3 * each - TokenBucket(rate).burst - (1 << 20)) / rate   # never faster
    assert elapsed < 30


def test_a_pipe_without_a_limit_is_not_held():
    async def run():
        sink = Sink()
        started = time.monotonic()
        await _pipe(feed(b"x" * 5_000_000), sink, None)
        return time.monotonic() - started, sink

    elapsed, sink = asyncio.run(run())
    assert len(sink.data) == 5_000_000 and elapsed < 5
