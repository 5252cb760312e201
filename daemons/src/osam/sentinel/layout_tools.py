"""Running the external tools the disk layout is read with (lsblk, blkid, sfdisk, tune2fs,
xfs_info, pvs/vgs/lvs).

Every command goes through one injectable `run` (subprocess.run's signature), so tests feed
canned outputs. Tools run in the C locale because their text output (tune2fs, xfs_info) is
parsed. A command that fails is recorded as an error of the probe that needed it and that
probe's value stays empty: one unreadable device never hides the others.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

TOOL_TIMEOUT = 30

Run = Callable[..., Any]  # subprocess.run or a stand-in returning returncode/stdout/stderr


class ToolFailed(RuntimeError):
    """The tool ran and exited with a status it does not use for success."""


class Tools:
    """The layout's commands, run through `run`, and the errors of the probes that failed."""

    def __init__(self, run: Run = subprocess.run) -> None:
        self._run = run
        self.errors: List[Dict[str, str]] = []

    def text(self, argv: Sequence[str]) -> str:
        """stdout of `argv`; raises ToolFailed (exit status), OSError (missing tool) or
        subprocess.TimeoutExpired."""
        returncode, stdout, stderr = self.outputs(argv)
        if returncode != 0:
            raise ToolFailed("%s exited %d: %s" % (argv[0], returncode, stderr.strip()))
        return stdout

    def outputs(self, argv: Sequence[str]) -> Tuple[int, str, str]:
        """(exit status, stdout, stderr) of `argv`."""
        done = self._run(list(argv), capture_output=True, timeout=TOOL_TIMEOUT, check=False,
                         env=dict(os.environ, LC_ALL="C"))
        return done.returncode, _decode(done.stdout), _decode(done.stderr)

    def json(self, argv: Sequence[str]) -> Any:
        return json.loads(self.text(argv))

    def attempt(self, probe: str, fn: Callable[[], Any], empty: Any = None) -> Any:
        """fn(), or `empty` with an error entry for `probe` when it fails."""
        try:
            return fn()
        except Exception as exc:  # one probe must never stop the layout
            self.note(probe, exc)
            return empty

    def note(self, probe: str, exc: BaseException) -> None:
        self.errors.append({"probe": probe, "error": "%s: %s" % (type(exc).__name__, exc)})


def _decode(output: Optional[bytes]) -> str:
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    return output.decode("utf-8", "replace")


_EXPORT_ESCAPE = re.compile(r"\\(.)")


def parse_export(text: str) -> Dict[str, str]:
    r"""`blkid -o export` lines KEY=value; blkid escapes spaces and shell characters with \."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            values[key] = _EXPORT_ESCAPE.sub(r"\1", value)
    return values


def parse_colon_fields(text: str) -> Dict[str, str]:
    """`Name:   value` lines (tune2fs -l), the name as printed."""
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields
