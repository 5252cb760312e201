"""Read-only looks at the guest that several fix-up steps share: where its commands are,
queries run in its chroot, its shell-style configuration files, version strings.

A query changes nothing in the replica, so it is not reported; commands that change the
replica go through FixupContext.run, which reports them.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from typing import Dict, Optional, Sequence, Tuple

from .context import FixupContext, FixupError

# Where a guest keeps its commands; merged-/usr guests reach the same files twice.
SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def find_executable(ctx: FixupContext, *names: str) -> Optional[str]:
    """Guest path of the first of `names` the guest has as an executable file."""
    for name in names:
        for directory in SEARCH_PATH:
            guest_path = f"{directory}/{name}"
            host = ctx.host_path(guest_path)
            if os.path.isfile(host) and os.access(host, os.X_OK):
                return guest_path
    return None


def query(ctx: FixupContext, argv: Sequence[str], *, env: Optional[Dict[str, str]] = None,
          timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command that only reads the replica (a package query, an initramfs listing)."""
    return ctx.runner(list(argv), env=env, timeout=timeout)


def output(done: subprocess.CompletedProcess) -> str:
    data = done.stdout or b""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def errors(done: subprocess.CompletedProcess) -> str:
    data = done.stderr or b""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    return text.strip()[-2000:]


def query_text(ctx: FixupContext, argv: Sequence[str], step: str, **kwargs) -> str:
    """Output of a read-only query that must succeed."""
    done = query(ctx, argv, **kwargs)
    if done.returncode != 0:
        raise FixupError(f"{step}: {' '.join(argv)} exited {done.returncode}: {errors(done)}")
    return output(done)


def parse_assignments(text: Optional[str]) -> Dict[str, str]:
    """KEY=value lines of a shell-style file (os-release, /etc/default/grub, sysconfig),
    quotes removed; expansions are left as written."""
    values: Dict[str, str] = {}
    for line in (text or "").splitlines():
        match = _ASSIGNMENT.match(line)
        if not match:
            continue
        try:
            words = shlex.split(match.group(2), comments=True)
        except ValueError:
            words = [match.group(2).strip().strip("\"'")]
        values[match.group(1)] = " ".join(words)
    return values


def version_tuple(version: str) -> Tuple[int, ...]:
    """(9, 3) for "9.3", (15, 5) for "15.5", (12,) for "12"; () when there is no number."""
    return tuple(int(n) for n in re.findall(r"\d+", version or ""))[:3]


def kernel_sort_key(version: str) -> Tuple[Tuple[int, object], ...]:
    """Natural order of kernel versions: 6.1.0-9 before 6.1.0-18."""
    return tuple((0, int(part)) if part.isdigit() else (1, part)
                 for part in re.split(r"(\d+)", version) if part)


def is_dry_run(ctx: FixupContext) -> bool:
    return bool(getattr(ctx, "dry_run", False))


def family(ctx: FixupContext) -> str:
    distro = ctx.facts.get("distro")
    if not distro:
        raise FixupError("the distribution is not known: the distro step runs first")
    return distro["family"]
