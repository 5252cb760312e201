"""Runs a command inside the mounted replica, isolated from the receiver.

util-linux `unshare` gives the command new mount, PID, network, IPC and UTS namespaces: the
/dev, /proc, /sys, /run and /tmp mounted for it exist only in its mount namespace and vanish
with it, so nothing is ever left mounted on the receiver; it sees no network (a package
script cannot fetch anything) and no receiver process. /dev is a private tmpfs holding only
the basic character devices, the replica's block devices the receiver names (same
major/minor as the receiver's nodes) and /dev/disk/by-uuid links to them, which is what
grub-mkconfig, grub-install and dracut look at. /run being empty also tells Debian's
maintainer scripts that no systemd runs, so they start no service.

A command that outlives its timeout is killed with its whole process group; the PID
namespace then takes any process that escaped the group along with its init.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import subprocess
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .context import FixupError, Runner

BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root", "TERM": "dumb"}
CHAR_DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "console")
# Mount points of the chroot: (directory, mount command arguments, required).
MOUNTS = (
    ("dev", "-t tmpfs -o mode=0755,nosuid,size=16m osam-dev", True),
    ("proc", "-t proc -o nosuid,nodev,noexec proc", True),
    ("sys", "-t sysfs -o ro,nosuid,nodev,noexec sysfs", True),
    ("run", "-t tmpfs -o mode=0755,nosuid,nodev osam-run", False),
    ("tmp", "-t tmpfs -o mode=1777,nosuid,nodev osam-tmp", False),
)
_SAFE_UUID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


class ChrootRunner(Runner):
    """Runner of the fix-up steps' commands inside the replica mounted at `root`.

    devices: {"boot_disk": "/dev/loop7", "by_uuid": {uuid: "/dev/loop7p1"},
              "nodes": [extra device paths], "mapper": {"vg-root": "/dev/loop9"}} — receiver
    device paths; each appears at the same path inside (a mapper entry at /dev/mapper/<name>,
    with a /dev/<vg>/<lv> link)."""

    def __init__(self, root: str, devices: Optional[Dict[str, Any]] = None, *, unshare: str = "unshare"):
        self.root = os.path.realpath(root)
        self.devices = devices or {}
        self.unshare = unshare

    def __call__(self, argv: Sequence[str], *, env: Optional[Dict[str, str]] = None,
                 timeout: float = 1800) -> subprocess.CompletedProcess:
        if not argv:
            raise FixupError("no command to run in the replica")
        script = self.script(env or {})
        command = [self.unshare, "--mount", "--pid", "--net", "--ipc", "--uts", "--fork",
                   "--kill-child", "--propagation", "private",
                   "/bin/sh", "-c", script, "osam-chroot", *argv]
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise FixupError(f"{' '.join(argv)} did not finish within {timeout:g} s in the replica; "
                             f"it was killed") from None
        except BaseException:
            _kill_group(proc)
            raise
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    # -- the namespace's setup script ---------------------------------------------------------
    def script(self, env: Dict[str, str]) -> str:
        root = shlex.quote(self.root)
        lines = ["set -eu", f"root={root}"]
        for directory, options, required in MOUNTS:
            if self._mountpoint_ready(directory, required):
                lines.append(f'mount {options} "$root/{directory}"')
        lines += self._dev_lines()
        environment = {**BASE_ENV, **{k: v for k, v in env.items() if _is_env_name(k)}}
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in environment.items())
        # sh stays PID 1 of the namespace and returns the command's status.
        lines.append(f'env -i {assignments} chroot "$root" "$@"')
        return "\n".join(lines) + "\n"

    def _mountpoint_ready(self, directory: str, required: bool) -> bool:
        """A real directory of the replica (created when missing); a symlink is never
        mounted over, since mount would follow it."""
        path = os.path.join(self.root, directory)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o1777 if directory == "tmp" else 0o755)
            return True
        if stat.S_ISDIR(st.st_mode):
            return True
        if required:
            raise FixupError(f"the replica's /{directory} is not a directory; cannot run commands in it")
        return False

    def _dev_lines(self) -> List[str]:
        lines = ['d="$root/dev"', 'mkdir -p "$d/pts" "$d/shm" "$d/disk/by-uuid" "$d/mapper"',
                 'ln -s /proc/self/fd "$d/fd"', 'ln -s /proc/self/fd/0 "$d/stdin"',
                 'ln -s /proc/self/fd/1 "$d/stdout"', 'ln -s /proc/self/fd/2 "$d/stderr"',
                 'mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$d/pts" 2>/dev/null '
                 '&& ln -s pts/ptmx "$d/ptmx" || true']
        for name in CHAR_DEVICES:
            if os.path.exists(f"/dev/{name}"):
                lines.append(_mknod_line(f"/dev/{name}", f"/dev/{name}", 0o666))
        for inside, host in self.device_nodes():
            parent = os.path.dirname(inside)
            if parent != "/dev":
                lines.append(f'mkdir -p "$root"{shlex.quote(parent)}')
            lines.append(_mknod_line(inside, host, 0o660))
        for uuid, host in sorted((self.devices.get("by_uuid") or {}).items()):
            if not _SAFE_UUID.match(uuid):
                raise FixupError(f"not a file system UUID: {uuid!r}")
            target = "../.." + _inside_dev(host)[len("/dev"):]
            lines.append(f'ln -s {shlex.quote(target)} "$d/disk/by-uuid/"{shlex.quote(uuid)}')
        for vg, lv, name in self._lvm_links():
            lines.append(f'mkdir -p "$d/"{shlex.quote(vg)}')
            lines.append(f'ln -s ../mapper/{shlex.quote(name)} "$d/"{shlex.quote(vg + "/" + lv)}')
        return lines

    def device_nodes(self) -> List[Tuple[str, str]]:
        """(path inside the chroot, receiver's node) of every block device to make."""
        nodes: Dict[str, str] = {}
        paths = [self.devices.get("boot_disk") or ""]
        paths += list((self.devices.get("by_uuid") or {}).values())
        paths += list(self.devices.get("nodes") or [])
        for path in paths:
            if path:
                nodes[_inside_dev(path)] = path
        mapper = self.devices.get("mapper") or {}
        for name, host in mapper.items():
            nodes[_inside_dev(f"/dev/mapper/{name}")] = host
        if mapper and os.path.exists("/dev/mapper/control"):
            nodes["/dev/mapper/control"] = "/dev/mapper/control"
        return sorted(nodes.items())

    def _lvm_links(self) -> List[Tuple[str, str, str]]:
        links = []
        for name in sorted(self.devices.get("mapper") or {}):
            split = split_dm_name(name)
            if split:
                links.append((split[0], split[1], name))
        return links


def _inside_dev(path: str) -> str:
    """A device path checked to stay below /dev (no '..', no odd characters)."""
    norm = os.path.normpath(path)
    if not norm.startswith("/dev/") or ".." in norm.split("/") or not re.match(r"^[\w/.:+@-]+$", norm):
        raise FixupError(f"not a device path: {path!r}")
    return norm


def _mknod_line(inside: str, host: str, mode: int) -> str:
    try:
        st = os.stat(host)
    except OSError as exc:
        raise FixupError(f"device {host} for the replica's chroot: {exc.strerror}") from None
    if stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISCHR(st.st_mode):
        kind = "c"
    else:
        raise FixupError(f"{host} is not a device node")
    return (f'mknod -m {mode:o} "$root"{shlex.quote(inside)} {kind} '
            f'{os.major(st.st_rdev)} {os.minor(st.st_rdev)}')


def split_dm_name(name: str) -> Optional[Tuple[str, str]]:
    """("my-vg", "root") for the device-mapper name "my--vg-root" (LVM doubles dashes)."""
    match = re.fullmatch(r"((?:[^-]|--)+)-((?:[^-]|--)+)", name)
    if not match:
        return None
    return match.group(1).replace("--", "-"), match.group(2).replace("--", "-")


def _is_env_name(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()
