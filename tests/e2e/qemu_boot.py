"""Boot guest disks under qemu (always ``-accel tcg``, always ``-snapshot``: an image is never
modified) on vSphere's virtual hardware (pvscsi + vmxnet3) or a KVM machine's (virtio), and
read what booted from the serial console.

The guests of ``scripts/guest-image.sh`` log root in on ttyS0, print a block between
``=== BOOT-PROOF BEGIN ===`` and ``=== BOOT-PROOF END ===`` of ``key: value`` lines and power
off; :func:`boot` parses it into :class:`BootProof`. A boot also ends early when the guest
cannot go on (the initramfs gives up on its root and drops to its shell, a kernel panic),
when qemu exits, or at the timeout. qemu never outlives :func:`boot`.
"""
from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"
BEGIN, END = "=== BOOT-PROOF BEGIN ===", "=== BOOT-PROOF END ==="
HARDWARE = ("vsphere", "kvm")

# First console line of each milestone, as seconds since qemu started in BootResult.timings.
MILESTONES = {
    "linux_version": re.compile(r"Linux version \d"),
    "root_mounted": re.compile(r"EXT4-fs \((?:sd|vd)a\d+\): mounted filesystem"),
    "multi_user": re.compile(r"Reached target.*Multi-User"),
    "no_root": re.compile(r"Gave up waiting for root|ALERT!.* does not exist"),
    "end": re.compile(re.escape(END)),
    "power_down": re.compile(r"reboot: Power down"),
}
# Console text after which the guest goes no further: the boot stops there.
DEAD_ENDS = {
    "initramfs_shell": re.compile(r"\(initramfs\) ?$"),
    "kernel_panic": re.compile(r"Kernel panic - not syncing"),
}
ROOT_MOUNT = re.compile(r"EXT4-fs \(((?:sd|vd)a\d+)\): mounted filesystem")
# After the END marker the guest powers itself off; give it this long before qemu is killed.
POWER_OFF_GRACE = 20.0


@dataclass
class BootProof:
    """The guest's own report, from its BOOT-PROOF block."""
    state: str = ""
    failed_units: list = field(default_factory=list)
    hostname: str = ""
    root_source: str = ""
    root_fstype: str = ""
    cmdline: str = ""
    addresses: dict = field(default_factory=dict)  # ifname -> [cidr, ...]
    drivers: dict = field(default_factory=dict)    # eth0/sda/vda -> kernel driver
    swap: list = field(default_factory=list)       # active swap devices

    @classmethod
    def parse(cls, lines) -> "BootProof":
        proof = cls()
        for line in lines:
            key, sep, value = line.partition(": ")
            if sep:
                proof._take(key.strip(), value.strip())
        return proof

    def _take(self, key: str, value: str) -> None:
        words = value.split()
        if key == "state":
            self.state = value
        elif key == "failed":
            self.failed_units = words
        elif key == "hostname":
            self.hostname = value
        elif key == "root" and len(words) == 2:
            self.root_source, self.root_fstype = words
        elif key == "cmdline":
            self.cmdline = value
        elif key == "addr" and words:  # ip -br addr: name state cidr...
            self.addresses[words[0].split("@")[0]] = words[2:]
        elif key == "driver" and len(words) == 2:
            self.drivers[words[0]] = words[1]
        elif key == "swap" and words:
            self.swap.append(words[0])


@dataclass
class BootResult:
    hardware: str
    outcome: str            # end | power_down | initramfs_shell | kernel_panic | exited | timeout
    duration: float         # seconds from qemu's start until it exited or was stopped
    timings: dict           # milestone -> seconds since qemu started (MILESTONES)
    log_path: Path
    lines: list             # (seconds, text) of every console line
    proof: BootProof | None  # None unless the whole block arrived
    root_mounted_on: str = ""  # the partition the kernel mounted as ext4 first, e.g. sda1

    @property
    def booted(self) -> bool:
        return self.proof is not None

    @property
    def root_uuid(self) -> str:
        m = re.search(r"\broot=UUID=(\S+)", self.proof.cmdline if self.proof else self._kernel_cmdline())
        return m.group(1) if m else ""

    @property
    def root_by_uuid(self) -> bool:
        """The kernel was told root=UUID= and mounted an ext4 partition of the first disk."""
        return bool(self.root_uuid and self.root_mounted_on)

    def seen(self, pattern: str) -> bool:
        return any(re.search(pattern, text) for _, text in self.lines)

    def text(self) -> str:
        return "\n".join(text for _, text in self.lines)

    def tail(self, n: int = 40) -> str:
        """The console's last lines, for an assertion message."""
        return f"console log {self.log_path}, last lines:\n" + "\n".join(t for _, t in self.lines[-n:])

    def summary(self) -> str:
        marks = ", ".join(f"{name} {at:.1f}s" for name, at in sorted(self.timings.items(), key=lambda kv: kv[1]))
        return f"{self.hardware}: {self.outcome} after {self.duration:.1f}s ({marks})"

    def _kernel_cmdline(self) -> str:
        for _, text in self.lines:
            if "Command line:" in text:
                return text
        return ""


def qemu_available() -> bool:
    return shutil.which(QEMU) is not None


def _disk_format(path: Path) -> str:
    """raw, or vmdk for a VMware descriptor (its -flat.vmdk extent alone is raw)."""
    with open(path, "rb") as f:
        return "vmdk" if f.read(21) == b"# Disk DescriptorFile" else "raw"


def qemu_argv(image_paths, hardware: str, mac: str | None = None) -> list:
    if hardware not in HARDWARE:
        raise ValueError(f"hardware must be one of {HARDWARE}, not {hardware!r}")
    argv = [QEMU, "-accel", "tcg", "-smp", "2", "-m", "1024", "-display", "none",
            "-monitor", "none", "-serial", "stdio", "-snapshot"]
    if hardware == "vsphere":
        argv += ["-device", "pvscsi,id=scsi0"]
    for i, path in enumerate(image_paths):
        argv += ["-drive", f"file={path},format={_disk_format(Path(path))},if=none,id=d{i}"]
        disk = (f"scsi-hd,drive=d{i},bus=scsi0.0,scsi-id={i}" if hardware == "vsphere"
                else f"virtio-blk-pci,drive=d{i}")
        argv += ["-device", disk + (",bootindex=0" if i == 0 else "")]
    nic = "vmxnet3" if hardware == "vsphere" else "virtio-net-pci"
    argv += ["-netdev", "user,id=n0", "-device", f"{nic},netdev=n0" + (f",mac={mac}" if mac else "")]
    return argv


class _Console:
    """Splits qemu's output into lines (serial lines end in \\r\\n), stamps and logs them, and
    notes milestones, dead ends and the BOOT-PROOF block."""

    def __init__(self, log, t0: float):
        self.log, self.t0 = log, t0
        self.lines, self.timings = [], {}
        self.block, self.in_block, self.outcome = [], False, ""
        self.partial = b""

    def feed(self, data: bytes) -> None:
        *complete, self.partial = (self.partial + data).split(b"\n")
        for raw in complete:
            self._line(raw.decode("utf-8", "replace").replace("\r", "").rstrip())
        # A shell prompt has no newline after it: look at the unfinished line too.
        self._dead_end(self.partial.decode("utf-8", "replace").replace("\r", "").rstrip())
        self.log.flush()  # so that the log can be followed while the guest boots

    def close(self) -> None:
        if self.partial:
            self._line(self.partial.decode("utf-8", "replace").replace("\r", "").rstrip())
            self.partial = b""
        self.log.flush()

    def _line(self, text: str) -> None:
        now = time.monotonic() - self.t0
        self.lines.append((now, text))
        self.log.write(f"[{now:8.2f}] {text}\n")
        for name, pattern in MILESTONES.items():
            if name not in self.timings and pattern.search(text):
                self.timings[name] = now
        if text.endswith(BEGIN):
            self.in_block, self.block = True, []
        elif text.endswith(END) and self.in_block:
            self.in_block = False
            self.outcome = self.outcome or "end"
        elif self.in_block:
            self.block.append(text)
        self._dead_end(text)

    def _dead_end(self, text: str) -> None:
        for name, pattern in DEAD_ENDS.items():
            if not self.outcome and pattern.search(text):
                self.timings.setdefault(name, time.monotonic() - self.t0)
                self.outcome = name


def _stop(proc: subprocess.Popen) -> None:
    """Kill qemu and reap it (-snapshot: nothing of the guest's is worth a clean shutdown)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def boot(image_paths, *, hardware: str = "vsphere", timeout: float = 600, log_path,
         mac: str | None = None) -> BootResult:
    """Boot ``image_paths`` (the first one boots) on ``hardware`` and watch the serial console,
    streamed to ``log_path`` with timestamps, until the guest's BOOT-PROOF END marker (then up
    to POWER_OFF_GRACE seconds for it to power off), a dead end, qemu's exit or ``timeout``."""
    image_paths = [Path(p) for p in ([image_paths] if isinstance(image_paths, (str, Path)) else image_paths)]
    log_path = Path(log_path)
    argv = qemu_argv(image_paths, hardware, mac)
    t0 = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("# " + " ".join(argv) + "\n")
        console = _Console(log, t0)
        # Own session: a terminal's Ctrl-C reaches us, and we kill qemu's whole group.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _watch(proc, console, t0 + timeout)
        finally:
            _stop(proc)
            console.close()
        proc.stdout.close()
    duration = time.monotonic() - t0
    outcome = console.outcome or ("timeout" if proc.returncode == -signal.SIGKILL else "exited")
    if outcome == "exited" and console.timings.get("power_down") is not None:
        outcome = "power_down"
    mounted = next((m.group(1) for _, t in console.lines if (m := ROOT_MOUNT.search(t))), "")
    complete = console.outcome == "end"  # a BEGIN ... END block, not just an END line
    return BootResult(hardware=hardware, outcome=outcome, duration=duration, timings=dict(console.timings),
                      log_path=log_path, lines=console.lines,
                      proof=BootProof.parse(console.block) if complete else None, root_mounted_on=mounted)


def _watch(proc: subprocess.Popen, console: _Console, deadline: float) -> None:
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if console.outcome == "end":  # the guest powers off by itself: wait a little for it
                deadline = min(deadline, console.t0 + console.timings["end"] + POWER_OFF_GRACE)
            elif console.outcome:
                return
            if now >= deadline:
                return
            if not sel.select(min(1.0, deadline - now)):
                continue
            data = os.read(fd, 65536)
            if not data:  # qemu exited (the guest powered off, or qemu failed)
                return
            console.feed(data)
