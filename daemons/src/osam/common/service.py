"""What every osam daemon needs from its service manager: readiness and status notifications
(sd_notify) and logging that lands in the journal under systemd, on stderr otherwise.

systemd-python is optional (guests often lack it), so notifications fall back to writing the
datagram to $NOTIFY_SOCKET ourselves; with no NOTIFY_SOCKET they do nothing."""
from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import sys
from typing import Optional, Union

try:   # optional: a C extension that only builds where libsystemd-dev is present
    from systemd import daemon as _sd_daemon
except ImportError:
    _sd_daemon = None
try:
    from systemd import journal as _sd_journal
except ImportError:
    _sd_journal = None


def notify_ready() -> bool:
    return notify("READY=1")


def notify_status(text: str) -> bool:
    # One line per STATUS: a newline would start a new (bogus) assignment.
    return notify("STATUS=" + " ".join(str(text).splitlines()))


def notify_stopping() -> bool:
    return notify("STOPPING=1")


def notify(message: str) -> bool:
    """Send newline-separated VAR=value assignments; False when not under a service manager."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if _sd_daemon is not None:
        return bool(_sd_daemon.notify(message))
    return send_notify_datagram(address, message)


def send_notify_datagram(address: str, message: str) -> bool:
    """sd_notify without libsystemd: one datagram on an AF_UNIX socket ("@name" is abstract)."""
    if address.startswith("@"):
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        return False   # vsock and other forms need libsystemd
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode("utf-8"), target)
        except OSError:
            return False
    return True


def running_under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


STDERR_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    """Last line of defence: bearer tokens and private keys never reach a log sink."""

    _PATTERNS = (
        (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
        (re.compile(r"(?i)\b((?:api[-_]?)?token[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9._~+/=-]{8,}"), r"\1***"),
        (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
                    re.S), "[private key redacted]"),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for pattern, replacement in self._PATTERNS:
            redacted = pattern.sub(replacement, redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup_logging(name: str, level: Union[int, str] = logging.INFO, *,
                  stream=None, journal: Optional[bool] = None) -> logging.Logger:
    """Route the root logger to journald under systemd (when systemd-python imports), to plain
    stderr lines otherwise; return the daemon's own logger. `journal` forces the choice."""
    if isinstance(level, str):
        number = logging.getLevelName(level.upper())
        if not isinstance(number, int):
            raise ValueError(f"unknown log level {level!r}")
        level = number
    use_journal = running_under_systemd() if journal is None else journal
    if use_journal and _sd_journal is not None:
        handler: logging.Handler = _sd_journal.JournalHandler(SYSLOG_IDENTIFIER=name)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))   # journald stamps time
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_osam_service", False)]:
        root.removeHandler(old)
    handler._osam_service = True   # so a second call replaces, never duplicates
    root.addHandler(handler)
    root.setLevel(level)
    return logging.getLogger(name)


async def serve_until_stopped() -> None:
    """Tell systemd the daemon is ready, then wait for SIGTERM or SIGINT and say it stops."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notify_ready()
    await stop.wait()
    notify_stopping()
