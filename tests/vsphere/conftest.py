"""Fixtures of the tests against the vSphere API simulator (``tests/vsphere/vcsim.py``).

``vcsim_binary`` (session scope)
    ``pathlib.Path`` of the simulator: ``scripts/build-vcsim.sh``'s cached build, built on first
    use (~40 s; no root needed once Debian's golang-go and golang-github-vmware-govmomi-dev are
    installed). ``OSAM_REBUILD_IMAGES=1`` rebuilds it once per run. Skips the test when it is not
    built and cannot be here.

``vcsim`` (session scope)
    A started ``tests.vsphere.vcsim.Vcsim`` with the default inventory (datacenter DC0, cluster
    DC0_C0 of three hosts, standalone host DC0_H0, datastore LocalDS_0, port groups "VM Network"
    and DC0_DVPG0, four VMs), shared by the whole run: ``url``, ``host``, ``port``, ``user``,
    ``password``, ``connect()`` -> a logged-in pyvmomi ``vim.ServiceInstance``,
    ``datastore_url()`` and ``http()`` for the datastore HTTP API. Read it freely; a test that
    changes it undoes its changes, or takes a simulator of its own:

``module_vcsim`` (module scope)
    The same, one per test module: for a module whose tests build on a shared inventory.

``new_vcsim`` (function scope)
    ``new_vcsim(**inventory)`` starts a simulator for the calling test alone, with inventory
    sizes such as ``ds=2, vm=0`` (``tests.vsphere.vcsim.INVENTORY_FLAGS``); a start takes ~50 ms.

Each simulator gets a fresh directory on disk (``$OSAM_TEST_TMPDIR``, default /var/tmp) for its
datastore folders and log, and is stopped when its scope ends (SIGTERM, then SIGKILL); the
test errors if it left datastore folders behind. The directory goes too, unless
``OSAM_KEEP_TMP=1``. Tests using these fixtures get the ``vcsim`` marker; while the binary is
not built yet they also get a timeout that covers the build. Timings show in the run's summary.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.util import NotOnDisk, new_disk_tmpdir
from tests.util.trees import remove_tree
from tests.vsphere.vcsim import BUILD_TIMEOUT, Vcsim, VcsimUnavailable, cached_binary, ensure_binary

FIXTURES = ("vcsim_binary", "vcsim", "module_vcsim", "new_vcsim")
KEEP_TMP_ENV = "OSAM_KEEP_TMP"

_binary_report: list = []   # how the binary was found or built
_starts: list = []          # start-to-answering seconds of every simulator of the run


def pytest_collection_modifyitems(items):
    users = [item for item in items if set(getattr(item, "fixturenames", ())) & set(FIXTURES)]
    if not users:
        return
    rebuild = os.environ.get("OSAM_REBUILD_IMAGES") == "1"
    try:
        needs_build = rebuild or not cached_binary().exists()
    except (OSError, subprocess.CalledProcessError):  # the fixture says why when it runs
        needs_build = True
    for item in users:
        item.add_marker(pytest.mark.vcsim)
        if needs_build and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT + 300))


def pytest_terminal_summary(terminalreporter):
    if not (_binary_report or _starts):
        return
    terminalreporter.section("vSphere API simulator")
    for line in _binary_report:
        terminalreporter.write_line(line)
    if _starts:
        terminalreporter.write_line(
            f"{len(_starts)} simulator(s) started, start to answering: min {min(_starts):.3f}s, "
            f"median {statistics.median(_starts):.3f}s, max {max(_starts):.3f}s")


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    t0 = time.monotonic()
    try:
        path, output = ensure_binary(rebuild=os.environ.get("OSAM_REBUILD_IMAGES") == "1")
    except VcsimUnavailable as e:
        pytest.skip(str(e))
    except Exception as e:  # noqa: BLE001 - a failed build fails the tests that need it, with its log
        pytest.fail(str(e))
    line = (f"vcsim binary {path.name}: ready in {time.monotonic() - t0:.2f}s "
            f"({'built' if 'built in' in output else 'cached'})")
    print(output, end="")
    print(line)
    _binary_report.append(line)
    return path


def _workdir(name: str) -> Path:
    try:
        return new_disk_tmpdir(f"vcsim-{name}")
    except NotOnDisk:  # the simulator does not need a disk file system: any directory will do
        return Path(tempfile.mkdtemp(prefix=f"osam-test-vcsim-{name}-"))


class _Simulators:
    """The simulators a fixture started; stop_all() stops them and removes their directories."""

    def __init__(self, binary: Path, name: str):
        self.binary, self.name, self.started = binary, name, []

    def start(self, **kwargs) -> Vcsim:
        workdir = _workdir(self.name)
        try:
            sim = Vcsim(self.binary, workdir, **kwargs)
        except BaseException:
            remove_tree(workdir)
            raise
        self.started.append(sim)
        sim.start()
        _starts.append(sim.start_seconds)
        return sim

    def stop_all(self) -> None:
        problems = []
        for sim in self.started:
            leftovers = sim.stop()
            if sim.running():
                problems.append(f"{sim!r} still runs after SIGKILL")
            if leftovers:
                problems.append(f"{sim!r} (exit {sim.returncode}) left {leftovers} in {sim.datastore_root}")
            if os.environ.get(KEEP_TMP_ENV) == "1":
                print(f"kept {sim.workdir} (${KEEP_TMP_ENV}=1)")
            else:
                remove_tree(sim.workdir)
        self.started.clear()
        assert not problems, "; ".join(problems)


@pytest.fixture(scope="session")
def vcsim(vcsim_binary):
    sims = _Simulators(vcsim_binary, "session")
    try:
        yield sims.start()
    finally:
        sims.stop_all()


@pytest.fixture(scope="module")
def module_vcsim(request, vcsim_binary):
    sims = _Simulators(vcsim_binary, request.module.__name__.rsplit(".", 1)[-1])
    try:
        yield sims.start()
    finally:
        sims.stop_all()


@pytest.fixture
def new_vcsim(request, vcsim_binary):
    sims = _Simulators(vcsim_binary, request.node.name)
    try:
        yield sims.start
    finally:
        sims.stop_all()
