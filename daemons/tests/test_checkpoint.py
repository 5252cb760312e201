import json
import os

import pytest

from osam.common.atomic import temp_prefix
from osam.receiver.checkpoint import (
    FORMAT_VERSION, CheckpointError, CheckpointJournal, decode_cursor, encode_cursor)


@pytest.fixture
def journal(tmp_path):
    return CheckpointJournal(tmp_path / "checkpoint.json")


def test_missing_journal_loads_empty(journal):
    assert journal.load() == {}


def test_commit_then_load(journal):
    state = {"phase": "full_sync", "files": 12, "cursor": encode_cursor(b"etc/\xff\x00x"),
             "nested": {"list": [1, 2, None, True], "ratio": 0.25}}
    journal.commit(state)
    loaded = journal.load()
    assert loaded == state
    assert decode_cursor(loaded["cursor"]) == b"etc/\xff\x00x"


def test_commit_replaces_previous_state(journal):
    journal.commit({"n": 1})
    journal.commit({"n": 2})
    assert journal.load() == {"n": 2}


def test_file_records_format_version(journal):
    journal.commit({"n": 1})
    with open(journal.path) as f:
        assert json.load(f)["format"] == FORMAT_VERSION


def test_json_normalised_state_round_trips(journal):
    journal.commit({"by_id": {1: "a", 10: "b", 2: "c"}, "pair": (1, 2)})
    assert journal.load() == {"by_id": {"1": "a", "10": "b", "2": "c"}, "pair": [1, 2]}


@pytest.mark.parametrize("content", [
    b"",                                    # truncated to nothing
    b'{"format": 1, "sha256": "',          # torn in the middle
    b"\x00\x00\x00\x00",                    # zero-filled block after a crash
    b"[1, 2, 3]",                           # not an object
])
def test_corrupt_journal_is_an_error(journal, content):
    with open(journal.path, "wb") as f:
        f.write(content)
    with pytest.raises(CheckpointError, match="corrupt"):
        journal.load()
    with open(journal.path, "rb") as f:
        assert f.read() == content            # never silently reset


def test_edited_value_fails_checksum(journal):
    journal.commit({"files": 12})
    with open(journal.path) as f:
        doc = json.load(f)
    doc["state"]["files"] = 13
    with open(journal.path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(CheckpointError, match="checksum"):
        journal.load()


def test_unknown_format_version_is_an_error(journal):
    journal.commit({"n": 1})
    with open(journal.path) as f:
        doc = json.load(f)
    doc["format"] = FORMAT_VERSION + 1
    with open(journal.path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(CheckpointError, match="unsupported format"):
        journal.load()


def test_half_written_temp_never_replaces_journal(journal, tmp_path):
    journal.commit({"phase": "continuous_sync", "seq": 41})
    # What a commit killed mid-write leaves behind: a torn temp file beside the journal.
    torn = tmp_path / (temp_prefix(journal.path) + "abc123.tmp")
    torn.write_bytes(b'{"format": 1, "state": {"phase": "final_s')
    assert journal.load() == {"phase": "continuous_sync", "seq": 41}


def test_failed_commit_keeps_last_good_state(journal, monkeypatch):
    journal.commit({"seq": 1})
    import osam.common.atomic as atomic

    def crash(*args):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError):
        journal.commit({"seq": 2})
    monkeypatch.undo()
    assert journal.load() == {"seq": 1}
    assert os.listdir(os.path.dirname(journal.path)) == ["checkpoint.json"]


def test_unserialisable_state_leaves_journal_alone(journal):
    journal.commit({"seq": 1})
    with pytest.raises(TypeError):
        journal.commit({"raw": b"bytes need encode_cursor"})
    assert journal.load() == {"seq": 1}


def test_bad_cursor_is_an_error():
    with pytest.raises(CheckpointError):
        decode_cursor("not base64!")
    assert decode_cursor(encode_cursor(b"")) == b""
