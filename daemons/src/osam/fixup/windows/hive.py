"""A registry hive opened with hivex, as the fix-up's edits see it: keys by backslash path,
values decoded to Python (int, str, list of str, bytes), and every write compared first, so
only real changes are made and reported. The value each change replaces is kept, for the
backup JSON an operator can restore from.

Registry names are case-insensitive; hivex looks children and values up that way too.
In a dry run the hive is opened read-only and each change is reported as "would", with keys
that would be created treated as empty.
"""
from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import WindowsFixupError

REG_NONE, REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD = 0, 1, 2, 3, 4
REG_MULTI_SZ, REG_QWORD = 7, 11
TYPE_NAMES = {REG_NONE: "REG_NONE", REG_SZ: "REG_SZ", REG_EXPAND_SZ: "REG_EXPAND_SZ",
              REG_BINARY: "REG_BINARY", REG_DWORD: "REG_DWORD", REG_MULTI_SZ: "REG_MULTI_SZ",
              REG_QWORD: "REG_QWORD"}

# A key path that does not exist yet in a dry run.
MISSING = -1


@dataclass
class ValueChange:
    """One edit of a hive, as the report shows it."""
    step: str
    action: str              # set | delete | create_key
    hive: str                # SYSTEM
    key: str                 # ControlSet001\Services\pvscsi
    value: Optional[str]     # None for create_key
    type: Optional[str]      # REG_DWORD ...
    old: Any
    new: Any
    detail: str

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


# -- encoding ------------------------------------------------------------------------------------
def encode(kind: int, value: Any) -> bytes:
    if kind in (REG_SZ, REG_EXPAND_SZ):
        return (str(value) + "\0").encode("utf-16-le")
    if kind == REG_MULTI_SZ:
        return "".join(str(v) + "\0" for v in value).encode("utf-16-le") + b"\0\0"
    if kind == REG_DWORD:
        return struct.pack("<I", int(value) & 0xFFFFFFFF)
    if kind == REG_QWORD:
        return struct.pack("<Q", int(value))
    return bytes(value)


def decode(kind: int, data: bytes) -> Any:
    """The value as Python; strings stop at their first NUL, as Windows reads them."""
    if kind in (REG_SZ, REG_EXPAND_SZ):
        return _utf16(data).split("\0", 1)[0]
    if kind == REG_MULTI_SZ:
        return [s for s in _utf16(data).split("\0") if s]
    if kind == REG_DWORD and len(data) >= 4:
        return struct.unpack_from("<I", data)[0]
    if kind == REG_QWORD and len(data) >= 8:
        return struct.unpack_from("<Q", data)[0]
    return bytes(data)


def _utf16(data: bytes) -> str:
    return data[: len(data) & ~1].decode("utf-16-le", "replace")


def jsonable(value: Any) -> Any:
    return value.hex() if isinstance(value, (bytes, bytearray)) else value


# -- the hive ------------------------------------------------------------------------------------
class Hive:
    def __init__(self, hivex_module: Any, path: str, name: str, *, write: bool):
        self.path = path
        self.name = name
        self.write = write
        try:
            self._h = hivex_module.Hivex(path, write=write)
        except RuntimeError as exc:
            raise WindowsFixupError(f"{name} hive {path} cannot be opened by hivex ({exc}): "
                                    f"the replica's registry is damaged or not a hive") from exc
        self.changes: List[ValueChange] = []
        self.replaced: List[Dict[str, Any]] = []    # values as they were before a change

    # -- reading ---------------------------------------------------------------------------
    def node(self, key: str) -> Optional[int]:
        node = self._h.root()
        for part in _parts(key):
            node = self._h.node_get_child(node, part)
            if not node:
                return None
        return node

    def subkeys(self, key: str) -> List[str]:
        node = self.node(key)
        if node is None:
            return []
        return [self._h.node_name(child) for child in self._h.node_children(node)]

    def raw(self, key: str, name: str) -> Optional[Tuple[int, bytes]]:
        node = self.node(key)
        if node is None:
            return None
        return self._raw_at(node, name)

    def _raw_at(self, node: int, name: str) -> Optional[Tuple[int, bytes]]:
        try:
            handle = self._h.node_get_value(node, name)
        except RuntimeError:    # the binding's answer for a missing value
            return None
        if not handle:
            return None
        kind, data = self._h.value_value(handle)
        return kind, data

    def get(self, key: str, name: str, default: Any = None) -> Any:
        raw = self.raw(key, name)
        return default if raw is None else decode(*raw)

    def values(self, key: str) -> Dict[str, Tuple[int, Any]]:
        """Every value of a key: name → (type, decoded)."""
        node = self.node(key)
        if node is None:
            return {}
        out = {}
        for handle in self._h.node_values(node):
            kind, data = self._h.value_value(handle)
            out[self._h.value_key(handle)] = (kind, decode(kind, data))
        return out

    # -- changing ----------------------------------------------------------------------------
    def ensure_key(self, key: str, step: str, detail: str = "") -> int:
        """The key's node, created (with its missing parents) when absent."""
        node = self._h.root()
        done: List[str] = []
        for part in _parts(key):
            done.append(part)
            child = self._h.node_get_child(node, part) if node != MISSING else None
            if not child:
                self._record(step, "create_key", "\\".join(done), None, None, None, None,
                             detail or "key created")
                child = self._h.node_add_child(node, part) if self.write else MISSING
            node = child
        return node

    def set(self, key: str, name: str, kind: int, value: Any, step: str, detail: str) -> bool:
        """Give a value its type and content; returns whether anything changed."""
        node = self.ensure_key(key, step)
        old = self._raw_at(node, name) if node != MISSING else None
        if old is not None and old[0] == kind and decode(*old) == decode(kind, encode(kind, value)):
            return False
        self._remember(key, name, old)
        self._record(step, "set", key, name, TYPE_NAMES.get(kind, str(kind)),
                     None if old is None else jsonable(decode(*old)), jsonable(value), detail)
        if self.write:
            self._h.node_set_value(node, {"key": name, "t": kind, "value": encode(kind, value)})
        return True

    def delete_value(self, key: str, name: str, step: str, detail: str) -> bool:
        node = self.node(key)
        old = self._raw_at(node, name) if node is not None else None
        if old is None:
            return False
        self._remember(key, name, old)
        self._record(step, "delete", key, name, TYPE_NAMES.get(old[0], str(old[0])),
                     jsonable(decode(*old)), None, detail)
        if self.write:
            # hivex has no single-value delete: set the key's other values as they are.
            keep = []
            for handle in self._h.node_values(node):
                value_name = self._h.value_key(handle)
                if value_name.lower() != name.lower():
                    kind, data = self._h.value_value(handle)
                    keep.append({"key": value_name, "t": kind, "value": data})
            self._h.node_set_values(node, keep)
        return True

    def commit(self) -> None:
        if self.write and self.changes:
            self._h.commit(None)

    def close(self) -> None:
        self._h = None

    # -- bookkeeping -----------------------------------------------------------------------
    def _remember(self, key: str, name: str, old: Optional[Tuple[int, bytes]]) -> None:
        self.replaced.append({
            "hive": self.name, "key": key, "value": name,
            "existed": old is not None,
            "type": None if old is None else TYPE_NAMES.get(old[0], str(old[0])),
            "type_code": None if old is None else old[0],
            "data_hex": None if old is None else old[1].hex(),
            "decoded": None if old is None else jsonable(decode(*old))})

    def _record(self, step: str, action: str, key: str, name: Optional[str], kind: Optional[str],
                old: Any, new: Any, detail: str) -> None:
        if not self.write:
            detail = f"would: {detail}"
        self.changes.append(ValueChange(step, action, self.name, key, name, kind, old, new, detail))


def _parts(key: str) -> Sequence[str]:
    return [p for p in key.split("\\") if p]
