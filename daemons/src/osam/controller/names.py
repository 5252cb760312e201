"""Guest names: the source hostname, which also names the replica VM and appears in URLs."""
from __future__ import annotations

import re

from .errors import InvalidInput

# Hostname characters only, so a name is safe in a URL path, a file name and a VM name as is.
_GUEST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")


def check_guest_name(name: object) -> str:
    if not isinstance(name, str) or not _GUEST_NAME.fullmatch(name) or ".." in name:
        raise InvalidInput("guest name must be 1-128 characters of letters, digits, '.', '_' or '-', "
                           "starting and ending with a letter or digit")
    return name
