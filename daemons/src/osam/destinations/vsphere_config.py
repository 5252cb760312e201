"""The vsphere destination's configuration: one JSON file, checked whole on load.

The file format is described in osam.destinations.vsphere (and daemons/README.md, "vsphere
destination"). Loading needs no pyvmomi, so a receiver without the `vsphere` extra still
says what is wrong with the file. The password is held in a :class:`Secret`: it appears in
no repr, str, log line or error message; errors name keys, never echo a password.
"""
from __future__ import annotations

import json
import logging
import os
import stat
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from .base import DestinationError

log = logging.getLogger("osam.destinations.vsphere")

DEFAULT_TASK_TIMEOUT = 600.0     # seconds; CreateVM or a power operation takes seconds, not minutes
DEFAULT_NETWORK = "*"           # the networks map's catch-all key
CONNECTION_KEYS = {"url", "user", "password", "password_file", "ca_file", "insecure", "task_timeout"}
DESTINATION_KEYS = CONNECTION_KEYS | {"datacenter", "cluster", "host", "resource_pool", "folder", "datastore",
                                      "datastore_path", "networks", "source"}
SOURCE_KEYS = CONNECTION_KEYS | {"datacenter"}


class VsphereConfigError(DestinationError):
    """The configuration file is missing, unreadable or wrong; the message lists every problem."""


class Secret:
    """A string that does not show itself: repr and str say it is hidden."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(hidden)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Connection:
    """How to log in to one vCenter."""
    url: str                       # https://host[:port], as written
    host: str
    port: int
    user: str
    password: Secret = field(repr=False)
    ca_file: Optional[str] = None  # None: the system's CAs (unless insecure)
    insecure: bool = False         # no certificate check at all: labs and tests only
    task_timeout: float = DEFAULT_TASK_TIMEOUT


@dataclass(frozen=True)
class SourceConfig:
    """The source site's vCenter, for sources that are themselves vSphere VMs."""
    connection: Connection
    datacenter: Optional[str] = None   # None: look in every datacenter


@dataclass(frozen=True)
class VsphereConfig:
    connection: Connection
    datacenter: str
    datastore: str
    datastore_path: str                # where the receiver sees the datastore's files
    cluster: Optional[str] = None      # exactly one of cluster and host
    host: Optional[str] = None
    resource_pool: str = ""            # path below the cluster's or host's root pool; "" = the root pool
    folder: str = ""                   # path below the datacenter's VM folder; "" = that folder
    networks: Mapping[str, str] = field(default_factory=dict)   # NIC name | MAC (lower case) | "*" -> port group
    source: Optional[SourceConfig] = None
    origin: str = ""                   # the file it came from, for messages

    @classmethod
    def load(cls, path: str) -> "VsphereConfig":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as e:
            raise VsphereConfigError(f"vsphere config {path}: cannot read it: {e.strerror}") from None
        except ValueError as e:
            raise VsphereConfigError(f"vsphere config {path}: not valid JSON: {e}") from None
        return cls.from_dict(data, origin=path)

    @classmethod
    def from_dict(cls, data: Any, origin: str = "<dict>") -> "VsphereConfig":
        """The configuration from already parsed JSON; relative file names are taken from the
        directory of `origin` when it is a file."""
        reader = _Reader(origin)
        config = reader.destination(data)
        reader.raise_problems()
        return config

    def port_group_for(self, source_name: str, source_mac: str) -> Optional[str]:
        """The port group a source NIC goes to: by its name, then its MAC, then the default."""
        for key in (source_name, (source_mac or "").lower(), DEFAULT_NETWORK):
            if key and key in self.networks:
                return self.networks[key]
        return None


class _Reader:
    """Collects every problem of a file, so that one run tells the operator all of them."""

    def __init__(self, origin: str):
        self.origin = origin
        self.base_dir = os.path.dirname(os.path.abspath(origin)) if os.path.isfile(origin) else os.getcwd()
        self.problems: List[str] = []

    def raise_problems(self) -> None:
        if self.problems:
            raise VsphereConfigError(f"vsphere config {self.origin}: " + "; ".join(self.problems))

    def problem(self, text: str) -> None:
        self.problems.append(text)

    # ---------------------------------------------------------------- sections
    def destination(self, data: Any) -> Optional[VsphereConfig]:
        if not isinstance(data, dict):
            self.problem("the file must hold a JSON object")
            return None
        self.unknown_keys(data, DESTINATION_KEYS, "")
        connection = self.connection(data, "")
        cluster, host = self.text(data, "cluster", required=False), self.text(data, "host", required=False)
        if bool(cluster) == bool(host):
            self.problem("give exactly one of 'cluster' and 'host' (the compute resource the VM runs on)")
        config = dict(
            datacenter=self.text(data, "datacenter"),
            datastore=self.text(data, "datastore"),
            datastore_path=self.directory(data, "datastore_path"),
            cluster=cluster or None, host=host or None,
            resource_pool=self.inventory_path(data, "resource_pool"),
            folder=self.inventory_path(data, "folder"),
            networks=self.networks(data.get("networks", {})),
            source=self.source(data["source"]) if "source" in data else None,
        )
        if self.problems:
            return None
        return VsphereConfig(connection=connection, origin=self.origin, **config)

    def source(self, data: Any) -> Optional[SourceConfig]:
        if not isinstance(data, dict):
            self.problem("'source' must be an object with the source vCenter's connection keys")
            return None
        self.unknown_keys(data, SOURCE_KEYS, "source.")
        connection = self.connection(data, "source.")
        datacenter = self.text(data, "datacenter", "source.", required=False)
        return None if connection is None else SourceConfig(connection, datacenter or None)

    def connection(self, data: Dict[str, Any], prefix: str) -> Optional[Connection]:
        url = self.text(data, "url", prefix)
        host, port = self.url(url, prefix) if url else ("", 0)
        user = self.text(data, "user", prefix)
        password = self.password(data, prefix)
        ca_file, insecure = self.trust(data, prefix)
        timeout = data.get("task_timeout", DEFAULT_TASK_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            self.problem(f"'{prefix}task_timeout' must be a positive number of seconds")
        if not (host and user and password):
            return None
        return Connection(url=url, host=host, port=port, user=user, password=password, ca_file=ca_file,
                          insecure=insecure, task_timeout=float(timeout))

    # ---------------------------------------------------------------- keys
    def unknown_keys(self, data: Dict[str, Any], known: set, prefix: str) -> None:
        for key in sorted(set(data) - known):
            self.problem(f"unknown key '{prefix}{key}' (known: {', '.join(sorted(known))})")

    def text(self, data: Dict[str, Any], key: str, prefix: str = "", required: bool = True) -> str:
        value = data.get(key)
        if value is None:
            if required:
                self.problem(f"'{prefix}{key}' is missing")
            return ""
        if not isinstance(value, str) or not value.strip():
            self.problem(f"'{prefix}{key}' must be a non-empty string")
            return ""
        return value.strip()

    def url(self, url: str, prefix: str) -> tuple:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https":
            self.problem(f"'{prefix}url' must be https://host[:port], not {url!r}")
            return "", 0
        if "@" in parts.netloc:   # the message must not repeat what is before the @
            self.problem(f"'{prefix}url' must not hold credentials: use '{prefix}user' and "
                         f"'{prefix}password_file'")
            return "", 0
        try:
            port = parts.port or 443
        except ValueError:
            self.problem(f"'{prefix}url' has an invalid port: {url!r}")
            return "", 0
        if not parts.hostname or parts.path not in ("", "/", "/sdk") or parts.query or parts.fragment:
            self.problem(f"'{prefix}url' must be https://host[:port] (optionally /sdk), not {url!r}")
            return "", 0
        return parts.hostname, port

    def password(self, data: Dict[str, Any], prefix: str) -> Optional[Secret]:
        has_inline, has_file = "password" in data, "password_file" in data
        if has_inline == has_file:
            self.problem(f"give exactly one of '{prefix}password' and '{prefix}password_file'")
            return None
        if has_inline:
            value = data["password"]
            if not isinstance(value, str) or not value:
                self.problem(f"'{prefix}password' must be a non-empty string")
                return None
            return Secret(value)
        path = self.file_name(data, "password_file", prefix)
        return self.read_password_file(path, prefix) if path else None

    def read_password_file(self, path: str, prefix: str) -> Optional[Secret]:
        try:
            with open(path, encoding="utf-8") as f:
                st = os.fstat(f.fileno())
                value = f.read().rstrip("\r\n")
        except OSError as e:
            self.problem(f"'{prefix}password_file' {path}: cannot read it: {e.strerror}")
            return None
        except UnicodeDecodeError:
            self.problem(f"'{prefix}password_file' {path}: not UTF-8 text")
            return None
        if not value:
            self.problem(f"'{prefix}password_file' {path} is empty")
            return None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("vsphere config %s: password file %s can be read by others than its owner "
                        "(mode %o): chmod 600 it", self.origin, path, stat.S_IMODE(st.st_mode))
        return Secret(value)

    def trust(self, data: Dict[str, Any], prefix: str) -> tuple:
        insecure = data.get("insecure", False)
        if not isinstance(insecure, bool):
            self.problem(f"'{prefix}insecure' must be true or false")
            insecure = False
        ca_file = self.file_name(data, "ca_file", prefix, required=False) or None
        if ca_file and insecure:
            self.problem(f"'{prefix}ca_file' and '{prefix}insecure' exclude each other")
        elif ca_file and not os.path.isfile(ca_file):
            self.problem(f"'{prefix}ca_file' {ca_file} is not a file")
        return ca_file, insecure

    def file_name(self, data: Dict[str, Any], key: str, prefix: str, required: bool = True) -> str:
        value = self.text(data, key, prefix, required)
        return os.path.join(self.base_dir, value) if value else ""

    def directory(self, data: Dict[str, Any], key: str) -> str:
        value = self.text(data, key)
        if value and not os.path.isabs(value):
            self.problem(f"'{key}' must be an absolute path, not {value!r}")
        return os.path.normpath(value) if value else ""

    def inventory_path(self, data: Dict[str, Any], key: str) -> str:
        value = data.get(key, "")
        if not isinstance(value, str):
            self.problem(f"'{key}' must be a string (a path such as \"Migrations/Wave 1\")")
            return ""
        parts = [p for p in value.strip().split("/") if p]
        return "/".join(parts)

    def networks(self, value: Any) -> Dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
            self.problem("'networks' must be an object from a source NIC name, MAC or \"*\" to a port group")
            return {}
        mapped = {}
        for key, port_group in value.items():
            if not isinstance(port_group, str) or not port_group.strip():
                self.problem(f"'networks' entry {key!r} must name a port group")
                continue
            mapped[key.lower() if _looks_like_mac(key) else key] = port_group.strip()
        return mapped


def _looks_like_mac(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)
