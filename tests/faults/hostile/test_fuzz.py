"""Hostile bytes at the protocol's decoders (short version; the campaign runs a million):
only ProtocolError ever escapes, and no input makes a decoder hold much more than the cap.
Extends daemons/tests/test_protocol.py (random bytes, mutated streams, one bomb, deep maps)
with every message type, lying lz4 sizes, split points, extension types and a memory bound."""
import os

from tests.faults.hostile import fuzz

QUICK_INPUTS = int(os.environ.get("OSAM_FUZZ_INPUTS", "5000"))


def _check(stats):
    assert stats.unexpected == 0, stats.defects
    assert stats.peak_over_limit == 0, stats.defects
    assert set(stats.exceptions) <= {"ProtocolError"}, stats.exceptions


def test_mutated_frames_of_every_type_split_anywhere_raise_only_protocol_errors():
    stats = fuzz.mutation_campaign(QUICK_INPUTS, seed=7, measure_every=50)
    _check(stats)
    assert stats.inputs >= QUICK_INPUTS
    assert stats.messages > 0            # the mutations still reach decode()
    assert stats.exceptions["ProtocolError"] > QUICK_INPUTS // 4


def test_crafted_frames_are_refused_within_the_memory_bound():
    h = fuzz.Harness(measure_every=0)
    for data in fuzz.crafted_inputs():
        h.stream(data, [], measure=True)
        h.stream(data, [len(data) // 3, 2 * len(data) // 3])
    _check(h.stats)
    # Most are refused outright; the rest (truncated, or the bomb that inflates exactly to
    # the cap) wait for more bytes or decode into a message that fails its field checks.
    assert h.stats.exceptions["ProtocolError"] >= len(fuzz.crafted_inputs())
    assert h.stats.peak_bytes < fuzz.MEMORY_FACTOR * fuzz.MAX_PAYLOAD


def test_wrong_shapes_for_every_message_type_raise_only_protocol_errors():
    stats = fuzz.structure_campaign(int(os.environ.get("OSAM_FUZZ_EXAMPLES", "300")), seed=11)
    _check(stats)
    assert stats.inputs > 1000
