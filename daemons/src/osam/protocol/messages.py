"""The osam messages: one dataclass per frame type, encoded as a msgpack array of its fields.

Decoding is strict: the field count and every field's type are checked, maps are JSON-like
(string keys; str, bytes, int, float, bool, None, lists and maps as values, bounded depth),
so a hostile peer can only ever produce a ProtocolError.

The control channel carries registration, commands and their results, progress and heartbeats;
the data channel carries a sync: entries, file data, links, deletes, renames and checkpoints; in
block mode, whole disks (BlockDisk) with their changed blocks, and a final manifest.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple, Type

import msgpack

from .frames import Frame, ProtocolError, encode_frame

MAX_MAP_DEPTH = 16

_BY_TYPE: Dict[int, Type["Message"]] = {}


def _is_plain(value, depth: int = 0) -> bool:
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return True
    if depth >= MAX_MAP_DEPTH:
        return False
    if isinstance(value, list):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _is_xattrs(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], bytes) and isinstance(p[1], bytes)
        for p in value)


# Field type name (as written in the annotations below) -> wire check.
_CHECKS = {
    "str": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "dict": lambda v: isinstance(v, dict) and _is_plain(v),
    "XAttrs": _is_xattrs,
}

XAttrs = List[Tuple[bytes, bytes]]


class Message:
    TYPE = 0
    COMPRESS = False  # worth trying lz4 on (bulk data only)

    def encode(self, compress: bool = True) -> bytes:
        """The message as one frame; `compress=False` skips lz4 even for bulk data."""
        values = [getattr(self, name) for name, _ in self._checks]
        try:
            payload = msgpack.packb(values, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(f"cannot encode {type(self).__name__}: {exc}") from None
        return encode_frame(self.TYPE, payload, compress=compress and self.COMPRESS)


def message(type_id: int, *, compress: bool = False):
    def register(cls):
        cls = dataclasses.dataclass(cls)
        cls.TYPE, cls.COMPRESS = type_id, compress
        cls._checks = tuple((f.name, _CHECKS[f.type]) for f in dataclasses.fields(cls))
        assert type_id not in _BY_TYPE, type_id
        _BY_TYPE[type_id] = cls
        return cls
    return register


def decode(frame: Frame) -> Message:
    cls = _BY_TYPE.get(frame.type)
    if cls is None:
        raise ProtocolError(f"unknown message type {frame.type}")
    if cls is FileData:
        fast = _decode_file_data(frame.payload)
        if fast is not None:
            return fast
    try:
        values = msgpack.unpackb(frame.payload, raw=False, use_list=True, strict_map_key=True,
                                 ext_hook=_no_ext)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"malformed {cls.__name__}: {type(exc).__name__}") from None
    if not isinstance(values, list) or len(values) != len(cls._checks):
        raise ProtocolError(f"malformed {cls.__name__}: wrong field count")
    for (name, check), value in zip(cls._checks, values):
        if not check(value):
            raise ProtocolError(f"malformed {cls.__name__}: bad {name}")
    if cls is Entry:
        values[9] = [tuple(p) for p in values[9]]
    return cls(*values)


def _no_ext(code, data):
    raise ProtocolError("msgpack extension types are not part of the protocol")


# ---- control channel -------------------------------------------------------------------

@message(1)
class Register(Message):
    """Sentinel → receiver, first on the control channel. Identity comes from the certificate."""
    agent_version: str
    inventory: dict
    config: dict  # the guest's effective sync.params, for status


@message(2)
class Welcome(Message):
    """Receiver → sentinel after the hello on either channel."""
    guest: str
    phase: str
    resume: dict  # data channel: where an interrupted sync resumes


@message(3)
class Command(Message):
    """Receiver → sentinel: start a phase (full_sync, continuous_sync, quiesce, final_sync,
    unquiesce, verify) or stop."""
    seq: int
    action: str
    args: dict


@message(4)
class CommandResult(Message):
    seq: int
    ok: bool
    detail: dict


@message(5)
class Progress(Message):
    stats: dict


@message(6)
class Heartbeat(Message):
    time: float


@message(7)
class Error(Message):
    code: str
    message: str


@message(8)
class Forward(Message):
    """Gateway → receiver, first frame of a forwarded connection: whose it is, proven by the
    guest's own certificate (the receiver verifies it against the CA itself)."""
    channel: int
    peer_cert: bytes
    peer_addr: str


# ---- data channel ----------------------------------------------------------------------

@message(20)
class SyncBegin(Message):
    sync_id: int
    kind: str  # full | continuous | final | verify


@message(21)
class Entry(Message):
    """A file-system entry. For a regular file, FileData frames and a FileEnd follow; with
    base_size >= 0 they patch the replica's current copy, which must have that size and mtime."""
    path: bytes
    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int
    rdev: int
    target: bytes
    xattrs: XAttrs
    base_size: int
    base_mtime_ns: int


@message(22, compress=True)
class FileData(Message):
    """File content at an offset. Decoded data may be a memoryview into the frame (no copy)."""
    offset: int
    data: bytes

    def encode(self, compress: bool = True) -> bytes:
        # The msgpack array [offset, bin] built around the data, which is copied only once.
        if not isinstance(self.offset, int) or isinstance(self.offset, bool):
            raise ProtocolError("cannot encode FileData: offset must be an integer")
        try:
            prefix = b"\x92" + msgpack.packb(self.offset) + _bin_header(len(self.data))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(f"cannot encode FileData: {exc}") from None
        return encode_frame(self.TYPE, [prefix, self.data], compress=compress and self.COMPRESS)


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


_UINT = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}
_BIN = {0xc4: 1, 0xc5: 2, 0xc6: 4}


def _decode_file_data(payload: bytes):
    """FileData as its encoder lays it out, without copying the data; None for any other
    layout (the strict general decoder then judges it)."""
    if len(payload) < 3 or payload[0] != 0x92:
        return None
    pos, t = 2, payload[1]
    if t < 0x80:
        offset = t
    elif t in _UINT:
        n = _UINT[t]
        offset, pos = int.from_bytes(payload[2:2 + n], "big"), 2 + n
    else:
        return None
    if pos >= len(payload) or payload[pos] not in _BIN:
        return None
    n = _BIN[payload[pos]]
    size = int.from_bytes(payload[pos + 1:pos + 1 + n], "big")
    start = pos + 1 + n
    if start + size != len(payload):
        return None
    return FileData(offset, memoryview(payload)[start:])


@message(23)
class FileEnd(Message):
    """Closes the open file. ok is False when the file changed while it was read: the receiver
    keeps its previous copy and a later pass sends the file again."""
    ok: bool


@message(24)
class HardLink(Message):
    path: bytes
    target: bytes


@message(25)
class Delete(Message):
    path: bytes


@message(26)
class Rename(Message):
    old: bytes
    new: bytes


@message(27)
class Checkpoint(Message):
    """Everything sent before this is to be made durable; cursor is where a full sync resumes."""
    seq: int
    cursor: bytes
    stats: dict


@message(28)
class CheckpointAck(Message):
    seq: int


@message(29)
class SyncEnd(Message):
    sync_id: int
    stats: dict


@message(30)
class SyncEndAck(Message):
    sync_id: int
    stats: dict


@message(31)
class Resend(Message):
    """Receiver → sentinel: the named file could not be patched (its base differs); send it whole."""
    path: bytes
    reason: str


@message(32)
class FileHole(Message):
    """Within an open file patched from its base: this range becomes a hole."""
    offset: int
    length: int


@message(33)
class BlockDisk(Message):
    """Block mode: opens a whole disk of the replica, as Entry opens a file. FileData frames
    (changed blocks), FileHole frames (blocks now all zeros) and a FileEnd follow."""
    name: str
    size: int
    block_size: int


@message(34)
class BlockManifest(Message):
    """Block mode, final sync: the xxh3-128 digests of blocks first, first + 1, ... of a disk as
    the source has them after quiesce; the receiver checks its image against them."""
    name: str
    block_size: int
    first: int
    digests: bytes


MESSAGE_TYPES = dict(_BY_TYPE)
