"""A WindowsHost that answers from canned documents, for the Windows sentinel's tests."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from osam.sentinel.windows.commands import WindowsCommandError

DATA = Path(__file__).parent / "data" / "windows"
Answer = Union[Any, Exception, Callable[[str], Any]]


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


class FakeWindowsHost:
    """`answers` maps a script key to its answer: a key matches a script it is part of (a
    whole script is its own key), the longest matching key wins. An answer is the decoded JSON,
    an exception to raise, or a function of the script. Unknown scripts fail like PowerShell.
    `runs` answers run() by the program's name (first word), default exit 0 with no output."""

    def __init__(self, answers: Optional[Dict[str, Answer]] = None,
                 runs: Optional[Dict[str, Callable[[Any], subprocess.CompletedProcess]]] = None) -> None:
        self.answers: Dict[str, Answer] = dict(answers or {})
        self.runs = dict(runs or {})
        self.calls: List[Tuple[str, Any]] = []     # ("powershell", script) | ("run", argv)

    def scripts(self) -> List[str]:
        return [arg for kind, arg in self.calls if kind == "powershell"]

    def powershell_json(self, script: str, timeout: float = 120.0) -> Any:
        self.calls.append(("powershell", script))
        keys = [k for k in self.answers if k in script]
        if not keys:
            raise WindowsCommandError("PowerShell (%s)" % script.strip().splitlines()[0][:80], 1,
                                      "The term is not recognized (no canned answer)")
        answer = self.answers[max(keys, key=len)]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            answer = answer(script)
        return json.loads(json.dumps(answer))   # a fresh copy, as a decoder would give

    def run(self, argv: Union[str, Sequence[str]], timeout: float = 120.0) -> subprocess.CompletedProcess:
        self.calls.append(("run", argv))
        program = (argv.split() if isinstance(argv, str) else list(argv))[0]
        handler = self.runs.get(program)
        if handler is None:
            return subprocess.CompletedProcess(argv, 0, "", "")
        return handler(argv)


def host_for_machine(machine: Dict[str, Any], **overrides: Answer) -> FakeWindowsHost:
    """A host answering the inventory's probes from a machine document (probe name -> answer),
    e.g. data/windows/server2019_uefi.json."""
    from osam.sentinel.windows.inventory import PROBES
    answers: Dict[str, Answer] = {PROBES[name]: doc for name, doc in machine.items()}
    answers.update({PROBES[name]: answer for name, answer in overrides.items()})
    return FakeWindowsHost(answers)
