"""Running the system's disk tools with errors a person can act on."""
from __future__ import annotations

import os
import subprocess
from typing import Dict, Optional, Sequence

TOOL_TIMEOUT = 600


class StorageError(Exception):
    """The replica's disks could not be built, attached or mounted as asked."""


def run(argv: Sequence[str], *, stdin: Optional[str] = None, timeout: float = TOOL_TIMEOUT,
        env_extra: Optional[Dict[str, str]] = None) -> str:
    """Run a tool; return its stdout, or raise StorageError naming the tool and its complaint."""
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False,
                              env=dict(os.environ, **env_extra) if env_extra else None)
    except FileNotFoundError:
        raise StorageError(f"{argv[0]} is not installed on the receiver") from None
    except subprocess.TimeoutExpired:
        raise StorageError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise StorageError(f"{' '.join(argv)} exited {done.returncode}: {' / '.join(why[-3:])}")
    return done.stdout
