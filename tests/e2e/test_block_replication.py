"""End to end in block mode, as a Windows guest replicates: a 2 GiB disk image with a GPT label
and an NTFS partition (mkntfs), in use through an ntfs-3g mount while it is replicated by the
real sentinel (--mode block), gateway and receiver. Files change during continuous sync; the
quiesce unmounts the volume (the pre-quiesce hook), the final sync and its manifest check
follow, and the replica image must be the source image byte for byte and mount as NTFS with
the same files."""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.site import wait_for

pytestmark = [pytest.mark.need_root, pytest.mark.e2e, pytest.mark.slow]

DISK = 2 << 30
PART_START = 1 << 20
MARKER = b"osam-block-e2e-marker-" + os.urandom(8).hex().encode()


def sh(*argv, **kw) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, **kw).stdout


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


class NtfsDisk:
    """A GPT disk image whose one partition is NTFS, mountable with ntfs-3g through a loop device."""

    def __init__(self, image: Path, mount: Path):
        self.image, self.mount = image, mount
        self.loop = None

    def create(self) -> None:
        with open(self.image, "wb") as f:
            f.truncate(DISK)
        sh("sfdisk", "--quiet", self.image, input=f"label: gpt\nstart={PART_START // 512}, "
                                                   "type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=\"Basic data\"\n")
        self.attach()
        sh("mkntfs", "--quick", "--force", "--label", "OSAMDATA", self.loop)

    def attach(self, read_only: bool = False) -> None:
        size = DISK - PART_START - (1 << 20)
        self.loop = sh("losetup", "--find", "--show", "--offset", PART_START, "--sizelimit", size,
                       *(["--read-only"] if read_only else []), self.image).strip()

    def mount_rw(self) -> None:
        self.mount.mkdir(exist_ok=True)
        sh("ntfs-3g", self.loop, self.mount)

    def mount_ro(self) -> None:
        self.mount.mkdir(exist_ok=True)
        sh("ntfs-3g", "-o", "ro", self.loop, self.mount)

    def release(self) -> None:
        if os.path.ismount(self.mount):
            subprocess.run(["umount", str(self.mount)], check=False)
        if self.loop:
            subprocess.run(["losetup", "-d", self.loop], check=False)
            self.loop = None


@pytest.fixture
def ntfs_source(tmp_path):
    disk = NtfsDisk(tmp_path / "windows-disk.img", tmp_path / "C")
    try:
        disk.create()
        disk.mount_rw()
        yield disk
    finally:
        disk.release()


def write_data(root: Path, seed: int) -> None:
    """A few hundred MiB as a system volume holds them: big and small files, some compressible."""
    rnd = random.Random(seed)
    for d in ("Windows/System32/config", "Program Files/App", "Users/alice/Documents"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "Windows/System32/config/SYSTEM").write_bytes(rnd.randbytes(12 << 20))
    (root / "Program Files/App/app.bin").write_bytes(rnd.randbytes(96 << 20))
    (root / "Program Files/App/app.log").write_bytes(b"log line: all is well\r\n" * 200_000)
    for i in range(300):
        (root / "Users/alice/Documents" / f"note-{i:03d}.txt").write_bytes(rnd.randbytes(rnd.randint(100, 64 << 10)))


def change_data(root: Path) -> None:
    rnd = random.Random(99)
    with open(root / "Program Files/App/app.bin", "r+b") as f:      # blocks rewritten in place
        for _ in range(20):
            f.seek(rnd.randrange(0, 96 << 20))
            f.write(rnd.randbytes(4096))
    for i in range(0, 300, 3):
        (root / "Users/alice/Documents" / f"note-{i:03d}.txt").unlink()  # freed clusters
    (root / "Users/alice/Documents/new.bin").write_bytes(MARKER + rnd.randbytes(8 << 20))


def listing(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        for name in dirnames:
            out[str((Path(dirpath) / name).relative_to(root)) + "/"] = "dir"
    return out


def image_has(path: Path, needle: bytes) -> bool:
    """Whether the replica image holds `needle` (reading only its data, not its holes)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos = os.fstat(fd).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                return False
            end = os.lseek(fd, start, os.SEEK_HOLE)
            while start < end:
                chunk = os.pread(fd, min(64 << 20, end - start) + len(needle), start)
                if needle in chunk:
                    return True
                start += 64 << 20
            pos = end
        return False
    finally:
        os.close(fd)


def test_an_ntfs_disk_replicates_block_by_block_to_an_identical_image(site, ntfs_source, tmp_path):
    if shutil.which("ntfs-3g") is None or shutil.which("mkntfs") is None:
        pytest.skip("needs ntfs-3g (Debian package ntfs-3g)")
    write_data(ntfs_source.mount, seed=1)
    sh("sync")
    etc = site.base / "etc-win"
    (etc / "etc").mkdir(parents=True)
    # The quiesce brings the volume to rest as VSS would: here by unmounting it.
    (etc / "etc" / "sync.params").write_text(f"pre_quiesce_hook=umount {ntfs_source.mount}\n")
    site.start_receiver(replica_format="disk")
    site.start_gateway()
    site.start_sentinel("winguest", ntfs_source.mount, etc,
                        extra=["--mode", "block", "--disk", f"PhysicalDrive0={ntfs_source.image}",
                               "--rescan-interval", "0.5"])
    wait_for(lambda: site.guest("winguest"), 30, "the guest to register")
    replication = site.guest("winguest")["inventory"]["replication"]
    assert replication == {"mode": "block", "block_size": 1 << 20,
                           "disks": [{"name": "PhysicalDrive0", "path": str(ntfs_source.image), "size": DISK}]}

    assert site.osamctl("migrate", "winguest", "--switchover", "manual").returncode == 0
    site.wait_phase("winguest", "continuous_sync", 240)
    m = wait_for(lambda: site.migration("winguest")["last_sync_at"] and site.migration("winguest"), 120,
                 "the first continuous pass")
    replica_image = site.data / "replicas" / "winguest" / "disks" / "PhysicalDrive0.raw"
    assert replica_image.stat().st_size == DISK
    # Free space stays holes: far less is allocated than the disk's size.
    assert replica_image.stat().st_blocks * 512 < 400 << 20, m

    change_data(ntfs_source.mount)
    sh("sync")
    wait_for(lambda: image_has(replica_image, MARKER), 120, "continuous sync to carry a new file")

    (ntfs_source.mount / "written-last.txt").write_bytes(b"just before the switchover\r\n")
    expected_files = listing(ntfs_source.mount)
    assert site.osamctl("switchover", "winguest").returncode == 0
    done = site.wait_phase("winguest", "completed", 240)
    assert [h["to"] for h in done["history"]][-8:] == ["final_sync", "fixup", "replica_vm", "tools",
                                                      "replica_on", "source_off", "network", "completed"]
    assert not os.path.ismount(ntfs_source.mount), "the quiesce hook unmounted the volume"

    # Byte for byte the source disk, and a mountable NTFS with the same files.
    assert sha256(replica_image) == sha256(ntfs_source.image)
    copy = NtfsDisk(replica_image, tmp_path / "replica-C")
    try:
        copy.attach(read_only=True)
        copy.mount_ro()
        assert listing(copy.mount) == expected_files
        assert (copy.mount / "written-last.txt").read_bytes() == b"just before the switchover\r\n"
    finally:
        copy.release()
    log = site.receiver.log()
    assert "final manifest matches" in log, log[-3000:]


def test_a_receiver_killed_during_a_block_full_sync_resumes_at_its_checkpoint(site, tmp_path):
    """Blocks are written in place; a restarted receiver resumes the full sync at the last
    checkpoint's cursor, and the image still ends up identical."""
    image = tmp_path / "disk.img"
    size = 1 << 30
    rnd = random.Random(5)
    with open(image, "wb") as f:
        f.truncate(size)
        for offset in range(0, 768 << 20, 16 << 20):
            f.seek(offset)
            f.write(rnd.randbytes(12 << 20))      # data with gaps of zeros between
    site.start_receiver(replica_format="disk")
    site.start_gateway()
    site.start_sentinel("blockguest", tmp_path, extra=["--mode", "block", "--disk", f"disk0={image}"])
    wait_for(lambda: site.guest("blockguest"), 30, "the guest to register")
    assert site.osamctl("migrate", "blockguest", "--switchover", "immediate").returncode == 0
    site.wait_phase("blockguest", "full_sync", 60)
    wait_for(lambda: (site.migration("blockguest")["bytes_done"] or 0) > size * 0.35, 120, "a third of the disk")
    site.receiver.kill()
    site.start_receiver(replica_format="disk")
    site.wait_phase("blockguest", "completed", 240)
    log = site.receiver.log()
    resumed = [line for line in log.splitlines() if "full sync" in line and "resuming after" in line]
    assert resumed and "disk0\\x00" in resumed[-1], log[-3000:]
    offset = int(resumed[-1].rsplit("\\x00", 1)[1].rstrip("'"))
    assert offset >= size * 0.2, resumed[-1]
    replica_image = site.data / "replicas" / "blockguest" / "disks" / "disk0.raw"
    assert sha256(replica_image) == sha256(image)
