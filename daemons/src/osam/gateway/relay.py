"""The gateway's one job: carry each guest connection to the receiver over the gateway's own
mutually authenticated link, announcing whose it is with the guest's certificate. Bytes after
the hello pass through untouched; only the control channel's first frame (the registration)
is read, to keep the source site's inventory. A bandwidth limit, when set, is one token bucket
shared by every guest's data connection, guest to receiver; control channels are never held."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Dict, Optional

from ..common.atomic import atomic_write
from ..common.bandwidth import TokenBucket
from ..protocol import (CHANNEL_CONTROL, Forward, FrameDecoder, ProtocolError, Register,
                        decode, decode_hello, encode_hello)
from ..protocol.frames import HELLO
from ..transport import Connection, TransportError, connect

log = logging.getLogger("osam.gateway")

CHUNK = 1 << 20
HELLO_TIMEOUT = 15.0


class Relay:
    hello_timeout = HELLO_TIMEOUT   # seconds an admitted guest has to send its hello

    def __init__(self, receiver_host: str, receiver_port: int, client_ssl, inventory_file: Optional[str] = None,
                 bandwidth_limit: Optional[float] = None):
        self.receiver = (receiver_host, receiver_port)
        self.data_limit = TokenBucket(bandwidth_limit, now=time.monotonic()) if bandwidth_limit else None
        self.client_ssl = client_ssl
        self.inventory_file = inventory_file
        self.inventory: Dict[str, dict] = _load(inventory_file)   # guest name -> its last registration
        self.active = 0

    async def handle(self, guest: Connection) -> None:
        name = guest.identity.name
        try:
            channel = decode_hello(await asyncio.wait_for(guest.reader.readexactly(HELLO.size), self.hello_timeout))
        except (ProtocolError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            reason = (f"no hello within {self.hello_timeout:g}s" if isinstance(exc, asyncio.TimeoutError) else
                      "closed before its hello" if isinstance(exc, asyncio.IncompleteReadError) else f"bad hello: {exc}")
            log.warning("refused %s (%s): %s", guest.peer, name, reason)
            return
        try:
            up = await connect(*self.receiver, self.client_ssl, timeout=15, expect_roles=("receiver",))
        except TransportError as exc:
            log.warning("cannot forward %s (%s): %s", guest.peer, name, exc)
            return
        up.writer.write(encode_hello(channel) + Forward(channel, guest.peer_cert_der, guest.peer).encode())
        self.active += 1
        log.info("forwarding %s channel of %s (%s)", "control" if channel == CHANNEL_CONTROL else "data",
                 name, guest.peer)
        watch = _RegistrationWatch(name, self._registered) if channel == CHANNEL_CONTROL else None
        try:
            limit = self.data_limit if channel != CHANNEL_CONTROL else None
            down = asyncio.ensure_future(_pipe(guest.reader, up.writer, watch, limit))
            back = asyncio.ensure_future(_pipe(up.reader, guest.writer, None))
            await asyncio.wait({down, back}, return_when=asyncio.FIRST_COMPLETED)
            for t in (down, back):
                t.cancel()
        finally:
            self.active -= 1
            await up.close()


    def _registered(self, name: str, msg: Register) -> None:
        self.inventory[name] = {"inventory": msg.inventory, "agent_version": msg.agent_version,
                                "registered_at": time.time()}
        if self.inventory_file:
            try:
                atomic_write(self.inventory_file, json.dumps(self.inventory, indent=1, sort_keys=True).encode())
            except OSError as exc:
                log.warning("cannot write the inventory to %s: %s", self.inventory_file, exc)


def _load(path: Optional[str]) -> Dict[str, dict]:
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable inventory %s: %s", path, exc)
        return {}


class _RegistrationWatch:
    def __init__(self, name: str, on_register):
        self.name, self.on_register = name, on_register
        self.decoder: Optional[FrameDecoder] = FrameDecoder()

    @property
    def done(self) -> bool:
        return self.decoder is None

    def feed(self, data: bytes) -> None:
        """Read the first frame; after it, or after anything malformed, watch no more (the
        receiver says what is wrong with a bad stream)."""
        try:
            frames = self.decoder.feed(data)
            if frames:
                self.decoder = None
                msg = decode(frames[0])
                if isinstance(msg, Register):
                    self.on_register(self.name, msg)
        except ProtocolError:
            self.decoder = None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch,
                limit: Optional[TokenBucket] = None) -> None:
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            if limit is not None:   # take the bytes' turn in the shared bucket, then send them
                delay = limit.reserve(len(data), time.monotonic())
                if delay > 0:
                    await asyncio.sleep(delay)
            if watch is not None and not watch.done:
                watch.feed(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - already gone
            pass
