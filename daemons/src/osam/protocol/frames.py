"""Hello and frames: the byte layer of the osam wire protocol. Sans-IO: bytes in, frames out.

A connection opens with a fixed-size hello from each side:

    magic "OSAM" | version u16 | channel u8 | reserved u8

then carries frames:

    length u32 (payload bytes on the wire) | type u8 | flags u8 | payload

With FLAG_LZ4 the payload is an lz4 block prefixed with its decoded size (u32, little endian,
as lz4.block stores it); the size is checked against the cap before anything is decompressed.
"""
from __future__ import annotations

import struct
from typing import List, NamedTuple

import lz4.block

MAGIC = b"OSAM"
VERSION = 1
HELLO = struct.Struct("!4sHBB")
HEADER = struct.Struct("!IBB")

# Channels a connection can carry; the gateway forwards each as its own connection.
CHANNEL_CONTROL = 1
CHANNEL_DATA = 2
CHANNELS = (CHANNEL_CONTROL, CHANNEL_DATA)

FLAG_LZ4 = 0x01
KNOWN_FLAGS = FLAG_LZ4

# Hard caps: a peer can never make us buffer or inflate more than this per frame.
MAX_PAYLOAD = 8 << 20
# Compression is tried only above this size and kept only when it saves at least 1/16.
COMPRESS_MIN = 512


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid osam stream. The connection must be closed."""


class Frame(NamedTuple):
    type: int
    payload: bytes


def encode_hello(channel: int) -> bytes:
    return HELLO.pack(MAGIC, VERSION, channel, 0)


def decode_hello(data: bytes) -> int:
    """Check a peer's hello and return its channel."""
    if len(data) != HELLO.size:
        raise ProtocolError(f"hello must be {HELLO.size} bytes, got {len(data)}")
    magic, version, channel, reserved = HELLO.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(f"not an osam peer (magic {magic!r})")
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version} (this side speaks {VERSION})")
    if channel not in CHANNELS or reserved:
        raise ProtocolError(f"unknown channel {channel}")
    return channel


def encode_frame(ftype: int, payload, *, compress: bool = False) -> bytes:
    """One frame, lz4-compressed when asked and when it pays. `payload` is bytes or a list of
    pieces (joined once, together with the header)."""
    pieces = payload if isinstance(payload, list) else [payload]
    size = sum(len(p) for p in pieces)
    flags = 0
    if compress and size >= COMPRESS_MIN:
        whole = b"".join(pieces) if len(pieces) > 1 else pieces[0]
        packed = lz4.block.compress(whole, store_size=True)
        if len(packed) <= size - (size >> 4):
            pieces, size, flags = [packed], len(packed), FLAG_LZ4
    if size > MAX_PAYLOAD:
        raise ProtocolError(f"frame payload of {size} bytes exceeds the {MAX_PAYLOAD} cap")
    return b"".join([HEADER.pack(size, ftype, flags), *pieces])


def decode_payload(flags: int, payload: bytes) -> bytes:
    if flags & ~KNOWN_FLAGS:
        raise ProtocolError(f"unknown frame flags {flags:#x}")
    if not flags & FLAG_LZ4:
        return payload
    if len(payload) < 4:
        raise ProtocolError("compressed frame shorter than its size prefix")
    size = int.from_bytes(payload[:4], "little")
    if size > MAX_PAYLOAD:
        raise ProtocolError(f"compressed frame claims {size} bytes, over the {MAX_PAYLOAD} cap")
    try:
        data = lz4.block.decompress(payload)
    except Exception as exc:  # lz4 raises a bare LZ4BlockError for corrupt input
        raise ProtocolError(f"corrupt compressed frame: {exc}") from None
    if len(data) != size:
        raise ProtocolError("compressed frame inflated to a size other than it claimed")
    return data


class FrameDecoder:
    """Accumulates bytes and yields complete frames; raises ProtocolError on anything malformed."""

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self._buf = bytearray()
        self._max = max_payload

    def feed(self, data: bytes) -> List[Frame]:
        self._buf += data
        frames = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER.size:
            length, ftype, flags = HEADER.unpack_from(buf, pos)
            if length > self._max:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self._max} cap")
            end = pos + HEADER.size + length
            if end > len(buf):
                break
            frames.append(Frame(ftype, decode_payload(flags, bytes(buf[pos + HEADER.size:end]))))
            pos = end
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)
