"""MAC addresses in configuration text: find them, swap the source's for the destination's.

A MAC is recognised only as a whole colon-separated token (never inside a longer run of hex
digits and colons, as in an IPv6 address). Matching is case-insensitive; a replacement keeps
the case the file used (NetworkManager and anaconda write upper case, most others lower).
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Tuple

MAC_RE = re.compile(r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}(?![0-9A-Fa-f:])")
_FULL_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def normalise(mac: str) -> str:
    """Lower-case colon form, or "" when `mac` is not an Ethernet MAC."""
    mac = (mac or "").strip().lower().replace("-", ":")
    return mac if _FULL_MAC_RE.fullmatch(mac) else ""


def in_case_of(new_mac: str, original: str) -> str:
    """new_mac written in the case `original` was written in."""
    letters = [c for c in original if c.isalpha()]
    return new_mac.upper() if letters and all(c.isupper() for c in letters) else new_mac


class MacMap:
    """Source MAC → destination MAC, for the NICs whose MAC changes."""

    def __init__(self, pairs: Iterable[Tuple[str, str]]):
        self.new_for: Dict[str, str] = {}
        for old, new in pairs:
            old, new = normalise(old), normalise(new)
            if old and new and old != new:
                self.new_for.setdefault(old, new)

    def __bool__(self) -> bool:
        return bool(self.new_for)

    def __contains__(self, mac: str) -> bool:
        return normalise(mac) in self.new_for

    def get(self, mac: str) -> str:
        """The destination's MAC for a source MAC (any case), or "" when it is not mapped."""
        return self.new_for.get(normalise(mac), "")

    def sub(self, text: str) -> str:
        """Every whole source MAC in `text` replaced by its destination MAC, case kept."""
        def swap(match: "re.Match[str]") -> str:
            new = self.get(match.group(0))
            return in_case_of(new, match.group(0)) if new else match.group(0)
        return MAC_RE.sub(swap, text)

    def found_in(self, text: str) -> List[str]:
        """The source MACs (lower case) that occur in `text`."""
        return sorted({m.lower() for m in MAC_RE.findall(text) if m.lower() in self.new_for})
