"""A guest's durable resume point on the receiver.

The state is a JSON object committed with atomic_write, so after any crash the journal
holds the last committed state in full. A damaged journal is an error, never an empty
state: silently starting over would hide the damage and force a full resync unasked."""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from typing import Any, Dict, Union

from osam.common.atomic import atomic_write

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """The journal exists but cannot be trusted."""


def encode_cursor(cursor: bytes) -> str:
    """Bytes (a walk cursor, a path) as a JSON-safe string."""
    return base64.b64encode(cursor).decode("ascii")


def decode_cursor(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as exc:
        raise CheckpointError(f"invalid cursor {text!r}: {exc}") from None


def _canonical(state: Dict[str, Any]) -> bytes:
    return json.dumps(state, sort_keys=True, separators=(",", ":")).encode("ascii")


class CheckpointJournal:
    def __init__(self, path: Union[str, "os.PathLike[str]"]):
        self.path = os.fspath(path)

    def load(self) -> Dict[str, Any]:
        """The last committed state; {} when nothing was ever committed."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._corrupt(f"not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise self._corrupt("not a JSON object")
        version = doc.get("format")
        if version != FORMAT_VERSION:
            raise self._corrupt(f"unsupported format {version!r} (this receiver reads {FORMAT_VERSION})")
        state = doc.get("state")
        if not isinstance(state, dict):
            raise self._corrupt("no state object")
        # The digest catches damage that still parses (a flipped digit, an edited value).
        if doc.get("sha256") != hashlib.sha256(_canonical(state)).hexdigest():
            raise self._corrupt("checksum mismatch")
        return state

    def commit(self, state: Dict[str, Any]) -> None:
        """Durably replace the journal with `state` (JSON-serialisable; bytes via encode_cursor)."""
        # A JSON round trip first, so the digest covers exactly what load() will see
        # (int keys become strings, tuples lists).
        state = json.loads(json.dumps(state, allow_nan=False))
        body = _canonical(state)
        doc = {"format": FORMAT_VERSION, "sha256": hashlib.sha256(body).hexdigest(), "state": state}
        atomic_write(self.path, json.dumps(doc, sort_keys=True, indent=1).encode("ascii") + b"\n")

    def _corrupt(self, reason: str) -> CheckpointError:
        return CheckpointError(
            f"checkpoint journal {self.path} is corrupt: {reason}; it was left untouched "
            "- restore it, or remove it to resynchronise this guest from scratch")
