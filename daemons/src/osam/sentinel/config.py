"""The guest-side configuration files, under ETC (default /opt/vmware/hcx/osam):

- ETC/excluded_paths: one absolute path per line ("#" comments, blank lines; blanks around
  a path are ignored). A directory excludes everything below it. Applies to continuous sync
  only; initial and final syncs copy everything. Read as bytes, so names that are not UTF-8
  work.
- ETC/etc/sync.params: key=value lines ("#" comments); the keys are SentinelConfig's fields
  (pre_quiesce_hook and quiesce_services may repeat and add up).

Missing files mean defaults. Every mistake raises ConfigError naming file and line.
Restarting the vmware-hcx-osam-sentinel service reloads both files.
"""
from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

from ..common.fsentry import is_under

DEFAULT_ETC = "/opt/vmware/hcx/osam"
EXCLUDED_PATHS = "excluded_paths"
SYNC_PARAMS = os.path.join("etc", "sync.params")

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9:_.@\\-]+$")
_WHOLE_NUMBER = re.compile(r"^[0-9]+$")


class ConfigError(ValueError):
    """A configuration file says something we cannot use; the message starts with file:line."""


@dataclass(frozen=True)
class SentinelConfig:
    etc_dir: str = DEFAULT_ETC
    excluded_paths: Tuple[bytes, ...] = ()      # absolute, normalised, on the guest
    max_retry_interval: int = 8                 # hours a failing sync keeps being retried
    verify_interval: int = 600                  # seconds between verifying walks; 0 = off
    quiesce_services: Tuple[str, ...] = ()      # extra services to stop on quiesce
    pre_quiesce_hooks: Tuple[str, ...] = ()     # shell commands run before stopping services
    quiesce_timeout: int = 120                  # seconds allowed per hook / for stopping
    final_verify: bool = False                  # final sync also walks the whole tree

    @property
    def max_retry_seconds(self) -> int:
        return self.max_retry_interval * 3600

    def is_excluded(self, relpath: bytes) -> bool:
        """True when `relpath` (relative to the replicated root, which stands for the
        guest's "/") is an excluded path or lies below one."""
        for excluded in self.excluded_paths:
            rel = excluded[1:]
            if is_under(relpath, rel):
                return True
        return False


def load_config(etc_dir: str = DEFAULT_ETC) -> SentinelConfig:
    params = _read_sync_params(os.path.join(etc_dir, SYNC_PARAMS))
    excluded = _read_excluded_paths(os.path.join(etc_dir, EXCLUDED_PATHS))
    return SentinelConfig(etc_dir=etc_dir, excluded_paths=excluded, **params)


def _lines(path: str) -> List[Tuple[int, bytes]]:
    """(line number, stripped content) of the lines that are neither blank nor comments."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    result = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        line = line.strip(b" \t\r")
        if line and not line.startswith(b"#"):
            result.append((number, line))
    return result


def _read_excluded_paths(path: str) -> Tuple[bytes, ...]:
    excluded = []
    for number, line in _lines(path):
        where = "%s:%d" % (path, number)
        if b"\0" in line:
            raise ConfigError("%s: excluded path contains a NUL byte" % where)
        if not line.startswith(b"/"):
            raise ConfigError("%s: excluded path must be absolute, got %r"
                              % (where, os.fsdecode(line)))
        normal = posixpath.normpath(line)
        if normal.startswith(b"//"):  # POSIX keeps a leading "//"; it means "/" here
            normal = b"/" + normal.lstrip(b"/")
        if normal == b"/":
            raise ConfigError("%s: excluding / would exclude everything" % where)
        excluded.append(normal)
    return tuple(sorted(set(excluded)))


# ---------------------------------------------------------------- sync.params

def _hours(value: str) -> int:
    if _WHOLE_NUMBER.match(value) and 1 <= int(value) <= 8:
        return int(value)
    raise ValueError("must be a whole number of hours from 1 to 8")


def _seconds(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if _WHOLE_NUMBER.match(value) and int(value) >= minimum:
            return int(value)
        raise ValueError("must be a whole number of seconds, at least %d" % minimum)
    return parse


def _services(value: str) -> Tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    for name in names:
        if not _SERVICE_NAME.match(name):
            raise ValueError("must be a comma-separated list of service names")
    return names


def _yes_no(value: str) -> bool:
    if value.lower() in ("yes", "true", "1", "on"):
        return True
    if value.lower() in ("no", "false", "0", "off"):
        return False
    raise ValueError("must be yes or no")


def _command(value: str) -> Tuple[str, ...]:
    if not value:
        raise ValueError("must be a shell command")
    return (value,)


# key -> (field, parser, repeatable: values of repeated lines add up)
_PARAMS: Dict[str, Tuple[str, Callable, bool]] = {
    "max_retry_interval": ("max_retry_interval", _hours, False),
    "verify_interval": ("verify_interval", _seconds(0), False),
    "quiesce_timeout": ("quiesce_timeout", _seconds(1), False),
    "quiesce_services": ("quiesce_services", _services, True),
    "pre_quiesce_hook": ("pre_quiesce_hooks", _command, True),
    "final_verify": ("final_verify", _yes_no, False),
}


def _read_sync_params(path: str) -> dict:
    values: dict = {}
    first_line: Dict[str, int] = {}
    for number, raw in _lines(path):
        where = "%s:%d" % (path, number)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("%s: not valid UTF-8" % where) from None
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ConfigError("%s: expected key=value, got %r" % (where, line))
        if key not in _PARAMS:
            raise ConfigError("%s: unknown key %r (known: %s)"
                              % (where, key, ", ".join(sorted(_PARAMS))))
        field, parse, repeatable = _PARAMS[key]
        if key in first_line and not repeatable:
            raise ConfigError("%s: %s already set on line %d" % (where, key, first_line[key]))
        first_line.setdefault(key, number)
        try:
            parsed = parse(value)
        except ValueError as exc:
            raise ConfigError("%s: %s %s, got %r" % (where, key, exc, value)) from None
        values[field] = values.get(field, ()) + parsed if repeatable else parsed
    return values
