"""Stopping what tests start, whatever it started in turn."""
from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, grace: float = 60) -> str:
    """SIGTERM the process group of `proc` (started with start_new_session=True), then SIGKILL
    after `grace` seconds; returns what it printed. A build script's EXIT trap gets to clean up."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return proc.communicate(timeout=wait)[0] or ""
        except subprocess.TimeoutExpired:
            continue
    return ""
