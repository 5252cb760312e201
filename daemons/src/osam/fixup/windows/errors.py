"""The one error the offline Windows fix-up raises: it says what is wrong and what to do."""
from __future__ import annotations


class WindowsFixupError(Exception):
    """The replica cannot be fixed up as it is; the message tells the operator what to do.
    Nothing half-done is left mounted or attached when it is raised."""
