"""The wire protocol: every message round-trips, and hostile bytes only ever raise ProtocolError."""
import dataclasses
import random
import struct

import lz4.block
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osam.protocol import (CHANNEL_CONTROL, CHANNEL_DATA, MAX_PAYLOAD, MESSAGE_TYPES, Connection,
                           Entry, FileData, FrameDecoder, ProtocolError, Register, decode,
                           encode_frame, encode_hello)
from osam.protocol.frames import FLAG_LZ4, HEADER

plain = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

FIELD_STRATEGIES = {
    "str": st.text(max_size=40),
    "bytes": st.binary(max_size=300),
    "int": st.integers(-2**63, 2**64 - 1),
    "bool": st.booleans(),
    "float": st.floats(allow_nan=False),
    "dict": st.dictionaries(st.text(max_size=10), plain, max_size=5),
    "XAttrs": st.lists(st.tuples(st.binary(min_size=1, max_size=30), st.binary(max_size=100)), max_size=4),
}


def message_strategy(cls):
    return st.builds(cls, **{f.name: FIELD_STRATEGIES[f.type] for f in dataclasses.fields(cls)})


any_message = st.one_of([message_strategy(cls) for cls in MESSAGE_TYPES.values()])


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(any_message)
def test_every_message_round_trips(msg):
    frames = FrameDecoder().feed(msg.encode())
    assert len(frames) == 1
    assert decode(frames[0]) == msg


@given(st.lists(any_message, min_size=1, max_size=8), st.integers(1, 64))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_stream_split_anywhere_yields_the_same_messages(msgs, step):
    conn = Connection(CHANNEL_DATA)
    wire = encode_hello(CHANNEL_DATA) + b"".join(m.encode() for m in msgs)
    out = []
    for i in range(0, len(wire), step):
        out += conn.receive(wire[i:i + step])
    assert out == msgs


def test_large_compressible_data_is_compressed_and_restored():
    data = b"0123456789abcdef" * 65536
    wire = FileData(4096, data).encode()
    length, ftype, flags = HEADER.unpack_from(wire)
    assert flags & FLAG_LZ4 and length < len(data) // 10
    assert decode(FrameDecoder().feed(wire)[0]) == FileData(4096, data)


def test_incompressible_data_travels_raw():
    data = random.Random(1).randbytes(100_000)
    wire = FileData(0, data).encode()
    assert HEADER.unpack_from(wire)[2] == 0


def test_oversized_frame_header_is_refused_before_buffering():
    with pytest.raises(ProtocolError, match="exceeds"):
        FrameDecoder().feed(HEADER.pack(MAX_PAYLOAD + 1, 22, 0))


def test_decompression_bomb_is_refused_before_inflating():
    bomb = bytearray(lz4.block.compress(bytes(1 << 20), store_size=True))
    bomb[:4] = (MAX_PAYLOAD + 1).to_bytes(4, "little")
    with pytest.raises(ProtocolError, match="cap"):
        FrameDecoder().feed(HEADER.pack(len(bomb), 22, FLAG_LZ4) + bytes(bomb))


def test_sender_refuses_to_build_an_oversized_frame():
    with pytest.raises(ProtocolError):
        encode_frame(22, b"\x01" * (MAX_PAYLOAD + 1))


@pytest.mark.parametrize("hello, error", [
    (b"HTTP/1.1", "magic"),
    (struct.pack("!4sHBB", b"OSAM", 99, 1, 0), "version"),
    (struct.pack("!4sHBB", b"OSAM", 1, 7, 0), "channel"),
    (encode_hello(CHANNEL_CONTROL), "expected"),
])
def test_bad_hello_is_refused(hello, error):
    with pytest.raises(ProtocolError, match=error):
        Connection(CHANNEL_DATA).receive(hello)


@pytest.mark.parametrize("payload", [
    b"", b"\xc1", b"\x93\x01\x02", b"\x91\xc4\x01x",  # empty, reserved byte, wrong count, wrong type
    b"\xdd\xff\xff\xff\xff",                          # array claiming 4 G elements
    b"\x9c" + b"\xc7\x01\x05x" * 12,                  # ext types
])
def test_malformed_entry_payloads_are_protocol_errors(payload):
    with pytest.raises(ProtocolError):
        decode(FrameDecoder().feed(encode_frame(Entry.TYPE, payload))[0])


def test_wrong_field_types_are_refused():
    good = Entry(b"p", "f", 0o644, 0, 0, 1, 0, 0, b"", [], -1, 0)
    for i, bad in enumerate(["p", 1, "x", True, None, "1", b"", 1.5, 7, [(b"a",)], "x", b""]):
        fields = [getattr(good, f.name) for f in dataclasses.fields(good)]
        fields[i] = bad
        import msgpack
        with pytest.raises(ProtocolError):
            decode(FrameDecoder().feed(encode_frame(Entry.TYPE, msgpack.packb(fields, use_bin_type=True)))[0])


def test_deeply_nested_map_is_refused():
    import msgpack
    deep = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(ProtocolError):
        decode(FrameDecoder().feed(encode_frame(Register.TYPE, msgpack.packb(["1", deep, {}])))[0])


def _fuzz(data: bytes):
    conn = Connection(CHANNEL_DATA)
    try:
        conn.receive(encode_hello(CHANNEL_DATA))
        conn.receive(data)
    except ProtocolError:
        pass


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes_only_raise_protocol_errors(data):
    _fuzz(data)


def test_fuzz_mutated_valid_streams_only_raise_protocol_errors():
    rnd = random.Random(20261126)
    samples = [m.encode() for m in (
        Entry(b"etc/passwd", "f", 0o644, 0, 0, 10**18, 4096, 0, b"", [(b"user.a", b"b")], -1, 0),
        FileData(0, b"abc" * 400), Register("1", {"hostname": "h", "disks": [{"size": 1}]}, {}),
    )]
    for _ in range(20000):
        wire = bytearray(rnd.choice(samples))
        for _ in range(rnd.randint(1, 4)):
            op = rnd.random()
            pos = rnd.randrange(len(wire))
            if op < 0.6:
                wire[pos] = rnd.randrange(256)
            elif op < 0.8:
                del wire[pos:pos + rnd.randint(1, 8)]
            else:
                wire[pos:pos] = rnd.randbytes(rnd.randint(1, 8))
            if not wire:
                break
        _fuzz(bytes(wire))
