"""Fuzzing the protocol's decoders: FrameDecoder, decode_payload (lz4), decode_hello and
decode() for every message type. The contract under test: whatever the bytes, only
ProtocolError escapes, and no input makes the decoder hold much more than the frame cap.

Two engines share one target:
- a fast mutation loop over a seed corpus of valid frames (every message type, compressed
  and raw) plus crafted hostile ones (lying lengths and flags, lz4 payloads whose declared
  size lies, lz4 bombs), fed to a FrameDecoder split at random points;
- hypothesis strategies for structure: msgpack documents of the wrong shape for each
  message type (wrong field counts and types, deep nesting, huge ints, extension types,
  timestamps, maps with non-string keys).

Memory is measured with tracemalloc on a sample of inputs (every crafted one, and one in
MEMORY_EVERY of the mutated ones): the peak of each must stay under MEMORY_FACTOR times the
cap plus twice the input itself.
"""
from __future__ import annotations

import dataclasses
import random
import struct
import time
import tracemalloc
from collections import Counter
from typing import Callable, Dict, List, Optional

import lz4.block
import msgpack

from osam.protocol import (CHANNEL_CONTROL, CHANNEL_DATA, MAX_PAYLOAD, MESSAGE_TYPES, Frame, FrameDecoder,
                           ProtocolError, decode, decode_hello, encode_frame, encode_hello)
from osam.protocol import messages as M
from osam.protocol.frames import FLAG_LZ4, HEADER, HELLO, decode_payload

MEMORY_EVERY = 97
MEMORY_FACTOR = 3


@dataclasses.dataclass
class FuzzStats:
    inputs: int = 0
    exceptions: Counter = dataclasses.field(default_factory=Counter)   # type name -> count
    defects: List[str] = dataclasses.field(default_factory=list)       # first few non-ProtocolError
    frames: int = 0
    messages: int = 0
    measured: int = 0
    peak_bytes: int = 0            # largest tracemalloc peak of one measured input
    peak_over_limit: int = 0       # measured inputs whose peak broke the bound
    seconds: float = 0.0

    @property
    def unexpected(self) -> int:
        return sum(n for name, n in self.exceptions.items() if name != "ProtocolError")

    def merge(self, other: "FuzzStats") -> None:
        self.inputs += other.inputs
        self.exceptions.update(other.exceptions)
        self.defects.extend(other.defects[:10 - len(self.defects)])
        self.frames += other.frames
        self.messages += other.messages
        self.measured += other.measured
        self.peak_bytes = max(self.peak_bytes, other.peak_bytes)
        self.peak_over_limit += other.peak_over_limit
        self.seconds += other.seconds

    def summary(self) -> str:
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(self.exceptions.items())) or "none"
        return (f"{self.inputs} inputs in {self.seconds:.1f}s, exceptions: {kinds}; peak memory "
                f"{self.peak_bytes / 2**20:.1f} MiB over {self.measured} measured inputs "
                f"({self.peak_over_limit} over {MEMORY_FACTOR}x the {MAX_PAYLOAD >> 20} MiB cap)")


# -- the target ------------------------------------------------------------------------

def feed_stream(data: bytes, cuts: List[int], with_hello: bool = True) -> int:
    """Run `data` through the decoders, split at `cuts`; returns messages decoded.
    Raises whatever the decoders raise (the callers sort ProtocolError from the rest)."""
    decoded = 0
    if with_hello:
        hello, data = data[:HELLO.size], data[HELLO.size:]
        decode_hello(hello)
    decoder = FrameDecoder()
    start = 0
    for cut in sorted(cuts) + [len(data)]:
        for frame in decoder.feed(data[start:cut]):
            decode(frame)
            decoded += 1
        start = cut
    return decoded


class Harness:
    """Runs inputs through a target, sorting what escapes and sampling memory."""

    def __init__(self, measure_every: int = MEMORY_EVERY):
        self.stats = FuzzStats()
        self.measure_every = measure_every

    def run(self, target: Callable[[], int], size: int, measure: bool = False) -> None:
        s = self.stats
        s.inputs += 1
        measure = measure or (self.measure_every and s.inputs % self.measure_every == 0)
        if measure:
            tracemalloc.start()
            tracemalloc.reset_peak()
        try:
            s.messages += target()
        except ProtocolError:
            s.exceptions["ProtocolError"] += 1
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - exactly what the fuzz is looking for
            s.exceptions[type(exc).__name__] += 1
            if len(s.defects) < 10:
                s.defects.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            if measure:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                s.measured += 1
                s.peak_bytes = max(s.peak_bytes, peak)
                if peak > MEMORY_FACTOR * MAX_PAYLOAD + 2 * size:
                    s.peak_over_limit += 1
                    if len(s.defects) < 10:
                        s.defects.append(f"memory: peak {peak} bytes for a {size}-byte input")

    def stream(self, data: bytes, cuts: List[int], measure: bool = False, with_hello: bool = True) -> None:
        self.run(lambda: feed_stream(data, cuts, with_hello), len(data), measure)

    def frame(self, ftype: int, payload: bytes, measure: bool = False) -> None:
        self.run(lambda: (decode(Frame(ftype, payload)), 1)[1], len(payload), measure)


# -- seeds -----------------------------------------------------------------------------

def _sample_messages() -> List[M.Message]:
    return [
        M.Register("1.0", {"hostname": "web01", "disks": [{"size": 1 << 30, "name": "sda"}]},
                   {"max_retry_interval": 8}),
        M.Welcome("web01", "registered", {"cursor": b"a/b"}),
        M.Command(7, "full_sync", {"sync_id": 3, "cursor": None}),
        M.CommandResult(7, True, {"bytes_done": 10}),
        M.Progress({"lag": 1.5, "files_done": 3}),
        M.Heartbeat(1.7e9),
        M.Error("refused", "bad path"),
        M.Forward(CHANNEL_DATA, b"\x30\x82" + bytes(64), "127.0.0.1:5000"),
        M.SyncBegin(4, "full"),
        M.Entry(b"etc/passwd", "f", 0o644, 0, 0, 10**18, 4096, 0, b"", [(b"user.a", b"b")], -1, 0),
        M.Entry(b"lnk", "l", 0o777, 0, 0, 1, 0, 0, b"../../etc", [], -1, 0),
        M.FileData(0, b"abc" * 400),
        M.FileData(1 << 40, bytes(100)),
        M.FileData(5, random.Random(1).randbytes(600)),
        M.FileEnd(True),
        M.HardLink(b"a", b"b"),
        M.Delete(b"x/y"),
        M.Rename(b"old", b"new"),
        M.Checkpoint(9, b"cursor", {"files": 1}),
        M.CheckpointAck(9),
        M.SyncEnd(4, {}),
        M.SyncEndAck(4, {"manifest": {"ok": True}}),
        M.Resend(b"a", "base differs"),
        M.FileHole(0, 1 << 20),
        M.BlockDisk("sda", 1 << 30, 1 << 20),
        M.BlockManifest("sda", 1 << 20, 0, bytes(64)),
    ]


def _lz4_frame(ftype: int, data: bytes, claimed: Optional[int] = None) -> bytes:
    body = lz4.block.compress(data, store_size=True)
    if claimed is not None:
        body = struct.pack("<I", claimed & 0xFFFFFFFF) + body[4:]
    return HEADER.pack(len(body), ftype, FLAG_LZ4) + body


def crafted_inputs() -> List[bytes]:
    """Hostile frames by hand (each preceded by a valid hello)."""
    hello = encode_hello(CHANNEL_DATA)
    fd = M.FileData.TYPE
    zeros = bytes(MAX_PAYLOAD)
    bomb_body = lz4.block.compress(zeros, store_size=True)       # ~32 KiB that inflates to the cap
    over = lz4.block.compress(bytes(MAX_PAYLOAD + 1), store_size=True)
    out = [
        HEADER.pack(MAX_PAYLOAD + 1, fd, 0),                      # one byte over the cap
        HEADER.pack(0xFFFFFFFF, fd, 0) + b"x" * 100,              # the largest length
        HEADER.pack(MAX_PAYLOAD, fd, 0) + b"x" * 100,             # at the cap, truncated
        HEADER.pack(0, fd, 0),                                    # empty payload
        HEADER.pack(3, fd, 0x80) + b"abc",                        # unknown flag
        HEADER.pack(3, fd, FLAG_LZ4) + b"abc",                    # compressed but shorter than its prefix
        HEADER.pack(4, fd, FLAG_LZ4) + b"\0\0\0\0",               # compressed, empty
        _lz4_frame(fd, b"a" * 4000, claimed=10),                  # declared size too small
        _lz4_frame(fd, b"a" * 4000, claimed=5000),                # declared size too large
        _lz4_frame(fd, b"a" * 4000, claimed=MAX_PAYLOAD + 1),     # declared over the cap
        _lz4_frame(fd, b"a" * 4000, claimed=0xFFFFFFFF),
        HEADER.pack(len(bomb_body), fd, FLAG_LZ4) + bomb_body,    # inflates exactly to the cap
        HEADER.pack(len(over), fd, FLAG_LZ4) + over,              # inflates one byte past it
        HEADER.pack(len(bomb_body), fd, FLAG_LZ4) + bomb_body[:4] + bomb_body[4:][::-1],   # corrupt
        HEADER.pack(len(bomb_body), 250, FLAG_LZ4) + bomb_body,   # bomb of an unknown type
    ]
    for cls in MESSAGE_TYPES.values():
        out.append(_lz4_frame(cls.TYPE, msgpack.packb([b"\0" * 70000] * len(cls._checks))))
    return [hello + x for x in out] + [b"OSAM\x00\x02\x02\x00", b"GET / HTTP/1.1\r\n\r\n", b"OSAM\x00\x01\x07\x00",
                                        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]


def seed_corpus() -> List[bytes]:
    hello = encode_hello(CHANNEL_DATA)
    seeds = []
    for msg in _sample_messages():
        seeds.append(hello + msg.encode(compress=False))
        seeds.append(hello + encode_frame(msg.TYPE, msgpack.packb(
            [getattr(msg, f) for f, _ in msg._checks], use_bin_type=True), compress=False))
    big = M.FileData(0, b"0123456789abcdef" * 256)
    seeds.append(hello + big.encode(compress=True))                        # a real lz4 frame
    seeds.append(hello + b"".join(m.encode(compress=False) for m in _sample_messages()[8:15]))
    return seeds


# -- the mutation engine ----------------------------------------------------------------

_INTERESTING_U32 = (0, 1, 5, 6, 255, 256, 0x7FFF, 0xFFFF, MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1,
                    0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
_MSGPACK_MARKERS = bytes([0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc,
                          0xcd, 0xce, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
                          0x90, 0x9f, 0x80, 0x8f, 0xa0, 0xbf, 0xff, 0x7f])


def mutate(rnd: random.Random, data: bytes, corpus: List[bytes]) -> bytes:
    wire = bytearray(data)
    for _ in range(rnd.choice((1, 1, 2, 3, 5))):
        if not wire:
            wire += rnd.randbytes(rnd.randint(1, 16))
        op = rnd.random()
        pos = rnd.randrange(len(wire))
        if op < 0.30:
            wire[pos] = rnd.randrange(256)
        elif op < 0.38:
            wire[pos] ^= 1 << rnd.randrange(8)
        elif op < 0.48:
            wire[pos] = rnd.choice(_MSGPACK_MARKERS)
        elif op < 0.58:
            del wire[pos:pos + rnd.randint(1, 16)]
        elif op < 0.66:
            wire[pos:pos] = rnd.randbytes(rnd.randint(1, 16))
        elif op < 0.74:          # a frame length or lz4 size prefix that lies
            value = struct.pack(rnd.choice(("!I", "<I")), rnd.choice(_INTERESTING_U32))
            wire[pos:pos + 4] = value
        elif op < 0.80:          # header fields after the hello: type and flags
            at = HELLO.size + 4 + rnd.randrange(2)
            if at < len(wire):
                wire[at] = rnd.choice((0, 1, 2, 3, 0x80, 0xFF, rnd.randrange(256)))
        elif op < 0.88:          # splice another seed in
            other = rnd.choice(corpus)
            a = rnd.randrange(len(other))
            wire[pos:pos] = other[a:a + rnd.randint(1, 64)]
        elif op < 0.94:          # duplicate a run
            wire[pos:pos] = wire[pos:pos + rnd.randint(1, 32)]
        else:                    # truncate
            del wire[pos:]
    return bytes(wire)


def random_cuts(rnd: random.Random, n: int) -> List[int]:
    if n <= 1 or rnd.random() < 0.5:
        return []
    return [rnd.randrange(n) for _ in range(rnd.randint(1, 6))]


def mutation_campaign(inputs: int, seed: int, measure_every: int = MEMORY_EVERY) -> FuzzStats:
    """`inputs` mutated streams (the crafted ones first, each measured), split at random points."""
    rnd = random.Random(seed)
    corpus = seed_corpus()
    h = Harness(measure_every)
    started = time.monotonic()
    crafted = crafted_inputs()
    for data in crafted:
        h.stream(data, [], measure=True)
        h.stream(data, random_cuts(rnd, len(data)) or [len(data) // 2])
    for _ in range(max(0, inputs - 2 * len(crafted))):
        data = mutate(rnd, rnd.choice(corpus), corpus)
        h.stream(data, random_cuts(rnd, len(data)))
    h.stats.seconds = time.monotonic() - started
    return h.stats


# -- structure: hypothesis -----------------------------------------------------------------

def structure_campaign(examples: int, seed: int) -> FuzzStats:
    """Hypothesis-built msgpack documents of the wrong shapes for every message type, and
    random streams split at random points."""
    from hypothesis import HealthCheck, Phase, given, seed as hseed, settings
    from hypothesis import strategies as st

    h = Harness(measure_every=MEMORY_EVERY)
    started = time.monotonic()
    leaf = (st.none() | st.booleans() | st.integers(-2**64, 2**64 - 1) | st.floats()
            | st.text(max_size=12) | st.binary(max_size=40)
            | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=12))
            | st.builds(lambda s, ns: msgpack.Timestamp(s, ns), st.integers(-2**33, 2**34 - 1),
                        st.integers(0, 999_999_999)))
    doc = st.recursive(leaf, lambda inner: (st.lists(inner, max_size=6)
                                            | st.dictionaries(inner.filter(_hashable), inner, max_size=4)),
                       max_leaves=20)
    types = st.sampled_from(sorted(MESSAGE_TYPES)) | st.integers(0, 255)
    common = settings(max_examples=examples, database=None, deadline=None, derandomize=False,
                      phases=(Phase.generate,), suppress_health_check=list(HealthCheck))

    @common
    @hseed(seed)
    @given(types, st.lists(doc, max_size=14))
    def arrays(ftype, fields):
        payload = _pack(fields)
        if payload is not None:
            h.frame(ftype, payload)

    @common
    @hseed(seed + 1)
    @given(st.sampled_from(sorted(MESSAGE_TYPES)), st.integers(0, 200), st.sampled_from(("list", "map")))
    def deep(ftype, depth, kind):
        # Nesting far past MAX_MAP_DEPTH, written directly (msgpack's packer stops at 512).
        header = b"\x91" if kind == "list" else b"\x81\xa1k"
        body = header * depth + b"\xc0"
        for n in (len(MESSAGE_TYPES[ftype]._checks), 1, 3):
            h.frame(ftype, bytes([0x90 | n]) + body * n)
        h.frame(ftype, b"\xdc\xff\xff" + body)        # claims 65535 fields, holds one

    @common
    @hseed(seed + 2)
    @given(st.sampled_from(sorted(MESSAGE_TYPES)), st.data())
    def near_valid(ftype, data):
        # The right field count, each field of a random kind (a valid one most often).
        cls = MESSAGE_TYPES[ftype]
        fields = [data.draw(st.one_of(_VALID[check_name], leaf)) for check_name in _field_types(cls)]
        payload = _pack(fields)
        if payload is not None:
            h.frame(ftype, payload)

    @common
    @hseed(seed + 3)
    @given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=6), st.booleans())
    def streams(data, cuts, with_hello):
        prefix = encode_hello(CHANNEL_CONTROL if with_hello else CHANNEL_DATA)
        h.stream(prefix + data, [c for c in cuts if c <= len(data)], with_hello=True)
        h.stream(data, [c for c in cuts if c <= len(data)], with_hello=False)

    @common
    @hseed(seed + 4)
    @given(st.integers(0, 0xFFFFFFFF), st.binary(max_size=200), st.integers(0, 255))
    def lz4_claims(claimed, tail, flags):
        body = struct.pack("<I", claimed) + tail
        h.run(lambda: (decode_payload(flags, body), 0)[1], len(body))

    for fn in (arrays, deep, near_valid, streams, lz4_claims):
        fn()
    h.stats.seconds = time.monotonic() - started
    return h.stats


def _hashable(value) -> bool:
    try:
        hash(value)
        return True
    except TypeError:
        return False


def _pack(fields) -> Optional[bytes]:
    try:
        return msgpack.packb(fields, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError):
        return None


def _field_types(cls) -> List[str]:
    return [f.type for f in dataclasses.fields(cls)]


def _valid_strategies() -> Dict[str, object]:
    from hypothesis import strategies as st
    return {
        "str": st.text(max_size=20), "bytes": st.binary(max_size=60),
        "int": st.integers(-2**63, 2**64 - 1), "bool": st.booleans(), "float": st.floats(),
        "dict": st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=6), max_size=3),
        "XAttrs": st.lists(st.lists(st.binary(max_size=8), min_size=2, max_size=2), max_size=3),
    }


class _Lazy(dict):
    def __missing__(self, key):
        self.update(_valid_strategies())
        return dict.__getitem__(self, key)


_VALID = _Lazy()


def campaign(inputs: int, seed: int, structure_examples: int) -> FuzzStats:
    stats = mutation_campaign(inputs, seed)
    stats.merge(structure_campaign(structure_examples, seed))
    return stats
