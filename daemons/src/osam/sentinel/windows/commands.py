"""The one seam between the Windows sentinel and Windows: PowerShell scripts whose output comes
back as JSON, and plain programs. `LiveWindowsHost` runs them; tests answer with a fake.

Scripts run in Windows PowerShell 5.1 (powershell.exe), present on every supported Windows
release, unlike pwsh. They are passed base64-encoded (-EncodedCommand) so no quoting rule of
CreateProcess or of the shell can mangle them, and their output is piped to
`ConvertTo-Json -Depth 6 -Compress`, with ConvertTo-Json's habits left to the callers: one
object comes back as an object and several as an array, nothing at all as None (see
values.as_list).
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from typing import Any, Optional, Protocol, Sequence, Union

POWERSHELL = "powershell.exe"
DEFAULT_TIMEOUT = 120.0
STDERR_TAIL = 2000          # characters of a failed command's stderr kept in its error
CREATE_NO_WINDOW = 0x08000000

# Errors stop the script (a non-zero exit, never half an answer); no progress bars on stderr;
# UTF-8 output so non-ASCII names and labels survive (the console code page would not).
PRELUDE = ("$ErrorActionPreference = 'Stop'; $ProgressPreference = 'SilentlyContinue'\n"
           "try { [Console]::OutputEncoding = [System.Text.Encoding]::UTF8 } catch { }\n")

Argv = Union[str, Sequence[str]]


class WindowsCommandError(RuntimeError):
    """A PowerShell script or program failed; the message ends with the tail of its stderr."""

    def __init__(self, what: str, returncode: Optional[int], stderr: str = "") -> None:
        self.what, self.returncode, self.stderr = what, returncode, stderr
        detail = " exited %d" % returncode if returncode is not None else ""
        super().__init__("%s%s%s" % (what, detail, ": " + stderr if stderr else ""))


class WindowsHost(Protocol):
    def powershell_json(self, script: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """The script's output objects as decoded JSON (None when it output nothing). Raises
        WindowsCommandError when it fails, subprocess.TimeoutExpired when it takes too long."""

    def run(self, argv: Argv, timeout: float = DEFAULT_TIMEOUT) -> "subprocess.CompletedProcess[str]":
        """Run a program, output captured as text; never raises for a non-zero exit. A string
        is the raw Windows command line (what cmd.exe /s /c needs), a sequence is quoted."""


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted string literal: nothing inside is expanded."""
    return "'" + value.replace("'", "''") + "'"


def wrap_script(script: str) -> str:
    return PRELUDE + "& {\n" + script + "\n} | ConvertTo-Json -Depth 6 -Compress\n"


def encode_command(script: str) -> str:
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def powershell_argv(script: str, powershell: str = POWERSHELL) -> list:
    # Bypass for this process only: the Storage cmdlets (Get-Disk...) load module and type
    # files, which the client editions' default policy (Restricted) refuses.
    return [powershell, "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
            "-OutputFormat", "Text", "-EncodedCommand", encode_command(wrap_script(script))]


def decode_json_output(stdout: bytes) -> Any:
    text = stdout.decode("utf-8-sig", errors="replace").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise WindowsCommandError("PowerShell output is not JSON (%s)" % exc, None,
                                  text[-STDERR_TAIL:]) from None


_CLIXML_STRING = re.compile(r'<S S="Error">(.*?)</S>', re.S)


def readable_stderr(raw: Union[bytes, str]) -> str:
    """The tail of stderr; PowerShell may write its errors as CLIXML, so unwrap those."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    if text.lstrip().startswith("#< CLIXML"):
        parts = _CLIXML_STRING.findall(text)
        text = "".join(parts).replace("_x000D_", "").replace("_x000A_", "\n")
    return text.strip()[-STDERR_TAIL:]


def _creationflags() -> int:
    # The sentinel runs as a service: a child console window must not flash up anywhere.
    return CREATE_NO_WINDOW if sys.platform == "win32" else 0


class LiveWindowsHost:
    """The real machine, through subprocess with timeouts."""

    def __init__(self, powershell: str = POWERSHELL) -> None:
        self.powershell = powershell

    def powershell_json(self, script: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
        done = subprocess.run(powershell_argv(script, self.powershell), capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL,
                              creationflags=_creationflags(), check=False)
        if done.returncode != 0:
            first_line = script.strip().splitlines()[0] if script.strip() else ""
            raise WindowsCommandError("PowerShell (%s)" % first_line[:80], done.returncode,
                                      readable_stderr(done.stderr))
        return decode_json_output(done.stdout)

    def run(self, argv: Argv, timeout: float = DEFAULT_TIMEOUT) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=timeout, stdin=subprocess.DEVNULL,
                              creationflags=_creationflags(), check=False)
