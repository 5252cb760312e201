"""The one line a server sends after TLS, before any protocol byte.

In TLS 1.3 the client finishes its handshake before the server has checked the client's
certificate, so without this line a refused client would only notice on its first read, as a
bare EOF. With it, `connect()` returns only once the server has admitted us, and a role refusal
comes back with its reason."""
from __future__ import annotations

ADMITTED = b"osam admitted\n"
REFUSED = b"osam refused: "
MAX_LINE = 512


def refusal_line(reason: str) -> bytes:
    return REFUSED + reason.encode("utf-8", "replace")[:MAX_LINE - len(REFUSED) - 1] + b"\n"


def parse(line: bytes):
    """(True, "") when admitted, (False, reason) when refused; ValueError for anything else."""
    if line == ADMITTED:
        return True, ""
    if line.startswith(REFUSED) and line.endswith(b"\n"):
        return False, line[len(REFUSED):-1].decode("utf-8", "replace")
    raise ValueError(f"unexpected admission line {line[:60]!r}")
