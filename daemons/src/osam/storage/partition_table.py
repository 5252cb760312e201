"""Recreate a source disk's partition table, identifiers included, from what `sfdisk --json`
reported on the guest. The script is built here (pure) and applied to the image file itself,
before any loop device exists, so no partition rescan races with it."""
from __future__ import annotations

import re
from typing import Any, Dict, List

from .command import StorageError, run

_NUMBER = re.compile(r"(\d+)$")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9:._-]+$")   # types, UUIDs, label ids
_LABELS = ("dos", "gpt")


def partition_number(part: Dict[str, Any]) -> int:
    m = _NUMBER.search(str(part.get("node", "")))
    if not m:
        raise StorageError(f"partition {part.get('node')!r}: no partition number in its name")
    return int(m.group(1))


def _value(name: str, value: Any) -> str:
    text = str(value)
    if not _SAFE_VALUE.match(text):
        raise StorageError(f"partition table: {name} {text!r} is not a plain identifier")
    return text


def _name(value: Any) -> str:
    text = str(value)
    if any(c in text for c in '"\n\r\\') or len(text) > 36:
        raise StorageError(f"partition table: GPT name {text!r} cannot be recreated")
    return f'"{text}"'


def _attrs(value: Any) -> str:
    words = str(value).split()
    for word in words:
        _value("GPT attribute", word)
    return ",".join(words)


def sfdisk_script(table: Dict[str, Any], image: str) -> str:
    """The sfdisk input that recreates `table` on `image`, numbering kept (gaps too)."""
    label = table.get("label")
    if label not in _LABELS:
        raise StorageError(f"partition table type {label!r} is not supported (only dos and gpt)")
    lines: List[str] = [f"label: {label}"]
    if table.get("id"):
        lines.append(f"label-id: {_value('label id', table['id'])}")
    lines.append("unit: sectors")
    if table.get("sectorsize"):
        lines.append(f"sector-size: {int(table['sectorsize'])}")
    if label == "gpt":
        for key in ("firstlba", "lastlba"):
            if table.get(key) is not None:
                lines.append(f"{'first-lba' if key == 'firstlba' else 'last-lba'}: {int(table[key])}")
    lines.append("")
    for part in sorted(table.get("partitions", []), key=partition_number):
        fields = [f"start={int(part['start'])}", f"size={int(part['size'])}",
                  f"type={_value('type', part['type'])}"]
        if label == "gpt":
            if part.get("uuid"):
                fields.append(f"uuid={_value('uuid', part['uuid'])}")
            if part.get("name"):
                fields.append(f"name={_name(part['name'])}")
            if part.get("attrs"):
                fields.append(f'attrs="{_attrs(part["attrs"])}"')
        elif part.get("bootable"):
            fields.append("bootable")
        lines.append(f"{image}{partition_number(part)} : " + ", ".join(fields))
    return "\n".join(lines) + "\n"


def write_partition_table(table: Dict[str, Any], image: str) -> None:
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "always", image],
        stdin=sfdisk_script(table, image))


def read_partition_table(image: str) -> Dict[str, Any]:
    import json
    return json.loads(run(["sfdisk", "--json", image]))["partitiontable"]
