"""Fixtures of the end-to-end tests that boot guests under qemu.

``debian_guest_image`` (module scope)
    ``pathlib.Path`` of the Debian 12 source guest disk ``scripts/guest-image.sh`` builds: a
    KVM/virtio machine (hostname src-guest, eth0 10.0.2.15/24, root by UUID) whose initramfs
    has no vmw_pvscsi/vmxnet3. Taken from the cache when built before; a cold build takes
    a minute or two, which the first test using it pays for: tests using it get a timeout of
    ``IMAGE_TEST_TIMEOUT`` unless they set their own ``@pytest.mark.timeout``.
    It is shared between test runs: boot it (always ``-snapshot``), mount it read-only
    (``-o ro,noload``), or copy it before writing; root ignores file modes, so nothing stops a write.
    Skips unless root, unless qemu-system-x86_64 is installed and, when the image has to be
    built, debootstrap.

``site``
    A ``tests.e2e.site.Site`` (fresh PKI, nothing started) whose daemons are stopped
    afterwards; the test fails if the receiver left a replica's loop devices attached.

``source_disk``
    ``(root, loop)``: a 1 GiB GPT disk on a loop device (ext4 root labelled guestroot, xfs
    ``/srv``, swap) mounted at ``root`` like a machine's disks, for the sentinel's ``--root``;
    unmounted and detached afterwards.

``boot_guest``
    ``boot_guest(image_paths, hardware="vsphere"|"kvm", timeout=600, mac=None)`` runs
    ``tests.e2e.qemu_boot.boot`` with the console log in the test's ``tmp_path``, prints the
    boot's timings and lists them again in the run's summary.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e import qemu_boot
from tests.e2e.site import Site
from tests.util import is_root
from tests.util.processes import stop_group

REPO = Path(__file__).resolve().parents[2]
GUEST_IMAGE_SCRIPT = REPO / "scripts" / "guest-image.sh"
IMAGE_BUILD_TIMEOUT = 900
# Per-test timeout for a module using debian_guest_image: a cold build plus two boots.
IMAGE_TEST_TIMEOUT = IMAGE_BUILD_TIMEOUT + 600

_summary: list = []  # image builds and boots, repeated at the end of the run
_ready: set = set()  # images built or found in this run


def _report(line: str) -> None:
    print(line)
    _summary.append(line)


def pytest_collection_modifyitems(items):
    for item in items:
        if "debian_guest_image" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(IMAGE_TEST_TIMEOUT))


def pytest_terminal_summary(terminalreporter):
    if _summary:
        terminalreporter.section("guest images and qemu boots")
        for line in _summary:
            terminalreporter.write_line(line)


def guest_image_path() -> Path:
    """Where scripts/guest-image.sh keeps the image of its current recipe."""
    out = subprocess.run(["bash", str(GUEST_IMAGE_SCRIPT), "path"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def debian_guest_image() -> Path:
    if not is_root():
        pytest.skip("needs root (effective uid 0): builds the guest disk with loop devices, mounts and chroot")
    if not qemu_boot.qemu_available():
        pytest.skip(f"{qemu_boot.QEMU} not found: run scripts/setup.sh (Debian package qemu-system-x86)")
    path = guest_image_path()
    if path in _ready:
        return path
    rebuild = os.environ.get("OSAM_REBUILD_IMAGES") == "1"
    if (rebuild or not path.exists()) and shutil.which("debootstrap") is None:
        pytest.skip("debootstrap not found: run scripts/setup.sh (the guest image is not built yet)")
    t0 = time.monotonic()
    output = _build_image()
    print(output, end="")
    _report(f"guest image {path.name}: ready in {time.monotonic() - t0:.2f}s "
            f"({'built' if 'built in' in output else 'cached'})")
    _ready.add(path)  # OSAM_REBUILD_IMAGES=1 rebuilds once per run, not once per module
    return path


def _build_image() -> str:
    """Run guest-image.sh build; when stopped (timeout, Ctrl-C) let its trap unmount and detach."""
    proc = subprocess.Popen(["bash", str(GUEST_IMAGE_SCRIPT), "build"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=IMAGE_BUILD_TIMEOUT)
    except BaseException as e:
        output = stop_group(proc)
        if isinstance(e, subprocess.TimeoutExpired):
            pytest.fail(f"scripts/guest-image.sh build: no image after {IMAGE_BUILD_TIMEOUT}s:\n{output}")
        raise
    if proc.returncode != 0:
        pytest.fail(f"scripts/guest-image.sh build failed (exit {proc.returncode}):\n{output}")
    return output


@pytest.fixture
def boot_guest(request, tmp_path):
    def boot(image_paths, hardware: str = "vsphere", timeout: float = 600, mac: str | None = None):
        log_path = tmp_path / f"console-{hardware}-{len(list(tmp_path.glob('console-*')))}.log"
        result = qemu_boot.boot(image_paths, hardware=hardware, timeout=timeout, log_path=log_path, mac=mac)
        _report(f"{request.node.name}: {result.summary()}")
        return result
    return boot


@pytest.fixture
def site(disk_tmp_path):
    s = Site(disk_tmp_path / "site")
    try:
        yield s
    finally:
        s.stop_all()
        attached = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
        leftover = [line for line in attached if str(s.data) in line]
        assert not leftover, f"the receiver left loop devices attached: {leftover}"


@pytest.fixture
def source_disk(disk_tmp_path):
    """A 1 GiB GPT disk: ext4 root, xfs /srv, swap; mounted at guest/ like a machine's disks."""
    image, mnt = disk_tmp_path / "source.img", disk_tmp_path / "guest"
    with open(image, "wb") as f:
        f.truncate(1024 * (1 << 20))
    subprocess.run(["sfdisk", "-q", str(image)], check=True, text=True, input=(
        "label: gpt\n\nstart=2048, size=450MiB, type=L, name=root\n"
        "size=320MiB, type=L, name=srv\nsize=64MiB, type=S\n"))
    loop = _sh("losetup", "--find", "--show", "--partscan", image).strip()
    mounted = []
    try:
        subprocess.run(["partx", "-a", loop], capture_output=True)
        _sh("mke2fs", "-q", "-t", "ext4", "-L", "guestroot", f"{loop}p1")
        _sh("mkfs.xfs", "-q", "-L", "srv", f"{loop}p2")
        _sh("mkswap", "-L", "swap0", f"{loop}p3")
        mnt.mkdir()
        _sh("mount", f"{loop}p1", mnt)
        mounted.append(mnt)
        (mnt / "srv").mkdir()
        _sh("mount", f"{loop}p2", mnt / "srv")
        mounted.append(mnt / "srv")
        yield mnt, loop
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", str(m)])
        subprocess.run(["losetup", "-d", loop])


def _sh(*argv) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout
