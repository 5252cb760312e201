"""Reading values the way ConvertTo-Json writes them: one object where an array was meant,
null for absent, enums as numbers or as names depending on the cmdlet, GUIDs in braces, a
drive letter as a character that is NUL when there is none."""
from __future__ import annotations

from typing import Any, List, Mapping


def as_list(value: Any) -> List[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def integer(value: Any, default: int = 0) -> int:
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return default


def flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def guid(value: Any) -> str:
    """'{ebd0a0a2-b9e5-4433-87c0-68b6b72699c7}' -> 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7' (as
    sfdisk writes GUIDs); '' for none."""
    return text(value).strip("{}").upper()


def drive_letter(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = chr(value) if value else ""
    letter = text(value).rstrip(":\\")
    return letter.upper() if len(letter) == 1 and letter.isalpha() else ""


def enum_name(value: Any, names: Mapping[int, str]) -> str:
    """A CIM enum as its name, whether it came as the number or already as the name."""
    if isinstance(value, int) and not isinstance(value, bool):
        return names.get(value, str(value))
    return text(value)

