"""ChrootRunner for real: namespaces, a private /dev with the replica's block devices and
by-uuid links, nothing left mounted on the receiver, a timeout kills everything it started.

The chroot is a tiny tree holding the receiver's dash and the libraries ldd names (a
debootstrap would take minutes); the block device is a loop device over a 1 MiB file.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid as uuidlib

import pytest

from osam.fixup.chroot import ChrootRunner, split_dm_name
from osam.fixup.context import FixupError

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("losetup"),
                                reason="needs root, unshare and losetup (namespaces, mknod, loop devices)")

FS_UUID = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"


def _mounts_under(root) -> list:
    """Mount points at or below root in the receiver's mount table (other work on this
    machine may mount and unmount elsewhere meanwhile, so only root's subtree is compared)."""
    root = os.path.realpath(str(root))
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f.read().splitlines()]
    return [p for p in points if p == root or p.startswith(root + "/")]


def _tiny_root(root) -> str:
    """A root holding /bin/sh (the receiver's dash) and the libraries it links against."""
    sh = os.path.realpath("/bin/sh")
    os.makedirs(root / "bin")
    shutil.copy2(sh, root / "bin" / "sh")
    libs = re.findall(r"(/\S+\.so[.\d]*)", subprocess.run(["ldd", sh], capture_output=True, text=True).stdout)
    for lib in libs:
        dest = root / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)
    for directory in ("dev", "proc", "sys", "run", "tmp"):
        (root / directory).mkdir(exist_ok=True)
    return str(root)


@pytest.fixture
def loop_device(tmp_path):
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(1 << 20)
    device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True,
                            text=True).stdout.strip()
    yield device
    subprocess.run(["losetup", "-d", device], check=False)


def _sh(runner, script, timeout=60):
    done = runner(["/bin/sh", "-c", script], timeout=timeout)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def test_private_dev_has_the_devices_and_links_and_nothing_stays_mounted(tmp_path, loop_device):
    root = _tiny_root(tmp_path / "root")
    assert _mounts_under(root) == []
    runner = ChrootRunner(root, {"boot_disk": loop_device, "by_uuid": {FS_UUID: loop_device},
                                 "mapper": {"rhel-root": loop_device}})
    name = os.path.basename(loop_device)
    script = f"""
        for c in null zero full random urandom tty; do test -c /dev/$c || echo "no char $c"; done
        test -b /dev/{name} || echo "no block {name}"
        test -L /dev/disk/by-uuid/{FS_UUID} && test -b /dev/disk/by-uuid/{FS_UUID} || echo "no by-uuid link"
        test -b /dev/mapper/rhel-root || echo "no mapper node"
        test -b /dev/rhel/root || echo "no vg/lv link"
        test -d /proc/self && test -d /sys/block || echo "no proc or sys"
        echo "PATH=$PATH LANG=$LANG DEBIAN_FRONTEND=$DEBIAN_FRONTEND"
        while read -r line; do echo "net: $line"; done < /proc/net/dev
        while read -r line; do echo "mount: $line"; done < /proc/self/mountinfo
        echo "pid $$"
    """
    code, out, err = _sh(runner, script)
    assert code == 0, err
    assert "no " not in out, out
    assert "PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive" in out
    interfaces = [line.split(":")[1].strip() for line in out.splitlines()
                  if line.startswith("net: ") and ":" in line[5:] and "|" not in line]
    assert interfaces == ["lo"], out            # a network namespace of its own
    mounts_inside = [line for line in out.splitlines() if line.startswith("mount: ")]
    assert any(" /dev " in m and "tmpfs" in m for m in mounts_inside)
    assert not any(" /dev " in m and "devtmpfs" in m for m in mounts_inside)
    assert re.search(r"^pid [0-9]+$", out, re.M)
    # Nothing of the chroot is mounted on the receiver afterwards.
    assert _mounts_under(root) == []
    assert os.listdir(os.path.join(root, "dev")) == []


def test_exit_status_output_and_extra_environment(tmp_path):
    runner = ChrootRunner(_tiny_root(tmp_path / "root"))
    done = runner(["/bin/sh", "-c", 'echo "out $GRUB_DISABLE_OS_PROBER"; echo err >&2; exit 3'],
                  env={"GRUB_DISABLE_OS_PROBER": "true"})
    assert done.returncode == 3
    assert done.stdout == b"out true\n" and done.stderr == b"err\n"
    assert done.args == ["/bin/sh", "-c", 'echo "out $GRUB_DISABLE_OS_PROBER"; echo err >&2; exit 3']


def test_a_command_missing_in_the_replica_fails_cleanly(tmp_path):
    root = _tiny_root(tmp_path / "root")
    done = ChrootRunner(root)(["update-initramfs", "-u"])
    assert done.returncode != 0
    assert _mounts_under(root) == []


def test_timeout_kills_every_process_it_started(tmp_path):
    root = _tiny_root(tmp_path / "root")
    runner = ChrootRunner(root)
    marker = f"osam-timeout-{uuidlib.uuid4().hex}"
    started = time.monotonic()
    with pytest.raises(FixupError, match="did not finish within 1 s"):
        # a child in its own background job as well as the foreground loop
        runner(["/bin/sh", "-c", f"(while :; do :; done) & while :; do :; done # {marker}"], timeout=1)
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert not _processes_with(marker)
    assert _mounts_under(root) == []


def test_missing_mount_points_are_created_and_symlinked_ones_refused(tmp_path):
    root = tmp_path / "root"
    _tiny_root(root)
    os.rmdir(root / "run")
    code, _, err = _sh(ChrootRunner(str(root)), "test -d /run")
    assert code == 0, err
    os.rmdir(root / "proc")
    os.symlink("/proc", root / "proc")
    with pytest.raises(FixupError, match="/proc is not a directory"):
        ChrootRunner(str(root))(["/bin/sh", "-c", "true"])


def test_device_paths_must_stay_below_dev(tmp_path):
    runner = ChrootRunner(str(tmp_path), {"nodes": ["/dev/../etc/passwd"]})
    with pytest.raises(FixupError, match="not a device path"):
        runner.script({})


def test_device_mapper_names():
    assert split_dm_name("rhel-root") == ("rhel", "root")
    assert split_dm_name("my--vg-lv--data") == ("my-vg", "lv-data")
    assert split_dm_name("nodash") is None


def _processes_with(marker: str) -> list:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found
