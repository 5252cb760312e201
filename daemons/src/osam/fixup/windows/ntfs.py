"""The replica's NTFS volumes, found in its disk images and mounted with ntfs-3g.

Each image holds a whole source disk (partition table and partitions, byte for byte). A
partition is reached through a loop device over its byte range (losetup --offset
--sizelimit) and mounted with ntfs-3g. Loop devices and mounts are always released, also on
errors; the ones a killed run left behind are found by their backing file and released
first.

ntfs-3g falls back to a read-only mount, exit status 0, when Windows was hibernated or shut
down with Fast Startup (its metadata is still in the hibernation file). Removing that file
(remove_hiberfile) would throw away whatever Windows had not written yet, so such a volume is
refused and the operator is told to disable Fast Startup on the source.

NTFS names are case-insensitive for Windows but ntfs-3g looks them up as written, so guest
paths are resolved one component at a time, ignoring case, and never through a symlink
(ntfs-3g shows junctions as symlinks that could lead out of the volume).
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Iterator, List, Optional

from .errors import WindowsFixupError

NTFS_OEM_ID = b"NTFS    "
SECTOR = 512
COMMAND_TIMEOUT = 120
# What ntfs-3g says about a volume it will only mount read-only.
UNSAFE_MARKERS = ("hibernated", "windows cache", "unsafe state", "fast restart")
FAST_STARTUP_ADVICE = (
    "Windows on the source was hibernated or shut down with Fast Startup, so the volume holds "
    "metadata Windows has not written back: disable Fast Startup on the source (Control Panel > "
    "Power Options > 'Turn on fast startup' off, or `powercfg /h off` as administrator), shut it "
    "down or restart it fully, run a final sync again, then retry the fix-up")


@dataclass
class Partition:
    image: str
    number: int          # 1-based, 0: the whole image is one volume (no partition table)
    start: int           # bytes
    size: int            # bytes
    type: str            # GPT type GUID or MBR type code, as sfdisk shows it

    def describe(self) -> str:
        where = f"partition {self.number}" if self.number else "whole image"
        return f"{self.image} ({where}, offset {self.start}, {self.size} bytes)"

    def as_dict(self) -> dict:
        return asdict(self)


def run(argv: List[str], what: str, *, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError as exc:
        raise WindowsFixupError(f"{what}: {argv[0]} is not installed on the receiver "
                                f"(install the ntfs-3g, fdisk and mount packages)") from exc
    except subprocess.TimeoutExpired as exc:
        raise WindowsFixupError(f"{what}: {' '.join(argv)} did not finish in {COMMAND_TIMEOUT} s") from exc
    if check and done.returncode != 0:
        raise WindowsFixupError(f"{what}: {' '.join(argv)} exited {done.returncode}: "
                                f"{(done.stderr or done.stdout).strip()[-1000:]}")
    return done


# -- partitions ----------------------------------------------------------------------------------
def partitions(image: str) -> List[Partition]:
    """The image's partitions (MBR or GPT); a bare NTFS volume without a partition table
    counts as one partition, numbered 0."""
    done = run(["sfdisk", "--json", image], f"reading the partition table of {image}", check=False)
    if done.returncode != 0 or not done.stdout.strip():
        if is_ntfs(image, 0):
            return [Partition(image, 0, 0, os.path.getsize(image), "")]
        return []
    table = json.loads(done.stdout).get("partitiontable") or {}
    sector = int(table.get("sectorsize") or SECTOR)
    found = []
    for index, part in enumerate(table.get("partitions") or [], start=1):
        found.append(Partition(image, _number(part.get("node", ""), index), int(part["start"]) * sector,
                               int(part["size"]) * sector, str(part.get("type", ""))))
    return found


def _number(node: str, fallback: int) -> int:
    digits = ""
    for ch in reversed(node):
        if not ch.isdigit():
            break
        digits = ch + digits
    return int(digits) if digits else fallback


def is_ntfs(image: str, offset: int) -> bool:
    """NTFS boot sectors carry the OEM id "NTFS    " at byte 3."""
    try:
        with open(image, "rb") as f:
            f.seek(offset + 3)
            return f.read(8) == NTFS_OEM_ID
    except OSError:
        return False


def ntfs_partitions(images: List[str]) -> List[Partition]:
    return [p for image in images for p in partitions(image) if is_ntfs(image, p.start)]


# -- loop devices and mounts ---------------------------------------------------------------------
def loop_devices_of(image: str) -> List[str]:
    """Loop devices backed by `image` (by the kernel's record of their backing file)."""
    wanted = os.path.realpath(image)
    found = []
    for name in sorted(os.listdir("/sys/block")):
        if not name.startswith("loop"):
            continue
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                backing = f.read().strip()
        except OSError:
            continue
        if backing.removesuffix(" (deleted)") == wanted:
            found.append(f"/dev/{name}")
    return found


def mounts_of(device: str) -> List[str]:
    """Mount points whose source is `device`, from /proc/self/mountinfo."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields, rest = head.split(), tail.split()
            if len(fields) >= 5 and len(rest) >= 2 and rest[1] == device:
                points.append(_unescape(fields[4]))
    return points


def mount_options(mount_point: str) -> List[str]:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" - ")[0].split()
            if len(fields) >= 6 and _unescape(fields[4]) == mount_point:
                return fields[5].split(",")
    return []


def _unescape(text: str) -> str:
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, ch)
    return text


def release_stale(images: List[str], mount_base: str) -> List[str]:
    """Unmount and detach what a killed run left for these images; refuse when one of
    them is mounted somewhere this fix-up does not own. Returns what was released."""
    released = []
    base = os.path.realpath(mount_base) + os.sep
    for image in images:
        for device in loop_devices_of(image):
            for point in mounts_of(device):
                if not (os.path.realpath(point) + os.sep).startswith(base):
                    raise WindowsFixupError(
                        f"{image} is in use: {device} is mounted at {point}; unmount it "
                        f"(umount {point}; losetup -d {device}) and retry")
                unmount(point)
                released.append(point)
            detach(device)
            released.append(device)
    return released


def attach(part: Partition, read_only: bool) -> str:
    argv = ["losetup", "--find", "--show", "--offset", str(part.start), "--sizelimit", str(part.size)]
    if read_only:
        argv.append("--read-only")
    return run(argv + [part.image], f"attaching {part.describe()}").stdout.strip()


def detach(device: str) -> None:
    # Right after an unmount the device can still be busy for a moment.
    for _ in range(20):
        if run(["losetup", "-d", device], f"detaching {device}", check=False).returncode == 0:
            return
        if not os.path.exists(f"/sys/block/{os.path.basename(device)}/loop"):
            return
        time.sleep(0.25)
    run(["losetup", "-d", device], f"detaching {device}")


def mount(device: str, mount_point: str, read_only: bool, what: str) -> None:
    os.makedirs(mount_point, exist_ok=True)
    options = "ro" if read_only else "rw"
    done = run(["ntfs-3g", "-o", options, device, mount_point], f"mounting {what}", check=False)
    message = (done.stderr or "") + (done.stdout or "")
    unsafe = any(marker in message.lower() for marker in UNSAFE_MARKERS)
    if done.returncode != 0:
        if unsafe:
            raise WindowsFixupError(f"{what}: {FAST_STARTUP_ADVICE} (ntfs-3g: {message.strip()[-400:]})")
        raise WindowsFixupError(f"mounting {what}: ntfs-3g exited {done.returncode}: {message.strip()[-1000:]}")
    if not read_only and (unsafe or "rw" not in mount_options(mount_point)):
        unmount(mount_point)
        raise WindowsFixupError(f"{what}: {FAST_STARTUP_ADVICE} (ntfs-3g: {message.strip()[-400:]})")


def unmount(mount_point: str) -> None:
    # fuseblk unmounts wait for ntfs-3g to write everything back.
    done = run(["umount", mount_point], f"unmounting {mount_point}", check=False)
    if done.returncode != 0 and os.path.ismount(mount_point):
        time.sleep(1)
        run(["umount", mount_point], f"unmounting {mount_point}")


@contextlib.contextmanager
def mounted(part: Partition, mount_point: str, *, read_only: bool) -> Iterator[str]:
    """The partition mounted at mount_point for the duration of the block."""
    device = attach(part, read_only)
    try:
        mount(device, mount_point, read_only, part.describe())
        try:
            yield mount_point
        finally:
            unmount(mount_point)
    finally:
        detach(device)


# -- paths inside a volume -------------------------------------------------------------------
def find(root: str, relative: str) -> Optional[str]:
    """The host path of `relative` ("Windows/System32/config/SYSTEM") under root, each
    component matched ignoring case; None when a component is missing or a symlink."""
    path = root
    for part in [p for p in relative.replace("\\", "/").split("/") if p]:
        path = _child(path, part)
        if path is None:
            return None
    return path


def _child(directory: str, name: str) -> Optional[str]:
    exact = os.path.join(directory, name)
    if os.path.lexists(exact):
        return None if os.path.islink(exact) else exact
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    folded = name.casefold()
    for entry in entries:
        if entry.casefold() == folded:
            path = os.path.join(directory, entry)
            return None if os.path.islink(path) else path
    return None


def ensure_dir(root: str, relative: str) -> str:
    """As find(), creating missing directories (with the name as given)."""
    path = root
    for part in [p for p in relative.replace("\\", "/").split("/") if p]:
        child = _child(path, part)
        if child is None:
            child = os.path.join(path, part)
            if os.path.lexists(child):
                raise WindowsFixupError(f"{child} is a link or junction; refusing to write through it")
            os.mkdir(child)
        elif not os.path.isdir(child):
            raise WindowsFixupError(f"{child} is not a directory")
        path = child
    return path
