"""A TCP fault proxy on 127.0.0.1 for the fault campaigns.

It sits between two daemons (sentinel -> gateway, gateway -> receiver) and forwards bytes
untouched, so TLS passes through it; its faults act on the TCP streams:

- ``cut_at(offset, direction, which)``: a connection delivers exactly ``offset`` bytes in that
  direction (counted from the connection's start), then both sides are closed;
- ``cut_in(nbytes, direction)``: the connections open now are cut after ``nbytes`` more;
- ``cut_after(seconds, which)``: a connection is cut that long after it opened (or after the
  call, for the connections open now);
- ``cut_all()``: every open connection is cut now; ``set_down(True)``: the link is down, every
  open connection is cut and new ones are closed as soon as they are accepted, until
  ``set_down(False)``;
- ``stall(seconds, which)``: nothing is forwarded for that long, then forwarding resumes;
- ``set_latency(seconds)``: every chunk is delivered that long after it was read;
- ``set_bandwidth(bytes_per_second)``: a cap per direction shared by all connections.

``which`` is ``"all"`` (every connection, open now or accepted later), ``"open"`` (those
open now), ``"next"`` (the next one accepted) or a connection's index (0 = the first
accepted). Every random choice the proxy makes comes from ``self.rng``
(``random.Random(seed)``), and the seed is printed when the proxy starts, so a failing run
replays with the same seed.

The proxy runs on a thread owning its own event loop: the test calling it is never blocked.
Counters: ``bytes_up`` (client -> target), ``bytes_down``, ``connections``, ``cuts``.
"""
from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Dict, List, Optional, Union

UP, DOWN = "up", "down"
CHUNK = 64 << 10
Which = Union[str, int]


class _Conn:
    def __init__(self, proxy: "FaultProxy", index: int, client_w, target_w):
        self.proxy, self.index = proxy, index
        self.writers = {UP: target_w, DOWN: client_w}    # where each direction's bytes go
        self.sent = {UP: 0, DOWN: 0}
        self.cut_at: Dict[str, Optional[int]] = {UP: None, DOWN: None}
        self.stall_until = 0.0
        self.closed = False
        self.timer = None

    def set_cut(self, direction: str, offset: int) -> None:
        current = self.cut_at[direction]
        self.cut_at[direction] = offset if current is None else min(current, offset)
        if self.sent[direction] >= offset:
            self.cut()

    def cut(self) -> None:
        if not self.closed:
            self.proxy.cuts += 1
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer:
            self.timer.cancel()
        for w in self.writers.values():
            w.close()
        self.proxy._open.pop(self.index, None)


class FaultProxy:
    def __init__(self, target_port: int, *, seed: int = 0, name: str = "proxy", target_host: str = "127.0.0.1",
                 verbose: bool = True):
        self.target = (target_host, target_port)
        self.name, self.seed = name, seed
        self.rng = random.Random(seed)
        self.verbose = verbose
        self.port = 0
        self.bytes_up = self.bytes_down = 0
        self.connections = self.cuts = 0
        self.refused = 0
        self.down = False
        self.latency = 0.0
        self.bandwidth: Optional[float] = None
        self._bw_next = {UP: 0.0, DOWN: 0.0}
        self._rules: List[tuple] = []            # (kind, which, args) for connections to come
        self._open: Dict[int, _Conn] = {}
        self._global_stall_until = 0.0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._server = None
        self._thread: Optional[threading.Thread] = None

    # -- life ----------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        ready = threading.Event()
        failure: list = []

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, "127.0.0.1", self.port or 0))
                self.port = self._server.sockets[0].getsockname()[1]
            except Exception as e:  # reported to start()'s caller
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            self._server.close()
            for conn in list(self._open.values()):
                conn.close()
            pending = asyncio.all_tasks(loop)
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fault-proxy-{self.name}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        if self.verbose:
            print(f"fault proxy {self.name}: 127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]} "
                  f"seed={self.seed}", flush=True)
        return self

    def stop(self) -> None:
        if self._loop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, fn, *args):
        """Run fn(*args) on the proxy's loop and return its result (state is the loop's alone)."""
        if self._loop is None or not self._thread.is_alive():
            return fn(*args)

        async def wrapper():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(10)

    # -- faults --------------------------------------------------------------------------
    def cut_at(self, offset: int, direction: str = UP, which: Which = "all") -> None:
        self._call(self._add_rule, "cut_at", which, (direction, offset))

    def cut_in(self, nbytes: int, direction: str = UP) -> int:
        """Cut the connections open now once nbytes more have gone that way; returns how many."""
        def apply():
            conns = list(self._open.values())
            for c in conns:
                c.set_cut(direction, c.sent[direction] + nbytes)
            return len(conns)
        return self._call(apply)

    def cut_after(self, seconds: float, which: Which = "all") -> None:
        self._call(self._add_rule, "cut_after", which, (seconds,))

    def cut_all(self) -> int:
        """Cut every open connection now; returns how many were cut."""
        def apply():
            conns = list(self._open.values())
            for c in conns:
                c.cut()
            return len(conns)
        return self._call(apply)

    def set_down(self, down: bool) -> int:
        """Link down: cut what is open and close every new connection at once."""
        def apply():
            self.down = down
            if not down:
                return 0
            conns = list(self._open.values())
            for c in conns:
                c.cut()
            return len(conns)
        return self._call(apply)

    def stall(self, seconds: float, which: Which = "all") -> None:
        """Forward nothing for `seconds` (from now), then resume."""
        def apply():
            until = time.monotonic() + seconds
            if which == "all":
                self._global_stall_until = max(self._global_stall_until, until)
            else:
                self._add_rule("stall", which, (until,))
        self._call(apply)

    def set_latency(self, seconds: float) -> None:
        self._call(setattr, self, "latency", float(seconds))

    def set_bandwidth(self, bytes_per_second: Optional[float]) -> None:
        self._call(setattr, self, "bandwidth", bytes_per_second)

    def clear(self) -> None:
        """Drop every rule, stall, latency and cap (the link is up again)."""
        def apply():
            self._rules.clear()
            self._global_stall_until = 0.0
            self.latency, self.bandwidth, self.down = 0.0, None, False
            for c in self._open.values():
                c.cut_at = {UP: None, DOWN: None}
                c.stall_until = 0.0
                if c.timer:
                    c.timer.cancel()
                    c.timer = None
        self._call(apply)

    def random_offset(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def counters(self) -> dict:
        return {"bytes_up": self.bytes_up, "bytes_down": self.bytes_down, "connections": self.connections,
                "cuts": self.cuts, "refused": self.refused}

    # -- the loop's side -----------------------------------------------------------------
    def _add_rule(self, kind: str, which: Which, args: tuple) -> None:
        if which in ("all", "open"):
            for c in list(self._open.values()):
                self._apply(c, kind, args, now=True)
        elif isinstance(which, int) and which in self._open:
            self._apply(self._open[which], kind, args, now=True)
        if which in ("all", "next") or (isinstance(which, int) and which >= self.connections):
            self._rules.append((kind, which, args))

    def _apply(self, c: _Conn, kind: str, args: tuple, now: bool = False) -> None:
        if kind == "cut_at":
            c.set_cut(*args)
        elif kind == "cut_after":
            if c.timer:
                c.timer.cancel()
            c.timer = self._loop.call_later(args[0], c.cut)
        elif kind == "stall":
            c.stall_until = max(c.stall_until, args[0])

    async def _accept(self, client_r, client_w) -> None:
        index = self.connections
        self.connections += 1
        if self.down:
            self.refused += 1
            client_w.close()
            return
        try:
            target_r, target_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        conn = _Conn(self, index, client_w, target_w)
        if self.down:  # went down while connecting
            conn.close()
            return
        self._open[index] = conn
        keep = []
        for kind, which, args in self._rules:
            if which == "all" or which == index or which == "next":
                self._apply(conn, kind, args)
            if which == "all" or (isinstance(which, int) and which > index):
                keep.append((kind, which, args))
        self._rules = keep
        await asyncio.gather(self._direction(conn, UP, client_r, target_w),
                             self._direction(conn, DOWN, target_r, client_w), return_exceptions=True)
        conn.close()

    async def _direction(self, conn: _Conn, direction: str, reader, writer) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=16)

        async def read():
            try:
                while not conn.closed:
                    data = await reader.read(CHUNK)
                    await queue.put((time.monotonic(), data))
                    if not data:
                        return
            except (ConnectionError, OSError):
                await queue.put((time.monotonic(), b""))

        reading = asyncio.ensure_future(read())
        try:
            while not conn.closed:
                arrived, data = await queue.get()
                if not data:
                    if not conn.closed and writer.can_write_eof():
                        try:
                            writer.write_eof()
                        except OSError:
                            pass
                    return
                await self._deliver(conn, direction, writer, data, arrived)
        except (ConnectionError, OSError):
            conn.close()
        finally:
            reading.cancel()

    async def _deliver(self, conn: _Conn, direction: str, writer, data: bytes, arrived: float) -> None:
        # Stalls and latency first: nothing of this chunk leaves before they allow.
        while True:
            wait = max(self._global_stall_until, conn.stall_until, arrived + self.latency) - time.monotonic()
            if wait <= 0 or conn.closed:
                break
            await asyncio.sleep(wait)
        view = memoryview(data)
        while view and not conn.closed:
            piece = view
            if self.bandwidth:
                piece = view[:max(1024, int(self.bandwidth / 50))]
            cut = conn.cut_at[direction]
            if cut is not None and conn.sent[direction] + len(piece) >= cut:
                piece = piece[:max(0, cut - conn.sent[direction])]
                self._count(conn, direction, len(piece))
                writer.write(piece)
                await writer.drain()
                conn.cut()
                return
            if self.bandwidth:
                now = time.monotonic()
                start = max(now, self._bw_next[direction])
                self._bw_next[direction] = start + len(piece) / self.bandwidth
                if start > now:
                    await asyncio.sleep(start - now)
                if conn.closed:
                    return
            self._count(conn, direction, len(piece))
            writer.write(piece)
            await writer.drain()
            view = view[len(piece):]

    def _count(self, conn: _Conn, direction: str, n: int) -> None:
        conn.sent[direction] += n
        if direction == UP:
            self.bytes_up += n
        else:
            self.bytes_down += n
