"""The receiver's wall clock, which scheduled switchovers are decided by.

It is time.time, unless OSAM_CLOCK_OFFSET_FILE names a file holding a number of seconds to
add (re-read at most once a second): the fault campaigns use it to jump the clock forward and
back as an NTP correction would, without touching the machine's clock. Only wall-clock
decisions see it; timeouts run on the monotonic clock."""
from __future__ import annotations

import os
import time
from typing import Callable

OFFSET_FILE_ENV = "OSAM_CLOCK_OFFSET_FILE"
REREAD = 1.0


def wall_clock() -> Callable[[], float]:
    path = os.environ.get(OFFSET_FILE_ENV)
    if not path:
        return time.time
    state = {"offset": 0.0, "read_at": float("-inf")}

    def now() -> float:
        mono = time.monotonic()
        if mono - state["read_at"] >= REREAD:
            state["read_at"] = mono
            try:
                with open(path) as f:
                    state["offset"] = float(f.read().strip())
            except (OSError, ValueError):
                pass        # keep the last offset: a file being rewritten reads empty for a moment
        return time.time() + state["offset"]
    return now
